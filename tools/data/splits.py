"""
Splits that measure detection: no identity (an actor, a celebrity, a source video) in two splits.

A plain stratified split of a dataset where one actor appears in dozens of videos puts that actor's face on both
sides: the model is then validated on people it was trained on, and a detector that recognises faces scores well.
Here rows are split by their `group` (identities joined by `+`):

- identities joined by a row (a fake made of a target and a source) form a connected component; a component small
  enough for the smallest held-out split moves whole, so nothing is lost;
- a component too large for that (DeepFakeDetection's 28 actors, each paired with many others, form one) is cut at its
  identities, taken breadth-first so that a held-out split gets actors paired with each other, and a fake whose
  identities still land in different splits becomes `excluded`: kept in the manifest, never used.

The assignment is seeded and deterministic; every split it returns holds both classes.
"""

import random
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from .manifest import Row


# Most held-out first: a video listed in several splits is kept in the first of these it is listed in.
HELD_OUT_ORDER = ("test", "validation", "train")
ATTEMPTS = 100


class SplitError(ValueError):
    """The rows cannot be split with both classes in every split."""


def most_held_out(splits) -> str:
    """Of the split names a video is listed in, the one furthest from training."""
    splits = set(splits)
    return next(name for name in HELD_OUT_ORDER if name in splits)


def _components(rows: list[Row]) -> list[list[str]]:
    """Identities joined by a row, as sorted lists, in sorted order (union-find)."""
    parent = {}

    def find(identity):
        parent.setdefault(identity, identity)
        while parent[identity] != identity:
            parent[identity] = parent[parent[identity]]
            identity = parent[identity]
        return identity

    for row in rows:
        first, *others = row.identities
        root = find(first)
        for other in others:
            parent[find(other)] = root
    members = defaultdict(list)
    for identity in parent:
        members[find(identity)].append(identity)
    return sorted(sorted(component) for component in members.values())


def _units(rows: list[Row], smallest_target: float, rng: random.Random) -> list[tuple[list[str], float]]:
    """
    (identities that move together, the rows they weigh), in the order splits are filled: a component small enough
    moves whole; a larger one gives its identities one by one in breadth-first order from a random start, so that a
    held-out split takes identities joined by fakes (which stay usable) rather than scattered ones (whose fakes would
    be excluded). Components come in a seeded random order.
    """
    weight, neighbours = defaultdict(float), defaultdict(set)
    for row in rows:
        for identity in row.identities:
            weight[identity] += 1 / len(row.identities)
            neighbours[identity].update(row.identities)
    blocks = []
    for component in _components(rows):
        total = sum(weight[identity] for identity in component)
        if total <= smallest_target:
            blocks.append([(component, total)])
            continue
        start = rng.choice(component)
        order, seen, queue = [start], {start}, deque([start])
        while queue:
            following = sorted(neighbours[queue.popleft()] - seen)
            rng.shuffle(following)
            seen.update(following)
            order += following
            queue.extend(following)
        blocks.append([([identity], weight[identity]) for identity in order])
    rng.shuffle(blocks)
    return [unit for block in blocks for unit in block]


def _assign(rows: list[Row], shares: dict[str, float], rng: random.Random) -> list[Row]:
    """Fill each held-out split in turn up to its share of the rows and until it holds both classes; train: the rest."""
    targets = {name: len(rows) * share for name, share in shares.items()}
    rows_of = defaultdict(list)
    for row in rows:
        for identity in row.identities:
            rows_of[identity].append(row)
    names = [*shares, "train"]
    current, filled, classes, split_of = 0, 0.0, set(), {}
    for identities, weight in _units(rows, min(targets.values()), rng):
        name = names[current]
        split_of.update(dict.fromkeys(identities, name))
        filled += weight
        # The classes of the rows this unit completes inside the split.
        for row in (row for identity in identities for row in rows_of[identity]):
            if all(split_of.get(other) == name for other in row.identities):
                classes.add(row.label)
        if name != "train" and filled >= targets[name] and len(classes) == 2:
            current, filled, classes = current + 1, 0.0, set()
    assigned = []
    for row in rows:
        splits = {split_of[identity] for identity in row.identities}
        assigned.append(replace(row, split=splits.pop() if len(splits) == 1 else "excluded"))
    return assigned


def _classes(rows: list[Row]) -> dict[str, set[str]]:
    found = defaultdict(set)
    for row in rows:
        found[row.split].add(row.label)
    return found


def split_by_identity(rows: list[Row], shares: dict[str, float], seed: int) -> list[Row]:
    """
    `rows` (their split ignored) with splits `train` and each of `shares` (e.g. {"validation": 0.1}: train gets the
    rest), no identity in two of them, and `excluded` for the rows that would join two. Seeded and deterministic; tries
    the seeds from `seed` on until every split holds both classes, and raises SplitError if none does.
    """
    rows = list(rows)
    for row in rows:
        if not row.identities:
            raise SplitError(f"{row.path}: no group (identity) to split by")
    for attempt in range(ATTEMPTS):
        assigned = _assign(rows, shares, random.Random(seed + attempt))
        classes = _classes(assigned)
        if all(len(classes[name]) == 2 for name in ("train", *shares)):
            return assigned
    counts = {label: sum(row.label == label for row in rows) for label in ("real", "fake")}
    raise SplitError(
        f"cannot split {counts['real']} real and {counts['fake']} fake videos of {len(_components(rows))} identity "
        f"groups into {', '.join(('train', *shares))} with both classes in each (tried seeds {seed} to "
        f"{seed + ATTEMPTS - 1})"
    )


@dataclass(frozen=True)
class Leakage:
    """How much of a held-out split the training split has already seen."""

    identities: int  # identities in the held-out split
    shared_identities: int  # of them, also in train
    videos: int  # videos in the held-out split
    videos_sharing_identity: int  # of them, with an identity that a training video has too
    videos_sharing_scene: int  # of them, sharing an identity and the scene with a training video (needs `scene`)

    def describe(self) -> str:
        text = (
            f"{self.shared_identities} of {self.identities} identities and {self.videos_sharing_identity} of "
            f"{self.videos} videos shared with train"
        )
        return text + (f", {self.videos_sharing_scene} sharing actor and scene" if self.videos_sharing_scene else "")


def leakage(rows: list[Row], held_out: str, scene: Callable[[Row], str] | None = None) -> Leakage:
    """The identities and videos of split `held_out` that split `train` shares; `scene(row)` names a row's scene."""
    train = [row for row in rows if row.split == "train"]
    tested = [row for row in rows if row.split == held_out]
    train_identities = {identity for row in train for identity in row.identities}
    train_scenes = {(identity, scene(row)) for row in train for identity in row.identities} if scene else set()
    tested_identities = {identity for row in tested for identity in row.identities}
    return Leakage(
        identities=len(tested_identities),
        shared_identities=len(tested_identities & train_identities),
        videos=len(tested),
        videos_sharing_identity=sum(bool(set(row.identities) & train_identities) for row in tested),
        videos_sharing_scene=sum(
            any((identity, scene(row)) in train_scenes for identity in row.identities) for row in tested
        )
        if scene
        else 0,
    )
