"""Where a flagged window's fake evidence lies: which frames and regions drove the model's fake score.

The explainer works on the windows a scorer kept (`VideoScorer.predict(..., keep_pixel_values=True)`), so a video is
never decoded again to be explained. Methods (benchmarks/bench_explain.py measures how faithful each is and what it
costs):

- `integrated_gradients` (default): gradients of the fake log-odds with respect to `pixel_values`, averaged along the
  straight path from a blank video (the processor's mean colour) to the video, times the difference; summed over each
  patch's pixels and channels, keeping what points to fake. Costs `steps` forward and backward passes.
- `gradient_x_input`: the same with one gradient at the video itself (one pass; gradients saturate where the model is
  sure).
- `attention_rollout`: the CLS token's attention propagated back through the blocks (each averaged over heads, half
  kept as the residual path) and through each adapter's spatiotemporal neighbourhood; class-agnostic.
"""

from dataclasses import dataclass

import numpy as np
import torch

from .decision_dfd import FAKE_LABEL
from .results_dfd import VideoPrediction


@dataclass
class WindowExplanation:
    """
    Where one window's fake evidence lies, per distinct frame of the window (a video shorter than a window repeats
    frames; a repeated frame's evidence is summed into it). `heatmaps[t, i, j]` is the share of the window's evidence
    for "fake" that patch (i, j) of frame t carries (non-negative, summing to 1 over the window, or all zero when
    nothing in the window points to fake), on the model's patch grid; `images` are the very pixels the model saw.
    """

    window: int
    frames: list[int]
    timestamps: list[float | None]
    fake_probability: float
    images: np.ndarray  # (distinct frames, height, width, 3) uint8
    heatmaps: np.ndarray  # (distinct frames, grid_height, grid_width) float32

    @property
    def frame_shares(self) -> np.ndarray:
        """Each frame's share of the window's fake evidence: which frames drove the score."""
        return self.heatmaps.sum(axis=(1, 2))


EXPLANATION_METHODS = ("integrated_gradients", "gradient_x_input", "attention_rollout")


def pixels_to_images(pixel_values: torch.Tensor, image_mean, image_std) -> np.ndarray:
    """Normalised `pixel_values` (..., 3, H, W) back to the uint8 images (..., H, W, 3) they were made from."""
    mean = torch.tensor(image_mean).view(3, 1, 1)
    std = torch.tensor(image_std).view(3, 1, 1)
    images = (pixel_values.float().cpu() * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
    return images.movedim(-3, -1).numpy()


class VideoExplainer:
    """
    Shows which frames and regions drove a scored video's fake score, for the windows asked (default: the flagged
    ones), from the windows its scorer kept. `scorer` is the `VideoScorer` that scored it: its model, processor
    and precision are used as they are.
    """

    def __init__(self, scorer, method: str = EXPLANATION_METHODS[0], steps: int = 16):
        if method not in EXPLANATION_METHODS:
            raise ValueError(f"method must be one of {', '.join(EXPLANATION_METHODS)}, got {method!r}")
        if method != "attention_rollout" and scorer.dtype == torch.qint8:
            raise ValueError(f"{method} needs gradients, which int8 layers do not pass: explain in fp32 or bf16")
        self.scorer = scorer
        self.method = method
        self.steps = steps
        config = scorer.model.config
        self.fake_index = [config.id2label[index] for index in range(config.num_labels)].index(FAKE_LABEL)

    def explain(self, prediction: VideoPrediction, windows: list[int] | None = None) -> list[WindowExplanation]:
        """A `WindowExplanation` per window asked (default: the flagged ones), from `prediction.pixel_values`."""
        if prediction.pixel_values is None:
            raise ValueError("the prediction kept no pixel values: score with keep_pixel_values=True to explain it")
        explained = []
        for window in prediction.flagged_windows if windows is None else windows:
            result = prediction.windows[window]
            pixel_values = prediction.pixel_values[result.row]  # with face crops: the window's most suspicious face
            positions = result.positions or list(range(len(pixel_values)))
            # Each distinct frame's evidence: the sum over the positions that repeat it (a window's frames are in time
            # order, so a frame's repeats follow its first position).
            owner = np.searchsorted(positions, np.arange(len(pixel_values)), side="right") - 1
            heatmaps = self.heatmaps(pixel_values[None])[0]
            distinct = torch.zeros((len(positions), *heatmaps.shape[1:]))
            distinct.index_add_(0, torch.as_tensor(owner), heatmaps)
            processor = self.scorer.processor
            images = pixels_to_images(pixel_values[positions], processor.image_mean, processor.image_std)
            explained.append(
                WindowExplanation(
                    window=window,
                    frames=result.frames,
                    timestamps=result.timestamps,
                    fake_probability=result.fake_probability,
                    images=images,
                    heatmaps=distinct.numpy(),
                )
            )
        return explained

    def heatmaps(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(batch, frames, grid_height, grid_width) evidence shares of a batch of windows' `pixel_values`."""
        if self.method == "attention_rollout":
            evidence = self._attention_rollout(pixel_values)
        else:
            evidence = self._attributions(pixel_values).clamp(min=0)
        total = evidence.sum(dim=(1, 2, 3), keepdim=True)
        return torch.where(total > 0, evidence / total.clamp(min=1e-30), torch.zeros_like(evidence)).float()

    def _fake_log_odds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        model = self.scorer.model
        with self.scorer.precision():
            logits = model(pixel_values=pixel_values).logits.float()
        fake = self.fake_index
        others = torch.cat([logits[:, :fake], logits[:, fake + 1 :]], dim=1)
        return logits[:, fake] - others.logsumexp(dim=1)

    def _attributions(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Signed attribution of every patch (batch, frames, h, w) to the fake log-odds."""
        pixel_values = pixel_values.to(self.scorer.device, torch.float32)
        baseline = torch.zeros_like(pixel_values)  # normalised zero: the processor's mean colour
        steps = 1 if self.method == "gradient_x_input" else self.steps
        alphas = [1.0] if steps == 1 else [(step + 0.5) / steps for step in range(steps)]
        gradients = torch.zeros_like(pixel_values)
        for alpha in alphas:
            path_point = (baseline + alpha * (pixel_values - baseline)).requires_grad_()
            (gradient,) = torch.autograd.grad(self._fake_log_odds(path_point).sum(), path_point)
            gradients += gradient / len(alphas)
        attribution = (gradients * (pixel_values - baseline)).sum(dim=2)  # (batch, frames, H, W)
        return self._per_patch(attribution).cpu()

    def _per_patch(self, pixel_map: torch.Tensor) -> torch.Tensor:
        patch = self.scorer.model.config.vision_config.patch_size
        batch, frames, height, width = pixel_map.shape
        grid_height, grid_width = height // patch, width // patch
        pixel_map = pixel_map[..., : grid_height * patch, : grid_width * patch]
        return pixel_map.reshape(batch, frames, grid_height, patch, grid_width, patch).sum(dim=(3, 5))

    @torch.no_grad()
    def _attention_rollout(self, pixel_values: torch.Tensor) -> torch.Tensor:
        model = self.scorer.model
        implementation = model.config._attn_implementation
        model.set_attn_implementation("eager")  # only the eager attention returns its weights
        try:
            outputs = model(pixel_values=pixel_values.to(self.scorer.device), output_attentions=True)
        finally:
            model.set_attn_implementation(implementation)
        batch, frames, _, height, width = pixel_values.shape
        patch = model.config.vision_config.patch_size
        grid = (height // patch, width // patch)
        layers = model.base_model.encoder.layers
        # Relevance of every token, starting at the CLS tokens that the video feature averages.
        relevance = torch.zeros(batch * frames, outputs.attentions[0].shape[-1], device=self.scorer.device)
        relevance[:, 0] = 1 / frames
        for layer, attention in zip(reversed(layers), reversed(outputs.attentions)):
            identity = torch.eye(attention.shape[-1], device=attention.device)
            attention = 0.5 * attention.float().mean(dim=1) + 0.5 * identity
            relevance = torch.einsum("bi,bij->bj", relevance, attention / attention.sum(-1, keepdim=True))
            if layer.adapter is not None:
                relevance = self._through_adapter(relevance, layer.adapter, frames, grid)
        return relevance[:, 1:].reshape(batch, frames, *grid).cpu()

    @staticmethod
    def _through_adapter(relevance, adapter, frames, grid):
        """Half the patch relevance stays (the residual), half spreads evenly over the adapter's conv neighbourhood."""
        kernel = adapter.conv.kernel_size
        patches = relevance[:, 1:].reshape(-1, 1, frames, *grid)
        spread = torch.nn.functional.avg_pool3d(
            patches, kernel, stride=1, padding=tuple(size // 2 for size in kernel), count_include_pad=False
        )
        mixed = relevance.clone()
        mixed[:, 1:] = (0.5 * patches + 0.5 * spread).reshape(len(relevance), -1)
        return mixed


__all__ = ["EXPLANATION_METHODS", "VideoExplainer", "WindowExplanation", "pixels_to_images"]
