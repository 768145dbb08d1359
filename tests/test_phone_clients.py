"""The exported files in the clients phones use: MediaPipe Tasks' ImageClassifier (the same
C++ library as the Android and iOS apps) for every .tflite, and ONNX Runtime's mobile tools
(usability check, ORT-format conversion) for every .onnx.

MediaPipe need not share a virtual environment with TensorFlow: the MediaPipe part runs in a
subprocess (tests/_mediapipe_client.py) with the Python named by ``EDGECLF_MEDIAPIPE_PYTHON``,
or this one when it has ``mediapipe``. Neither: the test fails, saying how to make one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _export_helpers import LABELS, SIZE, fit, make_images, tiny_cnn, write_run_dir  # noqa: E402

from edgeclf.runtime.metadata import read_tflite_metadata  # noqa: E402
from edgeclf.runtime.spec import ModelSpec, OutputKind

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
TFLITE_FILES = ["model_float32.tflite", "model_float16.tflite", "model_dynamic.tflite", "model_int8.tflite",
                "model_int8-full.tflite", "model_int16x8.tflite", "model_qat.tflite"]
ONNX_FILES = ["model_float32.onnx", "model_dynamic.onnx", "model_int8.onnx", "model_qat.onnx"]
META = ModelSpec(labels=("red", "green", "blue"), input_size=(32, 32), precision="float32",
                     model_name="colour", source_sha256="ab" * 32)


# MediaPipe 1.2 needs absl-py 2.x and tensorflow-model-optimization 0.8 pins absl-py 1.x, so the
# real client lives in its own venv, made by the README's install command.
CLIENTS_VENV_PYTHON = HERE.parent / ".venv-clients" / "bin" / "python"


def mediapipe_python() -> str:
    exe = os.environ.get("EDGECLF_MEDIAPIPE_PYTHON")
    if exe:
        if not Path(exe).is_file():
            pytest.fail(f"EDGECLF_MEDIAPIPE_PYTHON={exe} does not exist")
        return exe
    if CLIENTS_VENV_PYTHON.is_file():
        return str(CLIENTS_VENV_PYTHON)
    probe = subprocess.run([sys.executable, "-c", "from mediapipe.tasks.python import vision"], capture_output=True)
    if probe.returncode == 0:
        return sys.executable
    pytest.fail("MediaPipe is not installed: run the README's install command (it makes .venv-clients with "
                "tests/clients-requirements.txt), or set EDGECLF_MEDIAPIPE_PYTHON to a Python that has mediapipe")


def mediapipe_classify(models, images, *, max_results: int = -1) -> dict:
    """{model path: {"results": [[[index, name, score], ...] per image], "metadata": {...}} | {"error"}}"""
    req = Path(models[0]).parent / "mediapipe_request.json"
    req.write_text(json.dumps({"models": [str(m) for m in models], "images": [str(i) for i in images],
                               "max_results": max_results}))
    proc = subprocess.run([mediapipe_python(), str(HERE / "_mediapipe_client.py"), str(req)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"MediaPipe client failed:\n{proc.stderr[-3000:]}"
    return {Path(k).name: v for k, v in json.loads(proc.stdout).items()}


# --- fast: committed fixtures, no TensorFlow ---------------------------------------------


def test_tflite_carries_edgeclf_and_standard_metadata(tmp_path):
    from edgeclf.export.metadata import embed_tflite_metadata
    from edgeclf.export.std_metadata import ModelCard, associated_files

    raw = (FIXTURES / "colour_nometa.tflite").read_bytes()
    data = embed_tflite_metadata(raw, META, card=ModelCard(author="Ann", license="MIT"))
    assert read_tflite_metadata(data) == META, "edgeclf's own entry must still read back"
    assert associated_files(data) == {"labels.txt": b"red\ngreen\nblue\n"}
    again = embed_tflite_metadata(data, META.with_(precision="float16"))  # re-embedding replaces both
    assert read_tflite_metadata(again).precision == "float16"
    assert associated_files(again) == {"labels.txt": b"red\ngreen\nblue\n"}
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(again, 0)
    names = [model.Metadata(i).Name() for i in range(model.MetadataLength())]
    assert names.count(b"TFLITE_METADATA") == 1 and names.count(b"edgeclf") == 1, names
    from edgeclf.runtime import load_classifier

    path = tmp_path / "colour.tflite"
    path.write_bytes(data)
    img = np.zeros((1, 32, 32, 3), np.uint8)
    img[..., 0] = 230
    assert load_classifier(path).predict(img[0])[0].label == "red"


def test_tflite_buffers_stay_aligned_after_embedding():
    from ai_edge_litert import schema_py_generated as schema

    from edgeclf.export.metadata import BUFFER_ALIGNMENT, embed_tflite_metadata

    data = embed_tflite_metadata((FIXTURES / "colour_nometa.tflite").read_bytes(), META)
    model = schema.Model.GetRootAs(data, 0)
    checked = 0
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        if buf.DataLength():
            start = buf._tab.Vector(buf._tab.Offset(4))
            assert start % BUFFER_ALIGNMENT == 0, f"buffer {i} starts at byte {start}"
            checked += 1
    assert checked >= 4


def test_mediapipe_loads_a_fixture_with_standard_metadata(tmp_path):
    from edgeclf.export.metadata import embed_tflite_metadata
    from edgeclf.export.std_metadata import ModelCard

    path = tmp_path / "colour_int8.tflite"
    # The fixture gives logits; its metadata says so. MediaPipe only needs the standard entry.
    card = ModelCard(version="2.1", author="Ann Example", license="Apache-2.0")
    path.write_bytes(embed_tflite_metadata((FIXTURES / "colour_nometa.tflite").read_bytes(), META, card=card))
    images = sorted((FIXTURES / "images").glob("*.png"))
    out = mediapipe_classify([path], images)[path.name]
    assert "error" not in out, out.get("error")
    md = out["metadata"]
    assert md["identifier_ok"] and md["min_parser_version"] == "1.0.0"
    assert (md["name"], md["version"], md["author"], md["license"]) == ("colour", "2.1", "Ann Example", "Apache-2.0")
    assert "red, green, blue" in md["description"], md["description"]
    assert md["input"]["stats"] == [[0.0], [255.0]] and md["output"]["stats"] is None, "logits: no 0..1 range"
    assert "Logits of the 3 labels" in md["output"]["description"]
    assert md["input"]["normalization"] == {"mean": [0.0] * 3, "std": [1.0] * 3}
    assert md["input"]["image"] == {"color_space": 1, "width": 32, "height": 32}
    assert md["output"]["files"] == [["labels.txt", md["output"]["axis_labels_type"]]]
    for result in out["results"]:
        assert sorted(c[1] for c in result) == sorted(META.labels)


def test_mediapipe_reads_a_sigmoid_model_as_the_probability_of_its_second_label(tmp_path):
    from edgeclf.export.metadata import embed_tflite_metadata
    from edgeclf.runtime import load_classifier

    src = FIXTURES / "binary_float32.tflite"
    meta = read_tflite_metadata(src.read_bytes())
    assert meta.output_kind is OutputKind.SIGMOID
    path = tmp_path / "binary.tflite"
    path.write_bytes(embed_tflite_metadata(src.read_bytes(), meta))
    from PIL import Image

    from edgeclf.runtime.preprocess import load_image

    images = []
    for src_img in sorted((FIXTURES / "images").iterdir()):  # at the model's size: MediaPipe resizes its own way
        images.append(tmp_path / (src_img.stem + ".png"))
        Image.fromarray(load_image(src_img, meta.input_size)).save(images[-1])
    out = mediapipe_classify([path], images)[path.name]
    assert "error" not in out, out.get("error")
    ours = load_classifier(path).predict([str(p) for p in images])
    for img, cats, pred in zip(images, out["results"], ours):
        assert [c[1] for c in cats] == [meta.labels[1]], f"{img.name}: {cats}"
        p_second = pred.probabilities[1]
        assert abs(cats[0][2] - p_second) < 1e-5, f"{img.name}: MediaPipe {cats[0][2]}, edgeclf {p_second}"


def test_predict_scores_and_ties_are_mediapipes(tmp_path):
    """On files whose scores tie exactly (labels k and k + 3 read one channel; gray images tie
    more), edgeclf's top-1 and scores are MediaPipe's on every image, ties included: the file's
    own uint8 steps (not renormalised), an exact tie going to the lower label index."""
    import shutil

    from PIL import Image

    from edgeclf.runtime import load_classifier

    images = []
    for r in (0, 100, 200):
        for g in (0, 100, 200):
            for b in (0, 100, 200):
                images.append(tmp_path / f"rgb_{r}_{g}_{b}.png")
                Image.fromarray(np.full((4, 4, 3), (r, g, b), np.uint8)).save(images[-1])
    models = []
    for name in ("ties_float32.tflite", "ties_int8.tflite"):
        models.append(tmp_path / name)
        shutil.copy(FIXTURES / name, models[-1])
    for max_results in (-1, 1):  # MediaPipe's default (every label), and the top one only
        answers = mediapipe_classify(models, images, max_results=max_results)
        for path in models:
            got = answers[path.name]
            assert "error" not in got, got.get("error")
            ours = load_classifier(path).predict([str(p) for p in images], top_k=5)
            ties = 0
            for img, cats, pred in zip(images, got["results"], ours):
                assert cats[0][0] == pred.index, f"{path.name} {img.name}: MediaPipe {cats}, edgeclf {pred.top_k}"
                assert abs(cats[0][2] - pred.confidence) < 1e-6, f"{path.name} {img.name}: {cats[0]} vs {pred}"
                if max_results == -1:  # the whole list, in MediaPipe's order
                    assert [c[1] for c in cats] == [label for label, _ in pred.top_k], f"{path.name} {img.name}"
                    ties += sum(1 for c in cats[1:] if c[2] == cats[0][2])
            if max_results == -1:
                assert ties >= 27, f"{path.name}: only {ties} tied top scores: the test proves nothing"
    int8 = load_classifier(models[1]).predict(str(images[0]))[0]
    assert int8.confidence * 256 == pytest.approx(round(int8.confidence * 256), abs=1e-4), "not the file's 1/256 steps"


def test_ort_reads_the_labels_list_without_edgeclf(tmp_path):
    """An app with ONNX Runtime and json alone gets the labels, commas and all."""
    import onnx

    from edgeclf.export.metadata import embed_onnx_metadata

    meta = read_onnx_meta_of(FIXTURES / "colour_float32.onnx").with_(labels=("red, dark", "green", "blue"))
    path = tmp_path / "model.onnx"
    path.write_bytes(embed_onnx_metadata(onnx.load(str(FIXTURES / "colour_float32.onnx")), meta).SerializeToString())
    code = ("import json, sys, onnxruntime as ort\n"
            "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
            "labels = json.loads(s.get_modelmeta().custom_metadata_map['labels_json'])\n"
            "assert not [m for m in sys.modules if m.startswith(('edgeclf', 'tensorflow'))]\n"
            "print(json.dumps(labels))\n")
    proc = subprocess.run([sys.executable, "-I", "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == ["red, dark", "green", "blue"]


def read_onnx_meta_of(path) -> ModelSpec:
    import onnxruntime as ort

    from edgeclf.runtime.metadata import read_onnx_metadata

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return read_onnx_metadata(sess.get_modelmeta().custom_metadata_map)


def test_ort_format_files_load_and_predict_like_the_onnx(tmp_path):
    from edgeclf.export.ort_mobile import OrtStyle, convert_to_ort
    from edgeclf.runtime import load_classifier

    images = np.stack([np.full((32, 32, 3), v, np.uint8) for v in (0, 90, 200)])
    for name in ("colour_float32.onnx", "colour_int8.onnx", "colour_dynamic.onnx"):
        onnx_clf = load_classifier(FIXTURES / name)
        for style in OrtStyle:
            path = tmp_path / f"{Path(name).stem}_{style.value}.ort"
            path.write_bytes(convert_to_ort((FIXTURES / name).read_bytes(), style=style))
            clf = load_classifier(path)
            assert clf.format == "ort", path.name
            assert clf.labels == onnx_clf.labels and clf.metadata == onnx_clf.metadata, path.name
            got, want = clf.predict_proba(images), onnx_clf.predict_proba(images)
            assert got.shape == want.shape and got.dtype == np.float32, path.name
            assert np.array_equal(got.argmax(1), want.argmax(1)), f"{path.name}: top-1 differs"
            assert np.abs(got - want).max() < 2e-2, f"{path.name}: max diff {np.abs(got - want).max()}"


def test_ort_file_named_onnx_is_told_to_be_renamed(tmp_path):
    from edgeclf.errors import ModelFileError
    from edgeclf.export.ort_mobile import convert_to_ort
    from edgeclf.runtime import load_classifier

    path = tmp_path / "model.onnx"
    path.write_bytes(convert_to_ort((FIXTURES / "colour_float32.onnx").read_bytes()))
    with pytest.raises(ModelFileError, match=r"ORT-format model named \.onnx; rename it to model\.ort"):
        load_classifier(path)


def test_predict_cli_runs_an_ort_file(tmp_path):
    from click.testing import CliRunner

    from edgeclf.cli import main
    from edgeclf.export.ort_mobile import convert_to_ort

    path = tmp_path / "model_float32.ort"
    path.write_bytes(convert_to_ort((FIXTURES / "colour_float32.onnx").read_bytes()))
    r = CliRunner().invoke(main, ["predict", str(path), str(FIXTURES / "images" / "red.png")])
    assert r.exit_code == 0, r.output
    assert "belongs to red" in r.stdout, r.stdout


def test_fixed_batch_makes_the_float_onnx_mobile_ready():
    import onnx

    from edgeclf.errors import UsageError
    from edgeclf.export.ort_mobile import check_mobile_usability, fix_batch, mobile_table, onnx_batch

    data = (FIXTURES / "colour_float32.onnx").read_bytes()
    before = check_mobile_usability(data, name="colour_float32.onnx")
    assert not before.fixed_shapes and before.providers == (), before
    proto = fix_batch(onnx.load_from_string(data), 1)
    assert onnx_batch(proto) == 1
    after = check_mobile_usability(proto.SerializeToString(), name="b1")
    assert after.fixed_shapes and after.nnapi == "yes" and after.coreml == "yes", after
    assert after.nnapi_nodes == after.nodes, after
    assert after.to_dict()["providers"] == ["NNAPI", "CoreML"]
    table = mobile_table([before, after]).splitlines()
    assert table[0].split() == ["file", "fixed", "shapes", "NNAPI", "CoreML"]
    assert table[2].split()[:2] == ["colour_float32.onnx", "no"] and table[3].split()[1:3] == ["yes", "yes"], table
    with pytest.raises(UsageError, match="fixed at 1"):
        fix_batch(proto, 4)
    with pytest.raises(UsageError, match="--batch"):
        fix_batch(onnx.load_from_string(data), 0)


# --- slow: a real export of a tiny model -------------------------------------------------


@pytest.fixture(scope="module")
def keras():
    from edgeclf._optional import import_keras

    keras = import_keras()
    yield keras
    keras.backend.clear_session()  # layer-name counters: later modules expect "rescaling", not "rescaling_3"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, keras):
    from edgeclf.export.exporter import export_model

    root = tmp_path_factory.mktemp("phone")
    samples = make_images(root / "data")
    keras.utils.set_random_seed(0)
    model = fit(keras, tiny_cnn(keras), samples, epochs=4)
    run = write_run_dir(root / "run", model, samples)
    report = export_model(run, root / "out")
    images = [Path(p) for p, _ in samples[::7]]
    return root / "out", report, images


@pytest.mark.slow
def test_probability_head_is_flat_and_keeps_the_logits_argmax(keras):
    from edgeclf.export.heads import with_probability_head

    model = tiny_cnn(keras)
    probs_model, kind = with_probability_head(model, OutputKind.LOGITS)
    assert kind is OutputKind.PROBABILITIES
    assert not any(isinstance(layer, keras.Model) for layer in probs_model.layers), "nested model: QAT refuses it"
    x = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3)).astype(np.float32)
    logits, p = model.predict(x, verbose=0), probs_model.predict(x, verbose=0)
    assert np.allclose(p.sum(1), 1.0, atol=1e-5) and np.array_equal(p.argmax(1), logits.argmax(1))
    same, kind = with_probability_head(tiny_cnn(keras, head="sigmoid", num_classes=2), OutputKind.SIGMOID)
    assert kind is OutputKind.SIGMOID and same.layers[-1].activation.__name__ == "sigmoid"


@pytest.mark.slow
def test_exported_files_give_probabilities(exported):
    from ai_edge_litert.interpreter import Interpreter

    out, report, _ = exported
    assert report.output_kind == "probabilities"
    for name in TFLITE_FILES:
        meta = read_tflite_metadata((out / name).read_bytes())
        assert meta.output_kind is OutputKind.PROBABILITIES, name
    for name in ("model_int8.tflite", "model_qat.tflite"):
        interp = Interpreter(model_path=str(out / name))
        det = interp.get_output_details()[0]
        assert det["dtype"] == np.uint8 and det["quantization"] == (1 / 256, 0), f"{name}: {det['quantization']}"


@pytest.mark.slow
def test_mediapipe_image_classifier_runs_every_exported_tflite(exported):
    from edgeclf.runtime import load_classifier

    out, _, images = exported
    answers = mediapipe_classify([out / n for n in TFLITE_FILES], images)
    for name in TFLITE_FILES:
        got = answers[name]
        assert "error" not in got, f"{name}: MediaPipe refused it: {got.get('error')}"
        assert got["metadata"]["input"]["normalization"] == {"mean": [0.0] * 3, "std": [1.0] * 3}, name
        assert got["metadata"]["output"]["stats"] == [[0.0], [1.0]], name
        ours = load_classifier(out / name).predict([str(p) for p in images])
        for img, cats, pred in zip(images, got["results"], ours):
            assert sorted(c[1] for c in cats) == sorted(LABELS), f"{name} {img.name}: categories {cats}"
            scores = {c[1]: c[2] for c in cats}
            assert all(0.0 <= s <= 1.0 for s in scores.values()), f"{name} {img.name}: scores {scores}"
            assert abs(sum(scores.values()) - 1.0) < 0.02, f"{name} {img.name}: scores sum to {sum(scores.values())}"
            # Top-1 agrees (a quantized tie may be ordered either way: then the scores are equal).
            assert scores[pred.label] == max(scores.values()), \
                f"{name} {img.name}: edgeclf says {pred.label}, MediaPipe scores {scores}"
            assert abs(scores[pred.label] - pred.confidence) < 1e-2, f"{name} {img.name}"


@pytest.mark.slow
def test_every_exported_onnx_passes_the_mobile_tools(exported, tmp_path):
    import onnx

    from edgeclf.export.ort_mobile import OrtStyle, check_mobile_usability, convert_to_ort, fix_batch
    from edgeclf.runtime import load_classifier

    out, _, images = exported
    batch = np.stack([np.asarray(__import__("PIL.Image").Image.open(p).convert("RGB")) for p in images[:4]])
    for name in ONNX_FILES:
        data = (out / name).read_bytes()
        as_is = check_mobile_usability(data, name=name)
        assert not as_is.fixed_shapes, name
        fixed = fix_batch(onnx.load_from_string(data), 1).SerializeToString()
        usable = check_mobile_usability(fixed, name=name)
        assert usable.fixed_shapes and usable.nnapi_nodes >= as_is.nnapi_nodes, f"{name}: {usable}"
        if name == "model_float32.onnx":
            assert usable.providers == ("NNAPI", "CoreML"), usable
        want = load_classifier(out / name).predict_proba(batch)
        for style in OrtStyle:  # the QAT file included: it is standard QDQ
            path = tmp_path / f"{Path(name).stem}.{style.value}.ort"
            path.write_bytes(convert_to_ort(fixed, style=style))
            clf = load_classifier(path)
            assert clf.format == "ort" and clf.labels == LABELS, path.name
            got = clf.predict_proba(batch)
            assert np.array_equal(got.argmax(1), want.argmax(1)), f"{path.name}: top-1 differs"
            assert np.abs(got - want).max() < 2e-2, f"{path.name}: max diff {np.abs(got - want).max()}"


@pytest.mark.slow
def test_qat_onnx_biases_are_int32_behind_dequantize(exported):
    import onnx
    from onnx import numpy_helper

    out, _, _ = exported
    proto = onnx.load(str(out / "model_qat.onnx"))
    producer = {o: n for n in proto.graph.node for o in n.output}
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    quantized = 0
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm") and getattr(producer.get(node.input[0]), "op_type", "") == \
                "DequantizeLinear":
            dq = producer.get(node.input[2])
            assert dq is not None and dq.op_type == "DequantizeLinear", f"{node.name}: float bias"
            assert inits[dq.input[0]].dtype == np.int32, f"{node.name}: bias is {inits[dq.input[0]].dtype}"
            quantized += 1
    assert quantized >= 2, "the second Conv and the Dense layer take quantized input"
    assert not any(n.op_type == "MatMul" for n in proto.graph.node), "Dense should be one Gemm"


@pytest.mark.slow
def test_keep_logits_exports_the_model_as_it_is(exported):
    from edgeclf.export.exporter import export_model

    out, _, _ = exported
    run = out.parent / "run"
    report = export_model(run, out.parent / "logits", formats=["tflite"], precisions=["float32"], keep_logits=True)
    assert report.output_kind == "logits"
    meta = read_tflite_metadata((out.parent / "logits" / "model_float32.tflite").read_bytes())
    assert meta.output_kind is OutputKind.LOGITS


@pytest.mark.slow
def test_int8_io_is_still_exported_with_a_note_that_apps_need_uint8(exported, edgeclf_log):
    caplog = edgeclf_log
    from edgeclf.export.exporter import export_model

    out, _, images = exported
    dest = out.parent / "int8io"
    export_model(out.parent / "run", dest, formats=["tflite"], precisions=["int8"], io="int8")
    assert "MediaPipe" in caplog.text
    got = mediapipe_classify([dest / "model_int8.tflite"], images[:1])["model_int8.tflite"]
    assert "uint8/float32" in got.get("error", ""), f"MediaPipe now takes int8 input: update the note ({got})"


@pytest.mark.slow
def test_export_writes_ort_files_with_a_fixed_batch_and_mobile_verdicts(exported):
    """--format ort --batch 1: ORT-format files the runtime loads and verifies, batch fixed for
    NNAPI/CoreML, and export.json says which mobile providers can run each file."""
    from edgeclf.export.exporter import export_model
    from edgeclf.runtime import load_classifier
    from edgeclf.runtime.verify import verify_golden

    out, _, images = exported
    dest = out.parent / "ort"
    report = export_model(out.parent / "run", dest, formats=["ort"], precisions=["float32", "int8"], batch=1)
    assert sorted(p.name for p in dest.glob("*.ort")) == ["model_float32.ort", "model_int8.ort"]
    for f in report.files:
        assert f.mobile is not None and f.mobile["fixed_shapes"] is True, f.mobile
        assert verify_golden(dest / f.file, dest / "golden.npz").passed
    clf = load_classifier(dest / "model_float32.ort")
    assert clf.format == "ort" and clf.predict_proba(np.zeros((1, *clf.input_size, 3), np.uint8)).shape == (1, 3)
    assert "NNAPI" in report.mobile_table()
