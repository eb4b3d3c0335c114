"""
The videos of a run: its rows, read and checked before any model loads (the sources, the overlap guard, the crop the
training videos ask for); their frames from the frame cache, each process decoding its share; the validation split
when none is given; and the DataLoaders over them.
"""

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate.logging import get_logger
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

from ...configuration_dfd import CLASS_NAMES
from ...settings_dfd import decoding_threads
from ..data import Row, source_path
from .accelerator import main_process_first
from .errors import TrainingError
from .frame_cache import FrameCache, fill, processes_on_this_machine
from .splits import check_overlaps, hold_out_validation, leakage_figures
from .tables import Splits, choose_split, load_hub_splits, load_splits
from .transforms import RobustAugmentation


logger = get_logger(__name__)


@dataclass
class EvaluationSet:
    """The videos of one evaluation set: the split of its source that is evaluated (--eval_split, else test...)."""

    split: str
    rows: list[Row]


@dataclass
class VideoTables:
    """The rows a run reads: to train and validate on (and evaluate with --eval_dir), or with --do_eval each set."""

    train: list[Row] | None = None
    validation: list[Row] | None = None  # None: held out from `train` once the readable videos are known
    validation_source: str = ""  # where a given validation split comes from, in words
    evaluation: dict[str, EvaluationSet] = field(default_factory=dict)
    overlaps: list[dict] = field(default_factory=list)  # what the sets share, allowed by --allow_overlap
    crop: str | None = None  # "face" when the training videos are face crops: the model must crop faces too


def count_labels(rows: list[Row]) -> dict[str, int]:
    return {name: sum(row.label == name for row in rows) for name in CLASS_NAMES}


def class_counts(labels) -> dict[str, int]:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(CLASS_NAMES))
    return {name: int(count) for name, count in zip(CLASS_NAMES, counts)}


def _hub_splits(args) -> Splits:
    files_dir = Path(args.cache_dir) / "hub_videos"
    return load_hub_splits(args.dataset_name, args.dataset_config_name, args.video_column, args.label_column, files_dir)


def _with_videos(rows: list[Row] | None, source: str) -> list[Row]:
    if not rows:
        raise TrainingError(f"{source}: no videos")
    return rows


def _validation_rows(source: str) -> list[Row]:
    """--validation_dir's validation split, or its only split."""
    splits = load_splits(source)
    if "validation" in splits:
        return _with_videos(splits["validation"], source)
    if len(splits) == 1:
        return _with_videos(next(iter(splits.values())), source)
    raise TrainingError(f"{source}: no validation split to validate on (it has: {', '.join(sorted(splits))})")


def _training_rows(args) -> tuple[list[Row], list[Row] | None, str]:
    """(train, the given validation or None, where that comes from)."""
    source = args.train_dir or f"--dataset_name {args.dataset_name}"
    splits = load_splits(args.train_dir) if args.train_dir else _hub_splits(args)
    if "train" not in splits:
        raise TrainingError(f"{source}: no training split (it has: {', '.join(sorted(splits))})")
    train = _with_videos(splits["train"], source)
    if args.validation_dir:
        return train, _validation_rows(args.validation_dir), "given by --validation_dir"
    if "validation" in splits:
        return train, _with_videos(splits["validation"], source), "the training data's own validation split"
    return train, None, ""


def _set_name(source: str, rows: list[Row]) -> str:
    """An evaluation set is named after its dataset when it holds one, else after its file or folder."""
    names = {row.dataset for row in rows}
    if len(names) == 1 and next(iter(names)):
        return next(iter(names))
    return Path(source_path(source)).stem or str(source)


def _evaluation_sets(args) -> dict[str, EvaluationSet]:
    """
    --eval_split's rows (by default the first of test, validation, train) of each evaluation set, by name: with
    --do_eval --dataset_name's too. A set is named after its dataset when it holds one, else after its source.
    """
    sources = [None] if args.do_eval and args.dataset_name else []  # None: --dataset_name
    sets = {}
    for eval_dir in [*sources, *(args.eval_dir or ())]:
        source = eval_dir or f"--dataset_name {args.dataset_name}"
        splits = load_splits(eval_dir) if eval_dir else _hub_splits(args)
        split = choose_split(splits, args.eval_split, source)
        rows = _with_videos(splits[split], source)
        name = _set_name(source, rows)
        unique, number = name, 2
        while unique in sets:  # two test/ folders, or two manifests of one dataset
            unique, number = f"{name}-{number}", number + 1
        sets[unique] = EvaluationSet(split, rows)
    return sets


def training_crop(args, train: list[Row]) -> str | None:
    """
    "face" when training videos are face crops (a manifest's `crop: face`, e.g. DeepfakeBench's frames): a model that
    learned faces must crop faces when it predicts, so the export's processor says `crop: face`. --crop frame is
    then refused rather than exported as a model that would see whole frames.
    """
    faces = [row for row in train if row.crop == "face"]
    if not faces:
        return None
    if args.crop == "frame":
        raise TrainingError(
            f"--crop frame: {len(faces)} of the {len(train)} training videos are face crops (e.g. {faces[0].path}); a "
            "model trained on them must crop faces when it predicts: leave --crop out, or pass --crop face"
        )
    return "face"


def load_tables(args, accelerator) -> VideoTables:
    """The run's rows, read and checked (sources, labels, splits, overlaps, crop) before any model loads."""
    with main_process_first(accelerator):  # the main process writes a Hub dataset's embedded videos to files once
        if args.do_eval:
            return VideoTables(evaluation=_evaluation_sets(args))
        train, validation, validation_source = _training_rows(args)
        evaluation = _evaluation_sets(args)
    sets = {"train": train, "validation": validation or []}
    sets.update({f"evaluation set {name}": evaluated.rows for name, evaluated in evaluation.items()})
    overlaps = check_overlaps(sets, args.allow_overlap)
    crop = training_crop(args, train)
    return VideoTables(train, validation, validation_source, evaluation, overlaps, crop)


class CachedVideos(torch.utils.data.Dataset):
    """Videos read from the frame cache: {"frames": uint8 (T, 3, S, S), "labels": 0 or 1}, degraded by `augment`."""

    def __init__(self, frames: datasets.Dataset, rows: list[int], labels: list[int], augment=None):
        self.frames, self.rows, self.labels, self.augment = frames, rows, labels, augment

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        frames = self.frames[self.rows[index]]["frames"]
        return {"frames": self.augment(frames) if self.augment else frames, "labels": self.labels[index]}


@dataclass
class VideoData:
    """The run's readable videos, by role, the row of each in the frame cache, and how they were split."""

    frames: datasets.Dataset
    row_of_video: dict[str, int]
    unreadable: dict[str, str]  # video -> the one-line reason it was left out
    train: list[Row] | None = None
    validation: list[Row] | None = None
    evaluation: dict[str, EvaluationSet] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # unreadable videos of each evaluation set
    split: dict = field(default_factory=dict)  # how train and validation were split, and what they share

    def cached_videos(self, rows: list[Row], augment=None) -> CachedVideos:
        labels = [CLASS_NAMES.index(row.label) for row in rows]
        return CachedVideos(self.frames, [self.row_of_video[row.path] for row in rows], labels, augment)

    def readable(self, rows: list[Row], what: str) -> list[Row]:
        """The rows whose video could be read; refuses a set of which none could."""
        readable = [row for row in rows if row.path in self.row_of_video]
        if rows and not readable:
            first = self.unreadable[rows[0].path]
            raise TrainingError(f"none of the {len(rows)} videos of {what} could be read; the first: {first}")
        return readable


def _decode_all(args, accelerator, rows: list[Row], processor) -> tuple[datasets.Dataset, dict, dict]:
    """
    (frames, row of each readable video in them, reason of each unreadable one): every video decoded into the frame
    cache, each process its share (`frame_cache.fill`), this machine's decoders and threads shared among its
    processes. Face crops (`crop: face`) are decoded as they are, through a processor that crops nothing, also for a
    model that crops faces: cropping a face crop again would not reproduce it.
    """
    as_they_are = copy.deepcopy(processor)
    as_they_are.crop = "frame"
    groups = {}  # crop -> (the processor that decodes them, their videos: a dict keeps each once, in order)
    for row in rows:
        chosen = as_they_are if row.crop == "face" else processor
        _, videos = groups.setdefault(chosen.crop, (chosen, {}))
        videos[row.path] = None
    sharing = processes_on_this_machine(accelerator)
    num_proc = max(1, args.preprocessing_num_workers // sharing)
    threads = max(1, decoding_threads() // sharing)
    tables, row_of_video, unreadable, offset, decoded = [], {}, {}, 0, 0
    started = time.perf_counter()
    for chosen, videos in groups.values():
        videos = list(videos)
        cache = FrameCache(args.cache_dir, chosen, cpu_threads=threads)
        decoded += fill(cache, videos, accelerator, num_proc)
        frames, cache_rows, failures = cache.read(videos)
        reasons = iter(failures)
        for video, row in zip(videos, cache_rows):
            if row is None:
                unreadable[video] = next(reasons)
            else:
                row_of_video[video] = offset + row
        tables.append(frames)
        offset += len(frames)
    seconds = time.perf_counter() - started
    rate = f" ({decoded / seconds:.2f} videos/s)" if decoded else ""
    logger.info(
        f"Process {accelerator.process_index} of {accelerator.num_processes} decoded {decoded} videos into the frame "
        f"cache in {seconds:.1f} s{rate}",
        main_process_only=False,
    )
    frames = tables[0] if len(tables) == 1 else datasets.concatenate_datasets(tables)
    # dtype: datasets' numpy format would otherwise widen uint8 to int64 (8x the memory per batch).
    return frames.with_format("numpy", dtype=np.uint8), row_of_video, unreadable


def load_frames(args, accelerator, tables: VideoTables, processor) -> VideoData:
    """
    Every video of `tables` decoded into the frame cache (or found there) in one pass; an unreadable video is warned
    about on one line and left out. Without a validation split, one is held out of the readable training videos: by
    identity group when they have groups, else stratified (`splits.hold_out_validation`).
    """
    evaluated = [row for evaluation in tables.evaluation.values() for row in evaluation.rows]
    rows = [*(tables.train or ()), *(tables.validation or ()), *evaluated]
    frames, row_of_video, unreadable = _decode_all(args, accelerator, rows, processor)
    for reason in unreadable.values():
        logger.warning(f"Skipping unreadable video {reason}")
    data = VideoData(frames, row_of_video, unreadable)
    for name, evaluation in tables.evaluation.items():
        data.evaluation[name] = EvaluationSet(
            evaluation.split, data.readable(evaluation.rows, f"evaluation set {name}")
        )
        data.skipped[name] = sum(row.path in unreadable for row in evaluation.rows)
        faces = sum(row.crop == "face" for row in evaluation.rows)
        if faces and processor.crop == "frame":
            logger.warning(
                f"Evaluation set {name}: {faces} of its videos are face crops, but the model sees whole frames "
                "(crop: frame), so they are unlike anything it trained on"
            )
    if args.do_eval:
        return data
    data.train = data.readable(tables.train, "the training data")
    if tables.validation is None:
        data.train, data.validation, policy = hold_out_validation(
            data.train, args.validation_split_percentage, args.seed
        )
    else:
        data.validation = data.readable(tables.validation, "the validation data")
        policy = {"validation": "given", "source": tables.validation_source}
    data.split = {
        **policy,
        "leakage": leakage_figures(data.train, data.validation),
        "overlaps": tables.overlaps,
        "allow_overlap": args.allow_overlap,
    }
    return data


def make_eval_dataloader(args, data: VideoData, rows: list[Row]) -> DataLoader:
    return DataLoader(
        data.cached_videos(rows),
        batch_size=args.per_device_eval_batch_size,
        num_workers=args.dataloader_num_workers,
        pin_memory=torch.cuda.is_available(),
    )


def make_train_dataloader(args, data: VideoData) -> tuple[DataLoader, torch.Generator]:
    """
    The training DataLoader and its sampler's generator. The generator is reseeded every epoch (see main), so the order
    of epoch e depends only on (seed, e), which is what makes a mid-epoch resume exact.
    """
    labels = np.asarray([CLASS_NAMES.index(row.label) for row in data.train], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    if (counts == 0).any():
        raise TrainingError(f"the training data needs both classes, got {class_counts(labels)}")
    augment = RobustAugmentation() if args.augment == "robust" else None
    dataset = data.cached_videos(data.train, augment)
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
