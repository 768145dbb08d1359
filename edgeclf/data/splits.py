"""Seeded, stratified splits: the same files land in the same split every time.

A file's place depends only on the seed and the sorted list of files in its class, never on
the order the file system lists them or on the machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError, UsageError
from .folders import ImageFolder

Item = tuple[str, int]


@dataclass(frozen=True)
class Split:
    """Which files went where. Items are ``(absolute path, label index)``."""

    class_names: tuple[str, ...]
    train: tuple[Item, ...]
    val: tuple[Item, ...]
    test: tuple[Item, ...] = ()
    seed: int = 123
    val_split: float | None = 0.2
    test_split: float = 0.0
    root: str = ""
    val_root: str | None = None
    skipped: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        d = {
            "root": self.root,
            "class_names": list(self.class_names),
            "seed": self.seed,
            "val_split": self.val_split,
            "test_split": self.test_split,
            "train": [list(t) for t in self.train],
            "val": [list(t) for t in self.val],
            "test": [list(t) for t in self.test],
            "skipped": [list(t) for t in self.skipped],
        }
        if self.val_root:
            d["val_dir"] = self.val_root
        return d


def _check_fraction(name: str, value: float) -> None:
    if not (0.0 <= value < 1.0):
        raise UsageError(f"{name} must be a fraction in [0, 1); got {value}")


def _carve(items: list[Item], fraction: float, rng: np.random.Generator) -> tuple[list[Item], list[Item]]:
    """Take ``fraction`` of each class out of ``items`` (at least one per class when the class
    has two or more files and fraction > 0). Returns (kept, taken)."""
    by_class: dict[int, list[Item]] = {}
    for it in items:
        by_class.setdefault(it[1], []).append(it)
    kept: list[Item] = []
    taken: list[Item] = []
    for label in sorted(by_class):
        group = sorted(by_class[label])
        order = rng.permutation(len(group))
        k = int(round(fraction * len(group))) if fraction > 0 else 0
        if fraction > 0 and len(group) >= 2:
            k = min(max(k, 1), len(group) - 1)
        elif len(group) < 2:
            k = 0
        take = set(order[:k].tolist())
        for i, it in enumerate(group):
            (taken if i in take else kept).append(it)
    return sorted(kept, key=lambda t: (t[1], t[0])), sorted(taken, key=lambda t: (t[1], t[0]))


def check_same_classes(folder: ImageFolder, val_folder: ImageFolder) -> None:
    """Raise DataError unless ``val_folder`` has exactly the class folders of ``folder``."""
    if tuple(val_folder.class_names) == tuple(folder.class_names):
        return
    only_train = sorted(set(folder.class_names) - set(val_folder.class_names))
    only_val = sorted(set(val_folder.class_names) - set(folder.class_names))
    detail = []
    if only_train:
        detail.append(f"only in the training data: {', '.join(only_train)}")
    if only_val:
        detail.append(f"only in --val-dir: {', '.join(only_val)}")
    raise DataError(
        f"the classes of --val-dir {val_folder.root} differ from those of {folder.root} "
        f"({'; '.join(detail)}); both need the same class folders"
    )


def split_folder(folder: ImageFolder, *, val_split: float = 0.2, test_split: float = 0.0, seed: int = 123,
                 val_folder: ImageFolder | None = None, skipped=()) -> Split:
    """Split ``folder`` into train / val (/ test), stratified by class and seeded.

    With ``val_folder`` (``--val-dir``) all of ``folder`` trains, validation comes from
    ``val_folder`` (whose classes must match) and the test split is carved out of it, as the
    cats-vs-dogs tutorial carves its test set from validation. Otherwise ``val_split`` and
    ``test_split`` are fractions of every class.

    Raises:
        UsageError: a fraction outside [0, 1) or fractions that leave nothing to train on.
        DataError: ``val_folder`` classes differ, or a split comes out empty.
    """
    _check_fraction("--test-split", test_split)
    rng = np.random.default_rng(seed)
    items = list(folder.files)
    if val_folder is not None:
        check_same_classes(folder, val_folder)
        train = sorted(items, key=lambda t: (t[1], t[0]))
        val, test = _carve(list(val_folder.files), test_split, rng)
        vs = None
    else:
        _check_fraction("--val-split", val_split)
        if val_split + test_split >= 1.0:
            raise UsageError(f"--val-split {val_split} plus --test-split {test_split} leave nothing to train on")
        rest, test = _carve(items, test_split, rng)
        # val_split is a fraction of the whole class, so compute it relative to what is left.
        frac = val_split / (1.0 - test_split) if test_split else val_split
        train, val = _carve(rest, frac, rng)
        vs = val_split
    if not train:
        raise DataError(f"no training images left in {folder.root}")
    if not val and (val_folder is not None or vs):
        raise DataError(f"the validation split of {folder.root} came out empty; add images or raise --val-split")
    return Split(
        class_names=tuple(folder.class_names), train=tuple(train), val=tuple(val), test=tuple(test),
        seed=seed, val_split=vs, test_split=test_split, root=str(folder.root),
        val_root=str(val_folder.root) if val_folder is not None else None, skipped=tuple(skipped),
    )
