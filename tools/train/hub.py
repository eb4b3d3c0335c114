"""The Hub side of --push_to_hub: checked before training (so a run never trains for hours to fail at the upload), and
the upload of the export after it."""

import shlex
from pathlib import Path

from accelerate.logging import get_logger
from huggingface_hub import HfApi

from .errors import TrainingError, one_line


logger = get_logger(__name__)


def check_hub_access(repo_id: str):
    """
    What the upload at the end will need: a Hub token that works and may write, and a namespace of the repo that it
    may create repos in (its user's or one of its organizations').
    """
    try:
        user = HfApi().whoami()
    except Exception as error:  # noqa: BLE001 - offline, no token, a refused token, no network: all refuse alike
        raise TrainingError(
            f"--push_to_hub: the Hub can't be used ({one_line(error)}); log in with `hf auth login` (or set HF_TOKEN), "
            "or leave out --push_to_hub and upload OUT/model later with `hf upload`"
        ) from error
    if user.get("auth", {}).get("accessToken", {}).get("role") == "read":
        raise TrainingError(f"--push_to_hub: the Hub token of {user['name']} is read-only; log in with a write token")
    namespace = repo_id.split("/")[0] if "/" in repo_id else user["name"]
    allowed = {user["name"], *(org["name"] for org in user.get("orgs", []))}
    if namespace not in allowed:
        raise TrainingError(
            f"--hub_model_id {repo_id}: the Hub token of {user['name']} can't create repos under {namespace!r} (it can "
            f"under: {', '.join(sorted(allowed))})"
        )
    logger.info(f"--push_to_hub: the Hub token of {user['name']} can create {repo_id}")


def push_export(args, export_dir: Path):
    """Upload the exported folder; on failure keep it and say how to retry."""
    try:
        HfApi().create_repo(args.hub_model_id, private=args.hub_private, exist_ok=True)
        HfApi().upload_folder(
            repo_id=args.hub_model_id,
            folder_path=export_dir,
            commit_message="Upload DFD detector trained with train_accelerate.py",
        )
    except Exception as error:  # noqa: BLE001 - network, auth and offline failures all end the same way
        retry = f"hf upload {shlex.quote(args.hub_model_id)} {shlex.quote(str(export_dir))} ." + (
            " --private" if args.hub_private else ""
        )
        raise TrainingError(
            f"Upload to the Hub failed: {type(error).__name__}: {one_line(error)}. The exported model is intact in "
            f"{export_dir}. To retry: {retry}"
        ) from error
    logger.info(f"Uploaded {export_dir} to https://huggingface.co/{args.hub_model_id}")
