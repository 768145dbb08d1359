import random

import pytest

from edgeclf.data.folders import ImageFolder, scan_folder
from edgeclf.data.splits import split_folder
from edgeclf.errors import DataError, UsageError

from _data_helpers import make_folder


def fake_folder(counts, *, shuffle_seed=None):
    files = [(f"/d/c{c}/img{i:04d}.png", c) for c, n in enumerate(counts) for i in range(n)]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(files)
    return ImageFolder(root="/d", class_names=tuple(f"c{c}" for c in range(len(counts))), files=tuple(files))


def test_same_seed_same_files_whatever_the_listing_order():
    a = split_folder(fake_folder([50, 30, 20]), val_split=0.2, seed=7)
    b = split_folder(fake_folder([50, 30, 20], shuffle_seed=1), val_split=0.2, seed=7)
    assert a.train == b.train and a.val == b.val


def test_different_seed_different_files():
    a = split_folder(fake_folder([50, 30]), val_split=0.2, seed=1)
    b = split_folder(fake_folder([50, 30]), val_split=0.2, seed=2)
    assert set(a.val) != set(b.val)
    assert len(a.val) == len(b.val)


def test_stratified_and_disjoint_and_complete():
    counts = [100, 40, 11]
    s = split_folder(fake_folder(counts), val_split=0.2, test_split=0.1, seed=123)
    for c, n in enumerate(counts):
        val = sum(1 for _, y in s.val if y == c)
        test = sum(1 for _, y in s.test if y == c)
        assert val == round(0.2 * n) or abs(val - 0.2 * n) <= 1, f"class {c}: {val} val of {n}"
        assert abs(test - 0.1 * n) <= 1, f"class {c}: {test} test of {n}"
    all_items = s.train + s.val + s.test
    assert len(all_items) == sum(counts)
    assert len(set(all_items)) == sum(counts), "a file in two splits"


def test_tiny_class_still_gets_one_val_and_one_train():
    s = split_folder(fake_folder([2, 20]), val_split=0.1, seed=0)
    assert sum(1 for _, y in s.val if y == 0) == 1
    assert sum(1 for _, y in s.train if y == 0) == 1


def test_val_dir_with_other_classes_is_refused(tmp_path):
    train = scan_folder(make_folder(tmp_path / "train", {"cat": 2, "dog": 2}))
    val = scan_folder(make_folder(tmp_path / "val", {"cat": 2, "fox": 2}))
    with pytest.raises(DataError, match="only in the training data: dog; only in --val-dir: fox"):
        split_folder(train, val_folder=val)


def test_val_dir_trains_on_all_and_carves_test_from_val(tmp_path):
    train = scan_folder(make_folder(tmp_path / "train", {"cat": 5, "dog": 5}))
    val = scan_folder(make_folder(tmp_path / "val", {"cat": 4, "dog": 4}))
    s = split_folder(train, val_folder=val, test_split=0.5, seed=3)
    assert len(s.train) == 10 and len(s.val) == 4 and len(s.test) == 4
    assert s.to_dict()["val_dir"] == str(val.root)


@pytest.mark.parametrize("val, test", [(1.0, 0.0), (-0.1, 0.0), (0.5, 0.5), (0.2, 1.0)])
def test_bad_fractions_are_usage_errors(val, test):
    with pytest.raises(UsageError):
        split_folder(fake_folder([10, 10]), val_split=val, test_split=test)


def test_split_dict_matches_contract():
    d = split_folder(fake_folder([5, 5]), seed=9, skipped=[("/d/bad.png", "corrupt")]).to_dict()
    assert "class_names" not in d, "the labels live in the run's spec.json, once"
    assert set(d) >= {"root", "seed", "val_split", "test_split", "train", "val", "test", "skipped"}
    assert all(isinstance(p, str) and type(y) is int for p, y in d["train"] + d["val"])
    assert d["skipped"] == [["/d/bad.png", "corrupt"]]


def _named_folder(counts: dict):
    names = tuple(sorted(counts))
    files = [(f"/d/{n}/img{i:04d}.png", ci) for ci, n in enumerate(names) for i in range(counts[n])]
    return ImageFolder(root="/d", class_names=names, files=tuple(files))


def _of_class(items, label):
    return [p for p, y in items if y == label]


def test_adding_a_file_to_one_class_leaves_the_other_classes_split_alone():
    before = split_folder(_named_folder({"a": 20, "b": 30}), val_split=0.2, test_split=0.2, seed=5)
    after = split_folder(_named_folder({"a": 21, "b": 30}), val_split=0.2, test_split=0.2, seed=5)
    assert _of_class(before.val, 1) == _of_class(after.val, 1)
    assert _of_class(before.test, 1) == _of_class(after.test, 1)
    # a new class (sorting before b, so b's label index moves) does not move b's files either
    more = split_folder(_named_folder({"a": 20, "aa": 7, "b": 30}), val_split=0.2, test_split=0.2, seed=5)
    assert _of_class(before.val, 1) == _of_class(more.val, 2)
    assert _of_class(before.test, 1) == _of_class(more.test, 2)


def test_val_dir_that_is_or_shares_files_with_the_data_is_refused(tmp_path):
    train = scan_folder(make_folder(tmp_path / "train", {"cat": 3, "dog": 3}))
    with pytest.raises(DataError, match="--val-dir .* the training data"):
        split_folder(train, val_folder=train)
    other = scan_folder(make_folder(tmp_path / "val", {"cat": 2, "dog": 2}))
    mixed = ImageFolder(root=other.root, class_names=other.class_names,
                        files=other.files + (train.files[0],))
    with pytest.raises(DataError, match="cat_000.png"):
        split_folder(train, val_folder=mixed)
