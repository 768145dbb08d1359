"""Archives checked from their headers: golden.npz bombs for ``verify``, ``.keras`` zips that
would unpack gigabytes or land outside their folder, HDF5 files whose data lives elsewhere.

Each bomb is a real archive (a 2 GiB zero member deflates to 2 MB); the CLI runs in a
subprocess that measures its peak memory and gets its own empty temp directory.
"""

from __future__ import annotations

import json
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _data_helpers import finishes  # noqa: E402
from _hostile import assert_no_secret, npy_header, run_cli, secret_file, zip_with_zeros  # noqa: E402
from edgeclf.errors import DataError, ModelFileError  # noqa: E402
from edgeclf.export.safety import inspect_model  # noqa: E402
from edgeclf.runtime.verify import load_golden  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
MODEL = FIXTURES / "colour_int8.tflite"
GIB2 = 2 << 30


# --- golden.npz -----------------------------------------------------------------------------


def test_a_deflated_2gib_golden_array_is_refused_from_its_header(tmp_path):
    bomb = zip_with_zeros(tmp_path / "golden.npz", [("images.npy", npy_header((2048, 1024, 1024, 1), "|u1"), GIB2)])
    assert bomb.stat().st_size < 3 << 20
    start = time.monotonic()
    with pytest.raises(DataError, match=r"golden\.npz: images\.npy in the golden .npz file unpacks to 2,147,483,648"):
        load_golden(bomb)
    assert time.monotonic() - start < 1.0
    run_cli(["verify", MODEL, bomb], tmp_path).assert_refused(match="golden.npz")


def test_a_golden_array_declaring_1e12_values_is_refused_before_allocating(tmp_path):
    huge = zip_with_zeros(tmp_path / "golden.npz", [("images.npy", npy_header((10**6, 10**6), "<f4") + bytes(64))])
    with pytest.raises(DataError, match=r"images\.npy declares a 1000000x1000000 float32 array .* refused before"):
        load_golden(huge)
    res = run_cli(["verify", MODEL, huge], tmp_path)
    res.assert_refused(match="images.npy declares")
    assert "batch-size" not in res.err and "out of memory" not in res.err


def test_golden_headers_that_lie_or_hold_objects_are_refused(tmp_path):
    fine = np.zeros((1, 8, 8, 3), np.uint8)
    # the .npy header promises more bytes than the member holds
    short = zip_with_zeros(tmp_path / "short.npz", [("images.npy", npy_header((4, 8, 8, 3), "|u1") + bytes(10))])
    with pytest.raises(DataError, match="declares 768 bytes of data but holds only"):
        load_golden(short)
    # object arrays need pickle
    obj = tmp_path / "obj.npz"
    with zipfile.ZipFile(obj, "w") as z:
        with z.open("images.npy", "w") as f:
            np.lib.format.write_array(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="holds object values"):
        load_golden(obj)
    # two members of one name: a checker and a loader could read different ones
    dup = tmp_path / "dup.npz"
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(dup, "w") as z:
        for _ in range(2):
            with z.open("images.npy", "w") as f:
                np.lib.format.write_array(f, fine)
    with pytest.raises(DataError, match="holds 'images.npy' twice"):
        load_golden(dup)
    # a member that is not an array
    other = tmp_path / "other.npz"
    np.savez(other, images=fine)
    with zipfile.ZipFile(other, "a") as z:
        z.writestr("../evil.npy", b"x")
    with pytest.raises(DataError, match="could land outside"):
        load_golden(other)
    # control: the real golden file still loads, values intact
    arrays = load_golden(FIXTURES / "golden.npz")
    with np.load(FIXTURES / "golden.npz") as ref:
        assert set(arrays) == set(ref.files)
        for k in ref.files:
            np.testing.assert_array_equal(arrays[k], ref[k], err_msg=k)
            assert arrays[k].dtype == ref[k].dtype, k


# --- .keras zips ----------------------------------------------------------------------------


def _keras_members(version="2.21.0"):
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 8, 8, 3], "name": "i"}},
        {"class_name": "Flatten", "config": {"name": "f"}},
        {"class_name": "Dense", "config": {"name": "d", "units": 2, "activation": "softmax"}}]}}
    return [("metadata.json", json.dumps({"keras_version": version}).encode()),
            ("config.json", json.dumps(config).encode())]


def test_a_keras_zip_with_a_2gib_assets_member_is_refused_from_the_header(tmp_path):
    bomb = zip_with_zeros(tmp_path / "model.keras", _keras_members() + [("assets/zeros.bin", b"", GIB2)])
    assert bomb.stat().st_size < 3 << 20
    start = time.monotonic()
    with pytest.raises(ModelFileError, match=r"holds 'assets/zeros.bin', which Keras does not write for a model"):
        inspect_model(bomb)
    assert time.monotonic() - start < 1.0
    # a weights member that inflates like a bomb is refused by its ratio
    weights = zip_with_zeros(tmp_path / "w.keras", _keras_members() + [("model.weights.h5", b"", GIB2)])
    with pytest.raises(ModelFileError, match="model.weights.h5 in the .keras zip unpacks 1,0"):
        inspect_model(weights)
    (tmp_path / "labels.txt").write_text("a\nb\n")
    run_cli(["export", bomb, "--labels", tmp_path / "labels.txt", "--out", tmp_path / "out"],
            tmp_path).assert_refused(match="assets/zeros.bin")
    assert not (tmp_path / "out").exists()


def test_keras_zip_names_links_and_headers_are_checked(tmp_path):
    members = _keras_members()
    for bad, why in [("../config2.json", "could land outside"), ("/abs.json", "could land outside"),
                     ("extra.py", "which Keras does not write")]:
        path = zip_with_zeros(tmp_path / "m.keras", members + [(bad, b"{}")])
        with pytest.raises(ModelFileError, match=why):
            inspect_model(path)
    link = tmp_path / "link.keras"
    with zipfile.ZipFile(link, "w") as z:
        for name, data in members:
            z.writestr(name, data)
        info = zipfile.ZipInfo("model.weights.h5")
        info.external_attr = 0o120777 << 16
        z.writestr(info, "/etc/passwd")
    with pytest.raises(ModelFileError, match="is a symbolic link"):
        inspect_model(link)
    # the local header names another size than the central directory
    lying = zip_with_zeros(tmp_path / "lying.keras", members)
    raw = bytearray(lying.read_bytes())
    raw[22:26] = (10**6).to_bytes(4, "little")  # the first local header's uncompressed size
    lying.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="declares 1,000,000 bytes in its local header"):
        inspect_model(lying)


# --- HDF5: data that lives elsewhere --------------------------------------------------------


def _h5_with_external(path: Path, target: Path, n: int) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.21.0"
        f.attrs["model_config"] = _keras_members()[1][1].decode()
        g = f.create_group("model_weights/d")
        g.create_dataset("kernel:0", shape=(n,), dtype="u1", external=[(str(target), 0, n)])
    return path


def test_hdf5_external_storage_links_and_filters_are_refused_without_reading(tmp_path):
    import h5py

    secret, token = secret_file(tmp_path)
    (tmp_path / "labels.txt").write_text("a\nb\n")
    model = _h5_with_external(tmp_path / "model.h5", secret, 64)
    with pytest.raises(ModelFileError, match=r"dataset /model_weights/d/kernel:0 keeps its data in the external file"):
        inspect_model(model)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    box = finishes(lambda: inspect_model(_h5_with_external(tmp_path / "fifo.h5", fifo, 64)), seconds=20)
    assert isinstance(box.get("error"), ModelFileError) and "external file" in str(box["error"]), box
    # the same inside a .keras zip's weights
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        keras = tmp_path / f"ext{method}.keras"
        with zipfile.ZipFile(keras, "w", compression=method) as z:
            for name, data in _keras_members("3.15.1"):
                z.writestr(name, data)
            z.write(model, "model.weights.h5")
        with pytest.raises(ModelFileError, match=r"model.weights.h5\): dataset /model_weights/d/kernel:0 keeps"):
            inspect_model(keras)
    for name, make, why in [
        ("ext_link.h5", lambda f: f.__setitem__("x", h5py.ExternalLink(str(secret), "/y")), "an external link"),
        ("soft.h5", lambda f: f.__setitem__("x", h5py.SoftLink("/model_weights")), "a soft link"),
        ("bomb.h5", lambda f: f.create_dataset("w", shape=(1 << 28,), dtype="f4", chunks=(1 << 20,),
                                               compression="gzip"), "real weights do not compress like that"),
    ]:
        path = tmp_path / name
        with h5py.File(path, "w") as f:
            f.attrs["model_config"] = _keras_members()[1][1].decode()
            f.create_group("model_weights")
            make(f)
            if name == "bomb.h5":
                f["w"][:1 << 20] = 0
        with pytest.raises(ModelFileError, match=why):
            inspect_model(path)
    run_cli(["export", model, "--labels", tmp_path / "labels.txt", "--out", tmp_path / "out"],
            tmp_path).assert_refused(match="external file")
    assert not (tmp_path / "out").exists()
    assert_no_secret(tmp_path, token)
