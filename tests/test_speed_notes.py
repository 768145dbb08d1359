"""The 'not faster than float32 here' lines, on synthetic latencies (no timing in tests)."""

from types import SimpleNamespace as NS

from edgeclf.evaluate.report import NOT_FASTER, speed_lines, speed_notes
from edgeclf.runtime.cpu import int8_features_from_cpuinfo
from edgeclf.runtime.spec import Precision

NO_VNNI = int8_features_from_cpuinfo("flags : fpu sse2 avx2 fma avx512f avx512bw\n", "x86_64")
VNNI = int8_features_from_cpuinfo("flags : avx2 avx512bw avx512_vnni\n", "x86_64")


def f(precision, p50, fmt="tflite", threads=2, size=(224, 224), name=None):
    return NS(path=f"/x/{name or 'model_' + str(getattr(precision, 'value', precision))}.{fmt}", format=fmt,
              precision=precision, threads=threads, input_size=size, latency=NS(p50_ms=p50))


def by_name(notes):
    return {n.name: n for n in notes}


def test_the_issues_numbers():
    # MobileNetV2 on the non-VNNI EPYC of issue 15 (float16 made up: no faster than float32).
    files = [f("float32", 13.9), f("float16", 13.5), f("dynamic", 29.6), f("int8", 12.2),
             f("float32", 13.9, "onnx"), f("int8", 9.7, "onnx")]
    notes = by_name(speed_notes(files, int8=NO_VNNI))
    assert set(notes) == {"model_dynamic.tflite", "model_float16.tflite"}, sorted(notes)
    dyn = notes["model_dynamic.tflite"]
    assert abs(dyn.ratio - 29.6 / 13.9) < 1e-9
    assert dyn.text == ("model_dynamic.tflite: dynamic-range is 2.13x slower than float32 here (29.6 vs 13.9 ms "
                        "p50 at batch 1, 2 thread(s)): prefer int8 (0.88x) (this CPU: no int8 dot product "
                        "(no VNNI/AMX; AVX512BW, AVX2 only))"), dyn.text
    f16 = notes["model_float16.tflite"]
    assert "float16 is no faster than float32 here (0.97x" in f16.text
    assert f16.text.endswith("prefer int8 (0.88x)") and "VNNI" not in f16.text, \
        "a float16 note does not blame int8 features"
    # tutorial_cnn 180 px: int8 1.08x float32, nothing faster.
    cnn = speed_notes([f("float32", 2.46, size=(180, 180)), f("int8", 2.65, size=(180, 180))], int8=NO_VNNI)
    assert len(cnn) == 1 and cnn[0].text.startswith("model_int8.tflite: int8 is 1.08x slower than float32 here")
    assert "float32 is the fastest tflite file here" in cnn[0].text and "no VNNI/AMX" in cnn[0].text


def test_advice_lists_faster_precisions_fastest_first_and_not_itself():
    files = [f("float32", 10.0), f("float16", 9.0), f("dynamic", 21.0), f("int8", 5.0), f("qat", 5.5)]
    notes = speed_notes(files, int8=VNNI)
    assert [n.name for n in notes] == ["model_dynamic.tflite"]
    n = notes[0]
    assert n.prefer == ("int8", "int8 (QAT)", "float16"), n.prefer
    assert n.text.endswith("prefer int8 (0.50x) or int8 (QAT) (0.55x) or float16 (0.90x)"), n.text
    assert "VNNI" not in n.text, "with a dot product the CPU is not the reason"


def test_the_threshold_is_a_five_percent_gain():
    assert NOT_FASTER == 0.95
    just_faster = speed_notes([f("float32", 100.0), f("int8", 94.9)])
    assert just_faster == []
    not_faster = speed_notes([f("float32", 100.0), f("int8", 95.0)])
    assert len(not_faster) == 1 and "no faster" in not_faster[0].text
    slower = speed_notes([f("float32", 100.0), f("int8", 110.0)])
    assert "1.10x slower than float32 here" in slower[0].text


def test_files_are_only_measured_against_float32_of_the_same_format_threads_and_size():
    files = [f("float32", 10.0, threads=1), f("int8", 12.0, threads=2),  # different threads: no pair
             f("float32", 10.0, "onnx"), f("int8", 15.0, "tflite"),  # no tflite float32 at 2 threads
             f("float32", 1.0, size=(32, 32)), f("dynamic", 2.0, size=(32, 32))]
    notes = speed_notes(files)
    assert [(n.name, round(n.ratio, 3)) for n in notes] == [("model_dynamic.tflite", 2.0)]


def test_missing_latency_and_enum_precisions():
    files = [f(Precision.FLOAT32, 10.0), f(Precision.DYNAMIC, 30.0), NS(path="/x/m.tflite", format="tflite",
                                                                        precision="int8", threads=2,
                                                                        input_size=(224, 224), latency=None)]
    notes = speed_notes(files)
    assert [n.precision for n in notes] == ["dynamic"]
    assert notes[0].to_dict()["ratio"] == 3.0
    assert speed_lines(notes) == [f"not faster than float32 here: {notes[0].text}"]
    assert speed_lines([]) == []


def test_bench_prints_the_lines(tmp_path):
    # bench_one results have a path, no name: the same notes come out.
    from edgeclf.evaluate.bench import bench_speed_lines, bench_speed_notes

    sysinfo = NS(int8=NO_VNNI)
    results = [f("float32", 2.46, size=(180, 180)), f("int8", 2.65, size=(180, 180))]
    lines = bench_speed_lines(results, sysinfo)
    assert len(lines) == 1 and "int8 is 1.08x slower than float32 here" in lines[0] and "no VNNI/AMX" in lines[0]
    assert bench_speed_notes(results, sysinfo)[0]["name"] == "model_int8.tflite"


def test_bench_command_prints_and_writes_the_notes(tmp_path, monkeypatch):
    # Synthetic latencies through the real command: no timing decides what this test sees.
    import json
    from pathlib import Path

    from click.testing import CliRunner

    import edgeclf.evaluate.bench as bench
    from edgeclf.cli import main
    from edgeclf.runtime.latency import BenchResult, ColdStart, LatencyStats

    fixtures = Path(__file__).parent / "fixtures"
    p50 = {"colour_float32.tflite": 1.0, "colour_dynamic.tflite": 2.5, "colour_int8.tflite": 0.5}

    def fake_bench_one(path, *, threads=None, **_):
        name = Path(path).name
        lat = LatencyStats.from_samples([p50[name]] * 3)
        return BenchResult(path=str(path), format="tflite", precision=name.split("_")[1].split(".")[0],
                           size_bytes=1, input_size=(32, 32), threads=threads or 2,
                           cold_start=ColdStart(1.0, 1.0), latency=lat)

    monkeypatch.setattr(bench, "bench_one", fake_bench_one)
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, ["bench"] + [str(fixtures / n) for n in p50] + ["--json", str(out)])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("not faster than float32 here:")]
    assert len(lines) == 1 and "colour_dynamic.tflite: dynamic-range is 2.50x slower" in lines[0], res.output
    assert lines[0].endswith("prefer int8 (0.50x)") or "prefer int8 (0.50x) (this CPU" in lines[0], lines[0]
    notes = json.loads(out.read_text())["speed_notes"]
    assert [n["name"] for n in notes] == ["colour_dynamic.tflite"] and notes[0]["ratio"] == 2.5
    assert "int8" in json.loads(out.read_text())["system"], "the JSON names the CPU's int8 features"
