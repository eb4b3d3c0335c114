"""The checkpoint-writing steps `dfd init` and `dfd convert` share."""

from pathlib import Path

from ...modeling_dfd import DFDForVideoClassification
from ..export import check_config_overrides, hub_id, processor_for, save_detector
from ..loading import hub_or_cache
from .common import CommandError, UsageError


def check_overrides(overrides: dict):
    """`dfd.tools.export.check_config_overrides`, reported as a usage error (exit status 2)."""
    try:
        check_config_overrides(overrides)
    except ValueError as error:
        raise UsageError(f"--config-overrides: {error}") from None


def detector_from_clip(name: str, overrides: dict) -> DFDForVideoClassification:
    """A new detector on the CLIP checkpoint `name`, a folder or a Hub id (read from the cache if the Hub is away)."""
    try:
        with hub_or_cache(name):
            return DFDForVideoClassification.from_clip(name, **overrides)
    except OSError as error:
        raise CommandError(f"--clip {name}: {' '.join(str(error).split())}") from None


def export_detector(model, output: Path, card: str) -> Path:
    """The model plus the processor its config implies, as a Hub-ready folder (see `dfd.tools.export.save_detector`)."""
    return save_detector(model, processor_for(model.config), output, readme=card)


def describe_clip(name: str) -> str:
    """A CLIP checkpoint as a card names it: a Hub id as it is, a local folder without its path."""
    repo = hub_id(name)
    return f"the CLIP checkpoint [`{repo}`](https://huggingface.co/{repo})" if repo else "a local CLIP checkpoint"


def parameter_counts(model) -> str:
    return f"{model.num_parameters():,} parameters, {model.num_parameters(only_trainable=True):,} trainable"
