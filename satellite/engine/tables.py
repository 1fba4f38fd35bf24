"""Embedding tables read row by row with `pread`, never mapped.

A lookup needs a handful of rows per token or audio frame, but a mapped table keeps every page
it ever touched (and the pages around it: the kernel maps up to 64 kB per fault) in the
process's resident memory: after a few hundred random tokens most of a 64 MB text table is
counted there. Reading the rows with `os.pread` leaves the table in the page cache, where the
kernel can drop it under pressure, and costs a few microseconds per row.

- `EmbeddingTable`: a side-file table of raw little-endian float32 / float16 / bfloat16 rows
  (the official layout's `embed_tokens.bin`, `audio_embedding.bin`).
- `BlockTable`: the table of a lookup graph that is one `GatherBlockQuantized` node (this
  project's q4/q8 `embed_tokens` and `audio_embedding` graphs): uint8 blocks along the row,
  low nibble first for 4 bits, no zero points (the symmetric default 2^(bits-1)), one float32
  scale per block. `block_table(info)` recognises such a graph; it computes what the graph
  computes, so the engine need not open a session for it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

from satellite.modeldir.onnxread import GraphInfo
from satellite.modeldir.sidefiles import TableInfo

FloatArray = npt.NDArray[np.float32]


class RowFile:
    """Fixed-size rows of a region of a file, read with pread (no shared file position, so
    the responder's and the services' worker threads can read at once)."""

    def __init__(self, path: Path, offset: int, rows: int, row_bytes: int) -> None:
        self.path = path
        self.offset = offset
        self.rows = rows
        self.row_bytes = row_bytes
        self._fd = -1
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))

    def read(self, index: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
        """[n] row indices (checked by the caller) -> [n, row_bytes] bytes."""
        out = np.empty((index.size, self.row_bytes), dtype=np.uint8)
        for i, row in enumerate(index.tolist()):
            data = os.pread(self._fd, self.row_bytes, self.offset + row * self.row_bytes)
            if len(data) != self.row_bytes:
                raise OSError(f"{self.path}: row {row} is cut short (the file is truncated)")
            out[i] = np.frombuffer(data, dtype=np.uint8)
        return out

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


def _checked(indices: npt.ArrayLike, rows: int, where: Path) -> npt.NDArray[np.int64]:
    index = np.asarray(indices, dtype=np.int64).reshape(-1)
    if index.size and (index.min() < 0 or index.max() >= rows):
        bad = int(index.min()) if index.min() < 0 else int(index.max())
        raise IndexError(f"{where}: row {bad} outside 0..{rows - 1}")
    return index


class EmbeddingTable:
    """Rows of a raw little-endian table side file (float32, float16 or bfloat16)."""

    def __init__(self, info: TableInfo) -> None:
        self.info = info
        width = {"float32": 4, "float16": 2, "bfloat16": 2}[info.dtype]
        self._raw = {"float32": "<f4", "float16": "<f2", "bfloat16": "<u2"}[info.dtype]
        self._rows = RowFile(info.bin_path, 0, info.vocab_size, info.hidden_size * width)

    def __call__(self, indices: npt.ArrayLike) -> FloatArray:
        """[n] row indices -> [n, hidden] float32."""
        index = _checked(indices, self.info.vocab_size, self.info.bin_path)
        rows = self._rows.read(index).view(self._raw)
        if self.info.dtype == "bfloat16":
            widened: FloatArray = (rows.astype(np.uint32) << 16).view(np.float32)
            return widened
        return rows.astype(np.float32)


class BlockTable:
    """Rows of a block-quantized table (see the module docstring), dequantized to float32."""

    def __init__(
        self,
        data: RowFile,
        scales: RowFile,
        *,
        width: int,
        bits: int,
        block_size: int,
    ) -> None:
        self.data = data
        self.scales = scales
        self.width = width
        self.bits = bits
        self.block_size = block_size

    @property
    def rows(self) -> int:
        return self.data.rows

    def __call__(self, indices: npt.ArrayLike) -> FloatArray:
        """[n] row indices -> [n, width] float32."""
        index = _checked(indices, self.rows, self.data.path)
        packed = self.data.read(index)
        if self.bits == 4:
            codes = np.stack([packed & 15, packed >> 4], axis=-1).reshape(index.size, self.width)
        else:
            codes = packed
        values = codes.astype(np.float32) - np.float32(1 << (self.bits - 1))
        scales = self.scales.read(index).view("<f4")
        blocks = values.reshape(index.size, self.width // self.block_size, self.block_size)
        blocks = blocks * scales[:, :, None]
        out: FloatArray = blocks.reshape(index.size, self.width)
        return out


def block_table(info: GraphInfo) -> BlockTable | None:
    """The table of `info`'s graph when it is one GatherBlockQuantized lookup this module
    reads exactly like onnxruntime (gather and quantize axes 0 and 1, 4 or 8 bits, uint8
    data, no zero points, float32 scales, the whole table in an external file); else None."""
    if len(info.nodes) != 1 or info.nodes[0].op_type != "GatherBlockQuantized":
        return None
    node = info.nodes[0]
    bits, block = node.ints.get("bits", 4), node.ints.get("block_size", 128)
    if len(node.inputs) != 3 or bits not in (4, 8):
        return None  # zero points, or a layout this reader does not know
    if node.ints.get("gather_axis", 0) != 0 or node.ints.get("quantize_axis", 1) != 1:
        return None
    tensors = {t.name: t for t in info.external_tensors}
    data, scales = tensors.get(node.inputs[0]), tensors.get(node.inputs[2])
    if data is None or scales is None or data.dtype != "uint8" or len(data.dims) != 2:
        return None
    if scales.dtype != "float32" or len(scales.dims) != 2:
        return None  # float16 scales: onnxruntime would compute in float16
    rows, row_bytes = data.dims
    blocks = scales.dims[1]
    if scales.dims[0] != rows or row_bytes * 8 != blocks * block * bits:
        return None
    if data.length != rows * row_bytes or scales.length != rows * blocks * 4:
        return None
    folder = info.path.parent
    return BlockTable(
        RowFile(folder / data.location, data.offset, rows, row_bytes),
        RowFile(folder / scales.location, scales.offset, rows, blocks * 4),
        width=row_bytes * 8 // bits,
        bits=bits,
        block_size=block,
    )
