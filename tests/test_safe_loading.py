"""Every Keras load goes through keras_load: hostile files are refused before any code runs.

The Lambda in each hostile model writes a marker file when called; a test passes only if
the loader refuses the model *and* the marker does not exist. One control loads the same
file with tf_keras directly and shows the marker does appear, so the check can fail.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest


from _data_helpers import finishes  # noqa: E402
from edgeclf.errors import DataError, ModelFileError  # noqa: E402
from edgeclf.export.safety import check_config, inspect_model  # noqa: E402



# --- no TensorFlow needed ------------------------------------------------------------------


def test_fifo_and_device_links_are_refused_without_reading(tmp_path):
    fifo = tmp_path / "model.keras"
    os.mkfifo(fifo)
    box = finishes(lambda: inspect_model(fifo))
    assert isinstance(box.get("error"), ModelFileError) and "FIFO" in str(box["error"]), box
    (tmp_path / "zero.h5").symlink_to("/dev/zero")
    box = finishes(lambda: inspect_model(tmp_path / "zero.h5"))
    assert isinstance(box.get("error"), ModelFileError) and "device" in str(box["error"]), box
    saved = tmp_path / "saved"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"\x00")
    os.mkfifo(saved / "variables" / "variables.data-00000-of-00001")
    box = finishes(lambda: inspect_model(saved))
    assert isinstance(box.get("error"), ModelFileError) and "FIFO" in str(box["error"]), box


def test_content_not_suffix_decides(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"GIF89a not a model")
    with pytest.raises(ModelFileError, match="neither a .keras zip nor an HDF5 model"):
        inspect_model(tmp_path / "model.keras")
    with zipfile.ZipFile(tmp_path / "weights.h5", "w") as z:  # a zip named .h5, with no config
        z.writestr("model.weights.h5", b"")
    with pytest.raises(ModelFileError, match="zip without config.json"):
        inspect_model(tmp_path / "weights.h5")


def _layer(cls, name, config=None, **extra):
    return {"class_name": cls, "config": {"name": name, **(config or {})}, **extra}


def _functional(*layers, name="m"):
    return {"class_name": "Functional", "config": {"name": name, "layers": list(layers)}}


def test_config_walk_refuses_code_at_any_depth():
    lam = _layer("Lambda", "hidden", {"function": ["YWJj", None, None], "function_type": "lambda"})
    deep = _functional(_functional(_functional(_layer("Dense", "d"), lam, name="l3"), name="l2"), name="l1")
    with pytest.raises(ModelFileError, match="layer 'hidden'.*Lambda layer"):
        check_config(deep, "x.keras")
    # Keras 3 stores a lambda as a __lambda__ object, here as an activation
    k3 = _functional(_layer("Dense", "d", {"activation": {"class_name": "__lambda__", "config": {"code": "YQ=="}}}))
    with pytest.raises(ModelFileError, match="Lambda"):
        check_config(k3, "x.keras")
    custom = _functional(_layer("Evil", "e", module="mypkg.layers", registered_name=None))
    with pytest.raises(ModelFileError, match="class mypkg.layers.Evil, which is not built into Keras"):
        check_config(custom, "x.keras")
    registered = _functional(_layer("Evil", "e", module="mypkg", registered_name="mypkg>Evil"))
    with pytest.raises(ModelFileError, match="mypkg>Evil"):
        check_config(registered, "x.keras")
    io_op = _functional(_layer("TFOpLambda", "w", {"function": "io.write_file"}))
    with pytest.raises(ModelFileError, match="'io.write_file'"):
        check_config(io_op, "x.h5")
    tfsm = _functional(_functional(_layer("TFSMLayer", "t", {"filepath": "/elsewhere"}, module="keras.layers")))
    with pytest.raises(ModelFileError, match="TFSMLayer, which loads or runs code"):
        check_config(tfsm, "x.keras")
    other_code = _functional(_layer("Dense", "d", {"function": {"class_name": "x"}}, module="keras.layers"))
    with pytest.raises(ModelFileError, match="stores a function as code"):
        check_config(other_code, "x.keras")
    # what tf_keras and Keras 3 make of preprocess_input is allowed
    check_config(_functional(_layer("TFOpLambda", "t", {"function": "math.truediv"}, module="tf_keras.src.layers"),
                             _layer("TrueDivide", "t2", module="keras.src.ops.numpy", registered_name="TrueDivide"),
                             _layer("Conv2D", "c", module="keras.layers")), "ok.keras")


# --- real hostile files (TensorFlow) --------------------------------------------------------


def _marker_lambda(layers_mod, marker: Path):
    path = str(marker)
    return layers_mod.Lambda(lambda t: (open(path, "w").close(), t)[1], name="hidden_code")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Models with a marker-writing Lambda at nesting depth 3, in every format and disguise."""
    from edgeclf._optional import import_keras

    tfk = import_keras()
    import keras as k3

    root = tmp_path_factory.mktemp("hostile")
    marker = root / "marker"
    files = {}
    for name, k in (("k3", k3), ("tfk", tfk)):
        inner = k.Sequential([k.Input((8, 8, 3)), _marker_lambda(k.layers, marker)], name="level3")
        i2 = k.Input((8, 8, 3))
        mid = k.Model(i2, inner(i2), name="level2")
        i1 = k.Input((8, 8, 3))
        model = k.Model(i1, k.layers.Dense(2)(k.layers.Flatten()(mid(i1))), name="level1")
        model.save(root / f"{name}.keras")
        model.save(root / f"{name}.h5")
        files[f"{name}.keras"] = root / f"{name}.keras"
        files[f"{name}.h5"] = root / f"{name}.h5"
        # disguises: the other suffix
        (root / f"{name}_zip_as.h5").write_bytes((root / f"{name}.keras").read_bytes())
        (root / f"{name}_h5_as.keras").write_bytes((root / f"{name}.h5").read_bytes())
        files[f"{name} zip named .h5"] = root / f"{name}_zip_as.h5"
        files[f"{name} h5 named .keras"] = root / f"{name}_h5_as.keras"
    model.save(root / "saved", save_format="tf")  # tf_keras SavedModel, then its metadata reformatted
    from tf_keras.protobuf import saved_metadata_pb2

    meta = saved_metadata_pb2.SavedMetadata()
    meta.ParseFromString((root / "saved" / "keras_metadata.pb").read_bytes())
    for node in meta.nodes:
        node.metadata = json.dumps(json.loads(node.metadata), separators=(",", ":"), sort_keys=True)
    (root / "saved" / "keras_metadata.pb").write_bytes(meta.SerializeToString())
    assert b'"class_name": "Lambda"' not in (root / "saved" / "keras_metadata.pb").read_bytes()
    files["reformatted SavedModel"] = root / "saved"
    marker.unlink(missing_ok=True)  # building the models called the Lambda
    return files, marker


@pytest.mark.slow
def test_hostile_files_are_refused_and_run_no_code(hostile):
    from edgeclf.export.source import load_keras_model

    files, marker = hostile
    for what, path in files.items():
        with pytest.raises(ModelFileError, match="Lambda layer"):
            load_keras_model(path)
        assert not marker.exists(), f"{what}: the Lambda ran"


@pytest.mark.slow
def test_control_the_reformatted_savedmodel_does_run_code_when_loaded_unchecked(hostile):
    from edgeclf._optional import import_keras

    files, marker = hostile
    import_keras().models.load_model(files["reformatted SavedModel"], compile=False)
    assert marker.exists(), "the marker mechanism is broken, so the refusal test proves nothing"
    marker.unlink()


@pytest.mark.slow
def test_run_directory_model_goes_through_the_same_door(tmp_path):
    """A run's model.keras that is a FIFO is refused; split.json indexes beyond the labels are a DataError."""
    from _export_helpers import make_images, tiny_cnn, write_run_dir

    from edgeclf._optional import import_keras
    from edgeclf.export.source import load_source

    samples = make_images(tmp_path / "data", per_class=3)
    run = write_run_dir(tmp_path / "run", tiny_cnn(import_keras()), samples)
    split = json.loads((run / "split.json").read_text())
    split["val"][0][1] = 7
    (run / "split.json").write_text(json.dumps(split))
    with pytest.raises(DataError, match="label index 7, outside the run's 3 labels"):
        load_source(run)
    (run / "model.keras").unlink()
    os.mkfifo(run / "model.keras")
    box = finishes(lambda: load_source(run))
    assert isinstance(box.get("error"), ModelFileError) and "FIFO" in str(box["error"]), box
