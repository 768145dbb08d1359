"""Seeded, stratified splits: the same files land in the same split every time.

A file's place depends only on the seed, its class's name and the sorted list of files in its
class: never on the order the file system lists them, on the machine, or on the other classes
(each class, and each carve -- test, then validation -- draws from its own random stream keyed
by ``(seed, crc32(class name), carve)``; adding a file to one class or adding a class leaves
every other class's split unchanged).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError, UsageError
from ..runtime.spec import DEFAULT_SEED, DEFAULT_TEST_SPLIT, DEFAULT_VAL_SPLIT
from .folders import ImageFolder

Item = tuple[str, int]


@dataclass(frozen=True)
class Split:
    """Which files went where. Items are ``(absolute path, label index)``."""

    class_names: tuple[str, ...]
    train: tuple[Item, ...]
    val: tuple[Item, ...]
    test: tuple[Item, ...] = ()
    seed: int = DEFAULT_SEED
    val_split: float | None = DEFAULT_VAL_SPLIT
    test_split: float = 0.0
    root: str = ""
    val_root: str | None = None
    skipped: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        d = {
            "root": self.root,
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


_TEST_CARVE, _VAL_CARVE = 0, 1


def _class_rng(seed: int, class_name: str, carve: int) -> np.random.Generator:
    """The random stream of one class in one carve: independent of every other class."""
    return np.random.default_rng([int(seed) % (1 << 64), zlib.crc32(class_name.encode("utf-8")), carve])


def _carve(items: list[Item], fraction: float, seed: int, class_names, carve: int) -> tuple[list[Item], list[Item]]:
    """Take ``fraction`` of each class out of ``items`` (at least one per class when the class
    has two or more files and fraction > 0). Returns (kept, taken). Each class is shuffled by
    its own stream (``_class_rng``), so one class's files never move another's."""
    by_class: dict[int, list[Item]] = {}
    for it in items:
        by_class.setdefault(it[1], []).append(it)
    kept: list[Item] = []
    taken: list[Item] = []
    for label in sorted(by_class):
        group = sorted(by_class[label])
        order = _class_rng(seed, class_names[label], carve).permutation(len(group))
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


def check_no_overlap(folder: ImageFolder, val_folder: ImageFolder) -> None:
    """Raise DataError when ``val_folder`` (``--val-dir``) is ``folder`` or holds any of its files
    (validation images that are also training images make the validation accuracy meaningless)."""
    import os

    same_root = os.path.realpath(str(folder.root)) == os.path.realpath(str(val_folder.root))
    train = {os.path.realpath(p) for p, _ in folder.files}
    shared = sorted(p for p, _ in val_folder.files if os.path.realpath(p) in train)
    if same_root or shared:
        what = "is" if same_root else f"shares {len(shared)} file(s) with"
        example = f" (e.g. {shared[0]})" if shared else ""
        raise DataError(f"--val-dir {val_folder.root} {what} the training data {folder.root}{example}; "
                        f"validation images must not be training images")


def check_val_folder(folder: ImageFolder, val_folder: ImageFolder) -> None:
    """Every check a ``--val-dir`` gets: the same classes, and no file shared with ``folder``.
    ``split_folder`` runs it; callers that decode images first run it before decoding."""
    check_same_classes(folder, val_folder)
    check_no_overlap(folder, val_folder)


def split_folder(folder: ImageFolder, *, val_split: float = DEFAULT_VAL_SPLIT, test_split: float = DEFAULT_TEST_SPLIT, seed: int = DEFAULT_SEED,
                 val_folder: ImageFolder | None = None, skipped=()) -> Split:
    """Split ``folder`` into train / val (/ test), stratified by class and seeded.

    With ``val_folder`` (``--val-dir``) all of ``folder`` trains, validation comes from
    ``val_folder`` (whose classes must match) and the test split is carved out of it, as the
    cats-vs-dogs tutorial carves its test set from validation. Otherwise ``val_split`` and
    ``test_split`` are fractions of every class.

    Raises:
        UsageError: a fraction outside [0, 1) or fractions that leave nothing to train on.
        DataError: ``val_folder`` classes differ or it shares files with ``folder``, or a split
            comes out empty.
    """
    _check_fraction("--test-split", test_split)
    items = list(folder.files)
    if val_folder is not None:
        check_val_folder(folder, val_folder)
        train = sorted(items, key=lambda t: (t[1], t[0]))
        val, test = _carve(list(val_folder.files), test_split, seed, folder.class_names, _TEST_CARVE)
        vs = None
    else:
        _check_fraction("--val-split", val_split)
        if val_split + test_split >= 1.0:
            raise UsageError(f"--val-split {val_split} plus --test-split {test_split} leave nothing to train on")
        rest, test = _carve(items, test_split, seed, folder.class_names, _TEST_CARVE)
        # val_split is a fraction of the whole class, so compute it relative to what is left.
        frac = val_split / (1.0 - test_split) if test_split else val_split
        train, val = _carve(rest, frac, seed, folder.class_names, _VAL_CARVE)
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
