"""Load a detector (model + processor, or a scorer around them) from a local folder or a Hub id, with a one-line
reason when it cannot be."""

from pathlib import Path

from huggingface_hub import is_offline_mode
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
from huggingface_hub.utils import validate_repo_id
from ..modeling_dfd import DFDForVideoClassification
from ..processing_dfd import DFDVideoProcessor
from ..scoring_dfd import VideoScorer, default_dtype


def looks_like_path(name: str) -> bool:
    """Absolute, `./`, `../` or `~` first, or not a valid Hub id (e.g. `a/b/c`): then only a folder is meant."""
    if Path(name).is_absolute() or name.startswith((".", "~")):
        return True
    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def load_detector(name_or_path: str):
    """
    (model, processor) of a detector folder or Hub repo, built by this package's own classes from the folder's
    config.json, video_preprocessor_config.json and weights: the installed code runs, never the copy of it a model
    folder carries (which may be an older release's). Raises OSError with the reason, without the name: no such
    folder, not a folder, the Hub unreachable (offline or no network) and the repo not cached, or transformers' own
    reason (no such repo, no weights, ...).
    """
    path = Path(name_or_path).expanduser()
    if path.exists() and not path.is_dir():
        raise OSError("not a folder (a detector is a folder with config.json and model.safetensors, or a Hub id)")
    if not path.exists() and looks_like_path(name_or_path):
        raise OSError("no such folder")
    source = str(path) if path.is_dir() else name_or_path
    try:
        model = DFDForVideoClassification.from_pretrained(source)
    except OSError as error:
        if isinstance(error.__cause__, LocalEntryNotFoundError):  # what huggingface_hub raises offline or unconnected
            why = "HF_HUB_OFFLINE is set" if is_offline_mode() else "no connection"
            raise OSError(
                f"no such local folder, and the Hub cannot be reached ({why}) and no cached copy exists; --model takes "
                "a local folder too"
            ) from None
        raise
    processor = DFDVideoProcessor.from_pretrained(source)
    return model, processor


def load_scorer(
    name_or_path: str,
    device,
    dtype: str = "auto",
    batch_size: int = 8,
    num_workers: int = 2,
    threshold: float | None = None,
    limits=None,
    compile_blocks: bool = False,
) -> VideoScorer:
    """
    A `VideoScorer` of the detector at `name_or_path`, in the precision `dtype` names ("auto": DFD_DTYPE, else what
    `device` computes natively; read before the long load, so a bad value fails at once). OSError says why the
    detector cannot be loaded, naming it.
    """
    torch_dtype = default_dtype(device, dtype)
    try:
        model, processor = load_detector(name_or_path)
    except OSError as error:
        raise OSError(f"--model {name_or_path}: {error}") from None
    if compile_blocks:
        model.compile_blocks()
    return VideoScorer(model, processor, device, torch_dtype, batch_size, num_workers, limits=limits, threshold=threshold)
