"""Parts of an ONNX initializer, read without loading the whole tensor.

The graph rewriters (`satellite.modeldir.repack`, `lfm_toolchain.quantize`) quantize and copy weights
of up to 512 MB (the full model's tied embedding table). Loading such a tensor whole costs its
size several times over (the float array, the proto's copy, the quantizer's temporaries), more
than a 4 GB board has to spare; these functions hand out a window of rows and columns, or the
raw bytes in pieces, read with `pread` from the external data file. Initializers stored inside
the graph file are small, and are sliced from their decoded value.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from onnx import TensorProto, helper, numpy_helper

PIECE_BYTES = 16 << 20
"""Bytes read at a time by `iter_bytes`, and the size `column_step` aims a window at."""


class TensorReadError(OSError):
    """The external data file is missing or shorter than the tensor; names file and tensor."""


def is_external(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL


def _external(tensor: TensorProto, base_dir: Path) -> tuple[Path, int, int]:
    info = {e.key: e.value for e in tensor.external_data}
    path = base_dir / info["location"]
    offset = int(info.get("offset", "0"))
    count = int(np.prod(tensor.dims, dtype=np.int64)) * element_size(tensor)
    length = int(info.get("length", str(count)))
    return path, offset, length


def element_size(tensor: TensorProto) -> int:
    return int(helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize)


def _dtype(tensor: TensorProto) -> np.dtype[Any]:
    return np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")


def read_window(
    tensor: TensorProto, base_dir: Path, rows: tuple[int, int], cols: tuple[int, int] | None = None
) -> npt.NDArray[Any]:
    """Rows [rows) and columns [cols) (all when None) of a 2-D initializer, as a contiguous
    array of its own element type. External data is read with one `pread` per row (one in all
    when every column is asked for), never more than the window."""
    n_rows, n_cols = (int(d) for d in tensor.dims)
    r0, r1 = rows
    c0, c1 = cols if cols is not None else (0, n_cols)
    if not (0 <= r0 <= r1 <= n_rows and 0 <= c0 <= c1 <= n_cols):
        raise ValueError(f"{tensor.name}: window {rows} x {cols} outside [{n_rows}, {n_cols}]")
    if not is_external(tensor):
        whole = numpy_helper.to_array(tensor)
        return np.ascontiguousarray(whole[r0:r1, c0:c1])
    path, offset, _ = _external(tensor, base_dir)
    dtype = _dtype(tensor)
    size = dtype.itemsize
    out = np.empty((r1 - r0, c1 - c0), dtype=dtype)
    try:
        with path.open("rb") as f:
            fd = f.fileno()
            if c0 == 0 and c1 == n_cols:
                want = (r1 - r0) * n_cols * size
                data = os.pread(fd, want, offset + r0 * n_cols * size)
                _check(len(data), want, path, tensor)
                out[:] = np.frombuffer(data, dtype=dtype).reshape(out.shape)
                return out
            want = (c1 - c0) * size
            for i, r in enumerate(range(r0, r1)):
                data = os.pread(fd, want, offset + (r * n_cols + c0) * size)
                _check(len(data), want, path, tensor)
                out[i] = np.frombuffer(data, dtype=dtype)
    except FileNotFoundError:
        raise TensorReadError(f"{path}: not found (external data of {tensor.name})") from None
    return out


def iter_bytes(tensor: TensorProto, base_dir: Path, piece: int | None = None) -> Iterator[bytes]:
    """The tensor's stored bytes (little-endian elements), `piece` (default `PIECE_BYTES`)
    bytes at a time."""
    piece = piece or PIECE_BYTES
    if not is_external(tensor):
        data = numpy_helper.to_array(tensor).astype(_dtype(tensor), copy=False).tobytes()
        for start in range(0, len(data), piece):
            yield data[start : start + piece]
        return
    path, offset, length = _external(tensor, base_dir)
    try:
        with path.open("rb") as f:
            for start in range(0, length, piece):
                want = min(piece, length - start)
                data = os.pread(f.fileno(), want, offset + start)
                _check(len(data), want, path, tensor)
                yield data
    except FileNotFoundError:
        raise TensorReadError(f"{path}: not found (external data of {tensor.name})") from None


def column_step(rows: int, element: int = 4, budget: int | None = None) -> int:
    """Columns per window so that a [rows, step] window holds about `budget` bytes
    (default `PIECE_BYTES`)."""
    return max(1, (budget or PIECE_BYTES) // max(1, rows * element))


def _check(got: int, want: int, path: Path, tensor: TensorProto) -> None:
    if got != want:
        raise TensorReadError(f"{path}: too short for {tensor.name} (external data)")


def read_array(tensor: TensorProto, base_dir: Path) -> npt.NDArray[Any]:
    """The whole initializer as an array of its own element type and shape (for the small
    ones a rewrite moves: a few MB at most)."""
    data = b"".join(iter_bytes(tensor, base_dir))
    dims = [int(d) for d in tensor.dims]
    want = int(np.prod(dims, dtype=np.int64)) * element_size(tensor)
    if len(data) != want:
        raise TensorReadError(f"{tensor.name}: {len(data)} bytes stored, {want} expected")
    return np.frombuffer(data, dtype=_dtype(tensor)).reshape(dims).copy()
