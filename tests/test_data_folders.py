import os

import pytest

from edgeclf.data.folders import drop_bad, scan_folder
from edgeclf.errors import DataError

from _data_helpers import make_folder, write_image


def test_classes_sorted_files_absolute_and_labelled(tmp_path):
    make_folder(tmp_path, {"zebra": 2, "apple": 3, "Mango": 1})
    f = scan_folder(tmp_path)
    assert f.class_names == ("Mango", "apple", "zebra"), "sorted as Keras sorts (plain string order)"
    assert f.counts() == {"Mango": 1, "apple": 3, "zebra": 2}
    assert all(os.path.isabs(p) for p in f.paths)
    for p, y in f.files:
        assert os.path.basename(os.path.dirname(p)) == f.class_names[y]


def test_hidden_files_and_folders_ignored_nested_images_found(tmp_path):
    make_folder(tmp_path, {"a": 1, "b": 1})
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    write_image(tmp_path / "a" / ".hidden.png")
    write_image(tmp_path / ".git" / "x.png")
    write_image(tmp_path / "b" / "sub" / "deep.png")
    (tmp_path / "b" / "notes.txt").write_text("hello")
    f = scan_folder(tmp_path)
    assert f.class_names == ("a", "b")
    names = sorted(os.path.basename(p) for p in f.paths)
    assert names == ["a_000.png", "b_000.png", "deep.png"]
    assert [os.path.basename(p) for p, _ in f.ignored] == ["notes.txt"]


def test_unicode_and_space_names(tmp_path):
    write_image(tmp_path / "chats noirs" / "été 1.png")
    write_image(tmp_path / "犬" / "写真 2.jpg")
    f = scan_folder(tmp_path)
    assert f.class_names == ("chats noirs", "犬")
    assert len(f.files) == 2


def test_symlink_loop_does_not_hang(tmp_path):
    make_folder(tmp_path, {"a": 2, "b": 1})
    os.symlink(tmp_path / "a", tmp_path / "a" / "loop")
    os.symlink(tmp_path, tmp_path / "b" / "up")
    f = scan_folder(tmp_path)
    assert f.counts()["a"] == 2, "the loop must not repeat a's images"


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "does not exist"),
    (lambda p: p.mkdir(), "is empty"),
    (lambda p: make_folder(p, {"only": 2}), "one class"),
    (lambda p: (make_folder(p, {"a": 2}), (p / "b").mkdir()), "holds no images"),
    (lambda p: [write_image(p / f"img{i}.png") for i in range(3)], "no class folders"),
])
def test_unusable_datasets_give_one_clear_error(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=message):
        scan_folder(root)


def test_images_at_root_say_the_likely_mistake(tmp_path):
    for i in range(3):
        write_image(tmp_path / f"cat{i}.jpg")
    with pytest.raises(DataError) as e:
        scan_folder(tmp_path)
    assert "3 images but no class folders" in str(e.value)
    assert "subfolder" in str(e.value)


def test_drop_bad_fails_when_a_class_ends_empty(tmp_path):
    make_folder(tmp_path, {"a": 2, "b": 1})
    f = scan_folder(tmp_path)
    b_file = [p for p, y in f.files if y == 1][0]
    with pytest.raises(DataError, match="'b'.*no readable images"):
        drop_bad(f, {b_file: "corrupt"})
    a_file = [p for p, y in f.files if y == 0][0]
    assert len(drop_bad(f, {a_file: "corrupt"}).files) == 2


def test_inspect_opens_each_image_once_and_reports_modes_and_bad_files(tmp_path, monkeypatch):
    from PIL import Image

    from edgeclf.data.inspect import inspect_folder

    root = make_folder(tmp_path / "d", {"a": 2, "b": 1})
    Image.new("L", (5, 4), 9).save(root / "b" / "grey.png")
    (root / "a" / "page.png").write_text("<html>not an image</html>")
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: opened.append(str(fp)) or real_open(fp, *a, **k))
    r = inspect_folder(root)
    assert sorted(opened) == sorted(set(opened)) and len(opened) == 5, opened
    assert r.counts == {"a": 2, "b": 2} and r.modes == {"RGB": 3, "L": 1}
    assert [os.path.basename(p) for p, _ in r.bad] == ["page.png"] and "not an image" in r.bad[0][1]
