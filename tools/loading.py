"""Load a detector (model + processor, or a scorer around them) from a local folder or a Hub id, with a one-line
reason when it cannot be, and at once when the Hub cannot be reached."""

import os
import threading
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import constants, get_session, is_offline_mode, snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
from huggingface_hub.utils import validate_repo_id

from ..modeling_dfd import DFDForVideoClassification
from ..processing_dfd import DFDVideoProcessor
from ..scoring_dfd import VideoScorer, default_dtype


# How long the Hub may take to answer before it counts as unreachable, name resolution included.
HUB_ANSWER_SECONDS = 3.0


def looks_like_path(name: str) -> bool:
    """Absolute, `./`, `../` or `~` first, or not a valid Hub id (e.g. `a/b/c`): then only a folder is meant."""
    if Path(name).is_absolute() or name.startswith((".", "~")):
        return True
    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def hub_unreachable() -> str | None:
    """
    Why the Hub cannot be reached ("HF_HUB_OFFLINE is set", "no connection"), or None when it answers. One request
    that may take HUB_ANSWER_SECONDS, where huggingface_hub retries an unreachable Hub for tens of seconds per file.
    """
    if is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    answers = []

    def ask():
        try:
            answers.append(get_session().head(constants.ENDPOINT, timeout=HUB_ANSWER_SECONDS))
        except Exception:  # noqa: BLE001 - whatever the failure, the Hub did not answer
            pass

    thread = threading.Thread(target=ask, daemon=True)  # a name lookup can outlast any timeout: it is not waited for
    thread.start()
    thread.join(HUB_ANSWER_SECONDS)
    return None if answers else "no connection"


def go_offline():
    """From now on, read the Hub's cache only, in this process and those it starts (HF_HUB_OFFLINE=1)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True


def _not_cached(error: BaseException) -> bool:
    """Whether `error` (or what transformers wrapped in it) says a file is neither cached nor downloadable."""
    return isinstance(error, LocalEntryNotFoundError) or isinstance(error.__cause__, LocalEntryNotFoundError)


@contextmanager
def hub_or_cache(name_or_path: str):
    """
    Around loading `name_or_path`, a local folder or a Hub id: when it is not a folder and the Hub does not answer
    (`hub_unreachable`), the process goes offline (`go_offline`) so that the Hub id is read from the cache at once;
    one that is not cached fails with an OSError that says to pass a local folder instead (without the name, which
    the caller adds with its option).
    """
    is_path = Path(name_or_path).expanduser().exists() or looks_like_path(name_or_path)
    why = None if is_path else hub_unreachable()
    if why:
        go_offline()
    try:
        yield
    except OSError as error:
        if why is None or not _not_cached(error):
            raise
        raise OSError(
            f"not a local folder, and not in the Hub's cache while the Hub cannot be reached ({why}): pass a local "
            "folder instead"
        ) from None


def detector_folder(name_or_path: str) -> Path | None:
    """The folder `name_or_path` names, or None for a Hub id; OSError when it names a path that is no folder."""
    path = Path(name_or_path).expanduser()
    if path.exists() and not path.is_dir():
        raise OSError("not a folder (a detector is a folder with config.json and model.safetensors, or a Hub id)")
    if not path.exists() and looks_like_path(name_or_path):
        raise OSError("no such folder")
    return path if path.exists() else None


def local_folder(name_or_path: str) -> Path:
    """The local folder of a detector given as a folder or a Hub id (downloaded, or from the cache offline)."""
    folder = detector_folder(name_or_path)
    if folder is None:
        with hub_or_cache(name_or_path):
            folder = Path(snapshot_download(name_or_path))
    return folder


def load_detector(name_or_path: str):
    """
    (model, processor) of a detector folder or Hub repo, built by this package's own classes from the folder's
    config.json, video_preprocessor_config.json and weights: the installed code runs, never the copy of it a model
    folder carries (which may be an older release's). Raises OSError with the reason, without the name: no such
    folder, not a folder, the Hub unreachable (offline or no network, found out within seconds) and the repo not
    cached, or transformers' own reason (no such repo, no weights, ...).
    """
    folder = detector_folder(name_or_path)
    source = name_or_path if folder is None else str(folder)
    with hub_or_cache(source):
        model = DFDForVideoClassification.from_pretrained(source)
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
    return VideoScorer(
        model, processor, device, torch_dtype, batch_size, num_workers, limits=limits, threshold=threshold
    )
