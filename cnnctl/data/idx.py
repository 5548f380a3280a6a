"""Reader for the IDX format of MNIST and Fashion-MNIST (optionally gzip-compressed).

Format (LeCun et al., "The MNIST database"): a big-endian header of two zero
bytes, a type code (0x08 = uint8, ...), the number of dimensions, then one
big-endian uint32 per dimension, then the raw array in C order.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

from cnnctl.errors import CnnctlError

_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Return the array stored in an IDX file (``.gz`` is decompressed).

    Raises ``CnnctlError`` naming the file on a bad magic number, an unknown
    type code or a payload whose size does not match the header.
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise CnnctlError(f"cannot read IDX file {path}: {e}",
                          hint="re-install cnnctl or point --data at an intact copy") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise CnnctlError(f"{path} is not an IDX file (bad magic number)",
                          hint="IDX files start with 0x00 0x00 <type> <ndim>")
    dtype, ndim = _DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != count * dtype.itemsize:
        raise CnnctlError(
            f"{path} is truncated: header says shape {shape} "
            f"({count * dtype.itemsize} bytes) but {len(raw) - header} bytes follow",
            hint="re-download or re-install the file")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header)
    return data.reshape(shape).astype(dtype.newbyteorder("="))
