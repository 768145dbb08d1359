"""Read one TFLite metadata entry straight from the flatbuffer, without the generated schema.

``ai_edge_litert.schema_py_generated`` defines every table of the TFLite schema in Python and
takes 8-10 ms to import, more than loading a small model; the runtime needs two fields of
it (``Model.metadata`` and ``Model.buffers``) once per file. This walks exactly those, with
every offset bounds-checked, so a damaged file raises ``ValueError`` here and never reads
outside the bytes. Standard library only.

Flatbuffer layout used (https://flatbuffers.dev/internals/): a table starts with an int32
offset back to its vtable; the vtable is uint16 [vtable size, table size, field offsets...];
reference fields hold a uint32 offset forward from themselves to a vector (uint32 length,
then elements), a string (length, bytes) or a table.
"""

from __future__ import annotations

import struct

# Field numbers in tflite/schema.fbs.
_MODEL_BUFFERS, _MODEL_METADATA = 4, 6
_METADATA_NAME, _METADATA_BUFFER = 0, 1
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2


class _Reader:
    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.n = len(data)

    def _read(self, fmt: str, pos: int):
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > self.n:
            raise ValueError(f"offset {pos} outside the file ({self.n} bytes)")
        return struct.unpack_from(fmt, self.data, pos)[0]

    def field(self, table: int, index: int) -> int | None:
        """Absolute position of a table's field, or None when absent (its default applies)."""
        vtable = table - self._read("<i", table)
        vt_size = self._read("<H", vtable)
        slot = 4 + 2 * index
        if slot + 2 > vt_size:
            return None
        off = self._read("<H", vtable + slot)
        return table + off if off else None

    def deref(self, pos: int) -> int:
        return pos + self._read("<I", pos)

    def vector(self, table: int, index: int) -> tuple[int, int]:
        """(position of the first element, length) of a vector field; (0, 0) when absent."""
        pos = self.field(table, index)
        if pos is None:
            return 0, 0
        vec = self.deref(pos)
        length = self._read("<I", vec)
        return vec + 4, length

    def table_at(self, elements: int, i: int) -> int:
        return self.deref(elements + 4 * i)

    def scalar(self, table: int, index: int, fmt: str, default=0):
        pos = self.field(table, index)
        return default if pos is None else self._read(fmt, pos)

    def string(self, table: int, index: int) -> bytes | None:
        start, length = self.vector(table, index)
        if not start:
            return None
        if start + length > self.n:
            raise ValueError("string runs past the end of the file")
        return bytes(self.data[start:start + length])


def read_metadata_entry(data: bytes, key: str, *, max_entries: int = 4096) -> bytes | None:
    """The bytes of the TFLite metadata entry named ``key``, or None when the file has none.

    Raises ValueError on a damaged flatbuffer (an offset outside the file, more than
    ``max_entries`` metadata entries, an entry pointing at a missing buffer)."""
    r = _Reader(data)
    model = r.deref(0)
    entries, count = r.vector(model, _MODEL_METADATA)
    if count > max_entries:  # a real model has a handful; a huge count is a damaged header
        raise ValueError(f"claims {count} metadata entries")
    wanted = key.encode("utf-8")
    for i in range(count):
        entry = r.table_at(entries, i)
        if r.string(entry, _METADATA_NAME) != wanted:
            continue
        index = r.scalar(entry, _METADATA_BUFFER, "<I")
        buffers, n_buffers = r.vector(model, _MODEL_BUFFERS)
        if index >= n_buffers:
            raise ValueError(f"metadata {key!r} points at buffer {index} of {n_buffers}")
        buf = r.table_at(buffers, index)
        start, length = r.vector(buf, _BUFFER_DATA)
        if length == 0:
            # Models over 2 GB keep buffers after the flatbuffer: (offset, size) into the file.
            offset, size = r.scalar(buf, _BUFFER_OFFSET, "<Q"), r.scalar(buf, _BUFFER_SIZE, "<Q")
            if size and offset + size <= r.n:
                return bytes(r.data[offset:offset + size])
            if size:
                raise ValueError(f"metadata {key!r} lies outside the file")
            return b""
        if start + length > r.n:
            raise ValueError(f"metadata {key!r} runs past the end of the file")
        return bytes(r.data[start:start + length])
    return None
