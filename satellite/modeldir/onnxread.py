"""Read what a model directory needs to know about an ONNX graph without the `onnx` package and
without loading its weights: graph inputs and outputs (name, element type, shape with symbolic
dimensions), the operator nodes (type, domain, integer attributes; nested subgraphs included),
the opsets, and the external data files the weights live in.

The file is parsed straight from the protobuf wire format over a memory map; weight payloads
(`raw_data` and the like) are skipped by their length, so a graph with 500 MB of embedded
weights costs no more to read than one with external data.
"""

from __future__ import annotations

import mmap
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from satellite.errors import UserError
from satellite.modeldir.manifest import UNKNOWN_RANK, TensorSpec

UNKNOWN_DIM = "?"
"""A dimension whose size is neither fixed nor named (see also manifest.UNKNOWN_RANK)."""

ELEMENT_TYPES: dict[int, str] = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
    17: "float8e4m3fn",
    18: "float8e4m3fnuz",
    19: "float8e5m2",
    20: "float8e5m2fnuz",
    21: "uint4",
    22: "int4",
    23: "float4e2m1",
}
"""ONNX `TensorProto.DataType` codes -> the names used in manifests (numpy's where it has one)."""

_MAX_DEPTH = 64
"""Nesting limit for subgraphs (If/Loop bodies); real graphs nest two or three deep."""


class GraphReadError(UserError):
    """The file is not a readable ONNX graph; the message names the file."""


@dataclass(frozen=True)
class NodeInfo:
    """One operator node."""

    op_type: str
    domain: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    ints: dict[str, int]
    """The node's integer attributes (e.g. GroupQueryAttention's `do_rotary`)."""


@dataclass(frozen=True)
class ExternalTensor:
    """An initializer whose bytes live in an external data file."""

    name: str
    dtype: str
    """Element type name (ELEMENT_TYPES)."""
    dims: tuple[int, ...]
    location: str
    """The data file, relative to the graph's folder."""
    offset: int
    length: int


@dataclass(frozen=True)
class EmbeddedTensor:
    """A small initializer whose bytes are in the graph file itself (raw_data or float_data)."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    data: bytes
    """Little-endian element bytes, as onnx's raw_data holds them."""


EMBEDDED_MAX_BYTES = 1 << 16
"""Embedded initializers up to this size are kept by `read_graph` (rotary tables, norm
gains); larger ones are skipped, as the weights are."""


@dataclass(frozen=True)
class GraphInfo:
    """What `read_graph` learns from one `.onnx` file."""

    path: Path
    ir_version: int
    opsets: dict[str, int]
    """Operator set domain (`""` is the default ONNX domain) -> version."""
    inputs: tuple[TensorSpec, ...]
    """Graph inputs the caller feeds (initializers listed as inputs are left out)."""
    outputs: tuple[TensorSpec, ...]
    nodes: tuple[NodeInfo, ...]
    """Every node, those of nested subgraphs included, in file order."""
    initializer_count: int
    external_data: tuple[str, ...]
    """Locations (relative to the graph's folder) of external weight files, sorted."""
    external_tensors: tuple[ExternalTensor, ...] = ()
    """Initializers stored in external files (those of the main graph and of subgraphs)."""
    embedded_tensors: tuple[EmbeddedTensor, ...] = ()
    """Small initializers stored in the graph file (up to EMBEDDED_MAX_BYTES)."""

    def op_types(self) -> Counter[str]:
        """How many nodes of each operator type the graph has."""
        return Counter(node.op_type for node in self.nodes)


def read_graph(path: Path) -> GraphInfo:
    """Read `path`'s interface, nodes and external data references.

    Raises GraphReadError naming the file if it is missing, unreadable or not ONNX.
    """
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise GraphReadError(f"{path}: empty file, not an ONNX graph")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _Reader(data, path).model()
    except FileNotFoundError:
        raise GraphReadError(f"{path}: graph file not found") from None
    except IsADirectoryError:
        raise GraphReadError(f"{path}: is a directory, not an ONNX graph") from None
    except PermissionError:
        raise GraphReadError(f"{path}: cannot read the graph: permission denied") from None
    except OSError as err:
        raise GraphReadError(f"{path}: cannot read the graph: {err.strerror or err}") from None


class _Truncated(Exception):
    pass


class _Reader:
    """Protobuf wire-format walk over the parts of ModelProto that matter here."""

    def __init__(self, data: mmap.mmap, path: Path) -> None:
        self.data = data
        self.path = path
        self.nodes: list[NodeInfo] = []
        self.external: set[str] = set()
        self.external_tensors: list[ExternalTensor] = []
        self.embedded_tensors: list[EmbeddedTensor] = []
        self.initializers = 0

    def fail(self, why: str) -> GraphReadError:
        return GraphReadError(f"{self.path}: not a valid ONNX graph ({why})")

    # -- wire format --------------------------------------------------------------------

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        data = self.data
        result = 0
        shift = 0
        while True:
            if pos >= end or shift > 63:
                raise _Truncated
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result, pos
            shift += 7

    def fields(self, start: int, end: int) -> list[tuple[int, int, int, int]]:
        """(field number, wire type, value or payload start, payload end) for each field in
        [start, end). Varints carry their value in the third slot; length-delimited fields
        their payload bounds."""
        out: list[tuple[int, int, int, int]] = []
        pos = start
        while pos < end:
            key, pos = self.varint(pos, end)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise _Truncated
            if wire == 0:
                value, pos = self.varint(pos, end)
                out.append((number, 0, value, pos))
            elif wire == 2:
                length, pos = self.varint(pos, end)
                if pos + length > end:
                    raise _Truncated
                out.append((number, 2, pos, pos + length))
                pos += length
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:
                raise _Truncated
            if pos > end:
                raise _Truncated
        return out

    def text(self, start: int, end: int) -> str:
        return bytes(self.data[start:end]).decode("utf-8", errors="replace")

    # -- messages -----------------------------------------------------------------------

    def model(self) -> GraphInfo:
        try:
            fields = self.fields(0, len(self.data))
        except _Truncated:
            raise self.fail("truncated or not protobuf") from None
        ir_version = 0
        opsets: dict[str, int] = {}
        graph: tuple[int, int] | None = None
        try:
            for number, wire, a, b in fields:
                if number == 1 and wire == 0:
                    ir_version = a
                elif number == 8 and wire == 2:
                    domain, version = self.opset(a, b)
                    opsets[domain] = version
                elif number == 7 and wire == 2:
                    graph = (a, b)
            if graph is None or ir_version == 0:
                raise self.fail("no graph or no ir_version: is this an ONNX model file?")
            inputs, outputs = self.graph(graph[0], graph[1], depth=0)
        except _Truncated:
            raise self.fail("truncated") from None
        return GraphInfo(
            path=self.path,
            ir_version=ir_version,
            opsets=opsets,
            inputs=tuple(inputs),
            outputs=tuple(outputs),
            nodes=tuple(self.nodes),
            initializer_count=self.initializers,
            external_data=tuple(sorted(self.external)),
            external_tensors=tuple(self.external_tensors),
            embedded_tensors=tuple(self.embedded_tensors),
        )

    def opset(self, start: int, end: int) -> tuple[str, int]:
        domain, version = "", 0
        for number, wire, a, b in self.fields(start, end):
            if number == 1 and wire == 2:
                domain = self.text(a, b)
            elif number == 2 and wire == 0:
                version = a
        return domain, version

    def graph(self, start: int, end: int, depth: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
        if depth > _MAX_DEPTH:
            raise self.fail(f"subgraphs nested deeper than {_MAX_DEPTH}")
        inputs: list[TensorSpec] = []
        outputs: list[TensorSpec] = []
        initializer_names: set[str] = set()
        for number, wire, a, b in self.fields(start, end):
            if wire != 2:
                continue
            if number == 1:
                self.node(a, b, depth)
            elif number == 5:
                initializer_names.add(self.tensor(a, b))
                self.initializers += 1
            elif number == 15:
                initializer_names.add(self.sparse_tensor(a, b))
                self.initializers += 1
            elif number == 11:
                inputs.append(self.value_info(a, b))
            elif number == 12:
                outputs.append(self.value_info(a, b))
        # IR < 4 lists initializers among the inputs; those are weights, not feeds.
        inputs = [spec for spec in inputs if spec.name not in initializer_names]
        return inputs, outputs

    def node(self, start: int, end: int, depth: int) -> None:
        inputs: list[str] = []
        outputs: list[str] = []
        name = op_type = domain = ""
        ints: dict[str, int] = {}
        for number, wire, a, b in self.fields(start, end):
            if wire != 2:
                continue
            if number == 1:
                inputs.append(self.text(a, b))
            elif number == 2:
                outputs.append(self.text(a, b))
            elif number == 3:
                name = self.text(a, b)
            elif number == 4:
                op_type = self.text(a, b)
            elif number == 7:
                domain = self.text(a, b)
            elif number == 5:
                self.attribute(a, b, ints, depth)
        self.nodes.append(
            NodeInfo(
                op_type=op_type,
                domain=domain,
                name=name,
                inputs=tuple(inputs),
                outputs=tuple(outputs),
                ints=ints,
            )
        )

    def attribute(self, start: int, end: int, ints: dict[str, int], depth: int) -> None:
        name = ""
        value: int | None = None
        for number, wire, a, b in self.fields(start, end):
            if number == 1 and wire == 2:
                name = self.text(a, b)
            elif number == 3 and wire == 0:
                value = a - (1 << 64) if a >= 1 << 63 else a  # int64, two's complement
            elif number == 5 and wire == 2:
                self.tensor(a, b)  # a constant tensor attribute may point at external data
            elif number == 10 and wire == 2:
                self.tensor(a, b)
            elif number in (6, 11) and wire == 2:
                self.graph(a, b, depth + 1)  # If/Loop/Scan bodies
        if value is not None and name:
            ints[name] = value

    def tensor(self, start: int, end: int) -> str:
        """A TensorProto: returns its name and records an external data location."""
        name = ""
        external = False
        data_type = 0
        dims: list[int] = []
        entries: dict[str, str] = {}
        payload: tuple[int, int] | None = None
        for number, wire, a, b in self.fields(start, end):
            if number in (4, 9) and wire == 2:  # float_data (packed), raw_data
                payload = (a, b)
            elif number == 8 and wire == 2:
                name = self.text(a, b)
            elif number == 14 and wire == 0:
                external = a == 1
            elif number == 2 and wire == 0:
                data_type = a
            elif number == 1 and wire == 0:
                dims.append(a)
            elif number == 1 and wire == 2:  # packed dims
                pos = a
                while pos < b:
                    dim, pos = self.varint(pos, b)
                    dims.append(dim)
            elif number == 13 and wire == 2:
                key = value = ""
                for n2, w2, a2, b2 in self.fields(a, b):
                    if w2 == 2 and n2 == 1:
                        key = self.text(a2, b2)
                    elif w2 == 2 and n2 == 2:
                        value = self.text(a2, b2)
                entries[key] = value
        location = entries.get("location", "")
        if external and location:
            self.external.add(location)
            try:
                offset, length = int(entries.get("offset", "0")), int(entries.get("length", "-1"))
            except ValueError:
                raise self.fail(f"initializer {name}: offset or length is not a number") from None
            self.external_tensors.append(
                ExternalTensor(
                    name=name,
                    dtype=ELEMENT_TYPES.get(data_type, f"type {data_type}"),
                    dims=tuple(dims),
                    location=location,
                    offset=offset,
                    length=length,
                )
            )
        elif payload is not None and payload[1] - payload[0] <= EMBEDDED_MAX_BYTES:
            self.embedded_tensors.append(
                EmbeddedTensor(
                    name=name,
                    dtype=ELEMENT_TYPES.get(data_type, f"type {data_type}"),
                    dims=tuple(dims),
                    data=bytes(self.data[payload[0] : payload[1]]),
                )
            )
        return name

    def sparse_tensor(self, start: int, end: int) -> str:
        name = ""
        for number, wire, a, b in self.fields(start, end):
            if wire == 2 and number in (1, 2):
                found = self.tensor(a, b)
                if number == 1:
                    name = found
        return name

    def value_info(self, start: int, end: int) -> TensorSpec:
        name = ""
        dtype = "undefined"
        shape: list[int | str] = [UNKNOWN_RANK]
        for number, wire, a, b in self.fields(start, end):
            if number == 1 and wire == 2:
                name = self.text(a, b)
            elif number == 2 and wire == 2:
                dtype, shape = self.type_proto(a, b)
        return TensorSpec(name=name, dtype=dtype, shape=shape)

    def type_proto(self, start: int, end: int) -> tuple[str, list[int | str]]:
        kinds = {4: "sequence", 5: "map", 9: "optional", 8: "sparse_tensor"}
        for number, wire, a, b in self.fields(start, end):
            if wire != 2:
                continue
            if number == 1:
                return self.tensor_type(a, b)
            if number in kinds:
                return kinds[number], [UNKNOWN_RANK]
        return "undefined", [UNKNOWN_RANK]

    def tensor_type(self, start: int, end: int) -> tuple[str, list[int | str]]:
        dtype = "undefined"
        shape: list[int | str] = [UNKNOWN_RANK]
        for number, wire, a, b in self.fields(start, end):
            if number == 1 and wire == 0:
                dtype = ELEMENT_TYPES.get(a, f"type{a}")
            elif number == 2 and wire == 2:
                shape = []
                for n2, w2, a2, b2 in self.fields(a, b):
                    if n2 == 1 and w2 == 2:
                        shape.append(self.dimension(a2, b2))
        return dtype, shape

    def dimension(self, start: int, end: int) -> int | str:
        for number, wire, a, b in self.fields(start, end):
            if number == 1 and wire == 0:
                return a - (1 << 64) if a >= 1 << 63 else a
            if number == 2 and wire == 2:
                return self.text(a, b) or UNKNOWN_DIM
        return UNKNOWN_DIM


def initializer_array(info: GraphInfo, name: str) -> npt.NDArray[Any] | None:
    """The value of initializer `name` of the graph `info` was read from: embedded (if small,
    see EMBEDDED_MAX_BYTES) or read from its external data file. None when the graph has no
    such initializer that can be read this way (a large embedded one, an unsupported type).

    Raises OSError when the external data file cannot be read."""
    for tensor in info.embedded_tensors:
        if tensor.name == name and tensor.dtype in NUMPY_TYPES:
            dtype = np.dtype(NUMPY_TYPES[tensor.dtype]).newbyteorder("<")
            return np.frombuffer(tensor.data, dtype=dtype).reshape(tensor.dims).copy()
    for ext in info.external_tensors:
        if ext.name == name and ext.dtype in NUMPY_TYPES:
            dtype = np.dtype(NUMPY_TYPES[ext.dtype]).newbyteorder("<")
            count = int(np.prod(ext.dims, dtype=np.int64))
            with (info.path.parent / ext.location).open("rb") as f:
                data = os.pread(f.fileno(), count * dtype.itemsize, ext.offset)
            if len(data) != count * dtype.itemsize:
                raise OSError(f"{info.path.parent / ext.location}: too short for {name}")
            return np.frombuffer(data, dtype=dtype).reshape(ext.dims).copy()
    return None


NUMPY_TYPES = {"float32": "f4", "float16": "f2", "float64": "f8", "int64": "i8", "int32": "i4"}
"""Element types `initializer_array` reads."""


def describe_shape(shape: list[int | str]) -> str:
    """`[batch, 16, 3]`, or `[rank unknown]`."""
    if shape == [UNKNOWN_RANK]:
        return "[rank unknown]"
    return "[" + ", ".join(str(d) for d in shape) + "]"


def describe_tensor(spec: TensorSpec) -> str:
    """`name float32 [batch, 16]`."""
    return f"{spec.name} {spec.dtype} {describe_shape(spec.shape)}"
