"""What used to end in exit 70 (internal error) or be accepted silently gets one clear line:
tf_keras SavedModels with no graph of layers, out-of-range seeds, and no TensorFlow start-up
noise on the way to a refusal."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeclf.cli import main
from edgeclf.errors import OptionError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", ["export", "explain-quant"])
@pytest.mark.parametrize("seed", ["-5", str(2**70)])
def test_seeds_are_bounded_as_trains_are(tmp_path, command, seed):
    args = [command, str(tmp_path), "--seed", seed] + (["--out", str(tmp_path / "o")] if command == "export" else [])
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "--seed" in res.output and "0<=x<=4294967295" in res.output, res.output


def test_the_library_bounds_the_seed_before_loading(tmp_path):
    from edgeclf.export import export_model

    with pytest.raises(OptionError, match="^seed must be .*4294967295; got "):
        export_model(tmp_path / "never_loaded.keras", tmp_path / "o", seed=2**70)
    with pytest.raises(OptionError, match="^qat_epochs must be from 0 to"):
        export_model(tmp_path / "never_loaded.keras", tmp_path / "o", qat_epochs=10**12)


@pytest.fixture(scope="module")
def graphless(tmp_path_factory):
    """tf_keras SavedModels that load as no graph of layers: a subclassed model, and a SavedModel
    whose keras_metadata.pb is empty."""
    import shutil

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf
    import tf_keras as keras

    root = tmp_path_factory.mktemp("graphless")

    class Model(keras.Model):  # the name of the built-in class: only its missing graph gives it away
        def __init__(self):
            super().__init__()
            self.scale, self.flat, self.dense = (keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                                                 keras.layers.Dense(2))

        def call(self, x):
            return self.dense(self.flat(self.scale(x)))

    sub = Model()
    sub(tf.zeros((1, 8, 8, 3)))
    sub.save(root / "subclassed", save_format="tf")
    seq = keras.Sequential([keras.layers.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                            keras.layers.Dense(2)])
    seq.save(root / "plain", save_format="tf")
    shutil.copytree(root / "plain", root / "empty_metadata")
    (root / "empty_metadata" / "keras_metadata.pb").write_bytes(b"")
    (root / "labels.txt").write_text("a\nb\n")
    return root


@pytest.mark.slow
def test_a_savedmodel_without_a_graph_of_layers_is_one_clear_line_and_no_tensorflow_noise(graphless, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("EDGECLF_VERBOSE", None)
    for kind in ("empty_metadata", "subclassed"):
        r = subprocess.run([sys.executable, "-m", "edgeclf", "export", str(graphless / kind), "--labels",
                            str(graphless / "labels.txt"), "--out", str(tmp_path / kind)],
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
        assert r.returncode == 1, r.stderr
        lines = r.stderr.splitlines()
        assert lines == [f"Loading {graphless / kind} ...", lines[-1]], r.stderr  # nothing from TensorFlow
        assert "holds no Keras model with defined inputs and outputs" in lines[-1], r.stderr
        assert not (tmp_path / kind).exists()


@pytest.mark.slow
def test_compare_reference_and_explain_quant_refuse_them_too(graphless, tmp_path):
    from _data_helpers import make_folder

    data = make_folder(tmp_path / "data", {"a": 1, "b": 1})
    fixture = ROOT / "tests" / "fixtures" / "binary_float32.tflite"
    for argv in (["compare", str(fixture), "--data", str(data), "--reference", str(graphless / "empty_metadata")],
                 ["explain-quant", str(graphless / "subclassed"), "--labels", str(graphless / "labels.txt")]):
        res = CliRunner().invoke(main, argv)
        assert res.exit_code == 1, res.output
        assert "holds no Keras model with defined inputs and outputs" in res.output, res.output
        assert "internal error" not in res.output
