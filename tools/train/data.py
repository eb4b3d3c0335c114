"""
The videos of a run: its tables (read and checked before any model loads), their frames from the frame cache, and
the DataLoaders over them.
"""

from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate.logging import get_logger
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

from ...configuration_dfd import CLASS_NAMES
from ..export import hub_id
from .accelerator import main_process_first
from .errors import TrainingError
from .frame_cache import FrameCache
from .tables import choose_split, load_hub_video_tables, load_video_tables, stratified_split


logger = get_logger(__name__)


@dataclass
class VideoTables:
    """The (video, label) tables a run reads: to train and validate on, or with --do_eval each evaluation set."""

    train: datasets.Dataset | None = None
    validation: datasets.Dataset | None = None  # None: held out from `train` once the readable videos are known
    evaluation: dict[str, datasets.Dataset] = field(default_factory=dict)


def _hub_tables(args) -> dict[str, datasets.Dataset]:
    files_dir = Path(args.cache_dir) / "hub_videos"
    return load_hub_video_tables(
        args.dataset_name, args.dataset_config_name, args.video_column, args.label_column, files_dir
    )


def _with_videos(table: datasets.Dataset, source: str) -> datasets.Dataset:
    if not len(table):
        raise TrainingError(f"{source}: no videos")
    return table


def _training_tables(args) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    source = args.train_dir or f"--dataset_name {args.dataset_name}"
    tables = load_video_tables(args.train_dir) if args.train_dir else _hub_tables(args)
    if "train" not in tables:
        raise TrainingError(f"{source}: no training split (it has: {', '.join(sorted(tables))})")
    validation = tables.get("validation")
    if args.validation_dir:
        validation_tables = load_video_tables(args.validation_dir)
        validation = validation_tables.get("validation", next(iter(validation_tables.values())))
        validation = _with_videos(validation, args.validation_dir)
    return _with_videos(tables["train"], source), validation


def _evaluation_tables(args) -> dict[str, datasets.Dataset]:
    """--eval_split's table (by default the first of test, validation, train) of each evaluation set, by name:
    --dataset_name's is named after it (a local one after its folder), each --eval_dir after its folder or manifest."""
    sources = [(hub_id(args.dataset_name) or Path(args.dataset_name).name, None)] if args.dataset_name else []
    sources += [(Path(eval_dir).stem or str(eval_dir), eval_dir) for eval_dir in args.eval_dir or ()]
    sets = {}
    for name, eval_dir in sources:
        tables = load_video_tables(eval_dir) if eval_dir else _hub_tables(args)
        while name in sets:  # test/ of two datasets
            name = f"{name}-{len(sets) + 1}"
        source = eval_dir or f"--dataset_name {args.dataset_name}"
        sets[name] = _with_videos(choose_split(tables, args.eval_split, source), source)
    return sets


def load_tables(args, accelerator) -> VideoTables:
    """The run's video tables, read and checked (paths, labels, splits) before any model loads."""
    with main_process_first(accelerator):  # the main process writes a Hub dataset's embedded videos to files once
        if args.do_eval:
            return VideoTables(evaluation=_evaluation_tables(args))
        return VideoTables(*_training_tables(args))


class CachedVideos(torch.utils.data.Dataset):
    """The videos of a video table read from the frame cache: {"frames": uint8 (T, 3, S, S), "labels": 0 or 1}."""

    def __init__(self, frames: datasets.Dataset, rows: list[int], labels: list[int]):
        self.frames, self.rows, self.labels = frames, rows, labels

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return {"frames": self.frames[self.rows[index]]["frames"], "labels": self.labels[index]}


@dataclass
class VideoData:
    """The run's readable videos, by role, and the row of each in the frame cache."""

    frames: datasets.Dataset
    row_of_video: dict[str, int]
    unreadable: dict[str, str]  # video -> the one-line reason it was left out
    train: datasets.Dataset | None = None
    validation: datasets.Dataset | None = None
    evaluation: dict[str, datasets.Dataset] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # unreadable videos of each evaluation set

    def cached_videos(self, table: datasets.Dataset) -> CachedVideos:
        return CachedVideos(self.frames, [self.row_of_video[video] for video in table["video"]], list(table["label"]))

    def readable(self, table: datasets.Dataset, what: str) -> datasets.Dataset:
        """The rows of `table` whose video could be read; refuses a table of which none could."""
        rows = [index for index, video in enumerate(table["video"]) if video in self.row_of_video]
        if len(table) and not rows:
            first = self.unreadable[table[0]["video"]]
            raise TrainingError(f"none of the {len(table)} videos of {what} could be read; the first: {first}")
        return table.select(rows)


def load_frames(args, accelerator, tables: VideoTables, processor) -> VideoData:
    """
    Every video of `tables` decoded into the frame cache (or found there) in one pass, so that decoding runs in
    parallel over all of them; an unreadable video is warned about on one line and left out. Without a validation
    table, a stratified share of the readable training videos is held out.
    """
    all_tables = [tables.train, tables.validation, *tables.evaluation.values()]
    videos = [video for table in all_tables if table is not None for video in table["video"]]
    with main_process_first(accelerator):  # the main process decodes, the others then read the cache
        cache = FrameCache(args.cache_dir, processor)
        frames, rows, failures = cache.lookup(videos, num_proc=args.preprocessing_num_workers)
    reasons = iter(failures)
    unreadable = {video: next(reasons) for video, row in zip(videos, rows) if row is None}
    for reason in unreadable.values():
        logger.warning(f"Skipping unreadable video {reason}")
    row_of_video = {video: row for video, row in zip(videos, rows) if row is not None}
    data = VideoData(frames, row_of_video, unreadable)
    if tables.evaluation:
        for name, table in tables.evaluation.items():
            data.evaluation[name] = data.readable(table, f"evaluation set {name}")
            data.skipped[name] = sum(video in unreadable for video in table["video"])
        return data
    data.train = data.readable(tables.train, "the training data")
    if tables.validation is None:
        data.train, data.validation = stratified_split(data.train, args.validation_split_percentage, args.seed)
    else:
        data.validation = data.readable(tables.validation, "the validation data")
    return data


def class_counts(labels) -> dict[str, int]:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(CLASS_NAMES))
    return {name: int(count) for name, count in zip(CLASS_NAMES, counts)}


def make_eval_dataloader(args, data: VideoData, table: datasets.Dataset) -> DataLoader:
    return DataLoader(
        data.cached_videos(table),
        batch_size=args.per_device_eval_batch_size,
        num_workers=args.dataloader_num_workers,
        pin_memory=torch.cuda.is_available(),
    )


def make_train_dataloader(args, data: VideoData) -> tuple[DataLoader, torch.Generator]:
    """
    The training DataLoader and its sampler's generator. The generator is reseeded every epoch (see main), so the order
    of epoch e depends only on (seed, e), which is what makes a mid-epoch resume exact.
    """
    labels = np.asarray(data.train["label"], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    if (counts == 0).any():
        raise TrainingError(f"the training data needs both classes, got {class_counts(labels)}")
    dataset = data.cached_videos(data.train)
    generator = torch.Generator().manual_seed(args.seed)
    if args.class_balanced_sampling:  # inverse class frequency: both classes are drawn equally often
        weights = (1.0 / counts[labels]).tolist()
        sampler = WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=generator)
    else:
        sampler = RandomSampler(dataset, generator=generator)
    dataloader = DataLoader(
        dataset,
        sampler=sampler,
        batch_size=args.per_device_train_batch_size,
        num_workers=args.dataloader_num_workers,
        pin_memory=torch.cuda.is_available(),
        generator=generator,  # otherwise each new iterator draws its worker seed from the global RNG
    )
    return dataloader, generator
