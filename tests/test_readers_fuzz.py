"""Property-based: random bytes and random valid images at the image loader and the metadata
readers. Nothing but edgeclf's own errors may come out."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgeclf.errors import EdgeclfError, ImageError, ModelFileError
from edgeclf.runtime.metadata import read_onnx_metadata, read_tflite_metadata, sniff_format
from edgeclf.runtime.spec import ModelSpec
from edgeclf.runtime.preprocess import load_image

from test_metadata import META, minimal_tflite

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp", "TIFF": ".png"}


@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".jpg", ".png", ".gif", ".webp", ".bmp"]))
def test_random_bytes_at_the_image_loader(tmp_path, data, suffix):
    p = tmp_path / f"fuzz{suffix}"
    p.write_bytes(data)
    try:
        out = load_image(p, 8)
    except ImageError:
        return
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8


@FUZZ
@given(
    mode=st.sampled_from(MODES),
    w=st.integers(1, 64),
    h=st.integers(1, 64),
    fmt=st.sampled_from(sorted(FORMATS)),
    seed=st.integers(0, 2**16),
    size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
)
def test_random_valid_images_of_any_mode(tmp_path, mode, w, h, fmt, seed, size):
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode if mode not in ("I;16", "I", "F") else "L")
    if mode in ("I;16", "I", "F"):
        arr = np.asarray(img).astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]) * (257 if mode == "I;16" else 1)
        img = Image.fromarray(arr)
    buf = io.BytesIO()
    try:
        img.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):
        return  # this format cannot store this mode; nothing to test
    p = tmp_path / f"img{FORMATS[fmt]}"
    p.write_bytes(buf.getvalue())
    out = load_image(p, size)
    assert out.shape == (size[0], size[1], 3), f"{mode}/{fmt}: shape {out.shape}"
    assert out.dtype == np.uint8


@FUZZ
@given(
    cut=st.integers(0, 10_000),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
)
def test_damaged_tflite_metadata_reader(cut, flips):
    from edgeclf.export.metadata import embed_tflite_metadata

    good = bytearray(embed_tflite_metadata(minimal_tflite(), META))
    for pos, val in flips:
        good[pos % len(good)] = val
    data = bytes(good[: max(cut % (len(good) + 1), 0)]) if cut % 3 == 0 else bytes(good)
    try:
        meta = read_tflite_metadata(data, source="fuzz.tflite")
    except ModelFileError:
        return
    assert meta is None or isinstance(meta, ModelSpec)


@FUZZ
@given(data=st.binary(max_size=512))
def test_random_bytes_at_the_tflite_reader(data):
    for blob in (data, data[:4] + b"TFL3" + data[8:]):
        try:
            read_tflite_metadata(blob)
        except ModelFileError:
            pass
        sniff_format(blob)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=5),
    max_leaves=12,
)


@FUZZ
@given(
    doc=st.one_of(
        st.text(max_size=200),
        st.dictionaries(
            st.sampled_from(["labels", "input_size", "output_kind", "value_range", "extra", "precision", "x"]),
            json_values,
            max_size=7,
        ).map(lambda d: __import__("json").dumps(d)),
    )
)
def test_random_documents_at_the_metadata_parsers(doc):
    for parse in (lambda: ModelSpec.from_json(doc), lambda: read_onnx_metadata({"edgeclf": doc})):
        try:
            meta = parse()
        except ModelFileError:
            continue
        assert isinstance(meta, ModelSpec) and meta.labels and min(meta.input_size) > 0
