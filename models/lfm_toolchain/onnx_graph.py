"""A small ONNX graph writer: nodes by hand, weights streamed to an external data file.

The graphs are written node by node with `onnx.helper` from numpy weights (the approach of
onnxruntime-genai's model builder) rather than traced from torch: the graph then uses exactly the
operators chosen for onnxruntime (`GroupQueryAttention`, `SimplifiedLayerNormalization`,
`SkipSimplifiedLayerNormalization`, and after quantization `MatMulNBits`/`GatherBlockQuantized`),
keeps the official cache names, and needs neither torch nor a tracer at build time.

Weights go to `<graph>.onnx_data` as they are produced, so a full-size build holds one tensor in
memory at a time and the `.onnx` file itself stays small.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lfm_toolchain.weights import Array

OPSET = 21
"""Default-domain opset (onnxruntime >= 1.20 runs it)."""
IR_VERSION = 10
MS_DOMAIN = "com.microsoft"
EXTERNAL_MIN_BYTES = 1024
"""Initializers at least this large go to the external data file."""
_ALIGN_LARGE = 65536
"""Tensors of 1 MiB and more start on a 64 KiB boundary, so onnxruntime can map them."""

FLOAT = TensorProto.FLOAT
INT32 = TensorProto.INT32
INT64 = TensorProto.INT64


class ExternalData:
    """Appends tensors to one external data file and describes them for TensorProtos."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("wb")
        self._offset = 0

    def tensor(self, name: str, array: Array) -> TensorProto:
        data = np.asarray(array, order="C")
        if data.dtype.byteorder == ">":
            data = data.astype(data.dtype.newbyteorder("<"))
        return self.stream(name, data.dtype, data.shape, [data])

    def stream(
        self,
        name: str,
        dtype: Any,
        shape: Sequence[int],
        pieces: Iterable[Array | bytes],
    ) -> TensorProto:
        """A tensor written from `pieces` (arrays or bytes, in storage order) as they come, so
        that no more than one piece is in memory; their bytes must add up to the shape."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        align = _ALIGN_LARGE if nbytes >= (1 << 20) else 64
        pad = -self._offset % align
        if pad:
            self._file.write(b"\0" * pad)
            self._offset += pad
        offset = self._offset
        for piece in pieces:
            raw = piece if isinstance(piece, bytes) else _bytes_of(piece)
            self._file.write(raw)
            self._offset += len(raw)
        if self._offset - offset != nbytes:
            raise ValueError(
                f"{name}: {self._offset - offset} bytes written for {list(shape)} {dtype} "
                f"({nbytes} bytes)"
            )
        proto = TensorProto()
        proto.name = name
        proto.data_type = helper.np_dtype_to_tensor_dtype(dtype)
        proto.dims.extend(shape)
        proto.data_location = TensorProto.EXTERNAL
        for key, value in (
            ("location", self.path.name),
            ("offset", str(offset)),
            ("length", str(nbytes)),
        ):
            entry = proto.external_data.add()
            entry.key = key
            entry.value = value
        return proto

    def close(self) -> None:
        self._file.close()


def _bytes_of(array: Array) -> memoryview:
    """The array's bytes without a copy (one is made only if it is not C-contiguous)."""
    data = np.ascontiguousarray(array)
    return data.data.cast("B") if data.size else memoryview(b"")


class GraphBuilder:
    """Collects inputs, outputs, initializers and nodes; names nodes uniquely."""

    def __init__(self, name: str, data: ExternalData | None) -> None:
        self.name = name
        self.data = data
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.initializers: list[TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []
        self._names: set[str] = set()
        self._constants: dict[tuple[str, bytes, tuple[int, ...]], str] = {}
        self._domains: set[str] = set()

    def unique(self, hint: str) -> str:
        name, n = hint, 1
        while name in self._names:
            n += 1
            name = f"{hint}_{n}"
        self._names.add(name)
        return name

    def input(self, name: str, elem_type: int, shape: list[int | str]) -> str:
        self._names.add(name)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, name: str, elem_type: int, shape: list[int | str]) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))

    def weight(self, name: str, array: Array) -> str:
        """A named initializer; large ones go to the external data file."""
        name = self.unique(name)
        if self.data is not None and array.nbytes >= EXTERNAL_MIN_BYTES:
            self.initializers.append(self.data.tensor(name, array))
        else:
            self.initializers.append(numpy_helper.from_array(np.asarray(array, order="C"), name))
        return name

    def const(self, value: Any, dtype: Any = np.int64, hint: str = "const") -> str:
        """A small constant initializer, shared between identical uses."""
        array = np.asarray(value, dtype=dtype)
        key = (str(array.dtype), array.tobytes(), array.shape)
        if key not in self._constants:
            self._constants[key] = self.weight(f"/const/{hint}", array)
        return self._constants[key]

    def op(
        self,
        op_type: str,
        inputs: list[str],
        *,
        name: str,
        outputs: int | list[str] = 1,
        domain: str = "",
        **attrs: Any,
    ) -> list[str]:
        """Add a node; returns its output names (`outputs` names them, or counts them).

        An empty string in `outputs` leaves that optional output unused.
        """
        node_name = self.unique(name)
        if isinstance(outputs, int):
            out_names = [self.unique(f"{node_name}/output_{i}") for i in range(outputs)]
        else:
            out_names = outputs
            self._names.update(o for o in outputs if o)
        if domain:
            self._domains.add(domain)
        self.nodes.append(
            helper.make_node(op_type, inputs, out_names, name=node_name, domain=domain, **attrs)
        )
        return out_names

    def op1(
        self, op_type: str, inputs: list[str], *, name: str, domain: str = "", **attrs: Any
    ) -> str:
        """Add a single-output node; returns its output name."""
        return self.op(op_type, inputs, name=name, domain=domain, **attrs)[0]

    def model(self, doc: str = "") -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, self.name, self.inputs, self.outputs, initializer=self.initializers
        )
        opsets = [helper.make_opsetid("", OPSET)]
        opsets += [helper.make_opsetid(domain, 1) for domain in sorted(self._domains)]
        model = helper.make_model(
            graph, opset_imports=opsets, producer_name="lfm-satellite", doc_string=doc
        )
        model.ir_version = IR_VERSION
        return model


def save(model: onnx.ModelProto, path: Path) -> None:
    """Write the graph (its weights are already in the external data file)."""
    path.write_bytes(model.SerializeToString())


def write_graph(out: Path, file_stem: str, build: Callable[[GraphBuilder], onnx.ModelProto]) -> str:
    """Build one graph into `out` (`<stem>.onnx` + `<stem>.onnx_data`); returns its file name."""
    data = ExternalData(out / f"{file_stem}.onnx_data")
    try:
        model = build(GraphBuilder(file_stem, data))
    finally:
        data.close()
    if data.path.stat().st_size == 0:
        data.path.unlink()
    save(model, out / f"{file_stem}.onnx")
    return f"{file_stem}.onnx"
