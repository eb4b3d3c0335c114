"""
The detector's `pipeline("video-classification", trust_remote_code=True)`, named in config.json's `custom_pipelines`.

transformers' video classification pipeline classifies one sampled clip; this one scores a whole video as every
surface of the detector does, in transformers' three steps:

- `preprocess`: the processor, which decodes the video once and cuts it into windows at the training density (or
  `windows=N`); it yields one item per window, so windows of several videos share forward passes (`batch_size`);
- `_forward`: the model on a batch of windows;
- `postprocess`: calibration and the model's decision rule over one video's windows (results_dfd.py).
"""

import warnings

import torch
from transformers.pipelines.base import ChunkPipeline
from transformers.pipelines.pt_utils import PipelineChunkIterator, PipelineIterator, PipelinePackIterator
from torch.utils.data import DataLoader

from .decision_dfd import DecisionRule
from .results_dfd import VideoPrediction, predict_video


def collate_windows(items: list[dict]) -> dict:
    """Window items of any videos as one batch: their `pixel_values` concatenated, everything else as lists."""
    return {
        key: torch.cat([item[key] for item in items]) if key == "pixel_values" else [item[key] for item in items]
        for key in items[0]
    }


class DFDVideoClassificationPipeline(ChunkPipeline):
    """
    `[{"label": verdict, "score": ..., ...record}, {"label": other, "score": ...}]` per video: the verdict first (the
    decision rule's, at the model's threshold for the video's number of windows, so not always the label with the
    higher score), with the whole record of results_dfd.py beside it; `score` is the probability of its label.

    Inputs: a video file's path, an http(s) URL (fetched through the input gate, within its size cap and deadline), a
    video file's bytes, frames, or a list of those. Call arguments: `windows` (equal windows per video instead of the
    training density's), `threshold` (instead of the model's), `top_k`; `clips` is `windows`' deprecated name.
    """

    _load_processor = False
    _load_image_processor = None
    _load_video_processor = None
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(
        self, windows=None, threshold=None, top_k=None, clips=None, limits=None, decode_threads=None
    ):
        if clips is not None:
            warnings.warn("`clips` is deprecated: pass `windows`", FutureWarning, stacklevel=3)
            windows = windows if windows is not None else clips
        preprocess = {"windows": windows, "limits": limits, "decode_threads": decode_threads}
        postprocess = {"threshold": threshold, "top_k": top_k}
        if threshold is not None:
            DecisionRule.from_config(self.model.config, threshold)  # refuse a bad threshold before any decoding
        return (
            {name: value for name, value in preprocess.items() if value is not None},
            {},
            {name: value for name, value in postprocess.items() if value is not None},
        )

    def preprocess(self, video, windows=None, limits=None, decode_threads=None):
        """The processor's windows of one video, one item each; the last carries `is_last`."""
        inputs = self.video_processor(
            video,
            windows=windows,
            window_duration=getattr(self.model.config, "window_duration", None),
            limits=limits,
            decode_threads=decode_threads,
            return_metadata=True,
            return_tensors="pt",
        )
        (metadata,) = inputs["video_metadata"]
        pixel_values = inputs["pixel_values"]
        source = video if isinstance(video, str) else "<video>"
        for row in range(len(pixel_values)):
            yield {
                "pixel_values": pixel_values[row : row + 1],
                "is_last": row == len(pixel_values) - 1,
                "row": row,
                "metadata": metadata,
                "source": source,
            }

    def _forward(self, model_inputs):
        pixel_values = model_inputs["pixel_values"].to(self.model.dtype)
        outputs = {"logits": self.model(pixel_values=pixel_values).logits.float()}
        outputs.update((key, value) for key, value in model_inputs.items() if key != "pixel_values")
        return outputs

    def predict_video(self, window_outputs: list[dict], threshold: float | None = None) -> VideoPrediction:
        """One video's windows' outputs (in order) -> its prediction: calibration and the decision rule."""
        config = self.model.config
        first = window_outputs[0]
        logits = torch.cat([output["logits"].reshape(1, -1) for output in window_outputs])
        return predict_video(
            path=first["source"],
            metadata=first["metadata"],
            logits=logits.numpy(),
            temperature=getattr(config, "calibration_temperature", 1.0),
            rule=DecisionRule.from_config(config, threshold),
            labels=[config.id2label[index] for index in range(config.num_labels)],
        )

    def postprocess(self, model_outputs, threshold=None, top_k=None):
        prediction = self.predict_video(model_outputs, threshold)
        labels = [self.model.config.id2label[index] for index in range(self.model.config.num_labels)]
        return prediction.classification(labels, top_k)

    def get_iterator(
        self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params, postprocess_params
    ):
        """ChunkPipeline's, with window batches collated by `collate_windows` (the base needs a feature extractor)."""
        dataset = PipelineChunkIterator(inputs, self.preprocess, preprocess_params)
        collate = collate_windows if batch_size > 1 else (lambda items: items[0])
        dataloader = DataLoader(dataset, num_workers=min(num_workers, 1), batch_size=batch_size, collate_fn=collate)
        model_iterator = PipelinePackIterator(dataloader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)


__all__ = ["DFDVideoClassificationPipeline", "collate_windows"]
