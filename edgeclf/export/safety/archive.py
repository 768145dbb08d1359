"""``.keras`` zips (Keras 3 and tf_keras) checked from their headers before anything is
extracted: only the members Keras writes for a model, each and all under a cap, none that
inflates like a bomb, no names or links that lead outside, then the weights file walked as
HDF5 (``hdf5.check_hdf5``) straight from the zip, without writing it anywhere.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from ...errors import ModelFileError
from ...runtime.archive import ZipLimits, check_zip_members
from .hdf5 import check_hdf5

KERAS_CONFIG = "config.json"
KERAS_METADATA = "metadata.json"
KERAS_WEIGHTS = "model.weights.h5"

# What a Keras 3 or tf_keras .keras zip of a model holds (assets/ is for lookup and text
# layers' vocabularies, which an image classifier does not have).
KERAS_MEMBERS = frozenset({KERAS_CONFIG, KERAS_METADATA, KERAS_WEIGHTS})

MAX_CONFIG_BYTES = 64 << 20  # config.json / metadata.json / a model_config / keras_metadata.pb

KERAS_LIMITS = ZipLimits(member=4 << 30, total=4 << 30, members=len(KERAS_MEMBERS))


def _error(msg: str) -> ModelFileError:
    return ModelFileError(msg)


def check_keras_zip(zf: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    """Refuse a .keras zip that holds more than a model, or could inflate or land outside a
    folder; walk its weights file. Returns ``{name: ZipInfo}``."""
    infos = check_zip_members(zf, str(path), KERAS_LIMITS, error=_error, what=".keras zip",
                              allowed=KERAS_MEMBERS.__contains__,
                              expected=f"Keras does not write for a model (only {', '.join(sorted(KERAS_MEMBERS))}); "
                                       "assets and extra files are refused")
    for name in (KERAS_CONFIG, KERAS_METADATA):
        if name in infos and infos[name].file_size > MAX_CONFIG_BYTES:
            raise ModelFileError(f"{path}: {name} is {infos[name].file_size:,} bytes, over the limit of "
                                 f"{MAX_CONFIG_BYTES:,}")
    weights = infos.get(KERAS_WEIGHTS)
    if weights is not None and weights.compress_type == zipfile.ZIP_STORED:
        with zf.open(weights) as f:  # stored: h5py's seeks are cheap
            check_hdf5(f, f"{path} ({KERAS_WEIGHTS})")
    elif weights is not None:
        # a deflated stream restarts from its start on every backward seek: read it once (its
        # size is capped above, and Keras reads all of it next anyway)
        check_hdf5(io.BytesIO(read_member(zf, weights, path)), f"{path} ({KERAS_WEIGHTS})")
    return infos


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> bytes:
    """A checked member's bytes, never more than its declared size."""
    with zf.open(info) as f:
        data = f.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise ModelFileError(f"{path}: {info.filename} holds {len(data):,} bytes, not the {info.file_size:,} its "
                             "header declares; doctored archive refused")
    return data
