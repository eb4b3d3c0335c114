"""
The detector's `pipeline("video-classification", trust_remote_code=True)`: transformers' video classification
pipeline classifies one sampled clip; this one scores the video as `dfd predict` does (inference.VideoScorer: windows
at the training density, calibrated probabilities, the model's decision rule). config.json names it in
`custom_pipelines`, so transformers loads it from the model folder like the model's own code.
"""

from contextlib import nullcontext

from transformers import VideoClassificationPipeline

from .inference import VideoError, VideoScorer, is_url, video_file


class DFDVideoClassificationPipeline(VideoClassificationPipeline):
    """
    `[{"label": verdict, "score": ...}, {"label": other, "score": ...}]`: the verdict first (it is the decision
    rule's, at the model's threshold, so it is not always the label with the higher score), the fake entry's score
    being the score the rule used and the real one's its complement. The verdict entry also holds `threshold`,
    `flagged_windows` (`[{"start": s, "end": s, "score": p}]`) and `mean_score`.

    Inputs: a video file's path or an http(s) URL (fetched by fetching_dfd.py, within its size cap). Call arguments:
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
        video = model_outputs["video"]
        # A URL is fetched as everything fetches (fetching_dfd.py: public addresses, deadline, size cap).
        with video_file(video) if is_url(video) else nullcontext(video) as path:
            (prediction,) = self.scorer.predict([path], model_outputs["windows"], threshold=threshold)
        if isinstance(prediction, VideoError):
            raise ValueError(f"{video}: {prediction.reason}")
        return prediction.classification(self.scorer.labels)[:top_k]
