"""
How a run's videos are split, and the guard that keeps the split honest.

- Validation, when none is given: rows with identity groups (a manifest's `group`) are split by identity
  (`dfd.tools.data.splits.split_by_identity`), so that no actor, celebrity or source video is both trained and
  validated on. The recipe's plain stratified split is kept only for videos without groups (folders of real/ and
  fake/), where the model card says that what the two splits share cannot be measured.
- The overlap guard: train, validation and each evaluation set may share no video and no identity group, unless
  --allow_overlap: a detector scored on faces it trained on can score well by recognising them.
- The leakage figures that metrics.json and the model card report.
"""

import os
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..data import LABELS, Row, SplitError
from ..data.splits import split_by_identity
from .errors import TrainingError


TRAINING_ROLES = ("train", "validation")


def identities(rows: list[Row]) -> set[tuple[str, str]]:
    """The identity groups of `rows`, each with its dataset: `000` of FaceForensics++ is not `000` of another."""
    return {(row.dataset, identity) for row in rows for identity in row.identities}


def _paths(rows: list[Row]) -> set[str]:
    return {os.path.realpath(row.path) for row in rows}


@dataclass(frozen=True)
class Overlap:
    """Two sets of a run that share videos or identity groups."""

    first: str
    second: str
    videos: int
    groups: int

    def describe(self) -> str:
        return f"{self.first} and {self.second} share {self.videos} videos and {self.groups} identity groups"


def find_overlaps(sets: dict[str, list[Row]]) -> list[Overlap]:
    """
    Every pair of `sets` (role or evaluation set name -> rows) that shares a video or an identity group, where one of
    the two is trained or validated on: two evaluation sets that share videos measure nothing twice, they just agree.
    """
    names = [name for name, rows in sets.items() if rows]
    overlaps = []
    for position, first in enumerate(names):
        for second in names[position + 1 :]:
            if first not in TRAINING_ROLES and second not in TRAINING_ROLES:
                continue
            videos = len(_paths(sets[first]) & _paths(sets[second]))
            groups = len(identities(sets[first]) & identities(sets[second]))
            if videos or groups:
                overlaps.append(Overlap(first, second, videos, groups))
    return overlaps


def check_overlaps(sets: dict[str, list[Row]], allow: bool) -> list[dict]:
    """The overlaps of `sets` as metrics.json records them; a TrainingError listing them unless `allow`."""
    overlaps = find_overlaps(sets)
    if overlaps and not allow:
        raise TrainingError(
            f"{'; '.join(overlap.describe() for overlap in overlaps)}: a model validated or tested on videos or "
            "identities it trained on measures recognition, not detection; pass --allow_overlap to proceed anyway "
            "(recorded in metrics.json and the model card)"
        )
    return [asdict(overlap) for overlap in overlaps]


def stratified_split(rows: list[Row], percentage: float, seed: int) -> tuple[list[Row], list[Row]]:
    """
    (train, validation): the recipe's seeded split that keeps the class ratio, with at least one video of each class
    on each side. Rows keep their order.
    """
    counts = {label: sum(row.label == label for row in rows) for label in LABELS}
    if min(counts.values()) < 2:
        raise TrainingError(
            f"{counts['real']} real and {counts['fake']} fake readable training videos are too few to hold out a "
            "validation split with both classes: give --validation_dir"
        )
    num_validation = max(len(LABELS), round(len(rows) * percentage / 100))
    rng = np.random.default_rng(seed)
    held_out = set()
    for label, count in counts.items():
        members = [index for index, row in enumerate(rows) if row.label == label]
        share = min(count - 1, max(1, round(num_validation * count / len(rows))))
        held_out.update(rng.permutation(members)[:share].tolist())
    train = [row for index, row in enumerate(rows) if index not in held_out]
    return train, [row for index, row in enumerate(rows) if index in held_out]


def identity_split(rows: list[Row], percentage: float, seed: int) -> tuple[list[Row], list[Row], int]:
    """
    (train, validation, excluded): `split_by_identity` over the rows' dataset-qualified groups, a row without a group
    being its own. Excluded rows (a fake whose identities fell on both sides) are used by neither.
    """
    # Groups join identities with "+", which dataset names and paths may hold (FaceForensics++): number them instead.
    number = {}
    for row in rows:
        for identity in row.identities:
            number.setdefault((row.dataset, identity), str(len(number)))
    keyed = [
        replace(row, group="+".join(number[row.dataset, name] for name in row.identities) or f"video{index}")
        for index, row in enumerate(rows)
    ]
    try:
        assigned = split_by_identity(keyed, {"validation": percentage / 100}, seed)
    except SplitError as error:
        raise TrainingError(f"the training videos' validation split: {error}; give --validation_dir") from None
    # split_by_identity keeps the rows' order.
    split_of = [row.split for row in assigned]
    train = [row for row, split in zip(rows, split_of) if split == "train"]
    validation = [row for row, split in zip(rows, split_of) if split == "validation"]
    return train, validation, split_of.count("excluded")


def hold_out_validation(rows: list[Row], percentage: float, seed: int) -> tuple[list[Row], list[Row], dict]:
    """
    (train, validation, how they were split) from training rows without a validation split: by identity when the rows
    have groups, else stratified.
    """
    if any(row.group for row in rows):
        train, validation, excluded = identity_split(rows, percentage, seed)
        policy = {"validation": "identity", "percentage": percentage, "seed": seed, "excluded": excluded}
        return train, validation, policy
    train, validation = stratified_split(rows, percentage, seed)
    return train, validation, {"validation": "stratified", "percentage": percentage, "seed": seed, "excluded": 0}


def leakage_figures(train: list[Row], validation: list[Row]) -> dict:
    """What the validation videos share with the training videos: identity groups, and the videos themselves."""
    trained = identities(train)
    held_out = identities(validation)
    return {
        "groups_known": bool(held_out),
        "validation_groups": len(held_out),
        "shared_groups": len(held_out & trained),
        "validation_videos": len(validation),
        "videos_sharing_a_group": sum(bool(identities([row]) & trained) for row in validation),
        "shared_videos": len(_paths(train) & _paths(validation)),
    }
