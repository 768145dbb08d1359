"""The one preprocessing function: image in, uint8 HxWx3 RGB out.

Training, calibration, evaluation and the device all call ``load_image``, so a model never
sees pixels prepared differently from the ones it was trained on. Pillow and numpy only.

What it does, in order: decode (refusing decompression bombs by a pixel limit before any
pixel is read), take the first frame of an animation, apply the EXIF orientation, convert
any mode to RGB (alpha composited onto white, 16-bit scaled down to 8-bit), and resize to
the model's input size. Large JPEGs are decoded at a reduced DCT scale (``draft``), which
keeps memory bounded for a huge but legal photo.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterable, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import ImageError, UsageError
from .spec import ResizeMethod

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")

# Images above this many pixels are refused before decoding (a 200-megapixel photo is
# legal; a decompression bomb claims billions). Override with EDGECLF_MAX_PIXELS.
MAX_PIXELS = 200_000_000
# A model input side above this is a typo, not a model: 100000x100000 would exhaust memory.
MAX_IMAGE_SIDE = 2048


def max_pixels_limit() -> int:
    """The pixel limit in force: EDGECLF_MAX_PIXELS when set, else ``MAX_PIXELS``."""
    raw = os.environ.get("EDGECLF_MAX_PIXELS")
    if raw is None or not raw.strip():
        return MAX_PIXELS
    try:
        value = int(raw.strip().replace("_", "").replace(",", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"EDGECLF_MAX_PIXELS must be a whole number of pixels, e.g. 400000000; got {raw!r}")
    return value


def _let_pillow_reach(limit: int) -> None:
    # Pillow refuses images over twice its own MAX_IMAGE_PIXELS (about 179 megapixels) before
    # edgeclf's check could run; lift it to edgeclf's limit, which is then the one that counts.
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < limit:
        Image.MAX_IMAGE_PIXELS = limit

# Truncated files are errors, never silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

ImageSource = Union[str, os.PathLike, Image.Image, np.ndarray]


_PIL_RESAMPLE = {
    ResizeMethod.BILINEAR: Image.Resampling.BILINEAR,
    ResizeMethod.NEAREST: Image.Resampling.NEAREST,
    ResizeMethod.BICUBIC: Image.Resampling.BICUBIC,
    ResizeMethod.AREA: Image.Resampling.BOX,
    ResizeMethod.LANCZOS: Image.Resampling.LANCZOS,
}

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_WIDE_INT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def image_size_arg(size) -> tuple[int, int]:
    """Normalise a size given as ``180`` or ``(height, width)`` into ``(height, width)``."""
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        try:
            h, w = (int(v) for v in size)
        except (TypeError, ValueError):
            raise UsageError(f"image size must be an integer or (height, width); got {size!r}") from None
    if h <= 0 or w <= 0:
        raise UsageError(f"image size must be positive; got {h}x{w}")
    if h > MAX_IMAGE_SIDE or w > MAX_IMAGE_SIDE:
        raise UsageError(f"image size {h}x{w} is over {MAX_IMAGE_SIDE} pixels a side; models take a few hundred "
                         "(224 is typical)")
    return h, w


def is_image_file(path: Union[str, os.PathLike]) -> bool:
    """True for a visible file whose suffix is one edgeclf reads (not ``.DS_Store`` etc.)."""
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _open(path: Path, max_pixels: int | None, draft_to: tuple[int, int] | None) -> Image.Image:
    if max_pixels is None:
        max_pixels = max_pixels_limit()
    _let_pillow_reach(max_pixels)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read ({exc.strerror or exc})") from None
    if not path.is_file():
        raise ImageError(path, "not a regular file")
    if st.st_size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb guard warns or raises at its own limit; ours is below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError:
        raise ImageError(path, f"refused: over {max_pixels:,} pixels (decompression bomb?)") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not an image (the content is no format Pillow can read)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise _decode_error(path, exc) from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise ImageError(
            path,
            f"refused: {w}x{h} is {w * h:,} pixels, over the limit of {max_pixels:,} "
            "(decompression bomb?); raise EDGECLF_MAX_PIXELS if the image is genuine",
        )
    if draft_to is not None and img.format == "JPEG":
        # DCT-domain downscale while decoding: bounded memory for huge photos.
        side = max(draft_to)
        try:
            img.draft("RGB", (side, side))
        except (OSError, ValueError):
            pass
    try:
        img.load()
    except Image.DecompressionBombError:
        raise ImageError(path, f"refused: over {max_pixels:,} pixels (decompression bomb?)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise _decode_error(path, exc) from None
    return img


def _decode_error(path: Path, exc: BaseException) -> ImageError:
    msg = str(exc)
    if "truncated" in msg.lower() or isinstance(exc, EOFError):
        return ImageError(path, "truncated image (the file ends before the image does); copy it again")
    if isinstance(exc, PermissionError):
        return ImageError(path, "permission denied")
    return ImageError(path, f"corrupt image ({msg or type(exc).__name__})")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB: alpha onto white, 16/32-bit integers scaled to 8 bits."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _WIDE_INT_MODES:
        arr = np.asarray(img).astype(np.float64)
        # "I;16*" is 16-bit by definition, however dark; only a 32-bit "I" image (which
        # Pillow also uses for some 8-bit data) is judged by its values.
        scale = 257.0 if mode.startswith("I;16") or (arr.size and arr.max() > 255) else 1.0
        arr8 = np.clip(np.rint(arr / scale), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if arr.size and np.nanmax(arr) <= 1.0:
            arr = arr * 255.0
        arr8 = np.clip(np.nan_to_num(np.rint(arr)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    return img.convert("RGB")


def _exif_upright(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF must not cost the image; keep it as stored
        return img


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.dtype != np.uint8:
        raise ImageError(
            None,
            f"image arrays must be uint8 (0..255); got {arr.dtype}. "
            "Convert with np.clip(a, 0, 255).astype(np.uint8)",
        )
    if arr.ndim == 2:
        return Image.fromarray(arr, "L")
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        if arr.shape[2] == 1:
            return Image.fromarray(arr[:, :, 0], "L")
        return Image.fromarray(np.ascontiguousarray(arr), "RGB" if arr.shape[2] == 3 else "RGBA")
    raise ImageError(None, f"an image array must be HxW, HxWx1, HxWx3 or HxWx4; got shape {arr.shape}")


def open_image(source: ImageSource, *, max_pixels: int | None = None,
               draft_to: tuple[int, int] | None = None) -> Image.Image:
    """Decode ``source`` into an upright RGB Pillow image, or raise ImageError."""
    if max_pixels is None:
        max_pixels = max_pixels_limit()
    if isinstance(source, np.ndarray):
        img = _from_array(source)
    elif isinstance(source, Image.Image):
        w, h = source.size
        if w * h > max_pixels:
            raise ImageError(None, f"refused: {w}x{h} is over the limit of {max_pixels:,} pixels")
        img = source
        if getattr(img, "is_animated", False):
            img.seek(0)
        if draft_to is not None and img.format == "JPEG":  # a no-op once the image is loaded
            # Same DCT-scaled decode as for a path, so a path and Image.open(path) give the same pixels.
            try:
                img.draft("RGB", (max(draft_to), max(draft_to)))
            except (OSError, ValueError):
                pass
        img = _exif_upright(img)
    elif isinstance(source, (str, os.PathLike)):
        img = _open(Path(source), max_pixels, draft_to)
        img = _exif_upright(img)
    else:
        raise ImageError(None, f"cannot read an image from a {type(source).__name__}; "
                               "give a path, a PIL image or a uint8 array")
    try:
        return to_rgb(img)
    except (OSError, ValueError) as exc:
        path = source if isinstance(source, (str, os.PathLike)) else None
        raise ImageError(path, f"cannot convert mode {img.mode} to RGB ({exc})") from None


def load_image(source: ImageSource, size, *, resize_method: Union[str, ResizeMethod] = ResizeMethod.BILINEAR,
               max_pixels: int | None = None) -> np.ndarray:
    """Decode, orient, convert to RGB and resize one image to ``size``.

    Args:
        source: a file path, a PIL image, or a uint8 array (HxW, HxWx3 or HxWx4).
        size: the model's input size, ``180`` or ``(height, width)``.
        resize_method: one of ``ResizeMethod`` (default bilinear).
        max_pixels: images with more pixels are refused as likely decompression bombs
            (default: EDGECLF_MAX_PIXELS, else ``MAX_PIXELS``).

    Returns:
        A C-contiguous ``uint8`` array of shape ``(height, width, 3)``, RGB, values 0..255.

    Raises:
        ImageError: the image cannot be read; the message says why and which file.

    Example:
        >>> x = load_image("tulip.jpg", 180)          # doctest: +SKIP
        >>> x.shape, x.dtype
        ((180, 180, 3), dtype('uint8'))
    """
    h, w = image_size_arg(size)
    try:
        method = ResizeMethod(resize_method)
    except ValueError:
        valid = ", ".join(m.value for m in ResizeMethod)
        raise UsageError(f"unknown resize method {resize_method!r}; choose one of: {valid}") from None
    if (isinstance(source, np.ndarray) and source.dtype == np.uint8 and source.ndim == 3
            and source.shape == (h, w, 3)):
        return np.ascontiguousarray(source)
    img = open_image(source, max_pixels=max_pixels, draft_to=(w, h))
    if img.size != (w, h):
        img = img.resize((w, h), _PIL_RESAMPLE[method])
    out = np.asarray(img, dtype=np.uint8)
    if out.shape != (h, w, 3):  # defensive: a decoder that returned something odd
        raise ImageError(source if isinstance(source, (str, os.PathLike)) else None,
                         f"decoded to shape {out.shape}, expected {(h, w, 3)}")
    return np.ascontiguousarray(out)


def load_batch(sources: Iterable[ImageSource], size, *,
               resize_method: Union[str, ResizeMethod] = ResizeMethod.BILINEAR) -> np.ndarray:
    """``load_image`` over many sources, stacked into an ``(N, H, W, 3)`` uint8 array."""
    h, w = image_size_arg(size)
    arrays = [load_image(s, (h, w), resize_method=resize_method) for s in sources]
    if not arrays:
        return np.zeros((0, h, w, 3), np.uint8)
    return np.stack(arrays)
