"""`edgeclf bench` on the committed tiny models: the JSON it writes and the options it refuses."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeclf.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
TFLITE = FIXTURES / "colour_int8.tflite"
ONNX = FIXTURES / "colour_float32.onnx"

def test_bench_two_models_two_thread_counts(tmp_path):
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, ["bench", str(TFLITE), str(ONNX), "--threads", "1", "--threads", "2",
                                    "--runs", "7", "--warmup", "2", "--batch-size", "4", "--json", str(out)])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["system"]["cpu_model"] and d["system"]["onnxruntime"] and d["system"]["ai_edge_litert"]
    rows = d["results"]
    assert [(Path(r["path"]).name, r["threads"]) for r in rows] == [
        ("colour_int8.tflite", 1), ("colour_int8.tflite", 2), ("colour_float32.onnx", 1), ("colour_float32.onnx", 2)]
    for r in rows:
        lat = r["latency"]
        assert lat["runs"] == 7 and lat["warmup"] == 2, "--runs bounds the timed runs"
        assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert r["batch_size"] == 4 and r["batch_latency"]["runs"] == 7
        cold = r["cold_start"]
        assert cold["total_ms"] == pytest.approx(cold["load_ms"] + cold["first_inference_ms"])
        assert r["peak_rss_bytes"] > 0
        assert r["memory"]["added_bytes"] > 0 and r["memory"]["batch"] == 1, "peak memory, fresh process"
        assert r["memory"]["threads"] == r["threads"]
        assert r["size_bytes"] == Path(r["path"]).stat().st_size
        assert r["input_size"] == [32, 32]
    assert rows[0]["format"] == "tflite" and rows[0]["precision"] == "int8"
    assert rows[2]["format"] == "onnx" and rows[2]["precision"] == "float32"
    # the table names every file and the machine
    table = [line for line in res.output.splitlines() if line.startswith("colour_")]
    assert [line.split()[0] for line in table] == ["colour_int8.tflite"] * 2 + ["colour_float32.onnx"] * 2
    assert "machine:" in res.output


def test_bench_time_budget(tmp_path):
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, ["bench", str(TFLITE), "--seconds", "0.05", "--warmup", "0", "--json", str(out)])
    assert res.exit_code == 0, res.output
    lat = json.loads(out.read_text())["results"][0]["latency"]
    assert lat["runs"] >= 1 and lat["total_s"] >= 0.05
    assert lat["total_s"] < 1.0, "the time budget stops the runs"


@pytest.mark.parametrize("args, message", [
    (["--threads", "0"], "--threads must be at least 1"),
    (["--threads", "-2"], "--threads must be at least 1"),
    (["--runs", "3", "--seconds", "1"], "not both"),
    (["--runs", "0"], "--runs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--seconds", "0"], "--seconds"),
])
def test_bench_refuses_bad_options(args, message):
    res = CliRunner().invoke(main, ["bench", str(TFLITE), *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_bench_missing_model(tmp_path):
    res = CliRunner().invoke(main, ["bench", str(tmp_path / "nope.tflite")])
    assert res.exit_code == 2 and "does not exist" in res.output
