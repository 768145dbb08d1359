import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeclf.cli import main
from edgeclf.data.synth import generate
from edgeclf.errors import DataError, UsageError
from edgeclf.runtime.layout import RunDir

from _data_helpers import make_folder

RUN_FILES = {"model.keras", "spec.json", "labels.txt", "config.json", "split.json", "history.json", "metrics.json",
             "curves.png", "confusion.png", "mistakes.png", ".edgeclf"}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECLF_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes") / "d"
    generate(root, classes=3, per_class=10, size=24, seed=0)
    (root / "circles" / "broken.png").write_bytes(b"not a png at all")
    return root


@pytest.mark.slow
def test_cli_train_writes_the_whole_run(shapes, tmp_path):
    import tf_keras as keras

    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", str(shapes), "--model", "tutorial_cnn_aug", "--out", str(out),
                                  "--epochs", "2", "--batch-size", "8", "--test-split", "0.2"])
    assert r.exit_code == 0, r.output
    assert "epoch 2/2" in r.output and "val_acc" in r.output
    assert "broken.png" in r.output, "the unreadable file is listed"
    assert {p.name for p in out.iterdir()} == RUN_FILES
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")], "temp folder left behind"

    labels = (out / "labels.txt").read_text().splitlines()
    assert labels == ["circles", "squares", "triangles"]
    spec = RunDir(out).spec()
    assert spec.labels == ("circles", "squares", "triangles") and spec.input_size == (24, 24)
    assert spec.output_kind.value == "logits" and spec.resize_method == "bilinear"
    assert spec.model_name == "tutorial_cnn_aug"
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "tutorial_cnn_aug" and config["seed"] == 123
    assert config["data"] == str(shapes.resolve())
    assert not {"labels", "image_size", "output_kind", "resize_method"} & set(config), "those live in spec.json"

    split = json.loads((out / "split.json").read_text())
    used = split["train"] + split["val"] + split["test"]
    assert len(used) == 30 and len({p for p, _ in used}) == 30
    assert [p.endswith("broken.png") for p, _ in split["skipped"]] == [True]
    assert len(split["test"]) == 6 and len(split["val"]) == 6

    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == len(split["val"])
    assert np.isclose(np.trace(cm) / cm.sum(), metrics["val_accuracy"])
    assert set(metrics["per_class_accuracy"]) == set(labels)
    assert metrics["majority_baseline"]["class"] in labels
    assert "test_accuracy" in metrics

    history = json.loads((out / "history.json").read_text())
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(history[key]) == 2, key

    for png in ("curves.png", "confusion.png", "mistakes.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png

    model = keras.models.load_model(out / "model.keras")
    aug = (keras.layers.RandomFlip, keras.layers.RandomRotation, keras.layers.RandomZoom)
    assert not any(isinstance(layer, aug) for layer in model.layers), "augmentation in the saved model"
    assert not any(isinstance(layer, keras.Model) for layer in model.layers), "nested model saved"
    assert model.input_shape == (None, 24, 24, 3) and model.output_shape == (None, 3)

    # the same run again is refused without --overwrite, and the run is untouched
    before = (out / "metrics.json").read_bytes()
    r = CliRunner().invoke(main, ["train", str(shapes), "--out", str(out), "--epochs", "1"])
    assert r.exit_code == 2 and "not empty" in r.output
    assert (out / "metrics.json").read_bytes() == before


@pytest.mark.slow
def test_binary_sigmoid_model_trains_and_stops_at_accuracy(tmp_path):
    from edgeclf.train import train_model

    root = tmp_path / "two"
    generate(root, classes=2, per_class=8, size=32, seed=3)
    first = sorted(p for p in root.iterdir() if not p.name.startswith("."))[0]
    first.rename(root / ("\u202e" + first.name))  # a bidi override: allowed in a name, escaped where written
    r = train_model(root, out=tmp_path / "run", model="horse_human_cnn", epochs=4, batch_size=8,
                    optimizer="rmsprop", stop_at_accuracy=0.01, verbose=False)
    assert r.epochs_run == 1, "stop-at-accuracy 0.01 must stop after the first epoch"
    labels_txt = (tmp_path / "run" / "labels.txt").read_text(encoding="utf-8")
    assert labels_txt.splitlines()[1] == "\\u202e" + first.name, labels_txt
    spec = RunDir(tmp_path / "run").spec()
    assert spec.labels[1] == "\u202e" + first.name  # the label itself is kept as it is
    assert spec.output_kind.value == "sigmoid" and spec.num_outputs == 1
    assert np.array(r.metrics["confusion_matrix"]).shape == (2, 2)


@pytest.mark.slow
def test_early_stopping_stops_and_the_history_says_so(shapes, tmp_path, monkeypatch):
    from edgeclf.train import train_model

    # a learning rate this small cannot improve val loss by min_delta 0: patience 1 stops at epoch 2
    r = train_model(shapes, out=tmp_path / "run", model="tutorial_cnn", epochs=6, batch_size=8,
                    optimizer="sgd", learning_rate=1e-12, early_stopping=1, verbose=False)
    assert r.epochs_run < 6
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["loss"]) == r.epochs_run


@pytest.mark.slow
def test_failed_run_leaves_nothing_behind(shapes, tmp_path, monkeypatch):
    from edgeclf.train import plots, train_model

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(plots, "plot_mistakes", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        train_model(shapes, out=tmp_path / "run", model="tutorial_cnn", epochs=1, verbose=False)
    assert list(tmp_path.glob("*run*")) == []


def test_val_dir_with_other_classes_is_one_error_line(tmp_path):
    make_folder(tmp_path / "train", {"cat": 3, "dog": 3})
    make_folder(tmp_path / "val", {"cat": 2, "cow": 2})
    r = CliRunner().invoke(main, ["train", str(tmp_path / "train"), "--val-dir", str(tmp_path / "val"),
                                  "--out", str(tmp_path / "run")])
    assert r.exit_code == 1, r.output
    assert r.output.startswith("Error: the classes of --val-dir") and "cow" in r.output
    assert not (tmp_path / "run").exists()


def test_a_class_with_only_bad_files_is_a_data_error(tmp_path):
    from edgeclf.train import train_model

    make_folder(tmp_path / "d", {"cat": 3})
    (tmp_path / "d" / "dog").mkdir()
    (tmp_path / "d" / "dog" / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="'dog'.*no readable images"):
        train_model(tmp_path / "d", out=tmp_path / "run", verbose=False)


@pytest.mark.parametrize("option, message", [
    ({"epochs": 0}, "^epochs must"), ({"batch_size": 0}, "^batch_size must"), ({"optimizer": "lbfgs"}, "optimizer"),
    ({"learning_rate": -1.0}, "^learning_rate must"), ({"val_split": 0.0}, "^val_split must"),
    ({"fine_tune": 5}, "--fine-tune"), ({"stop_at_accuracy": 1.5}, "^stop_at_accuracy must"),
    ({"model": "vgg"}, "'vgg' is unknown"), ({"mixed_precision": "maybe"}, "mixed precision mode 'maybe'"),
    ({"early_stopping": 0}, "^early_stopping is a patience"), ({"seed": -1}, "^seed must be a whole number"),
    ({"seed": 2**32}, "^seed must be a whole number from 0 to 4294967295"),
    ({"epochs": 10**12}, "^epochs must be from 1 to 10000; got 1000000000000"),
])
def test_bad_options_are_refused_before_any_work(tmp_path, option, message):
    """The library names its parameters (a Python caller never typed a flag)."""
    from edgeclf.train import train_model

    with pytest.raises(UsageError, match=message):
        train_model(tmp_path / "missing", out=tmp_path / "run", **option)


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "Error: --epochs must be from 1 to 10000; got 0"),
    (["--epochs", "1000000000000"], "Error: --epochs must be from 1 to 10000; got 1000000000000"),
    (["--batch-size", "0"], "Error: --batch-size must be at least 1; got 0"),
    (["--val-split", "1.5"], "Error: --val-split must be between 0 and 1"),
])
def test_the_cli_names_the_flag_the_library_names_the_parameter(tmp_path, args, message):
    from click.testing import CliRunner

    from edgeclf.cli import main

    res = CliRunner().invoke(main, ["train", str(tmp_path), "--out", str(tmp_path / "run"), *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


@pytest.mark.slow
def test_weights_file_freezes_the_base_then_fine_tune_unfreezes_the_top(shapes, tmp_path):
    from edgeclf._optional import import_keras
    from edgeclf.train import train_model

    keras = import_keras()
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35)
    base.save_weights(tmp_path / "base.h5")
    expected = base.get_layer("Conv1").get_weights()[0]
    r = train_model(shapes, out=tmp_path / "run", model="mobilenet_v2", alpha=0.35, image_size=32,
                    weights=str(tmp_path / "base.h5"), fine_tune=5, epochs=1, batch_size=8, verbose=False)
    assert r.epochs_run == 2 and r.history["fine_tune_start"] == 1
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    # Conv1 sits far below the top 5 layers: loaded from the file and never trained
    np.testing.assert_array_equal(model.get_layer("Conv1").get_weights()[0], expected)


def test_out_that_is_or_lies_inside_the_data_is_refused_and_the_data_survives(tmp_path):
    data = make_folder(tmp_path / "photos", {"cat": 2, "dog": 2})
    val = make_folder(tmp_path / "val", {"cat": 2, "dog": 2})
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for out in (data, data / "run1", tmp_path, val / "run"):
        r = CliRunner().invoke(main, ["train", str(data), "--val-dir", str(val), "--out", str(out),
                                      "--overwrite"])
        assert r.exit_code == 2, r.output
        assert r.output.startswith("Error: --out ") and "the input " in r.output, r.output
        assert r.output.count("\n") == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_val_dir_equal_to_the_data_is_refused_before_decoding(tmp_path):
    data = make_folder(tmp_path / "photos", {"cat": 2, "dog": 2})
    r = CliRunner().invoke(main, ["train", str(data), "--val-dir", str(data), "--out", str(tmp_path / "run")])
    assert r.exit_code == 1, r.output
    assert r.output.startswith("Error: --val-dir") and "training data" in r.output, r.output


def test_large_common_size_falls_back_to_the_model_default(tmp_path):
    from edgeclf.train.trainer import _auto_image_size

    small = make_folder(tmp_path / "small", {"a": 1, "b": 1}, size=(64, 48))
    big = make_folder(tmp_path / "big", {"a": 1, "b": 1}, size=(640, 480))
    paths = lambda root: sorted(str(p) for p in root.rglob("*.png"))  # noqa: E731
    assert _auto_image_size(paths(small), "tutorial_cnn")[0] == (48, 64)
    size, why = _auto_image_size(paths(big), "tutorial_cnn")
    assert size == (180, 180) and "480x640" in why and "512" in why


@pytest.mark.parametrize("args,words", [
    (["--model", "mobilenet_v2", "--image-size", "32", "--weights", "imagenet", "--alpha", "0.6"], "--alpha"),
    (["--model", "horse_human_cnn"], "exactly 2 classes"),
    (["--model", "tutorial_cnn", "--weights", "missing.weights.h5"], "no such file"),
])
def test_a_model_that_cannot_be_built_is_refused_before_decoding(tmp_path, monkeypatch, args, words):
    monkeypatch.setenv("EDGECLF_CACHE_DIR", str(tmp_path / "cache"))
    data = make_folder(tmp_path / "d", {"a": 2, "b": 2, "c": 2})
    r = CliRunner().invoke(main, ["train", str(data), "--out", str(tmp_path / "run"), *args])
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines()[-1].startswith("Error: ") and words in r.output, r.output
    assert not (tmp_path / "cache").exists(), "images were decoded before the model options were checked"
