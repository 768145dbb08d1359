"""SavedModels and Keras configs that do I/O with no Python in them, built as an attacker
would, each with a canary path: refused before TensorFlow loads them, by ``export``,
``compare --reference`` and ``explain-quant``. And the real models users bring still pass.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _data_helpers import finishes  # noqa: E402
from _export_helpers import LABELS, SIZE, make_images  # noqa: E402
from _hostile import assert_no_secret, secret_file  # noqa: E402

from edgeclf.errors import ModelFileError  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tf():
    from edgeclf._optional import import_tensorflow

    return import_tensorflow()


@pytest.fixture(scope="module")
def world(tmp_path_factory, tf):
    """Images, labels and the hostile SavedModels, each writing to its own canary if loaded."""
    import tf_keras

    root = tmp_path_factory.mktemp("hostile_sm")
    make_images(root / "data", per_class=4)
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    canaries = {}

    def canary(name):
        canaries[name] = root / f"canary_{name}"
        return str(canaries[name])

    class Writer(tf.saved_model.experimental.TrackableResource):
        def __init__(self, path):
            self.path = path
            super().__init__()

        def _create_resource(self):
            return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="w")

        def _initialize(self):
            tf.io.write_file(self.path, "pwned")
            return tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=1.0)

    class Classifier(tf.Module):
        def __init__(self):
            self.w = tf.Variable(tf.zeros([SIZE * SIZE * 3, len(LABELS)]))

        def logits(self, x):
            return tf.nn.softmax(tf.matmul(tf.reshape(x / 255.0, [-1, SIZE * SIZE * 3]), self.w))

    spec = [tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)]
    files = {}

    m = Classifier()
    m.res = Writer(canary("initializer"))
    m.serve = tf.function(m.logits, input_signature=spec)
    tf.saved_model.save(m, str(root / "initializer"), signatures=m.serve)
    files["initializer"] = root / "initializer"

    m = Classifier()
    path = "file://" + canary("print")
    m.serve = tf.function(lambda x: (tf.print("seen", output_stream=path), m.logits(x))[1], input_signature=spec)
    tf.saved_model.save(m, str(root / "print"), signatures=m.serve)
    files["print"] = root / "print"

    m = Classifier()
    rec = canary("tfrecord")

    def write_record(x):
        tf.data.experimental.TFRecordWriter(rec).write(tf.data.Dataset.from_tensors(tf.constant("pwned")))
        return m.logits(x)

    m.serve = tf.function(write_record, input_signature=spec)
    tf.saved_model.save(m, str(root / "tfrecord"), signatures=m.serve)
    files["tfrecord"] = root / "tfrecord"

    # tf_keras SavedModel (keras_metadata.pb) with the same resource attached
    i = tf_keras.Input((SIZE, SIZE, 3))
    model = tf_keras.Model(i, tf_keras.layers.Dense(3, activation="softmax")(
        tf_keras.layers.Flatten()(tf_keras.layers.Rescaling(1 / 255.0)(i))))
    model.res = Writer(canary("tf_keras_initializer"))
    model.save(root / "tf_keras_initializer", save_format="tf")
    files["tf_keras_initializer"] = root / "tf_keras_initializer"

    for c in canaries.values():  # building ran the initializers once
        Path(c).unlink(missing_ok=True)
    return root, files, canaries


# The first refused op of each (the walk order decides which): any of these, named.
WHY = {"initializer": ("op WriteFile",), "print": ("op PrintV2", "op StringFormat"),
       "tfrecord": ("op DatasetToTFRecord", "Dataset"), "tf_keras_initializer": ("op WriteFile",)}


def test_control_loading_unchecked_does_write_the_canary(world, tf):
    root, files, canaries = world
    tf.saved_model.load(str(files["initializer"]))
    assert canaries["initializer"].exists(), "the canary mechanism is broken, so the refusals prove nothing"
    canaries["initializer"].unlink()


def test_hostile_savedmodels_are_refused_by_every_command(world):
    from click.testing import CliRunner

    from edgeclf.cli import main

    root, files, canaries = world
    for what, path in files.items():
        commands = {
            "export": ["export", path, "--labels", root / "labels.txt", "--data", root / "data", "--out",
                       root / f"out_{what}"],
            "compare": ["compare", Path(__file__).parent / "fixtures" / "colour_float32.tflite", "--data",
                        root / "data", "--reference", path],
            "explain-quant": ["explain-quant", path, "--labels", root / "labels.txt", "--data", root / "data",
                              "--format", "tflite"],
        }
        for cmd, args in commands.items():
            res = CliRunner().invoke(main, [str(a) for a in args])
            lines = [ln for ln in res.output.splitlines() if ln.startswith("Error: ")]
            assert res.exit_code == 1, (what, cmd, res.output[-2000:])
            assert len(lines) == 1 and any(w in lines[0] for w in WHY[what]) and "Traceback" not in res.output, (what, cmd, lines)
            assert not any(c.exists() for c in canaries.values()), (what, cmd, "a canary was written")
        assert not (root / f"out_{what}").exists()


def test_ops_and_calls_are_refused_by_name_and_place(world, tf):
    from tensorflow.core.protobuf import saved_model_pb2

    from edgeclf.export.safety import inspect_model

    root, files, _ = world
    with pytest.raises(ModelFileError, match=r"function __inference__initializer_\d+, node '[^']*', runs the op "
                                             r"WriteFile \(writes a file\)"):
        inspect_model(files["initializer"])
    # a signature that calls the saver's own function with a file name of its choosing
    src = files["initializer"].parent / "c_mod"
    if not src.exists():
        class M(tf.Module):
            def __init__(self):
                self.w = tf.Variable(tf.ones([3]))

            @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
            def __call__(self, x):
                return x * self.w

        m = M()
        tf.saved_model.save(m, str(src), signatures=m.__call__)
    inspect_model(src)  # the unmodified model passes
    raw = (src / "saved_model.pb").read_bytes()
    for tamper, why in [("call_saver", "calls the saver's function"), ("prefix", "does not start with the checkpoint"),
                        ("undefined", "not a function of the SavedModel")]:
        sm = saved_model_pb2.SavedModel()
        sm.ParseFromString(raw)
        mg = sm.meta_graphs[0]
        lib = {f.signature.name: f for f in mg.graph_def.library.function}
        save_fn = next(n for n in lib if "_traced_save_" in n)
        if tamper == "call_saver":
            serving = next(f for n, f in lib.items() if "signature_wrapper" in n)
            node = serving.node_def.add(name="evil", op="StatefulPartitionedCall")
            node.attr["f"].func.name = save_fn
        elif tamper == "prefix":
            fn = lib[save_fn]
            const = fn.node_def.add(name="evil_path", op="Const")
            const.attr["value"].tensor.string_val.append(b"/tmp/elsewhere")
            sv = next(n for n in fn.node_def if n.op == "SaveV2")
            sv.input[0] = "evil_path:output:0"
        else:
            serving = next(f for n, f in lib.items() if "signature_wrapper" in n)
            node = serving.node_def.add(name="evil", op="PartitionedCall")
            node.attr["f"].func.name = "WriteFile"
        out = root / f"tampered_{tamper}"
        out.mkdir(exist_ok=True)
        (out / "saved_model.pb").write_bytes(sm.SerializeToString())
        with pytest.raises(ModelFileError, match=why):
            inspect_model(out)


def test_a_string_lookup_vocabulary_file_or_fifo_is_refused(world, tmp_path):
    import tf_keras

    from edgeclf.export.safety import inspect_model

    root, _, _ = world
    secret, token = secret_file(tmp_path)
    fifo = tmp_path / "vocab_fifo"
    os.mkfifo(fifo)
    i = tf_keras.Input((SIZE, SIZE, 3))
    x = tf_keras.layers.Dense(3, activation="softmax")(tf_keras.layers.Flatten()(tf_keras.layers.Rescaling(1 / 255.0)(i)))
    model = tf_keras.Model(i, x)
    for vocab in (secret, fifo):
        cfg = model.get_config()
        cfg["layers"].append({"class_name": "StringLookup", "name": "lookup", "inbound_nodes": [],
                              "config": {"name": "lookup", "vocabulary": str(vocab), "trainable": False}})
        for fmt, save in (("h5", lambda p: model.save(p)), ("keras", lambda p: model.save(p))):
            path = tmp_path / f"lookup_{vocab.name}.{fmt}"
            save(path)
            _replace_config(path, cfg)
            box = finishes(lambda: inspect_model(path), seconds=20)
            err = box.get("error")
            assert isinstance(err, ModelFileError) and "layer 'lookup' is a StringLookup" in str(err), box
    from click.testing import CliRunner

    from edgeclf.cli import main

    res = CliRunner().invoke(main, ["export", str(tmp_path / f"lookup_{secret.name}.h5"), "--labels",
                                    str(root / "labels.txt"), "--data", str(root / "data"), "--out",
                                    str(tmp_path / "out")])
    assert res.exit_code == 1 and "StringLookup" in res.output, res.output[-2000:]
    assert_no_secret(tmp_path, token)


def _replace_config(path: Path, cfg: dict) -> None:
    import json
    import zipfile

    if path.suffix == ".h5":
        import h5py

        with h5py.File(path, "a") as f:
            f.attrs["model_config"] = json.dumps({"class_name": "Functional", "config": cfg})
        return
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    doc = json.loads(members["config.json"])
    doc["config"] = cfg
    members["config.json"] = json.dumps(doc).encode()
    with zipfile.ZipFile(path, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)


def test_the_models_users_bring_pass_the_allowlists(tmp_path, tf):
    """Every layer class the allowlist names, in both Keras generations and every format, and
    MobileNetV2 nested as transfer learning builds it: inspected without a refusal."""
    import keras
    import tf_keras

    from edgeclf.export.safety import inspect_model

    def every_layer(k):
        L = k.layers
        i = k.Input((SIZE, SIZE, 3))
        x = L.Rescaling(1 / 127.5, offset=-1)(i)
        x = L.Resizing(24, 24)(x)
        x = L.CenterCrop(20, 20)(x)
        for aug in (L.RandomFlip(), L.RandomRotation(0.1), L.RandomZoom(0.1), L.RandomTranslation(0.1, 0.1),
                    L.RandomContrast(0.1), L.RandomBrightness(0.1), L.RandomCrop(18, 18)):
            x = aug(x)
        x = L.Cropping2D(1)(L.ZeroPadding2D(1)(x))
        a = L.Conv2D(4, 3, padding="same", activation="gelu")(x)
        b = L.SeparableConv2D(4, 3, padding="same", activation="swish")(x)
        c = L.Conv2D(4, 1, activation="selu")(L.DepthwiseConv2D(3, padding="same", activation="elu")(x))
        x = L.Minimum()([L.Maximum()([L.Average()([L.Subtract()([L.Multiply()([L.Add()([a, b]), c]), a]), b]), a]), b])
        x = L.Concatenate()([x, c])
        x = L.GroupNormalization(2)(L.UnitNormalization()(L.LayerNormalization()(L.BatchNormalization()(x))))
        x = L.Activation("tanh")(L.ELU()(L.PReLU()(L.LeakyReLU()(L.ReLU(6.0)(x)))))
        x = L.GaussianDropout(0.1)(L.GaussianNoise(0.1)(L.SpatialDropout2D(0.1)(L.Dropout(0.1)(x))))
        x = L.MaxPooling2D(2)(L.AveragePooling2D(2)(L.UpSampling2D()(L.Conv2DTranspose(4, 2, strides=2)(x))))
        x = L.Normalization(mean=0.5, variance=2.0)(x)
        y = L.GlobalAveragePooling1D()(L.Permute((2, 1))(L.MultiHeadAttention(2, 4)(*[L.Reshape((-1, 4))(x)] * 2)))
        x = L.Concatenate()([y, L.GlobalMaxPooling2D()(x), L.Flatten()(L.GlobalAveragePooling2D(keepdims=True)(x))])
        return k.Model(i, L.Softmax()(L.Dense(3)(x)))

    def mobilenet(k):
        i = k.Input((SIZE, SIZE, 3))
        x = k.applications.mobilenet_v2.preprocess_input(i)
        base = k.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=0.35, weights=None, include_top=False)
        return k.Model(i, k.layers.Dense(3, activation="softmax")(k.layers.GlobalAveragePooling2D()(base(x))))

    paths = []
    for name, build in (("all", every_layer), ("mnv2", mobilenet)):
        m3 = build(keras)
        m3.save(tmp_path / f"{name}_k3.keras")
        m3.export(str(tmp_path / f"{name}_k3_export"), verbose=False)
        m2 = build(tf_keras)
        for suffix in (".keras", ".h5"):
            m2.save(tmp_path / f"{name}_tfk{suffix}")
        m2.save(tmp_path / f"{name}_tfk_sm", save_format="tf")
        paths += [tmp_path / f"{name}_k3.keras", tmp_path / f"{name}_k3_export", tmp_path / f"{name}_tfk.keras",
                  tmp_path / f"{name}_tfk.h5", tmp_path / f"{name}_tfk_sm"]
    mnv2_h5 = mobilenet(keras)
    mnv2_h5.save(tmp_path / "mnv2_k3.h5")
    paths.append(tmp_path / "mnv2_k3.h5")
    for p in paths:
        assert inspect_model(p).path == p, p
    x = np.zeros((1, SIZE, SIZE, 3), np.float32)
    assert np.asarray(m2(x)).shape == (1, 3)
