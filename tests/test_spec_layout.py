"""The contract module and the directory layout: each fact has one home."""

import ast
import json
from pathlib import Path

import pytest

from edgeclf.errors import DataError, ModelFileError, UsageError
from edgeclf.runtime.layout import ExportDir, RunDir, model_order
from edgeclf.runtime.spec import (SUPPORTED_PRECISIONS, Format, ModelSpec, OutputKind, Precision,
                                  check_output_width, parse_enum)

ROOT = Path(__file__).resolve().parents[1]
FILE_NAMES = {RunDir.MODEL, RunDir.SPEC, RunDir.LABELS, RunDir.CONFIG, RunDir.SPLIT, RunDir.HISTORY,
              RunDir.METRICS, ExportDir.REPORT, ExportDir.GOLDEN}


def _constants(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def test_run_and_export_file_names_are_spelled_only_in_layout():
    """`git grep` for a file name finds one definition: layout.py (other modules ask it)."""
    # Other formats' own member names that happen to match (the .keras zip holds a config.json).
    theirs = {"archive.py": {"config.json"}}
    offenders = {}
    for path in sorted((ROOT / "edgeclf").rglob("*.py")):
        if path.name == "layout.py":
            continue
        hits = sorted(set(_constants(path)) & FILE_NAMES - theirs.get(path.name, set()))
        if hits:
            offenders[str(path.relative_to(ROOT))] = hits
    assert not offenders, f"file names spelled outside runtime/layout.py: {offenders}"


def test_enums_are_defined_once():
    """Each enum class (and each default) has one definition, in runtime/spec.py."""
    names = {"Precision", "OutputKind", "ResizeMethod", "IOType", "Format", "DEFAULT_SEED", "DEFAULT_VAL_SPLIT",
             "GOLDEN_ATOL", "DEFAULT_GATES", "DEFAULT_CALIBRATION_SIZE"}
    where = {}
    for path in sorted((ROOT / "edgeclf").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name in names:
                where.setdefault(node.name, []).append(path.name)
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name) and t.id in names:
                        where.setdefault(t.id, []).append(path.name)
    assert where and all(v == ["spec.py"] for v in where.values()), where


def test_spec_round_trip_and_refusals():
    spec = ModelSpec(labels=("a", "b"), input_size=(32, 48), output_kind="sigmoid", precision=Precision.INT8)
    back = ModelSpec.from_json(spec.to_json())
    assert back == spec and back.precision == "int8" and back.num_outputs == 1
    for bad, why in [({"labels": ["a", "a"], "input_size": [8, 8]}, "repeated"),
                     ({"labels": ["a", " "], "input_size": [8, 8]}, "empty"),
                     ({"labels": ["a", "b"], "input_size": [8, True]}, "input_size"),
                     ({"labels": ["a", "b", "c"], "input_size": [8, 8], "output_kind": "sigmoid"}, "exactly 2")]:
        with pytest.raises(ModelFileError, match=why):
            ModelSpec.from_dict(bad, source="m.tflite")
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ModelFileError, match="nested too deeply|not valid JSON"):
        ModelSpec.from_json(deep)


def test_output_width_rule_has_one_statement():
    check_output_width(OutputKind.SIGMOID, 2, 1)
    check_output_width(OutputKind.LOGITS, 3, 3)
    for kind, n, width, why in [(OutputKind.SIGMOID, 3, 1, "exactly 2"), (OutputKind.SIGMOID, 2, 2, "one unit"),
                                (OutputKind.PROBABILITIES, 3, 4, "3 labels but the model has 4")]:
        with pytest.raises(ValueError, match=why):
            check_output_width(kind, n, width)


def test_parse_enum_names_the_choices():
    assert parse_enum(Format, "TFLITE", name="format") is Format.TFLITE
    with pytest.raises(UsageError, match="unknown precision 'int4'; choose from: float32, float16, dynamic"):
        parse_enum(Precision, "int4", name="precision")


def test_export_order_is_the_precision_order(tmp_path):
    names = [ExportDir.model_name(f, p) for f in reversed(Format) for p in reversed(SUPPORTED_PRECISIONS[f])]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / ".hidden.tflite").write_bytes(b"x")
    got = [p.name for p in ExportDir(tmp_path).model_files()]
    assert got == sorted(names, key=model_order)
    assert got[0] == "model_float32.tflite" and got[len(SUPPORTED_PRECISIONS[Format.TFLITE])] == "model_float32.onnx"


def test_run_split_refuses_label_indexes_outside_the_labels(tmp_path):
    (tmp_path / RunDir.SPLIT).write_text(json.dumps({"train": [["/a.png", 0]], "val": [["/b.png", 7]]}))
    with pytest.raises(DataError, match="label index 7, outside the run's 2 labels"):
        RunDir(tmp_path).split(2)
    (tmp_path / RunDir.SPEC).write_text("{not json")
    with pytest.raises(ModelFileError, match="cannot read the model spec"):
        RunDir(tmp_path).spec()


def test_a_missing_report_extra_names_it():
    from edgeclf._optional import _missing

    assert 'pip install "edgeclf[report]"' in str(_missing("matplotlib", "the report's plot", "no module"))
