"""Content checks of a model file, before TensorFlow, h5py or Keras deserialize anything.

``inspect_model(path)`` decides what a model is by its *content*, never by its suffix:

- a zip holding ``config.json`` is a ``.keras`` file, of Keras 3 or of tf_keras (Keras 2),
  told apart by ``metadata.json``'s ``keras_version``;
- a file with the HDF5 signature is an ``.h5`` model of Keras 3 or Keras 2 (its
  ``keras_version`` attribute), and must hold a ``model_config``;
- a folder with ``saved_model.pb`` is a tf_keras SavedModel when it has
  ``keras_metadata.pb``, else a plain SavedModel (Keras 3 ``model.export()``,
  ``tf.saved_model.save``) used through its serving signature.

Then every part is checked against an allowlist, and whatever is not on it is refused by
name (docs/safety.md lists them):

- the stored configuration, parsed as JSON and walked at every nesting level, against the
  layer classes and fields of image classifiers (``keras_config``);
- every graph and every function of a SavedModel against the ops of image classifiers
  (``savedmodel``), for tf_keras SavedModels as well as plain ones;
- every object and link of an HDF5 file (an ``.h5`` model, a ``.keras`` zip's weights) for
  data that lives in the file itself (``hdf5``);
- a ``.keras`` zip's headers: members, sizes, names (``archive``).

Only regular files under a size cap are read, so a FIFO or a link to ``/dev/zero`` is refused
instead of hanging or filling memory.
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Optional

from ...errors import ModelFileError, UsageError
from .archive import KERAS_CONFIG, KERAS_METADATA, MAX_CONFIG_BYTES, check_keras_zip, read_member
from .hdf5 import check_hdf5
from .keras_config import LAMBDA_REFUSED, check_config
from .savedmodel import check_savedmodel

__all__ = ["inspect_model", "check_config", "Inspected", "SourceFormat", "LAMBDA_REFUSED", "check_regular",
           "read_capped", "MAX_MODEL_BYTES", "MAX_CONFIG_BYTES"]

MAX_MODEL_BYTES = 4 << 30  # a whole model file or SavedModel folder

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")

class SourceFormat(str, Enum):
    """What a model file is, decided by its content."""

    KERAS3_ZIP = "Keras 3 .keras"
    KERAS2_ZIP = "tf_keras .keras"
    KERAS3_H5 = "Keras 3 .h5"
    KERAS2_H5 = "tf_keras .h5"
    KERAS2_SAVEDMODEL = "tf_keras SavedModel"
    SAVEDMODEL = "SavedModel (serving signature)"

    @property
    def keras3(self) -> bool:
        return self in (SourceFormat.KERAS3_ZIP, SourceFormat.KERAS3_H5)

@dataclass(frozen=True)
class Inspected:
    """What the content check found, before anything was deserialized."""

    path: Path
    format: SourceFormat
    keras_version: str
    config: Optional[dict]  # the model config (None for a plain SavedModel)

def check_regular(path: Path, *, what: str = "model file") -> int:
    """Size of ``path`` if it is a regular file under the cap (links followed); else refuse."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or
                stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise ModelFileError(f"{path}: the {what} is {kind}; give a regular .keras/.h5 file or a SavedModel folder")
    if st.st_size > MAX_MODEL_BYTES:
        raise ModelFileError(f"{path}: the {what} is {st.st_size} bytes, over edgeclf's limit of "
                             f"{MAX_MODEL_BYTES} bytes")
    return st.st_size

def read_capped(path: Path, limit: int = MAX_CONFIG_BYTES) -> bytes:
    size = check_regular(path)
    if size > limit:
        raise ModelFileError(f"{path}: {size} bytes, over the {limit}-byte limit for this part of a model")
    with open(path, "rb") as f:
        return f.read(limit + 1)

def inspect_model(path) -> Inspected:
    """Decide the format of ``path`` by content and refuse code-carrying configs.

    Reads only regular files under the size cap; deserializes nothing.
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise UsageError(f"model not found: {path}")
    if path.is_dir():
        return _inspect_savedmodel(path)
    size = check_regular(path)
    if size == 0:
        raise ModelFileError(f"{path}: the file is empty; export it again from the training script")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] in _ZIP_SIGNATURES:
        return _inspect_zip(path)
    if head == _HDF5_SIGNATURE:
        return _inspect_h5(path)
    raise ModelFileError(f"{path}: neither a .keras zip nor an HDF5 model (the content is something else); "
                         "give a .keras or .h5 file saved by Keras, or a SavedModel folder")

def _parse_json(raw, where: str) -> dict:
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else str(raw)
        doc = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{where}: the stored model configuration is not valid JSON ({exc}); "
                             "save the model again") from None
    if not isinstance(doc, dict):
        raise ModelFileError(f"{where}: the stored model configuration is not a JSON object; save the model again")
    return doc

def is_keras3(version: str) -> bool:
    return version.split(".")[0] == "3"

def _inspect_zip(path: Path) -> Inspected:
    try:
        with zipfile.ZipFile(path) as z:
            if KERAS_CONFIG not in z.NameToInfo:
                raise ModelFileError(f"{path}: a zip without {KERAS_CONFIG} is not a .keras model; save it with "
                                     "model.save('model.keras')")
            infos = check_keras_zip(z, path)
            config = _parse_json(read_member(z, infos[KERAS_CONFIG], path), str(path))
            meta = (_parse_json(read_member(z, infos[KERAS_METADATA], path), str(path))
                    if KERAS_METADATA in infos else {})
    except zipfile.BadZipFile as exc:
        raise ModelFileError(f"{path}: damaged .keras zip ({exc}); save the model again") from None
    except (RuntimeError, NotImplementedError) as exc:  # encrypted or unknown compression
        raise ModelFileError(f"{path}: unreadable .keras zip ({exc}); save the model again") from None
    version = str(meta.get("keras_version", ""))
    fmt = SourceFormat.KERAS3_ZIP if is_keras3(version) else SourceFormat.KERAS2_ZIP
    check_config(config, str(path))
    return Inspected(path, fmt, version, config)


def _inspect_h5(path: Path) -> Inspected:
    from ..._optional import require

    h5py = require("h5py", purpose="reading .h5 models")
    check_hdf5(path, str(path))  # every dataset and link, before Keras reads one
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            version = f.attrs.get("keras_version", "")
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError on damaged files
        raise ModelFileError(f"{path}: damaged HDF5 file ({type(exc).__name__}: {str(exc)[:200]})") from None
    if raw is None:
        raise ModelFileError(f"{path}: this HDF5 file holds no model configuration (weights only?); save the "
                             "whole model with model.save(...)")
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    raw_len = len(raw) if isinstance(raw, (bytes, str)) else 0
    if raw_len > MAX_CONFIG_BYTES:
        raise ModelFileError(f"{path}: the model configuration is over the size limit")
    config = _parse_json(raw, str(path))
    version = str(version)
    fmt = SourceFormat.KERAS3_H5 if is_keras3(version) else SourceFormat.KERAS2_H5
    check_config(config, str(path))
    return Inspected(path, fmt, version, config)

def _inspect_savedmodel(path: Path) -> Inspected:
    if not (path / "saved_model.pb").exists():
        raise UsageError(f"{path} is a folder without saved_model.pb, so not a SavedModel; give a .keras/.h5 "
                         "file, a SavedModel folder or a run directory")
    total = 0
    inside = os.path.realpath(path)
    for root, dirs, files in os.walk(path):  # links are followed by stat: a link to a device is refused
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            p = Path(root) / name
            if p.is_dir():
                raise ModelFileError(f"{p}: a SavedModel may not link to folders outside it")
            if os.path.islink(p) and os.path.commonpath([inside, os.path.realpath(p)]) != inside:
                # TensorFlow would read the linked file's bytes as weights (into the exported files)
                raise ModelFileError(f"{p}: a link to a file outside the SavedModel; refused")
            total += check_regular(p, what="SavedModel file")
    if total > MAX_MODEL_BYTES:
        raise ModelFileError(f"{path}: the SavedModel is {total} bytes, over edgeclf's limit of {MAX_MODEL_BYTES}")
    from ..._optional import import_tensorflow

    import_tensorflow()  # for the protobuf classes only: nothing is loaded before the checks pass
    check_savedmodel(path, read_capped(path / "saved_model.pb", MAX_MODEL_BYTES))
    meta_pb = path / "keras_metadata.pb"
    if not meta_pb.exists():
        return Inspected(path, SourceFormat.SAVEDMODEL, "", None)
    from ..._optional import require

    pb2 = require("tf_keras.protobuf.saved_metadata_pb2", purpose="reading Keras SavedModels")
    meta = pb2.SavedMetadata()
    try:
        meta.ParseFromString(read_capped(meta_pb))
    except Exception as exc:  # protobuf's DecodeError
        raise ModelFileError(f"{meta_pb}: cannot be parsed ({type(exc).__name__}); save the model again") from None
    root_config = None
    version = ""
    for node in meta.nodes:
        doc = _parse_json(node.metadata, str(meta_pb)) if node.metadata else {}
        check_config(doc, str(path))
        if node.node_path == "root":
            root_config = doc
            version = str(getattr(node.version, "producer", "") or "")
    return Inspected(path, SourceFormat.KERAS2_SAVEDMODEL, version, root_config)
