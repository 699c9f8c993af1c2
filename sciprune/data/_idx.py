"""IDX files (LeCun's MNIST format), read with every size checked before anything is allocated.

Layout: magic ``00 00 TT DD`` with type code TT (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64) and DD >= 1 dimensions, then DD big-endian uint32 sizes, then the
big-endian data. Files may be gzipped (detected by the magic ``1f 8b``).

:func:`read_idx` reads the header first; for a plain file the payload size it implies is compared
with the file size, for a gzipped one the payload is decompressed in chunks and never beyond the
size the header implies, so a header whose dimensions overflow or do not match the data, a
truncated or corrupt gzip stream, or a wrong magic is one :class:`DataFormatError` naming the file.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataFormatError, SciPruneError
from ._files import regular_file

__all__ = ["read_idx", "write_idx", "IDX_TYPES", "GZIP_MAGIC", "looks_like_idx"]

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_CODES = {np.dtype(v).newbyteorder("="): k for k, v in IDX_TYPES.items()}
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def looks_like_idx(head: bytes) -> bool:
    """Whether the first 4 bytes of a file are gzip or an IDX magic (for format detection)."""
    return head[:2] == GZIP_MAGIC or (len(head) >= 4 and head[:2] == b"\0\0" and head[2] in IDX_TYPES)


def _read_upto(fh, n: int) -> bytes:
    """Up to ``n`` bytes from ``fh``, read in chunks so a short stream allocates only what it holds."""
    parts, got = [], 0
    while got < n:
        block = fh.read(min(_CHUNK, n - got))
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


def _header(path: Path, fh) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, shape, header length) from the start of an IDX stream."""
    magic = _read_upto(fh, 4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_TYPES or magic[3] == 0:
        raise DataFormatError(
            f"{path}: not an IDX file: magic is {magic.hex(' ') or 'empty'}; expected 00 00 TT DD with "
            "type code TT in 08/09/0b/0c/0d/0e and DD >= 1 dimensions (or a gzip header 1f 8b)"
        )
    ndim = magic[3]
    sizes = _read_upto(fh, 4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DataFormatError(
            f"{path}: IDX header truncated: {len(sizes)} of the {4 * ndim} bytes of its {ndim} dimension sizes"
        )
    return np.dtype(IDX_TYPES[magic[2]]), struct.unpack(f">{ndim}I", sizes), 4 + 4 * ndim


def _check_size(path: Path, dtype: np.dtype, shape: tuple[int, ...], nbytes: int) -> None:
    """Refuse an empty shape or one larger than the machine's memory, before reading the payload."""
    from ..checks import memory_bytes

    if nbytes == 0:
        raise DataFormatError(f"{path}: IDX header gives shape {shape}: the file holds no values")
    limit = memory_bytes()
    if limit and nbytes > limit:
        raise DataFormatError(
            f"{path}: IDX header gives shape {shape} of {dtype.name}, {nbytes / 2**30:.3g} GiB, more than this "
            "machine's memory; the header is corrupt or the file too large"
        )


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a native-endian array of the stored shape.

    Raises:
        DataFormatError: not a regular file, wrong magic, truncated header, an empty shape, a
            payload size that does not match the header, or corrupt gzip data.
    """
    path = regular_file(path, "an IDX file")
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == GZIP_MAGIC
    try:
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as fh:
            dtype, shape, header = _header(path, fh)
            nbytes = math.prod(shape) * dtype.itemsize
            _check_size(path, dtype, shape, nbytes)
            if not gzipped:
                have = path.stat().st_size - header
                if have != nbytes:
                    raise DataFormatError(_mismatch(path, have, nbytes, shape, dtype))
            raw = _read_upto(fh, nbytes + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(f"{path}: corrupt or truncated gzip data ({' '.join(str(exc).split())})") from None
    if len(raw) != nbytes:
        raise DataFormatError(_mismatch(path, len(raw), nbytes, shape, dtype, more=len(raw) > nbytes))
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _mismatch(path: Path, have: int, want: int, shape, dtype: np.dtype, *, more: bool = False) -> str:
    have_text = f"more than {want}" if more else str(have)
    return f"{path}: IDX payload has {have_text} bytes; expected {want} for the header's shape {shape} of {dtype.name}"


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool = False) -> Path:
    """Write ``array`` as an IDX file (gzipped when ``compress``); returns the path."""
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None or array.ndim == 0 or array.ndim > 255 or any(s >= 2**32 for s in array.shape):
        raise SciPruneError(
            f"IDX can hold uint8/int8/int16/int32/float32/float64 arrays of 1 to 255 dims each below 2^32, "
            f"got {array.dtype} {array.shape}"
        )
    payload = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload += array.astype(IDX_TYPES[code]).tobytes()
    path = Path(path)
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as fh:
        fh.write(payload)
    return path
