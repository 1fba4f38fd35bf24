"""Block quantization of a 2-D float initializer one window at a time, with onnxruntime's own
block quantizer (`DefaultWeightOnlyQuantizer.qbits_block_quant`).

Both the repack of a published lm-head (`satellite.modeldir.repack`) and the build's q4/q8
graphs (`lfm_toolchain.quantize`) pack a weight as `MatMulNBits` and `GatherBlockQuantized` read it:
the weight seen as N rows of K values, each row cut into blocks along K. Blocks never cross
rows, so a window of rows packs on its own and the windows, written one after another, are the
packed tensor [N, blocks, blob]; the scales [N, blocks] are the windows' scales stacked. A
window holds about `tensorio.PIECE_BYTES` of float32, so a 512 MB table costs 16 MB at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from onnx import TensorProto
from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantizer

from satellite.modeldir.tensorio import column_step, read_window


@dataclass(frozen=True)
class PackedWindow:
    """Rows [start, stop) of the weight, packed."""

    start: int
    stop: int
    columns: npt.NDArray[np.float32]
    """The window's float values as the quantizer took them: [K, stop - start]."""
    blocks: npt.NDArray[np.uint8]
    """[stop - start, blocks, blob]."""
    scales: npt.NDArray[Any]
    """[stop - start, blocks]."""
    zero_points: npt.NDArray[np.uint8]
    """Empty-valued for symmetric quantization (onnxruntime returns them anyway)."""


def packed_windows(
    tensor: TensorProto,
    base_dir: Path,
    quantizer: DefaultWeightOnlyQuantizer,
    *,
    stored_transposed: bool,
) -> Iterator[PackedWindow]:
    """Pack `tensor` (external data under `base_dir`, or inline) window by window, in order.

    `stored_transposed`: the tensor is stored [K, N] (a MatMul weight, windows of columns);
    otherwise [N, K] (an embedding table, windows of rows)."""
    first, second = (int(d) for d in tensor.dims)
    n, k = (second, first) if stored_transposed else (first, second)
    step = column_step(k)
    for start in range(0, n, step):
        stop = min(n, start + step)
        if stored_transposed:
            window = read_window(tensor, base_dir, (0, k), (start, stop))
        else:
            window = read_window(tensor, base_dir, (start, stop)).T
        columns = np.ascontiguousarray(window, dtype=np.float32)
        blocks, scales, zero_points = quantizer.qbits_block_quant(columns)
        yield PackedWindow(start, stop, columns, blocks, scales, zero_points)
