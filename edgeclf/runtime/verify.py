"""The on-device golden check: run the images recorded at export time through a model file
and compare its probabilities with the recorded ones, within the recorded tolerance.

``golden.npz`` (written by ``edgeclf export``) holds ``images`` (uint8 N,H,W,3) and, for each
exported file basename F, ``probs::F`` (float32 N,C, as the runtime computes them),
``atol::F`` (float64 scalar) and ``sha256::F`` (the file's sha256, hex). A model is matched to
its entry by its content (sha256), so a renamed file still verifies and a changed file (labels
swapped in its metadata, a re-export) never passes as the one the golden file was made for;
by name only for golden files without hashes, or when the caller asks (``by_name``: checking a
re-exported file against the entry of its name). Neither TensorFlow nor the dataset is needed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..errors import DataError, first_line
from .archive import ZipLimits, read_npz
from .backend import read_model_bytes
from .classifier import Classifier, load_classifier
from .layout import ExportDir
from .metrics import top1_agreement

PROBS, ATOL, SHA256 = ExportDir.GOLDEN_KEY_PROBS, ExportDir.GOLDEN_KEY_ATOL, ExportDir.GOLDEN_KEY_SHA256


@dataclass(frozen=True)
class Deviation:
    """The largest difference in one golden image."""

    image: int
    label: str
    expected: float
    got: float
    abs_diff: float


@dataclass(frozen=True)
class GoldenReport:
    """What ``verify_golden`` found. ``passed`` is True when every probability is within ``atol``."""

    model: str
    golden: str
    entry: str  # the file basename the golden entry is recorded under
    matched_by: str  # "sha256" (the very file the golden entry was made for) or "name"
    images: int
    atol: float
    max_abs_diff: float
    top1_agreement: float  # fraction of images whose best label matches the recorded one
    passed: bool
    worst: tuple[Deviation, ...]  # largest first

    def to_dict(self) -> dict:
        d = asdict(self)
        d["worst"] = [asdict(w) for w in self.worst]
        return d


# A golden file holds a few small images; anything this large is not one.
MAX_GOLDEN_BYTES = 1 << 30

# What its arrays may unpack to: each, and all together (edgeclf writes it uncompressed).
GOLDEN_LIMITS = ZipLimits(member=512 << 20, total=MAX_GOLDEN_BYTES, members=10_000)


def load_golden(path) -> dict[str, np.ndarray]:
    """The arrays of a golden file, or a DataError saying what is wrong with it."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise DataError(f"golden file not found: {p}") from None
    except OSError as exc:
        raise DataError(f"cannot read golden file {p} ({exc.strerror or exc})") from None
    if p.is_dir():
        raise DataError(f"{p} is a directory; give the golden.npz file inside it")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{p} is not a regular file (a pipe, device or socket); give the golden.npz file")
    if st.st_size > MAX_GOLDEN_BYTES:
        raise DataError(f"{p}: {st.st_size:,} bytes is too large for a golden file; give the golden.npz "
                        "written by edgeclf export")
    arrays = read_golden_arrays(p)
    if ExportDir.GOLDEN_KEY_IMAGES not in arrays:
        raise DataError(f"{p}: no 'images' array; this is not a golden file written by edgeclf export")
    images = arrays[ExportDir.GOLDEN_KEY_IMAGES]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{p}: 'images' is {images.dtype} {list(images.shape)}, not uint8 (N, H, W, 3); "
                        "copy the golden file again from the export directory")
    if len(images) == 0:
        raise DataError(f"{p}: holds no golden images, so it proves nothing; export the model again with "
                        "validation or calibration data")
    return arrays


def read_golden_arrays(p: Path) -> dict[str, np.ndarray]:
    """The arrays of ``p``, each zip and .npy header checked (sizes, dtype) before any allocation."""
    with open(p, "rb") as f:
        if f.read(6) == b"\x93NUMPY":
            raise DataError(f"{p}: a single .npy array, not a golden .npz archive; give the golden.npz written "
                            "by edgeclf export")

    def error(msg: str) -> DataError:
        return DataError(f"{msg}; copy golden.npz again from the export directory")

    try:
        return read_npz(p, error=error, limits=GOLDEN_LIMITS, what="golden .npz file")
    except (OSError, ValueError, EOFError, RuntimeError, NotImplementedError) as exc:
        raise DataError(f"{p}: not a readable golden .npz file ({first_line(exc)}); copy it again from the "
                        "export directory") from None


NOT_THE_FILE = "this file is not the one golden.npz was made for"


def _entry_for(clf: Classifier, arrays: dict, golden, *, by_name: bool = False) -> tuple[str, str]:
    """The golden entry name for ``clf``'s file and how it was found ("sha256" or "name").

    A golden file that records hashes vouches only for those files: any other content is
    refused, whatever its name, unless ``by_name`` asks for the entry of the file's name."""
    digest = _sha256(clf.path)
    hashes = {key[len(SHA256):]: str(value) for key, value in arrays.items()
              if key.startswith(SHA256) and value.dtype.kind == "U" and value.shape == ()}
    name = clf.path.name
    if by_name:
        if PROBS + name in arrays:
            return name, "sha256" if hashes.get(name) == digest else "name"
    else:
        for entry, recorded in hashes.items():
            if recorded == digest and PROBS + entry in arrays:
                return entry, "sha256"
        if hashes:
            same_name = (f"; its name matches the entry for {name}, but its content differs from the file "
                         "that entry was recorded for" if PROBS + name in arrays else "")
            raise DataError(f"{clf.path}: {NOT_THE_FILE} (its sha256 {digest[:12]}... matches none of the "
                            f"{len(hashes)} files recorded in {golden}{same_name}); give the file export wrote "
                            "beside this golden.npz, or pass --by-name to check a re-exported file against the "
                            "entry of its name")
        if PROBS + name in arrays:
            return name, "name"
    have = sorted(k[len(PROBS):] for k in arrays if k.startswith(PROBS))
    listed = ", ".join(have) if have else "none"
    how = "by name" if by_name else "by content or by name"
    raise DataError(f"{golden}: no golden entry for {name} ({how}; it has entries for: {listed}); "
                    "use the golden.npz written with this model")


def _sha256(path: Path) -> str:
    return hashlib.sha256(read_model_bytes(path)).hexdigest()


def _atol(arrays: dict, name: str, golden) -> float:
    raw = arrays.get(ATOL + name, np.float64(1e-4))
    if not isinstance(raw, np.ndarray) or raw.shape != () or raw.dtype.kind not in "fiu":
        raise DataError(f"{golden}: the tolerance recorded for {name} is not one number "
                        f"({getattr(raw, 'dtype', type(raw))} {list(getattr(raw, 'shape', []))}); "
                        "copy the golden file again from the export directory")
    atol = float(raw)
    if not np.isfinite(atol) or atol < 0:
        raise DataError(f"{golden}: the tolerance recorded for {name} is {atol}, not a finite number >= 0; "
                        "copy the golden file again from the export directory")
    return atol


def verify_golden(model: Union[Classifier, str, os.PathLike], golden, *, threads: Optional[int] = None,
                  worst: int = 5, by_name: bool = False) -> GoldenReport:
    """Check a model file against the golden outputs recorded for it.

    Args:
        model: a ``Classifier`` or a model file path (loaded with ``threads``).
        golden: the ``golden.npz`` written by ``edgeclf export`` beside the model files.
        worst: how many of the largest deviations to keep in the report.
        by_name: check the file against the entry of its name even when its content is not
            the one recorded (a re-exported file); by default a golden file that records
            hashes accepts only the very files it was made for.

    Returns:
        A ``GoldenReport``; it does not raise when the check fails (``passed`` is False).

    Raises:
        DataError: the golden file is unreadable, has no entry for this model (by content when
            it records hashes), or its images do not fit the model.
    """
    clf = model if isinstance(model, Classifier) else load_classifier(model, threads=threads)
    arrays = load_golden(golden)
    name, matched_by = _entry_for(clf, arrays, golden, by_name=by_name)
    images = arrays[ExportDir.GOLDEN_KEY_IMAGES]
    recorded = arrays[PROBS + name]
    if recorded.dtype.kind != "f":
        raise DataError(f"{golden}: recorded probabilities for {name} are {recorded.dtype}, not numbers; "
                        "copy the golden file again from the export directory")
    expected = np.asarray(recorded, np.float32)
    atol = _atol(arrays, name, golden)
    h, w = clf.input_size
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (h, w, 3):
        raise DataError(f"{golden}: images are {images.dtype} {images.shape} but {name} takes uint8 "
                        f"(N, {h}, {w}, 3); this golden file was written for another model")
    if expected.shape != (images.shape[0], len(clf.labels)):
        raise DataError(f"{golden}: recorded probabilities for {name} have shape {expected.shape}, "
                        f"expected ({images.shape[0]}, {len(clf.labels)})")
    if not np.all(np.isfinite(expected)):
        raise DataError(f"{golden}: recorded probabilities for {name} hold NaN or infinity; "
                        "copy the golden file again from the export directory")
    got = clf.predict_proba(images)
    diff = np.abs(got.astype(np.float64) - expected)
    per_image = diff.max(axis=1) if diff.size else np.zeros(len(images))
    order = np.argsort(-per_image, kind="stable")[:worst]
    deviations = []
    for i in order:
        j = int(np.argmax(diff[i]))
        deviations.append(Deviation(image=int(i), label=clf.labels[j], expected=float(expected[i, j]),
                                    got=float(got[i, j]), abs_diff=float(diff[i, j])))
    max_diff = float(per_image.max()) if len(per_image) else 0.0
    agree = top1_agreement(got, expected) if len(images) else 1.0
    return GoldenReport(
        model=str(clf.path), golden=str(golden), entry=name, matched_by=matched_by, images=int(len(images)),
        atol=atol, max_abs_diff=max_diff, top1_agreement=agree, passed=bool(max_diff <= atol),
        worst=tuple(deviations),
    )
