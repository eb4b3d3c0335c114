"""
The detector's `pipeline("video-classification", trust_remote_code=True)`: transformers' video classification
pipeline classifies one sampled clip; this one scores the video as `dfd predict` does (inference.VideoScorer: windows
at the training density, calibrated probabilities, the model's decision rule). config.json names it in
`custom_pipelines`, so transformers loads it from the model folder like the model's own code.
"""

import tempfile

from transformers import VideoClassificationPipeline

from .inference import FAKE_LABEL, Limits, VideoError, VideoScorer, fetch


class DFDVideoClassificationPipeline(VideoClassificationPipeline):
    """
    `[{"label": verdict, "score": ...}, {"label": other, "score": ...}]`: the verdict first (it is the decision
    rule's, at the model's threshold, so it is not always the label with the higher score), the fake entry's score
    being the score the rule used and the real one's its complement. The verdict entry also holds `threshold`,
    `flagged_windows` (`[{"start": s, "end": s, "score": p}]`) and `mean_score`.

    Inputs: a video file's path or an http(s) URL (downloaded within `inference.Limits`' size limit). Call arguments:
    `windows` (windows per video instead of the training density's), `threshold` (instead of the model's), `top_k`.
    """

    def _sanitize_parameters(self, top_k=None, windows=None, threshold=None, **unused):
        preprocess = {"windows": windows} if windows is not None else {}
        postprocess = {"top_k": top_k} if top_k is not None else {}
        if threshold is not None:
            postprocess["threshold"] = threshold
        return preprocess, {}, postprocess

    def preprocess(self, video, windows=None):
        return {"video": video, "windows": windows}

    def _forward(self, model_inputs):
        return model_inputs  # scored in postprocess: VideoScorer decodes, batches and runs the model itself

    def postprocess(self, model_outputs, top_k=2, threshold=None):
        if getattr(self, "scorer", None) is None:
            self.scorer = VideoScorer(self.model, self.video_processor, device=self.device, num_workers=1)
        scorer, video = self.scorer, model_outputs["video"]
        if isinstance(video, str) and video.startswith(("http://", "https://")):
            with tempfile.NamedTemporaryFile(suffix=".video") as file:
                fetch(video, file, Limits().check_size)
                (prediction,) = scorer.predict([file.name], model_outputs["windows"], threshold=threshold)
        else:
            (prediction,) = scorer.predict([video], model_outputs["windows"], threshold=threshold)
        if isinstance(prediction, VideoError):
            raise ValueError(f"{video}: {prediction.reason}")
        (real_label,) = [label for label in scorer.labels if label != FAKE_LABEL]
        scores = {FAKE_LABEL: prediction.score, real_label: 1 - prediction.score}
        other = real_label if prediction.label == FAKE_LABEL else FAKE_LABEL
        verdict = {
            "label": prediction.label,
            "score": scores[prediction.label],
            "threshold": prediction.threshold,
            "flagged_windows": [
                {
                    "start": prediction.windows[index].start,
                    "end": prediction.windows[index].end,
                    "score": prediction.windows[index].scores[FAKE_LABEL],
                }
                for index in prediction.flagged_windows
            ],
            "mean_score": prediction.mean_fake_probability,
        }
        return [verdict, {"label": other, "score": scores[other]}][:top_k]
