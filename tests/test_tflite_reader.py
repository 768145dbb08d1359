"""The runtime's own TFLite metadata reader against the generated schema, on every fixture
and on damaged copies; and what a .tflite cold start imports (fresh subprocesses)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeclf.runtime._tflite_reader import read_metadata_entry
from edgeclf.runtime.metadata import METADATA_KEY

FIXTURES = Path(__file__).parent / "fixtures"


def _schema_entry(data: bytes, key: str):
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() is not None and entry.Name().decode() == key:
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.tflite")), ids=lambda p: p.name)
def test_reader_agrees_with_the_generated_schema(path):
    data = path.read_bytes()
    for key in (METADATA_KEY, "TFLITE_METADATA", "min_runtime_version", "no such entry"):
        assert read_metadata_entry(data, key) == _schema_entry(data, key), f"{path.name}: entry {key!r} differs"
    if "nometa" not in path.name:
        assert json.loads(read_metadata_entry(data, METADATA_KEY))["labels"], f"{path.name}: no labels read"


def test_damaged_files_raise_value_error_never_read_outside():
    data = (FIXTURES / "colour_int8.tflite").read_bytes()
    for cut in (8, 64, len(data) // 2, len(data) - 16):
        try:
            read_metadata_entry(data[:cut], METADATA_KEY)
        except ValueError:
            pass  # the one allowed failure: struct.error is a ValueError too
    bad_root = b"\xff\xff\xff\x7f" + data[4:]
    with pytest.raises(ValueError):
        read_metadata_entry(bad_root, METADATA_KEY)


def _loaded(code: str) -> set[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_tflite_cold_start_imports_only_what_the_file_needs():
    mods = _loaded("import numpy as np\nfrom edgeclf.runtime import load_classifier\n"
                   f"clf = load_classifier({str(FIXTURES / 'colour_int8.tflite')!r}, threads=1)\n"
                   "clf.predict_proba(np.zeros((1, 32, 32, 3), np.uint8))\n"
                   "from edgeclf import load_classifier as again\n")
    assert "ai_edge_litert.interpreter" in mods, "the probe did not run LiteRT"
    unwanted = {"onnxruntime", "onnx", "click", "PIL", "ai_edge_litert.schema_py_generated", "edgeclf.cli",
                "edgeclf.evaluate", "tensorflow"}
    assert not mods & unwanted, f"a .tflite cold start imported {sorted(mods & unwanted)}"
