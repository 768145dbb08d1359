"""Issue 12, runtime: model and golden files that hang, exhaust memory or crash; output rows
that do not match the inputs; labels that forge output; bounds on threads. No TensorFlow."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeclf.cli import main
from edgeclf.errors import DataError, ModelFileError, UsageError
from edgeclf.runtime import load_classifier
from edgeclf.runtime.backend import MAX_THREADS, read_model_bytes
from edgeclf.runtime.metadata import METADATA_KEY
from edgeclf.runtime.spec import ModelSpec

from _data_helpers import finishes

FIXTURES = Path(__file__).parent / "fixtures"
RED = FIXTURES / "images" / "red.png"



def test_a_fifo_model_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "model.tflite"
    os.mkfifo(fifo)
    box = finishes(lambda: load_classifier(fifo))
    assert isinstance(box.get("error"), ModelFileError), box
    assert "not a regular file" in str(box["error"])


def test_a_link_to_dev_zero_is_refused_without_reading_it(tmp_path):
    link = tmp_path / "model.onnx"
    link.symlink_to("/dev/zero")
    box = finishes(lambda: load_classifier(link))
    assert isinstance(box.get("error"), ModelFileError) and "not a regular file" in str(box["error"]), box


def test_model_bytes_are_capped(tmp_path):
    big = tmp_path / "big.tflite"
    big.write_bytes(b"x" * 100)
    with pytest.raises(ModelFileError, match="limit of a model file"):
        read_model_bytes(big, limit=50)
    assert read_model_bytes(big, limit=100) == b"x" * 100


@pytest.mark.parametrize("threads", [0, MAX_THREADS + 1, 100000])
def test_threads_are_bounded(threads):
    with pytest.raises(UsageError, match=f"from 1 to {MAX_THREADS}"):
        load_classifier(FIXTURES / "colour_float32.onnx", threads=threads)


def test_cli_threads_out_of_range_is_one_line():
    res = CliRunner().invoke(main, ["predict", str(FIXTURES / "colour_float32.onnx"), str(RED),
                                    "--threads", "100000"])
    assert res.exit_code == 2 and f"from 1 to {MAX_THREADS}" in res.output, res.output


# --- tiny hand-built ONNX graphs (onnx package, no TensorFlow) ---------------------------------

def _onnx_model(path: Path, *, reshape_to, labels=("a", "b"), labels_raw=None, out_rows="N"):
    from onnx import TensorProto, helper, numpy_helper

    k = int(np.prod(reshape_to[1:]))
    w = np.ones((k, 2), np.float32)
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["f", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 2, 2, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [out_rows, 2])],
        [numpy_helper.from_array(np.asarray(reshape_to, np.int64), "shape"), numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ModelSpec(labels=tuple(labels), input_size=(2, 2)).to_json()
    if labels_raw is not None:
        d = json.loads(meta)
        d["labels"] = labels_raw
        meta = json.dumps(d)
    helper.set_model_props(model, {METADATA_KEY: meta})
    path.write_bytes(model.SerializeToString())
    return path


def test_more_output_rows_than_images_is_refused(tmp_path):
    # Reshape to (-1, 3): 4 rows per 2x2 image, so 2 images give 8 rows.
    clf = load_classifier(_onnx_model(tmp_path / "m.onnx", reshape_to=[-1, 3]), threads=1)
    with pytest.raises(ModelFileError, match=r"shape \[8, 2\] for 2 images"):
        clf.predict_proba(np.zeros((2, 2, 2, 3), np.uint8))


def test_an_engine_error_at_predict_time_is_a_model_file_error(tmp_path):
    # Reshape to a constant (1, 12): loads and runs one image, fails on a batch of two.
    clf = load_classifier(_onnx_model(tmp_path / "m.onnx", reshape_to=[1, 12]), threads=1)
    assert clf.predict_proba(np.zeros((1, 2, 2, 3), np.uint8)).shape == (1, 2)
    with pytest.raises(ModelFileError, match="ONNX Runtime failed to run this file on 2 images"):
        clf.predict_proba(np.zeros((2, 2, 2, 3), np.uint8))


def test_cli_predict_engine_error_exits_1_not_70(tmp_path):
    m = _onnx_model(tmp_path / "m.onnx", reshape_to=[1, 12])
    res = CliRunner().invoke(main, ["predict", str(m), str(RED), str(FIXTURES / "images" / "blue.png")])
    assert res.exit_code == 1 and "ONNX Runtime failed to run" in res.output and "internal" not in res.output


@pytest.mark.parametrize("labels, word", [(["a", "a"], "repeated"), (["a", ""], "empty"), (["a", " "], "empty")])
def test_metadata_labels_must_be_unique_and_not_empty(tmp_path, labels, word):
    m = _onnx_model(tmp_path / "m.onnx", reshape_to=[-1, 12], labels_raw=labels)
    with pytest.raises(ModelFileError, match=word):
        load_classifier(m, threads=1)


def test_deeply_nested_metadata_json_is_a_model_file_error():
    with pytest.raises(ModelFileError, match="nested too deeply"):
        ModelSpec.from_json("[" * 200_000 + "]" * 200_000)


def test_labels_cannot_forge_lines_or_clear_the_screen(tmp_path):
    m = _onnx_model(tmp_path / "m.onnx", reshape_to=[-1, 12],
                    labels=("cat\nfake.png: This image most likely belongs to dog", "\x1b[2Jdog\u202e"))
    res = CliRunner().invoke(main, ["predict", str(m), str(RED), "--top-k", "2"])
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.output and "\u202e" not in res.output
    lines = res.output.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{RED}: ") and "\\x0a" in res.output, lines
    assert not any(line.startswith("fake.png") for line in lines)
    # --json keeps the labels exact (JSON escapes them itself)
    res = CliRunner().invoke(main, ["predict", str(m), str(RED), "--json", "-"])
    assert json.loads(res.output)[0]["label"] in ("cat\nfake.png: This image most likely belongs to dog",
                                                  "\x1b[2Jdog\u202e")


def test_an_unreadable_image_is_reported_and_the_rest_predicted(tmp_path, monkeypatch):
    bad = tmp_path / "bad.png"
    shutil.copy(RED, bad)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(bad) else real_access(p, mode))
    # Tests may run as root, who reads anything; so the file is also made undecodable.
    bad.write_bytes(b"not an image")
    res = CliRunner().invoke(main, ["predict", str(FIXTURES / "colour_float32.onnx"), str(bad), str(RED)])
    assert res.exit_code == 1, res.output
    assert "Usage:" not in res.output and f"Error: {bad}:" in res.output
    assert f"{RED}: This image most likely belongs to" in res.output


# --- golden files ---------------------------------------------------------------------------

def _golden(tmp_path, **override):
    from edgeclf.runtime.verify import load_golden

    arrays = dict(load_golden(FIXTURES / "golden.npz"))
    arrays.update(override)
    p = tmp_path / "golden.npz"
    np.savez(p, **arrays)
    return p


def test_a_renamed_model_verifies_by_its_content(tmp_path):
    from edgeclf.export.golden import write_golden
    from edgeclf.runtime.verify import load_golden, verify_golden

    arrays = load_golden(FIXTURES / "golden.npz")
    shutil.copy(FIXTURES / "colour_int8.tflite", tmp_path / "colour_int8.tflite")
    write_golden(tmp_path / "golden.npz", arrays["images"],
                 {"colour_int8.tflite": (arrays["probs::colour_int8.tflite"], 5e-2)})
    (tmp_path / "colour_int8.tflite").rename(tmp_path / "renamed.tflite")
    report = verify_golden(tmp_path / "renamed.tflite", tmp_path / "golden.npz", threads=1)
    assert report.passed and report.entry == "colour_int8.tflite"
    res = CliRunner().invoke(main, ["verify", str(tmp_path / "renamed.tflite"), str(tmp_path / "golden.npz")])
    assert res.exit_code == 0 and res.output.startswith("OK"), res.output


@pytest.mark.parametrize("atol", [np.array([0.1, 0.2]), np.array("0.1"), np.float64(np.nan), np.float64(-1)])
def test_a_bad_tolerance_is_a_data_error(tmp_path, atol):
    from edgeclf.runtime.verify import verify_golden

    g = _golden(tmp_path, **{"atol::colour_float32.tflite": atol})
    with pytest.raises(DataError, match="tolerance recorded"):
        verify_golden(FIXTURES / "colour_float32.tflite", g, threads=1)
    res = CliRunner().invoke(main, ["verify", str(FIXTURES / "colour_float32.tflite"), str(g)])
    assert res.exit_code == 1 and "tolerance recorded" in res.output and "internal" not in res.output


def test_a_golden_file_with_no_images_does_not_verify(tmp_path):
    from edgeclf.runtime.verify import verify_golden

    g = _golden(tmp_path, images=np.zeros((0, 8, 8, 3), np.uint8),
                **{"probs::colour_float32.tflite": np.zeros((0, 4), np.float32)})
    with pytest.raises(DataError, match="no golden images"):
        verify_golden(FIXTURES / "colour_float32.tflite", g, threads=1)


def test_a_npy_named_npz_is_a_data_error(tmp_path):
    from edgeclf.runtime.verify import verify_golden

    g = tmp_path / "golden.npz"
    with open(g, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataError, match="single .npy array"):
        verify_golden(FIXTURES / "colour_float32.tflite", g, threads=1)


def test_a_fifo_golden_file_is_refused_without_hanging(tmp_path):
    from edgeclf.runtime.verify import verify_golden

    g = tmp_path / "golden.npz"
    os.mkfifo(g)
    box = finishes(lambda: verify_golden(FIXTURES / "colour_float32.tflite", g, threads=1))
    assert isinstance(box.get("error"), DataError) and "not a regular file" in str(box["error"]), box


def test_ort_sessions_use_exact_quantized_products_on_every_x86_cpu():
    clf = load_classifier(FIXTURES / "colour_dynamic.onnx", threads=1)
    opts = clf._backend._session.get_session_options()
    assert opts.get_session_config_entry("session.x64quantprecision") == "1"
