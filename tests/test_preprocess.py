"""The one preprocessing function: every mode, orientation, and every bad file a phone folder holds."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from edgeclf.errors import ImageError, UsageError
from edgeclf.runtime.preprocess import ResizeMethod, image_size_arg, is_image_file, load_batch, load_image


def _rgb_pattern(w=40, h=30):
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([(x * 255 // (w - 1)), (y * 255 // (h - 1)), np.full_like(x, 128)], -1).astype(np.uint8)
    return arr


def _save(tmp_path, name, img, **kw):
    p = tmp_path / name
    img.save(p, **kw)
    return p


@pytest.mark.parametrize(
    "mode,fmt",
    [("RGB", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"),
     ("I;16", "PNG"), ("1", "PNG"), ("RGB", "JPEG"), ("RGB", "BMP"), ("RGB", "WEBP"), ("P", "GIF")],
)
def test_every_mode_becomes_uint8_rgb(tmp_path, mode, fmt):
    base = Image.fromarray(_rgb_pattern())
    if mode == "I;16":
        arr16 = (np.asarray(base.convert("L")).astype(np.uint16) * 257)
        img = Image.fromarray(arr16)
    else:
        img = base.convert(mode)
    p = _save(tmp_path, f"x.{fmt.lower()}", img, format=fmt)
    out = load_image(p, (20, 24))
    assert out.shape == (20, 24, 3), f"shape for {mode}/{fmt}"
    assert out.dtype == np.uint8, f"dtype for {mode}/{fmt}"
    assert out.flags["C_CONTIGUOUS"]
    assert out.max() > out.min(), f"{mode}/{fmt} decoded to a flat image"


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    arr16 = np.full((10, 10), 32896, np.uint16)  # 128 * 257: mid-grey in 16 bits
    p = _save(tmp_path, "g16.png", Image.fromarray(arr16))
    out = load_image(p, 10)
    assert np.all(out == 128), f"16-bit mid-grey should map to 128, got {np.unique(out)}"


def test_alpha_is_composited_onto_white(tmp_path):
    arr = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    p = _save(tmp_path, "t.png", Image.fromarray(arr, "RGBA"))
    assert np.all(load_image(p, 8) == 255)


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 0
    p = _save(tmp_path, "p.png", img, transparency=0)
    assert np.all(load_image(p, 8) == 255)


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white in the stored pixels
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; display needs 90 degrees clockwise
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif, quality=95)
    out = load_image(p, (40, 20), resize_method="nearest")
    assert out.shape == (40, 20, 3)
    # after rotating 90 degrees clockwise, the white half is on top
    assert out[:18].mean() > 200 and out[22:].mean() < 50, "EXIF rotation not applied"


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    p = tmp_path / "a.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    out = load_image(p, 8)
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50


def test_resize_methods_and_sizes(tmp_path):
    p = _save(tmp_path, "x.png", Image.fromarray(_rgb_pattern()))
    for m in ResizeMethod:
        assert load_image(p, 16, resize_method=m).shape == (16, 16, 3)
    with pytest.raises(UsageError, match="resize method"):
        load_image(p, 16, resize_method="cubic-spline")
    with pytest.raises(UsageError, match="positive"):
        load_image(p, 0)
    assert image_size_arg(180) == (180, 180) and image_size_arg((100, 120)) == (100, 120)


def test_arrays_and_pil_images():
    arr = _rgb_pattern(16, 16)
    assert load_image(arr, 16) is not None
    np.testing.assert_array_equal(load_image(arr, 16), arr)
    assert load_image(arr[..., 0], 8).shape == (8, 8, 3)
    assert load_image(np.dstack([arr, np.full((16, 16), 255, np.uint8)]), 8).shape == (8, 8, 3)
    assert load_image(Image.fromarray(arr), 8).shape == (8, 8, 3)
    with pytest.raises(ImageError, match="uint8"):
        load_image(arr.astype(np.float32), 8)
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((4, 4, 2), np.uint8), 8)
    with pytest.raises(ImageError, match="cannot read an image"):
        load_image(12345, 8)


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"hello, I am not a picture\n" * 10, "not an image"),
        ("page.jpg", b"<!DOCTYPE html><html><body>404</body></html>", "not an image"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, name, content, reason):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ImageError, match=reason) as exc:
        load_image(p, 8)
    assert str(p) in str(exc.value), "the message must name the file"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files(tmp_path, fmt):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format=fmt)
    data = buf.getvalue()
    p = tmp_path / f"cut.{fmt.lower()}"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated|corrupt"):
        load_image(p, 8)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png", 8)
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(tmp_path, 8)


def test_decompression_bomb_refused_before_decoding(tmp_path, monkeypatch):
    # A PNG header claiming 30000x30000 pixels with almost no data: refused by the pixel
    # limit from the header alone, never by running out of memory.
    p = tmp_path / "bomb.png"
    Image.new("1", (30000, 30000)).save(p, optimize=True)
    assert p.stat().st_size < 2_000_000
    import edgeclf.runtime.preprocess as pp

    with pytest.raises(ImageError, match="refused"):
        pp.load_image(p, 8, max_pixels=100_000_000)


def test_huge_legal_jpeg_is_drafted_down(tmp_path):
    p = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(p, quality=80)
    out = load_image(p, 64)
    assert out.shape == (64, 64, 3)
    assert abs(int(out[..., 1].mean()) - 200) < 5


def test_unicode_and_spaces_in_names(tmp_path):
    d = tmp_path / "clàss wïth spaces"
    d.mkdir()
    p = _save(d, "fotó 1 ☀.png", Image.fromarray(_rgb_pattern()))
    assert load_image(p, 8).shape == (8, 8, 3)


def test_is_image_file_skips_hidden_and_other_suffixes():
    assert is_image_file("a/b/x.JPG") and is_image_file("y.webp")
    assert not is_image_file(".DS_Store") and not is_image_file("._x.jpg")
    assert not is_image_file("notes.txt")


def test_load_batch_stacks():
    arr = _rgb_pattern(16, 16)
    b = load_batch([arr, arr], 8)
    assert b.shape == (2, 8, 8, 3) and b.dtype == np.uint8
    assert load_batch([], 8).shape == (0, 8, 8, 3)


def test_a_path_and_an_unloaded_pil_image_give_the_same_pixels(tmp_path):
    p = tmp_path / "big.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (800, 800, 3), dtype=np.uint8)).save(p)
    np.testing.assert_array_equal(load_image(p, 64), load_image(Image.open(p), 64),
                                  err_msg="draft decoding applied to paths only")


def test_a_dark_16bit_png_stays_dark(tmp_path):
    p = _save(tmp_path, "dark16.png", Image.fromarray(np.full((8, 8), 200, np.uint16)))
    assert np.all(load_image(p, 8) == 1), "16-bit value 200 is 200/257 of full scale, not 200/255"
