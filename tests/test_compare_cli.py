"""`edgeclf compare`: the JSON shape, the exit codes, label checks, the report files.

Most tests run a fake classifier (monkeypatched ``load_classifier``) whose predictions are
made by hand so that the expected agreement and flips are known; one runs the committed
fixture models end to end through the real engines.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgeclf._io import MARKER
from edgeclf.cli import main
from edgeclf.runtime.spec import ModelSpec

FIXTURES = Path(__file__).parent / "fixtures"
LABELS = ("blue", "green", "red")


def _make_folder(root: Path, per_class: int = 4) -> Path:
    """Class folders of flat-colour 16x16 images; the red channel value encodes the image number."""
    colours = {"blue": (0, 0, 200), "green": (0, 200, 0), "red": (200, 0, 0)}
    k = 0
    for name, (r, g, b) in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (16, 16), (r + k if r else k, g, b)).save(root / name / f"{i}.png")
            k += 1
    return root


class FakeClassifier:
    """Predicts the dominant colour channel; 'wrong' files flip the images listed in FLIP."""

    FLIP: dict = {}

    def __init__(self, path, threads):
        self.path = Path(path)
        self.format = "onnx" if self.path.suffix == ".onnx" else "tflite"
        self.precision = self.path.stem.split("_")[-1]
        self.labels = ("red", "green", "blue")  # a different order from the data's: columns get realigned
        self.input_size = (16, 16)
        self.threads = threads or 2
        self.metadata = ModelSpec(labels=self.labels, input_size=self.input_size, precision=self.precision)

    def predict_proba(self, batch):
        x = batch.astype(np.float64).mean(axis=(1, 2))  # (N, 3) RGB means
        r_channel = x[:, 0]
        dominant = x.argmax(axis=1)  # 0 red, 1 green, 2 blue == our label order
        probs = np.full((len(batch), 3), 0.1)
        probs[np.arange(len(batch)), dominant] = 0.8
        for image_no, to in self.FLIP.get(self.path.name, []):
            # the image number is the red value modulo 200 (see _make_folder)
            hit = np.isclose(r_channel % 200, image_no)
            probs[hit] = 0.1
            probs[hit, ("red", "green", "blue").index(to)] = 0.6
        return probs.astype(np.float32)


@pytest.fixture
def fake_runtime(monkeypatch, tmp_path):
    import edgeclf.runtime

    monkeypatch.setattr(edgeclf.runtime, "load_classifier",
                        lambda path, threads=None, labels=None: FakeClassifier(path, threads), raising=False)
    models = tmp_path / "models"
    models.mkdir()
    for name in ("model_float32.tflite", "model_int8.tflite", "model_float32.onnx"):
        (models / name).write_bytes(b"\0" * 100)
    FakeClassifier.FLIP = {}
    return models


def _compare(args):
    return CliRunner().invoke(main, ["compare", *map(str, args)], catch_exceptions=False)


def test_json_shape_and_flips(fake_runtime, tmp_path):
    data = _make_folder(tmp_path / "data")
    # image 1 is blue (index 1 of the blue folder); image 5 is green; image 9 is red
    FakeClassifier.FLIP = {"model_int8.tflite": [(1, "red"), (5, "blue")]}
    out = tmp_path / "c.json"
    res = _compare([fake_runtime, "--data", data, "--json", out, "--threads", 1])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert set(d) >= {"reference", "models", "passed"}
    assert d["passed"] is True
    assert d["reference"]["path"].endswith("model_float32.tflite"), "float32 TFLite is the default reference"
    by = {Path(m["path"]).name: m for m in d["models"]}
    assert set(by) == {"model_float32.tflite", "model_int8.tflite", "model_float32.onnx"}
    for m in d["models"]:
        for key in ("path", "format", "precision", "size_bytes", "accuracy", "accuracy_delta", "agreement",
                    "max_abs_diff", "latency", "passed"):
            assert key in m, f"model entry lacks {key!r}"
        assert set(m["latency"]) >= {"p50_ms", "p90_ms", "p99_ms"}
        assert m["threads"] == 1
        assert m["size_bytes"] == 100
    assert by["model_float32.onnx"]["agreement"] == 1.0
    assert by["model_float32.onnx"]["accuracy"] == 1.0
    i8 = by["model_int8.tflite"]
    assert i8["accuracy"] == pytest.approx(10 / 12)
    assert i8["accuracy_delta"] == pytest.approx(-100 * 2 / 12)
    assert i8["agreement"] == pytest.approx(10 / 12)
    assert i8["max_abs_diff"] == pytest.approx(0.7)
    assert sorted((Path(f["source"]).parent.name, f["label"], f["kind"]) for f in i8["flips"]) == [
        ("blue", "red", "broke"), ("green", "blue", "broke")]
    deltas = {c["label"]: c["delta"] for c in i8["per_class"]}
    assert deltas == {"blue": pytest.approx(-25.0), "green": pytest.approx(-25.0), "red": 0.0}
    assert "model_int8.tflite" in res.output and "FAIL" not in res.output


@pytest.mark.parametrize("gate, code", [
    (["--max-accuracy-drop", "20"], 0),
    (["--max-accuracy-drop", "16"], 1),
    (["--min-agreement", "0.8"], 0),
    (["--min-agreement", "0.9"], 1),
])
def test_exit_codes_follow_the_gates(fake_runtime, tmp_path, gate, code):
    data = _make_folder(tmp_path / "data")
    FakeClassifier.FLIP = {"model_int8.tflite": [(1, "red"), (5, "blue")]}  # -16.7 points, agreement 0.833
    out = tmp_path / "c.json"
    res = _compare([fake_runtime, "--data", data, "--json", out, *gate])
    assert res.exit_code == code, res.output
    d = json.loads(out.read_text())
    assert d["passed"] is (code == 0)
    assert {Path(m["path"]).name: m["passed"] for m in d["models"]} == {
        "model_float32.tflite": True, "model_float32.onnx": True, "model_int8.tflite": code == 0}
    assert ("FAIL model_int8.tflite" in res.output) is (code == 1)


@pytest.mark.parametrize("args, code, message", [
    (["--threads", "0"], 2, "--threads must be at least 1"),
    (["--min-agreement", "98"], 2, "fraction"),
    (["--max-accuracy-drop", "-1"], 2, ">= 0"),
    (["--reference", "missing.tflite"], 2, "does not exist"),
    (["--reference", "keras"], 2, "run directory"),
])
def test_bad_options(fake_runtime, tmp_path, args, code, message):
    data = _make_folder(tmp_path / "data")
    res = CliRunner().invoke(main, ["compare", str(fake_runtime), "--data", str(data), *args])
    assert res.exit_code == code, res.output
    assert message in res.output


def test_no_float32_reference(fake_runtime, tmp_path):
    data = _make_folder(tmp_path / "data")
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "m_int8.tflite").write_bytes(b"\0")
    res = CliRunner().invoke(main, ["compare", str(lone / "m_int8.tflite"), "--data", str(data)])
    assert res.exit_code == 2 and "no float32 model" in res.output and "--reference" in res.output
    res = CliRunner().invoke(main, ["compare", str(lone / "m_int8.tflite"), "--data", str(data),
                                    "--reference", str(fake_runtime / "model_float32.onnx")])
    assert res.exit_code == 0, res.output


def test_run_directory_uses_validation_split(fake_runtime, tmp_path):
    data = _make_folder(tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    val = [[str(data / "red" / "0.png"), 2], [str(data / "blue" / "0.png"), 0], [str(data / "green" / "3.png"), 1]]
    (run / "split.json").write_text(json.dumps({"val": val, "train": []}))
    (run / "spec.json").write_text(ModelSpec(labels=LABELS, input_size=(16, 16)).to_json())
    out = tmp_path / "c.json"
    res = _compare([fake_runtime, "--data", run, "--json", out])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["data"]["num_images"] == 3 and d["models"][0]["accuracy"] == 1.0


def test_labels_that_differ_from_the_data(fake_runtime, tmp_path):
    data = tmp_path / "data"
    for name in ("cat", "dog"):
        (data / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(data / name / "a.png")
    res = CliRunner().invoke(main, ["compare", str(fake_runtime), "--data", str(data)])
    assert res.exit_code == 1
    assert "differ from the data's classes" in res.output and "Traceback" not in res.output


def test_unreadable_image_is_skipped_not_fatal(fake_runtime, tmp_path):
    data = _make_folder(tmp_path / "data")
    (data / "red" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "c.json"
    res = _compare([fake_runtime, "--data", data, "--json", out])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["data"]["num_images"] == 12
    assert [Path(p).name for p, _ in d["data"]["skipped"]] == ["broken.png"]


def test_report_files(fake_runtime, tmp_path):
    data = _make_folder(tmp_path / "data")
    FakeClassifier.FLIP = {"model_int8.tflite": [(1, "red")], "model_float32.onnx": [(1, "green")]}
    rep = tmp_path / "rep"
    res = _compare([fake_runtime, "--data", data, "--report", rep])
    assert res.exit_code == 0, res.output
    md = (rep / "report.md").read_text()
    for section in ("## Results", "## Accuracy per class", "## Flipped images", "accuracy_latency_size.png",
                    "flipped.png", "| blue | 4 | 100.00% |"):
        assert section in md, f"report.md lacks {section!r}"
    for png in ("accuracy_latency_size.png", "flipped.png"):
        with Image.open(rep / png) as im:
            assert im.format == "PNG" and im.size[0] > 200, png
    assert [p for p in os.listdir(rep) if p.startswith(".")] == [MARKER], "temporary files left behind"


def test_report_keeps_a_users_folder_and_replaces_only_its_own(fake_runtime, tmp_path):
    data = _make_folder(tmp_path / "data")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my own notes")
    for extra in ([], ["--overwrite"]):
        res = _compare([fake_runtime, "--data", data, "--report", mine, *extra])
        assert res.exit_code == 2, res.output
        assert ("not empty" if not extra else "did not write") in res.output, res.output
    assert os.listdir(mine) == ["report.md"] and (mine / "report.md").read_text() == "my own notes"
    rep = tmp_path / "rep"
    assert _compare([fake_runtime, "--data", data, "--report", rep]).exit_code == 0
    res = _compare([fake_runtime, "--data", data, "--report", rep])
    assert res.exit_code == 2 and "pass --overwrite" in res.output, res.output
    (rep / "report.md").write_text("stale")
    assert _compare([fake_runtime, "--data", data, "--report", rep, "--overwrite"]).exit_code == 0
    assert "## Results" in (rep / "report.md").read_text()
    for inside in (data, data / "red" / "report", tmp_path):  # the data, a folder in it, one around it
        res = _compare([fake_runtime, "--data", data, "--report", inside, "--overwrite"])
        assert res.exit_code == 2 and "the input" in res.output, res.output
    assert sorted(os.listdir(data / "red")) == sorted(p.name for p in (data / "red").iterdir())
    assert not (data / "red" / "report").exists()


def test_report_without_matplotlib(fake_runtime, tmp_path, monkeypatch):
    import edgeclf.evaluate.report as report
    from edgeclf.errors import MissingDependencyError

    def missing(*a, **k):
        raise MissingDependencyError("the report's accuracy plot needs the package 'matplotlib'")

    monkeypatch.setattr(report, "plot_accuracy", missing)
    data = _make_folder(tmp_path / "data")
    rep = tmp_path / "rep"
    res = _compare([fake_runtime, "--data", data, "--report", rep])
    assert res.exit_code == 0, res.output
    md = (rep / "report.md").read_text()
    assert "Plot not drawn" in md and "matplotlib" in md
    assert not (rep / "accuracy_latency_size.png").exists()
    assert "accuracy_latency_size.png was not drawn: the report's accuracy plot needs the package 'matplotlib'" \
        in res.stderr, f"the terminal must say the plot was skipped and why; stderr was: {res.stderr!r}"


def test_fixture_models_end_to_end(tmp_path):
    """The committed tiny models through the real engines: float32 files agree 100%."""
    fx = [FIXTURES / n for n in ("colour_float32.tflite", "colour_float32.onnx", "colour_int8.tflite")]
    data = tmp_path / "data"
    for name, rgb in (("red", (220, 20, 20)), ("green", (20, 200, 30)), ("blue", (20, 30, 220))):
        (data / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 40), tuple(min(255, c + 10 * i) for c in rgb)).save(data / name / f"{i}.png")
    out = tmp_path / "c.json"
    res = _compare([*fx, "--data", data, "--json", out, "--min-agreement", "1.0"])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    by = {Path(m["path"]).name: m for m in d["models"]}
    assert by["colour_float32.onnx"]["agreement"] == 1.0
    assert by["colour_float32.onnx"]["max_abs_diff"] < 1e-4
    assert by["colour_float32.tflite"]["accuracy"] == 1.0
    assert by["colour_int8.tflite"]["precision"] == "int8"
    for name, m in by.items():  # peak memory per file, each measured in a fresh process
        assert m["memory"]["added_bytes"] > 0 and "fresh process" in m["memory"]["method"], name
    assert any(line.startswith("file ") and " memory " in line for line in res.output.splitlines()), res.output


def test_binary_model_on_colour_data_is_refused(tmp_path):
    fx = FIXTURES / "binary_float32.tflite"
    data = _make_folder(tmp_path / "data")
    res = CliRunner().invoke(main, ["compare", str(fx), "--data", str(data)])
    assert res.exit_code == 1
    assert "binary_float32.tflite" in res.output and "differ from the data's classes" in res.output


def test_compare_accuracy_equals_predict_accuracy(tmp_path):
    """Accuracy from `compare` equals the fraction of `predict` labels that match the folder name."""
    model = FIXTURES / "colour_int8.tflite"
    ref = FIXTURES / "colour_float32.tflite"
    data = tmp_path / "data"
    rng = np.random.default_rng(3)
    colours = {"red": (200, 40, 40), "green": (40, 190, 50), "blue": (40, 50, 210)}
    for name in colours:
        (data / name).mkdir(parents=True)
    # 4 right images per class, plus 3 images filed under the wrong class: accuracy is 12/15 (not 1).
    k = 0
    for name, rgb in colours.items():
        for i in range(5):
            true = name if i < 4 else list(colours)[(list(colours).index(name) + 1) % 3]
            pix = np.clip(np.array(colours[true]) + rng.normal(0, 25, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pix).save(data / name / f"img {k}.png")  # a space in the name, on purpose
            k += 1
    out = tmp_path / "c.json"
    res = _compare([model, "--data", data, "--reference", ref, "--json", out])
    assert res.exit_code == 0, res.output
    compare_acc = {Path(m["path"]).name: m["accuracy"] for m in json.loads(out.read_text())["models"]}
    res = CliRunner().invoke(main, ["predict", str(model), str(data), "--json", "-"])
    assert res.exit_code == 0, res.output
    preds = json.loads(res.stdout if hasattr(res, "stdout") else res.output)
    assert len(preds) == 15
    predict_acc = np.mean([Path(p["source"]).parent.name == p["label"] for p in preds])
    assert predict_acc == pytest.approx(12 / 15)
    assert compare_acc["colour_int8.tflite"] == pytest.approx(predict_acc)


def test_each_image_decoded_once_per_input_size(fake_runtime, tmp_path, monkeypatch):
    import edgeclf.runtime.preprocess as preprocess

    data = _make_folder(tmp_path / "data")
    sizes = {"model_float32.tflite": (16, 16), "model_int8.tflite": (16, 16), "model_float32.onnx": (12, 12)}
    original_init = FakeClassifier.__init__

    def init(self, path, threads):
        original_init(self, path, threads)
        self.input_size = sizes[Path(path).name]

    monkeypatch.setattr(FakeClassifier, "__init__", init)
    calls = []
    real = preprocess.load_image
    monkeypatch.setattr(preprocess, "load_image", lambda src, size, **kw: calls.append(tuple(size)) or
                        real(src, size, **kw))
    res = _compare([fake_runtime, "--data", data])
    assert res.exit_code == 0, res.output
    assert sorted(set(calls)) == [(12, 12), (16, 16)]
    assert calls.count((16, 16)) == 12 and calls.count((12, 12)) == 12, "12 images, once per size"


def test_labels_option_for_files_without_metadata(tmp_path):
    nometa = FIXTURES / "colour_nometa.tflite"
    ref = FIXTURES / "colour_float32.tflite"
    data = _make_folder(tmp_path / "data")
    res = CliRunner().invoke(main, ["compare", str(nometa), "--data", str(data), "--reference", str(ref)])
    assert res.exit_code == 1 and "--labels" in res.output, res.output
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    out = tmp_path / "c.json"
    res = _compare([nometa, "--data", data, "--reference", ref, "--labels", labels, "--json", out])
    assert res.exit_code == 0, res.output
    model = json.loads(out.read_text())["models"][0]
    assert model["agreement"] == 1.0
    assert model["memory"]["added_bytes"] > 0, "the --labels reach the process that measures memory"


def test_a_reference_file_beside_the_models_is_shown_and_upper_case_suffixes_found(tmp_path):
    import shutil

    from edgeclf.cli import main as cli_main

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(FIXTURES / "colour_int8.tflite", models / "MODEL_INT8.TFLITE")
    data = tmp_path / "data"
    for cls, name in (("red", "red.png"), ("green", "green.jpg"), ("blue", "blue.png")):
        (data / cls).mkdir(parents=True)
        shutil.copy(FIXTURES / "images" / name, data / cls / name)
    res = CliRunner().invoke(cli_main, ["compare", str(models), "--data", str(data),
                                        "--reference", str(FIXTURES / "colour_float32.tflite")])
    assert res.exit_code == 0, res.output
    rows = [line.split()[0] for line in res.stdout.splitlines() if line.startswith(("colour", "MODEL"))]
    assert rows == ["colour_float32.tflite", "MODEL_INT8.TFLITE"], res.stdout
