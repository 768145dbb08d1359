"""HDF5 files (``.h5`` models and the ``model.weights.h5`` inside ``.keras`` zips) walked with
h5py's low-level API before Keras reads one weight.

Allowed: groups and hard links; datasets whose data lives inside the file (compact, contiguous
or chunked layout, no external storage), with no filter but the ones HDF5 and h5py build in
(deflate, shuffle, fletcher32, lzf, scale-offset, n-bit: none loads a plugin), a plain dtype
and a declared size under the cap. Refused, naming the object: external storage (the data
would be read from another file, a FIFO or a device), virtual datasets (mapped from other
files), external, soft and user-defined links, any other filter (HDF5 would look for a
plugin library to load), and datasets or attributes over the caps. Only metadata is read:
opening a file with h5py reads no dataset, and this walk reads none either.
"""

from __future__ import annotations

from ...errors import ModelFileError

# Filters built into HDF5 or h5py itself; any other id makes HDF5 search for a plugin.
_BUILTIN_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset",
                    32000: "lzf"}

# dtype kinds a weight or a Keras string attribute may have.
_DATASET_KINDS = frozenset("biufcSU")

MAX_DATASET_BYTES = 2 << 30  # one weight tensor
MAX_TOTAL_BYTES = 4 << 30  # all of them
MAX_OBJECTS = 200_000
MAX_ATTRIBUTE_BYTES = 64 << 20  # an attribute's own storage (a variable-length string's text is in the
# file's heap, so it is bounded by the file's size cap)

# A compressed dataset may not inflate more than real weights do (a deflated bomb of zeros).
_MAX_RATIO = 100
_RATIO_FREE_BYTES = 1 << 20


def check_hdf5(source, where: str) -> None:
    """Walk every object and link of an HDF5 file (a path or a seekable binary file object)."""
    from ..._optional import require

    h5py = require("h5py", purpose="reading HDF5 weights")
    try:
        with h5py.File(source, "r") as f:
            _walk(h5py, f, where)
    except ModelFileError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError on damaged files
        raise ModelFileError(f"{where}: damaged HDF5 file ({type(exc).__name__}: {str(exc)[:200]})") from None


def _walk(h5py, f, where: str) -> None:
    links: list[tuple[str, int]] = []
    f.id.links.visit(lambda name, info: links.append((name.decode("utf-8", "replace"), info.type)), info=True)
    if len(links) > MAX_OBJECTS:
        raise ModelFileError(f"{where}: the HDF5 file has over {MAX_OBJECTS:,} objects; refused")
    kinds = {h5py.h5l.TYPE_SOFT: "a soft link", h5py.h5l.TYPE_EXTERNAL: "an external link (to another file)"}
    total = 0
    _check_attrs(h5py, f.id, "/", where)
    for name, ltype in links:
        if ltype != h5py.h5l.TYPE_HARD:
            raise ModelFileError(f"{where}: /{name} is {kinds.get(ltype, 'a user-defined link')}; Keras writes only "
                                 "plain groups and datasets, so the file is refused")
        oid = h5py.h5o.open(f.id, name.encode("utf-8"))
        _check_attrs(h5py, oid, name, where)
        if isinstance(oid, h5py.h5d.DatasetID):
            total += _check_dataset(h5py, oid, name, where)
            if total > MAX_TOTAL_BYTES:
                raise ModelFileError(f"{where}: the datasets hold over {MAX_TOTAL_BYTES:,} bytes in all; over "
                                     "edgeclf's limit")
        elif not isinstance(oid, (h5py.h5g.GroupID, h5py.h5t.TypeID)):
            raise ModelFileError(f"{where}: /{name} is an HDF5 object of an unknown kind; refused")


def _check_dataset(h5py, dsid, name: str, where: str) -> int:
    dcpl = dsid.get_create_plist()
    layout = dcpl.get_layout()
    if layout not in (h5py.h5d.COMPACT, h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED):
        what = "a virtual dataset (its data is mapped from other files)" if layout == getattr(
            h5py.h5d, "VIRTUAL", -1) else f"stored in an unknown layout ({layout})"
        raise ModelFileError(f"{where}: dataset /{name} is {what}; refused")
    if dcpl.get_external_count() > 0:
        target = dcpl.get_external(0)[0].decode("utf-8", "replace")
        raise ModelFileError(f"{where}: dataset /{name} keeps its data in the external file {target!r}, not in the "
                             "model file; refused (it would read another file)")
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        if code not in _BUILTIN_FILTERS:
            raise ModelFileError(f"{where}: dataset /{name} uses the HDF5 filter {code}, which is not built into "
                                 "HDF5 or h5py (HDF5 would load a plugin library for it); refused")
    dtype = dsid.dtype
    if dtype.hasobject or dtype.kind not in _DATASET_KINDS or dtype.fields is not None:
        raise ModelFileError(f"{where}: dataset /{name} holds {dtype} values, not plain numbers; refused")
    count = 1
    for dim in dsid.shape:
        count *= int(dim)
    nbytes = count * dtype.itemsize
    if nbytes > MAX_DATASET_BYTES:
        raise ModelFileError(f"{where}: dataset /{name} declares {nbytes:,} bytes, over the limit of "
                             f"{MAX_DATASET_BYTES:,} for one weight")
    try:
        stored = dsid.get_storage_size()
    except RuntimeError:  # h5py reads HDF5's 0 (nothing written yet) as an error
        stored = 0
    if nbytes > _RATIO_FREE_BYTES and nbytes > _MAX_RATIO * max(stored, 1):
        raise ModelFileError(f"{where}: dataset /{name} declares {nbytes:,} bytes stored in {stored:,}; real "
                             "weights do not compress like that, so it is refused")
    return nbytes


def _check_attrs(h5py, oid, name: str, where: str) -> None:
    """Attributes are read whole by Keras (model_config, layer and weight names): cap them."""
    for i in range(h5py.h5a.get_num_attrs(oid)):
        aid = h5py.h5a.open(oid, index=i)
        dtype = aid.dtype
        size = dtype.itemsize
        for dim in aid.shape or ():
            size *= int(dim)
        if size > MAX_ATTRIBUTE_BYTES:
            raise ModelFileError(f"{where}: attribute {aid.name.decode('utf-8', 'replace')!r} of /{name} is "
                                 f"{size:,} bytes, over the limit of {MAX_ATTRIBUTE_BYTES:,}")
        if dtype.hasobject and h5py.check_string_dtype(dtype) is None and h5py.check_vlen_dtype(dtype) is None:
            raise ModelFileError(f"{where}: attribute {aid.name.decode('utf-8', 'replace')!r} of /{name} holds "
                                 f"{dtype} values; refused")
