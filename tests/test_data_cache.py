import json
import os

import numpy as np
import pytest

from edgeclf.data.cache import cache_dir_for, decode_images
from edgeclf.runtime.preprocess import load_image

from _data_helpers import make_folder, truncated_png, write_image


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECLF_CACHE_DIR", str(tmp_path / "cache"))


def paths_of(root):
    return sorted(str(p) for p in root.rglob("*.png"))


def test_pixels_are_load_image_output_in_order(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 3, "b": 2})
    paths = paths_of(root)
    r = decode_images(paths, 8, root=root, show_progress=False)
    assert r.paths == tuple(paths)
    assert r.pixels.dtype == np.uint8 and r.pixels.shape == (5, 8, 8, 3)
    for i, p in enumerate(paths):
        np.testing.assert_array_equal(r.pixels[i], load_image(p, 8), err_msg=p)


def test_second_run_reuses_everything(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 3, "b": 2})
    first = decode_images(paths_of(root), 8, root=root, show_progress=False)
    second = decode_images(paths_of(root), 8, root=root, show_progress=False)
    assert (first.decoded, first.reused) == (5, 0)
    assert (second.decoded, second.reused) == (0, 5)
    np.testing.assert_array_equal(np.asarray(first.pixels), np.asarray(second.pixels))


def test_changed_added_and_removed_files_are_noticed(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 3, "b": 2})
    decode_images(paths_of(root), 8, root=root, show_progress=False)
    changed = root / "a" / "a_000.png"
    write_image(changed, colour=(0, 255, 0), size=(20, 20))
    st = os.stat(changed)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    added = write_image(root / "b" / "new.png", colour=(0, 0, 255))
    (root / "a" / "a_002.png").unlink()
    r = decode_images(paths_of(root), 8, root=root, show_progress=False)
    assert r.decoded == 2, "the changed and the added file"
    assert r.reused == 3
    assert len(r.paths) == 5 and str(root / "a" / "a_002.png") not in r.paths
    np.testing.assert_array_equal(r.pixels[r.paths.index(str(changed))], load_image(changed, 8))
    assert (r.pixels[r.paths.index(str(added))] == [0, 0, 255]).all()
    index = json.loads((cache_dir_for(root, 8, "bilinear") / "index.json").read_text())
    assert len(index["entries"]) == 5
    assert len(list(cache_dir_for(root, 8, "bilinear").glob("pixels-*.npy"))) == 1, "old array removed"


def test_size_and_method_are_separate_caches(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2})
    decode_images(paths_of(root), 8, root=root, show_progress=False)
    r = decode_images(paths_of(root), 6, root=root, show_progress=False)
    assert r.decoded == 4 and r.pixels.shape[1:] == (6, 6, 3)
    r = decode_images(paths_of(root), 8, root=root, resize_method="nearest", show_progress=False)
    assert r.decoded == 4
    assert decode_images(paths_of(root), 8, root=root, show_progress=False).decoded == 0


def test_bad_files_are_listed_with_reasons_and_retried_without_rewriting_the_cache(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2})
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "a" / "page.png").write_text("<html>not an image</html>")
    truncated_png(root / "b" / "cut.png")
    r = decode_images(paths_of(root), 8, root=root, show_progress=False)
    assert len(r.paths) == 4
    reasons = {os.path.basename(p): why for p, why in r.bad.items()}
    assert set(reasons) == {"empty.png", "page.png", "cut.png"}
    assert "empty" in reasons["empty.png"]
    assert "not an image" in reasons["page.png"]
    assert "truncated" in reasons["cut.png"] or "corrupt" in reasons["cut.png"]
    arrays = sorted(p.name for p in cache_dir_for(root, 8, "bilinear").glob("pixels-*.npy"))
    again = decode_images(paths_of(root), 8, root=root, show_progress=False)
    assert again.reused == 4 and again.decoded == 3 and again.bad == r.bad
    assert sorted(p.name for p in cache_dir_for(root, 8, "bilinear").glob("pixels-*.npy")) == arrays


def test_a_failure_whose_cause_was_not_the_file_is_not_remembered(tmp_path, monkeypatch):
    import functools

    from edgeclf.data import cache

    root = make_folder(tmp_path / "d", {"a": 2, "b": 2}, size=(40, 30))
    # as if EDGECLF_MAX_PIXELS had been set too low for this run
    monkeypatch.setattr(cache, "load_image", functools.partial(load_image, max_pixels=100))
    first = decode_images(paths_of(root), 8, root=root, workers=1, show_progress=False)
    assert len(first.bad) == 4 and "EDGECLF_MAX_PIXELS" in next(iter(first.bad.values()))
    monkeypatch.setattr(cache, "load_image", load_image)  # the user raised the limit
    second = decode_images(paths_of(root), 8, root=root, workers=1, show_progress=False)
    assert second.bad == {} and len(second.paths) == 4


def test_an_update_removes_only_the_array_the_old_index_named(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2})
    decode_images(paths_of(root), 8, root=root, show_progress=False)
    cdir = cache_dir_for(root, 8, "bilinear")
    previous = json.loads((cdir / "index.json").read_text())["pixels"]
    # a concurrent run's fresh array (its index lost the race, or is about to be written)
    np.save(cdir / "pixels-concurrent0.npy", np.zeros((1, 8, 8, 3), np.uint8))
    write_image(root / "a" / "new.png", seed=99)
    r = decode_images(paths_of(root), 8, root=root, show_progress=False)
    names = {p.name for p in cdir.glob("pixels-*.npy")}
    assert previous not in names
    assert "pixels-concurrent0.npy" in names, "another run's array was deleted under it"
    assert json.loads((cdir / "index.json").read_text())["pixels"] in names and len(r.paths) == 5


def test_broken_cache_is_rebuilt_not_trusted(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2})
    decode_images(paths_of(root), 8, root=root, show_progress=False)
    cdir = cache_dir_for(root, 8, "bilinear")
    for f in cdir.glob("pixels-*.npy"):
        f.write_bytes(b"garbage")
    r = decode_images(paths_of(root), 8, root=root, show_progress=False)
    assert r.decoded == 4
    np.testing.assert_array_equal(r.pixels[0], load_image(r.paths[0], 8))


def test_parallel_decode_matches_serial(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 40, "b": 40})
    serial = decode_images(paths_of(root), 8, cache=False, workers=1, show_progress=False)
    parallel = decode_images(paths_of(root), 8, root=root, workers=2, show_progress=False)
    assert serial.paths == parallel.paths
    np.testing.assert_array_equal(np.asarray(serial.pixels), np.asarray(parallel.pixels))


def test_no_cache_writes_nothing(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2})
    r = decode_images(paths_of(root), 8, cache=False, show_progress=False)
    assert r.cache_dir is None and len(r.paths) == 4
    assert not (tmp_path / "cache").exists()


def test_large_jpegs_decode_to_the_same_pixels_in_training_and_on_the_device(tmp_path):
    """Photos are decoded in JPEG draft mode (DCT-domain downscaling) for speed: the training
    cache, the device's load_image (from a path or an opened PIL image) and the Classifier's
    own preprocessing must still see exactly the same pixels."""
    from PIL import Image

    from edgeclf.runtime.preprocess import open_image

    rng = np.random.default_rng(3)
    paths = []
    for i in range(3):
        small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        p = tmp_path / f"photo{i}.jpg"
        Image.fromarray(small).resize((1600, 1200), Image.Resampling.BICUBIC).save(p, "JPEG", quality=90)
        paths.append(str(p))
    r = decode_images(paths, 96, cache=True, workers=2, show_progress=False)
    for i, p in enumerate(paths):
        device = load_image(p, 96)
        np.testing.assert_array_equal(r.pixels[i], device, err_msg=f"{p}: cache vs load_image")
        with Image.open(p) as im:
            np.testing.assert_array_equal(load_image(im, 96), device, err_msg=f"{p}: PIL image vs path")
        # draft mode really is on: the decoded image is smaller than the file
        assert max(open_image(p, draft_to=(96, 96)).size) < 1600
