import hashlib

import numpy as np
import pytest
from click.testing import CliRunner

from edgeclf.cli import main
from edgeclf.data.folders import scan_folder
from edgeclf.data.synth import CLASS_NAMES, generate
from edgeclf.errors import UsageError
from edgeclf.runtime.preprocess import load_image


def digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    generate(tmp_path / "a", classes=3, per_class=4, size=24, seed=5)
    generate(tmp_path / "b", classes=3, per_class=4, size=24, seed=5)
    generate(tmp_path / "c", classes=3, per_class=4, size=24, seed=6)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_layout_names_and_sizes(tmp_path):
    r = generate(tmp_path / "d", classes=5, per_class=3, size=32, seed=0)
    folder = scan_folder(tmp_path / "d")
    assert r.class_names == CLASS_NAMES[:5] == ("circles", "squares", "triangles", "stars", "crosses")
    assert set(folder.class_names) == set(r.class_names)
    assert folder.counts() == {n: 3 for n in r.class_names}
    assert load_image(folder.paths[0], 32).shape == (32, 32, 3)


def test_images_differ_within_a_class(tmp_path):
    generate(tmp_path / "d", classes=2, per_class=3, size=24, seed=0)
    imgs = [load_image(p, 24).astype(int) for p in sorted((tmp_path / "d" / "circles").iterdir())]
    assert np.abs(imgs[0] - imgs[1]).mean() > 10


def test_no_class_given_away_by_colour_or_brightness(tmp_path):
    """Nearest-centroid on mean RGB (which includes mean brightness) must stay near chance."""
    classes, per = 5, 40
    generate(tmp_path / "d", classes=classes, per_class=per, size=32, seed=1)
    folder = scan_folder(tmp_path / "d")
    feats = np.array([load_image(p, 32).reshape(-1, 3).mean(0) for p in folder.paths])
    labels = np.array(folder.labels)
    train = np.arange(len(labels)) % 2 == 0
    centroids = np.stack([feats[train & (labels == c)].mean(0) for c in range(classes)])
    pred = np.argmin(((feats[~train, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    acc = (pred == labels[~train]).mean()
    assert acc < 0.4, f"mean colour predicts the class with accuracy {acc:.2f} (chance 0.20)"


@pytest.mark.parametrize("kwargs, message", [
    ({"classes": 1}, "--classes"), ({"classes": 11}, "--classes"), ({"per_class": 0}, "--per-class"),
    ({"size": 8}, "--size"),
])
def test_bad_options(tmp_path, kwargs, message):
    with pytest.raises(UsageError, match=message):
        generate(tmp_path / "d", **kwargs)


def test_refuses_non_empty_out_unless_overwrite(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        generate(out, classes=2, per_class=1, size=16)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(UsageError, match="did not write"):  # --overwrite replaces only what edgeclf made
        generate(out, classes=2, per_class=1, size=16, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    generate(out, classes=2, per_class=1, size=16)
    generate(out, classes=2, per_class=1, size=16, overwrite=True)
    assert not (out / "keep.txt").exists()


def test_cli_synth_then_inspect(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["data", "synth", str(tmp_path / "d"), "--classes", "3", "--per-class", "2",
                             "--size", "20", "--seed", "4"])
    assert r.exit_code == 0, r.output
    (tmp_path / "d" / "circles" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    r = runner.invoke(main, ["data", "inspect", str(tmp_path / "d"), "--grid", str(tmp_path / "g.png")])
    assert r.exit_code == 0, r.output
    assert "6 readable images in 3 classes" in r.output
    assert "20x20 (6)" in r.output
    assert "broken.png" in r.output
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_inspect_missing_dir_is_one_line(tmp_path):
    r = CliRunner().invoke(main, ["data", "inspect", str(tmp_path / "nope")])
    assert r.exit_code == 1
    assert r.output.strip().startswith("Error: ") and "does not exist" in r.output
    assert "Traceback" not in r.output
