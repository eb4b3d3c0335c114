"""The run's Accelerator: its mixed precision (and why that one), its trackers and output folder, and the logging."""

import logging
import os
from contextlib import contextmanager
from pathlib import Path

import datasets
import torch
import transformers
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, parse_flag_from_env


logger = get_logger(__name__)


def choose_mixed_precision(requested: str | None, device_type: str, environ=os.environ) -> tuple[str, str]:
    """
    The mixed precision to run in, and why. --mixed_precision wins; then the launcher's setting when it enables mixed
    precision (`accelerate launch` passes its flag or config as ACCELERATE_MIXED_PRECISION, and "no" when it has
    neither, so its "no" says nothing); else the card's bf16 where the device runs it natively.
    """
    if requested:
        return requested, "--mixed_precision"
    launcher_setting = environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if launcher_setting != "no":
        return launcher_setting, "set by accelerate launch / accelerate config"
    if device_type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16", f"default on a GPU with bf16 ({torch.cuda.get_device_name()})"
    return "no", (
        f"default on {device_type.upper()}: bf16 is the default only on a CUDA GPU that supports it, since a CPU "
        "without bf16 units runs it several times slower; --mixed_precision bf16 forces it"
    )


def setup_logging(accelerator: Accelerator):
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file of every checkpoint is noise
    if accelerator.is_local_main_process:
        datasets.utils.logging.set_verbosity_warning()
        transformers.utils.logging.set_verbosity_warning()
    else:
        datasets.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
        transformers.utils.logging.set_verbosity_error()


def make_accelerator(args) -> Accelerator:
    # The precision is fixed when the Accelerator is made, so its device is read the way it will pick it: CUDA when
    # there is a GPU, unless told to use the CPU (`accelerate launch --cpu`).
    on_cuda = torch.cuda.is_available() and not parse_flag_from_env("ACCELERATE_USE_CPU")
    mixed_precision, reason = choose_mixed_precision(args.mixed_precision, "cuda" if on_cuda else "cpu")
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=mixed_precision,
        log_with=None if args.report_to == "none" or args.do_eval else args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "runs")),
        # The DataLoaders pin memory on CUDA, so host-to-device copies can overlap with compute.
        dataloader_config=DataLoaderConfiguration(non_blocking=True),
    )
    setup_logging(accelerator)
    logger.info(f"Mixed precision: {accelerator.mixed_precision} ({reason})")
    return accelerator


@contextmanager
def main_process_first(accelerator):
    """
    The main process runs the block first (e.g. decoding into the shared frame cache), then the others. Unlike
    `accelerator.main_process_first`, a block that fails in the main process still releases the others, which then
    meet the same error and end with it, rather than wait for a main process that is gone.
    """
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
    try:
        yield
    finally:
        if accelerator.is_main_process:
            accelerator.wait_for_everyone()


def tracker_config(args) -> dict:
    """The arguments as trackers store them: numbers, strings and booleans as they are, the rest as text."""
    plain = (int, float, str, bool)
    return {name: value if isinstance(value, plain) else str(value) for name, value in vars(args).items()}
