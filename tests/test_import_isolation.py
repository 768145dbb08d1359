"""The runtime and the CLI never load TensorFlow (or Keras, tf2onnx, tfmot), and importing
the runtime loads no engine until a model file is opened. Checked in fresh subprocesses."""

import json
import subprocess
import sys

HEAVY = ["tensorflow", "tf_keras", "keras", "tf2onnx", "tensorflow_model_optimization"]
ENGINES = ["ai_edge_litert", "ai_edge_litert.interpreter", "onnxruntime"]
# The [stream] extra: only `edgeclf stream` on a camera, video or URL may load it.
OPENCV = {"cv2"}


def _loaded(code: str) -> set[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_runtime_and_cli_loads_no_tensorflow_and_no_engine():
    mods = _loaded("import edgeclf, edgeclf.runtime, edgeclf.cli\n"
                   "from edgeclf.runtime import load_classifier, Classifier, Prediction, ModelSpec, load_image")
    assert not mods & set(HEAVY), f"loaded: {sorted(mods & set(HEAVY))}"
    assert not mods & set(ENGINES), f"an engine was imported before any model was loaded: {sorted(mods & set(ENGINES))}"
    assert not mods & OPENCV, "importing the runtime or the CLI loaded OpenCV"
    assert "edgeclf.runtime.stream" not in mods and "edgeclf.runtime.frames" not in mods


def test_predicting_with_both_engines_loads_no_tensorflow():
    mods = _loaded(
        "from pathlib import Path\n"
        "from edgeclf.runtime import load_classifier\n"
        f"F = Path({str(__file__)!r}).parent / 'fixtures'\n"
        "for n in ('colour_int8.tflite', 'colour_int8.onnx'):\n"
        "    load_classifier(F / n, threads=1).predict(F / 'images' / 'red.png')\n"
        "from edgeclf.runtime.verify import verify_golden\n"
        "verify_golden(F / 'colour_int8.tflite', F / 'golden.npz', threads=1)\n")
    assert not mods & set(HEAVY), f"loaded: {sorted(mods & set(HEAVY))}"
    assert {"ai_edge_litert.interpreter", "onnxruntime"} <= mods  # the probe did run both engines


def test_cli_help_loads_no_tensorflow():
    mods = _loaded("import sys\nfrom edgeclf.cli import main\n"
                   "for args in (['--help'], ['predict', '--help'], ['verify', '--help'],\n"
                   "             ['stream', '--help']):\n"
                   "    try:\n"
                   "        main(args, standalone_mode=False)\n"
                   "    except SystemExit:\n"
                   "        pass\n")
    assert not mods & set(HEAVY), f"loaded: {sorted(mods & set(HEAVY))}"
    assert not mods & OPENCV, "--help loaded OpenCV"


def test_predict_command_loads_no_tensorflow(tmp_path):
    import pathlib

    fixtures = pathlib.Path(__file__).parent / "fixtures"
    mods = _loaded("from edgeclf.cli import main\n"
                   "try:\n"
                   f"    main(['predict', {str(fixtures / 'colour_float32.onnx')!r}, {str(fixtures / 'images')!r}],"
                   " standalone_mode=False)\n"
                   "except SystemExit:\n"
                   "    pass\n")
    assert not mods & set(HEAVY), f"loaded: {sorted(mods & set(HEAVY))}"
    assert not mods & OPENCV, "predict loaded OpenCV"
    assert not mods & {"edgeclf.cli.stream", "edgeclf.runtime.stream", "edgeclf.runtime.frames"}, \
        "predict's start-up loaded the stream command"
    assert "onnxruntime" in mods  # the probe did predict


def test_streaming_a_folder_loads_no_opencv_and_no_tensorflow():
    import pathlib

    fixtures = pathlib.Path(__file__).parent / "fixtures"
    mods = _loaded("from edgeclf.cli import main\n"
                   "try:\n"
                   f"    main(['stream', {str(fixtures / 'colour_int8.tflite')!r}, {str(fixtures / 'images')!r},"
                   " '--frames', '2'], standalone_mode=False)\n"
                   "except SystemExit:\n"
                   "    pass\n")
    assert "edgeclf.runtime.stream" in mods and "ai_edge_litert.interpreter" in mods  # the probe did stream
    assert not mods & OPENCV, "a folder needs no OpenCV"
    assert not mods & set(HEAVY), f"loaded: {sorted(mods & set(HEAVY))}"


def test_predict_proba_on_ready_pixels_does_not_load_pillow():
    # A camera loop hands uint8 frames straight to predict_proba: no image library needed.
    mods = _loaded(
        "from pathlib import Path\nimport numpy as np\n"
        "from edgeclf.runtime import load_classifier\n"
        f"F = Path({str(__file__)!r}).parent / 'fixtures'\n"
        "load_classifier(F / 'colour_int8.tflite', threads=1).predict_proba(np.zeros((1, 32, 32, 3), np.uint8))\n")
    assert "PIL" not in mods
    assert not mods & set(HEAVY)


def _edgeclf_imports(path) -> set[str]:
    """Every edgeclf subpackage a module imports, at any depth (function-level imports too)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    rel_pkg = path.resolve().parent.relative_to(ROOT).parts  # ("edgeclf", "runtime")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel_pkg[: len(rel_pkg) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = (node.module or "").split(".")
            names = [target] if node.module else [target + [a.name] for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names]
        else:
            continue
        for parts in names:
            if parts and parts[0] == "edgeclf" and len(parts) > 1:
                found.add(parts[1])
    return found


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_runtime_imports_nothing_from_the_host_side():
    """Imports run one way: runtime never reaches up into evaluate, export, train, data or cli."""
    up = {"evaluate", "export", "train", "data", "cli"}
    offenders = {}
    for path in sorted((ROOT / "edgeclf" / "runtime").glob("*.py")):
        bad = _edgeclf_imports(path) & up
        if bad:
            offenders[path.name] = sorted(bad)
    assert not offenders, f"runtime modules importing host-side packages: {offenders}"


def test_data_imports_nothing_above_it():
    offenders = {p.name: sorted(_edgeclf_imports(p) & {"evaluate", "export", "train", "cli"})
                 for p in sorted((ROOT / "edgeclf" / "data").glob("*.py"))}
    assert not {k: v for k, v in offenders.items() if v}, offenders
