"""Weight-only quantization of built fp32 graphs: the `q4` and `q8` model directories.

Every MatMul with a constant weight becomes onnxruntime's `MatMulNBits` (symmetric blocks of 64
weights for q4, 32 for q8, or `--block-size`; accuracy_level 4: int8 activations on CPU), quantized by onnxruntime's own
`matmul_nbits_quantizer` (its node quantizer `DefaultWeightOnlyQuantizer`, the one
`MatMulNBitsQuantizer` runs, called here one node at a time so that a full-size graph never
sits in memory: each weight is read from the fp32 data file, quantized and written out before
the next). `q4` uses 4-bit blocks, `q8` 8-bit blocks (onnxruntime >= 1.20 takes `bits=8`).

Every `Gather` over an embedding table (a constant float table of at least
`MIN_TABLE_ROWS` rows whose width is a multiple of the block) becomes `GatherBlockQuantized`
with `uint8` data packed exactly like `MatMulNBits`' weight (blocks along the row, low nibble
first, no zero points: the symmetric default 2^(bits-1) of both operators). onnxruntime's own
quantizer only turns Gather into 4-bit `int4` tables, a layout `MatMulNBits` cannot read;
the shared layout is what lets a tied table be stored once:

- the text embedding (`embed_tokens` graph) and the decoder's lm-head (`MatMulNBits` over
  `embed_tokens.T`): the `embed_tokens` graph's table and scales are external references to
  the lm-head's packed weight and scales inside the decoder's data file (each file gives the
  bytes its own shape: [vocab, hidden*bits/8] for the gather, [vocab, blocks, blob] for the
  MatMul);
- the depthformer's codebook embeddings and its tied heads (one graph): the Gather reads the
  head's packed weight itself as a rank-3 table (quantize_axis 2) through a reshape of the
  head's scales, then merges the last two axes.

A tied pair is found by content (a table equal to a quantized MatMul weight transposed), not
by name, so a converted checkpoint is handled the same way.

What stays in float: MatMuls of two activations (attention scores and context in the
encoder), convolution kernels (the encoder's subsampling and depthwise convs, Mimi's SEANet:
the quantizer handles MatMul and Gather only), small tables (the depthformer's 8 per-codebook norm gains), and the
small vectors (norm gains, biases, short-conv taps, RoPE tables). Each graph's report says
which nodes and why, and lands in the manifest under `options.quantization`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization.matmul_nbits_quantizer import (
    DefaultWeightOnlyQuantConfig,
    DefaultWeightOnlyQuantizer,
)

from lfm_toolchain.onnx_graph import EXTERNAL_MIN_BYTES, MS_DOMAIN, ExternalData, save
from lfm_toolchain.weights import Array
from satellite.modeldir.blockquant import packed_windows
from satellite.modeldir.tensorio import column_step, is_external, iter_bytes, read_window

MIN_TABLE_ROWS = 256
"""Gather tables with fewer rows are per-step parameters (e.g. the depthformer's 8 norm
gains), not embeddings: quantizing them would cost accuracy and save nothing."""

GraphOptions = dict[str, dict[str, Any]]
Progress = Callable[[str], None]
"""Called with one line per step (the CLI prints it on stderr)."""
BuildFp32 = Callable[[Path], tuple[dict[str, str], GraphOptions]]
"""Writes the fp32 graphs into a directory; returns role -> file and role -> options."""


@dataclass(frozen=True)
class QuantSpec:
    """How weights are quantized: `MatMulNBits` / `GatherBlockQuantized` parameters."""

    bits: int
    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int = 4
    """MatMulNBits' minimum accuracy of the activations: 4 = int8 (the fast CPU path)."""

    def quantizer(self) -> DefaultWeightOnlyQuantizer:
        return DefaultWeightOnlyQuantizer(
            DefaultWeightOnlyQuantConfig(
                block_size=self.block_size,
                is_symmetric=self.symmetric,
                accuracy_level=self.accuracy_level,
                bits=self.bits,
            )
        )


VARIANT_SPECS: dict[str, QuantSpec] = {
    "q4": QuantSpec(bits=4, block_size=64),
    "q8": QuantSpec(bits=8, block_size=32),
}
"""Quantized variants and their default parameters.

q4 uses blocks of 64, not the 32 of DESIGN §3.4 and the official export: onnxruntime runs
accuracy_level 4 on pre-packed copies that carry a float scale and a float block sum per block,
so a 4-bit weight costs 4 + 64/block bits of memory at run time: 6 bits at block 32 (the
full-size decoder alone takes 908 MB at load, over the 1.2 GB budget of the whole pipeline once
the other graphs and the run-time buffers are added), 5 at 64 (753 MB). The price is a coarser
scale: 10 % more rounding error (rms) on Gaussian weights, 22 % more on heavy-tailed ones
(docs/PERFORMANCE.md). `--block-size 32` builds the official layout."""

BLOCK_SIZES = (16, 32, 64, 128, 256)
"""Block sizes `MatMulNBits` takes (powers of two from 16)."""


def spec_for(variant: str, block_size: int | None = None) -> QuantSpec:
    """The quantization of `variant`, with its block size replaced by `block_size` if given.
    Raises ValueError naming a variant or block size that is not one."""
    if variant not in VARIANT_SPECS:
        raise ValueError(
            f"--variant {variant}: not a quantized variant ({', '.join(VARIANT_SPECS)})"
        )
    spec = VARIANT_SPECS[variant]
    if block_size is None:
        return spec
    if block_size not in BLOCK_SIZES:
        raise ValueError(
            f"--block-size {block_size}: not one of {', '.join(map(str, BLOCK_SIZES))}"
        )
    return dataclasses.replace(spec, block_size=block_size)


@dataclass(frozen=True)
class Kept:
    """Nodes of one kind left in float, and why."""

    op: str
    reason: str
    nodes: tuple[str, ...]
    """Node names, per-layer names folded (`/layers.{i}/self_attn/ac x17`)."""
    count: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "count": self.count,
            "reason": self.reason,
            "nodes": list(self.nodes),
        }


@dataclass(frozen=True)
class GraphReport:
    """What quantization did to one graph."""

    file: str
    bits: int
    block_size: int
    accuracy_level: int
    matmul_total: int
    """MatMul nodes of the fp32 graph (subgraphs included)."""
    matmul_weights: int
    """Of those, MatMuls with a constant weight."""
    matmul_quantized: int
    """MatMulNBits nodes of the quantized graph."""
    gather_tables: int
    """Gathers over constant float tables in the fp32 graph."""
    gather_quantized: int
    quantized_params: int
    """Weights now held in blocks (a table shared by a Gather and a MatMul counted once)."""
    quantized_bytes: int
    """Bytes of packed blocks and scales stored in this graph's data file."""
    shared: tuple[str, ...]
    """Tied tables stored once, one sentence each."""
    kept: tuple[Kept, ...]
    float_bytes: dict[str, int]
    """Float initializers left unquantized: bytes per consuming operator type."""

    @property
    def bits_per_weight(self) -> float | None:
        """Stored bits per quantized weight, scales included (4.5 for q4 with a float32 scale
        per 64 weights, 9.0 for q8 per 32); None where the graph stores no blocks of its own."""
        if not self.quantized_params:
            return None
        return 8.0 * self.quantized_bytes / self.quantized_params

    def options(self) -> dict[str, Any]:
        """The manifest's `options.quantization` of this graph."""
        bits = self.bits_per_weight
        return {
            "method": "onnxruntime MatMulNBits / GatherBlockQuantized, symmetric",
            "bits": self.bits,
            "block_size": self.block_size,
            "accuracy_level": self.accuracy_level,
            "matmul_total": self.matmul_total,
            "matmul_weights": self.matmul_weights,
            "matmul_quantized": self.matmul_quantized,
            "gather_tables": self.gather_tables,
            "gather_quantized": self.gather_quantized,
            "bits_per_weight": None if bits is None else round(bits, 3),
            "shared": list(self.shared),
            "unquantized": [k.as_dict() for k in self.kept],
            "float_bytes": dict(self.float_bytes),
        }


def build_quantized(
    out: Path,
    variant: str,
    build_fp32: BuildFp32,
    *,
    block_size: int | None = None,
    gathers: bool = True,
    progress: Progress | None = None,
) -> tuple[dict[str, str], GraphOptions]:
    """Build the fp32 graphs in a scratch folder inside `out`, quantize them into `out` as
    `<stem>_<variant>.onnx` (+ `.onnx_data`) and remove the scratch folder (also when
    interrupted). `progress` is called with a line per graph and phase.

    Returns role -> file and role -> options, each role's options holding its report under
    `quantization`. `block_size` replaces the variant's default (`spec_for`); `gathers` False
    leaves the embedding tables in float (as the published export does)."""
    spec = spec_for(variant, block_size)
    scratch = Path(tempfile.mkdtemp(prefix=".fp32-", dir=out))
    try:
        graphs, options = build_fp32(scratch)
        files, reports = quantize_graphs(
            scratch, graphs, out, spec, suffix=f"_{variant}", gathers=gathers, progress=progress
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    merged = {role: dict(options.get(role, {})) for role in files}
    for role, report in reports.items():
        merged[role]["quantization"] = report.options()
    return files, merged


def quantize_graphs(
    src: Path,
    graphs: Mapping[str, str],
    out: Path,
    spec: QuantSpec,
    *,
    suffix: str,
    gathers: bool = True,
    progress: Progress | None = None,
) -> tuple[dict[str, str], dict[str, GraphReport]]:
    """Quantize the fp32 graphs `graphs` (role -> file in `src`) into `out`.

    All MatMuls of all graphs are quantized first, so that a Gather table can share the packed
    weight of a tied MatMul in any graph; then the Gathers, then every graph is written.
    """
    jobs = {
        role: _GraphJob(src / file, out, Path(file).stem + suffix, spec)
        for role, file in graphs.items()
    }
    quiet = logging.getLogger(DefaultWeightOnlyQuantizer.__module__)
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # it logs two INFO lines per node
    try:
        say = progress or (lambda _: None)
        table_shapes = {shape for job in jobs.values() for shape in job.table_shapes()}
        packed: dict[str, _Packed] = {}
        for n, (role, job) in enumerate(jobs.items(), 1):
            say(f"quantizing {n}/{len(jobs)}: {role} (MatMul weights, {spec.bits}-bit)")
            job.quantize_matmuls(table_shapes, packed)
        if gathers:
            for role, job in jobs.items():
                say(f"quantizing {role}'s embedding tables")
                job.quantize_gathers(packed)
        files: dict[str, str] = {}
        for n, (role, job) in enumerate(jobs.items(), 1):
            say(f"writing {n}/{len(jobs)}: {job.stem}.onnx")
            files[role] = job.finish()
        return files, {role: job.report() for role, job in jobs.items()}
    finally:
        quiet.setLevel(level)
        for job in jobs.values():
            job.data.close()


@dataclass(frozen=True)
class _Packed:
    """A quantized MatMul weight [K, N] that a Gather table [N, K] may share."""

    stem: str
    weight: TensorProto
    """[N, blocks, blob] uint8, external."""
    scales: TensorProto
    """[N, blocks] float, external."""
    rows: int
    width: int


def _fold(names: list[str]) -> tuple[str, ...]:
    """Per-layer node names folded into one pattern with a count."""
    counts: dict[str, int] = {}
    for name in names:
        pattern = re.sub(r"(?<=layers\.)\d+", "{i}", name)
        counts[pattern] = counts.get(pattern, 0) + 1
    return tuple(f"{p} x{n}" if n > 1 else p for p, n in counts.items())


@dataclass
class _Tally:
    matmul_total: int = 0
    matmul_weights: int = 0
    gather_tables: int = 0
    gather_quantized: int = 0
    quantized_params: int = 0
    quantized_bytes: int = 0
    shared: list[str] = field(default_factory=list)
    kept: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def keep(self, node: onnx.NodeProto, reason: str) -> None:
        self.kept.setdefault((node.op_type, reason), []).append(node.name)


class _GraphJob:
    """One graph on its way from fp32 to quantized."""

    def __init__(self, path: Path, out: Path, stem: str, spec: QuantSpec) -> None:
        self.src_dir = path.parent
        self.model = onnx.load(str(path), load_external_data=False)
        self.out = out
        self.stem = stem
        self.spec = spec
        self.quantizer = spec.quantizer()
        self.data = ExternalData(out / f"{stem}.onnx_data")
        self.tally = _Tally()
        self.done: set[str] = set()
        """Initializers already in their final form (written, or shared references)."""
        self._matmuls: dict[str, onnx.NodeProto] = {}
        """Weight name -> its MatMulNBits node (a weight used twice is quantized once)."""
        self.float_bytes: dict[str, int] = {}

    # -- walking ---------------------------------------------------------------------------

    def _rewrite(
        self,
        visit: Callable[[onnx.NodeProto, list[onnx.GraphProto]], list[onnx.NodeProto]],
    ) -> None:
        """Replace every node (subgraphs included) by what `visit` returns for it."""

        def walk(graph: onnx.GraphProto, stack: list[onnx.GraphProto]) -> None:
            stack.append(graph)
            new: list[onnx.NodeProto] = []
            for node in graph.node:
                for attr in node.attribute:
                    if attr.type == onnx.AttributeProto.GRAPH:
                        walk(attr.g, stack)
                    elif attr.type == onnx.AttributeProto.GRAPHS:
                        for sub in attr.graphs:
                            walk(sub, stack)
                new.extend(visit(node, stack))
            graph.ClearField("node")
            graph.node.extend(new)
            stack.pop()

        walk(self.model.graph, [])

    def _nodes(self) -> Iterator[tuple[onnx.NodeProto, list[onnx.GraphProto]]]:
        def walk(
            graph: onnx.GraphProto, stack: list[onnx.GraphProto]
        ) -> Iterator[tuple[onnx.NodeProto, list[onnx.GraphProto]]]:
            stack = [*stack, graph]
            for node in graph.node:
                yield node, stack
                for attr in node.attribute:
                    if attr.type == onnx.AttributeProto.GRAPH:
                        yield from walk(attr.g, stack)
                    for sub in attr.graphs:
                        yield from walk(sub, stack)

        return walk(self.model.graph, [])

    @staticmethod
    def _initializer(
        name: str, stack: list[onnx.GraphProto]
    ) -> tuple[TensorProto, onnx.GraphProto] | None:
        for graph in reversed(stack):
            for tensor in graph.initializer:
                if tensor.name == name:
                    return tensor, graph
        return None

    def _table(self, node: onnx.NodeProto, stack: list[onnx.GraphProto]) -> TensorProto | None:
        """The constant float table a Gather reads, if any."""
        found = self._initializer(node.input[0], stack)
        if found is None or found[0].data_type not in (TensorProto.FLOAT, TensorProto.FLOAT16):
            return None
        return found[0]

    def _table_problem(self, node: onnx.NodeProto, table: TensorProto) -> str | None:
        """Why the Gather over `table` stays in float, or None."""
        dims = list(table.dims)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if len(dims) != 2 or axis != 0:
            return f"a rank-{len(dims)} table gathered on axis {axis}, not an embedding"
        if dims[0] < MIN_TABLE_ROWS:
            return (
                f"a {dims[0]} x {dims[1]} table (per-step parameters such as norm gains, "
                f"fewer than {MIN_TABLE_ROWS} rows): quantizing it saves nothing"
            )
        if dims[1] % self.spec.block_size:
            return f"width {dims[1]} is not a multiple of the block size {self.spec.block_size}"
        return None

    def table_shapes(self) -> set[tuple[int, int]]:
        """[rows, width] of the tables this graph's Gathers may quantize."""
        shapes: set[tuple[int, int]] = set()
        for node, stack in self._nodes():
            table = self._table(node, stack) if node.op_type == "Gather" else None
            if table is not None and self._table_problem(node, table) is None:
                shapes.add((int(table.dims[0]), int(table.dims[1])))
        return shapes

    # -- MatMul ----------------------------------------------------------------------------

    def quantize_matmuls(
        self, table_shapes: set[tuple[int, int]], packed: dict[str, _Packed]
    ) -> None:
        """MatMul with a constant weight -> MatMulNBits; registers weights a table may share."""

        def visit(node: onnx.NodeProto, stack: list[onnx.GraphProto]) -> list[onnx.NodeProto]:
            if node.op_type in ("Conv", "ConvTranspose"):
                self.tally.keep(
                    node,
                    "convolution kernel: the quantizer handles MatMul and Gather only "
                    "(the encoder's subsampling and depthwise convolutions, Mimi's SEANet)",
                )
            if node.op_type != "MatMul":
                return [node]
            self.tally.matmul_total += 1
            found = self._initializer(node.input[1], stack)
            if found is None:
                if self._initializer(node.input[0], stack) is None:
                    self.tally.keep(
                        node, "activation x activation (attention scores or context): no weight"
                    )
                else:
                    self.tally.keep(node, "constant on the left: not a weight projection")
                return [node]
            weight, graph = found
            if len(weight.dims) != 2 or weight.data_type != TensorProto.FLOAT:
                self.tally.keep(node, "not a 2-D float32 weight")
                return [node]
            self.tally.matmul_weights += 1
            if weight.name in self._matmuls:
                again = onnx.NodeProto()
                again.CopyFrom(self._matmuls[weight.name])
                again.name = node.name + f"_Q{self.spec.bits}"
                again.input[0] = node.input[0]
                again.output[0] = node.output[0]
                return [again]
            return self._quantize_matmul(node, weight, graph, stack, table_shapes, packed)

        self._rewrite(visit)

    def _quantize_matmul(
        self,
        node: onnx.NodeProto,
        weight: TensorProto,
        graph: onnx.GraphProto,
        stack: list[onnx.GraphProto],
        table_shapes: set[tuple[int, int]],
        packed: dict[str, _Packed],
    ) -> list[onnx.NodeProto]:
        """The weight [K, N] quantized a window of columns at a time (`column_step`: about 16
        MB of float each) by onnxruntime's block quantizer, each window's packed rows written
        out before the next is read. The node is the one onnxruntime's `quantize` makes."""
        spec = self.spec
        k, n = (int(d) for d in weight.dims)
        tied = (k, n) in {(w, r) for r, w in table_shapes}
        digest = hashlib.sha256() if tied else None  # of the transposed weight: a table's bytes
        scale_parts: list[Array] = []
        zero_parts: list[Array] = []

        def windows() -> Iterator[Array]:
            for window in packed_windows(
                weight, self.src_dir, self.quantizer, stored_transposed=True
            ):
                if digest is not None:
                    digest.update(np.ascontiguousarray(window.columns.T).tobytes())
                scale_parts.append(window.scales)
                zero_parts.append(window.zero_points)
                yield window.blocks

        blocks_per_column = -(-k // spec.block_size)
        blob = -(-spec.block_size * spec.bits // 8)
        b = self.data.stream(
            f"{weight.name}_Q{spec.bits}", np.uint8, [n, blocks_per_column, blob], windows()
        )
        scales = self.data.tensor(f"{weight.name}_scales", np.concatenate(scale_parts))
        inputs = [node.input[0], b.name, scales.name]
        graph.initializer.extend([b, scales])
        self.done.update([b.name, scales.name])
        if not spec.symmetric:
            zeros = self.data.tensor(f"{weight.name}_zero_points", np.concatenate(zero_parts))
            graph.initializer.append(zeros)
            self.done.add(zeros.name)
            inputs.append(zeros.name)
        attributes: dict[str, Any] = {
            "K": k,
            "N": n,
            "bits": spec.bits,
            "block_size": spec.block_size,
        }
        if spec.accuracy_level:
            attributes["accuracy_level"] = spec.accuracy_level
        quantized = helper.make_node(
            "MatMulNBits",
            inputs,
            [node.output[0]],
            name=node.name + f"_Q{spec.bits}" if node.name else "",
            domain=MS_DOMAIN,
            **attributes,
        )
        self.tally.quantized_params += k * n
        self.tally.quantized_bytes += _nbytes(b) + _nbytes(scales)
        self._matmuls[weight.name] = quantized
        if digest is not None:
            packed.setdefault(digest.hexdigest(), _Packed(self.stem, _copy(b), _copy(scales), n, k))
        return [quantized]

    # -- Gather ----------------------------------------------------------------------------

    def quantize_gathers(self, packed: Mapping[str, _Packed]) -> None:
        """Gather over an embedding table -> GatherBlockQuantized, sharing tied packed weights."""
        spec = self.spec

        def visit(node: onnx.NodeProto, stack: list[onnx.GraphProto]) -> list[onnx.NodeProto]:
            if node.op_type != "Gather" or (table := self._table(node, stack)) is None:
                return [node]
            self.tally.gather_tables += 1
            problem = self._table_problem(node, table)
            if problem is not None:
                self.tally.keep(node, problem)
                return [node]
            rows, width = (int(d) for d in table.dims)
            self.tally.gather_quantized += 1
            same_shape = any((p.rows, p.width) == (rows, width) for p in packed.values())
            tied = packed.get(self._table_digest(table)) if same_shape else None
            if tied is not None and tied.stem == self.stem:
                return self._gather_in_graph(node, table.name, tied)
            if tied is not None:
                data, scales = self._gather_reference(table.name, tied)
            else:
                data, scales = self._quantize_table(table)
                self.tally.quantized_params += rows * width
                self.tally.quantized_bytes += _nbytes(data) + _nbytes(scales)
            self.model.graph.initializer.extend([data, scales])
            self.done.update([data.name, scales.name])
            return [
                helper.make_node(
                    "GatherBlockQuantized",
                    [data.name, node.input[1], scales.name],
                    [node.output[0]],
                    name=node.name + f"_Q{spec.bits}",
                    domain=MS_DOMAIN,
                    bits=spec.bits,
                    block_size=spec.block_size,
                    gather_axis=0,
                    quantize_axis=1,
                )
            ]

        self._rewrite(visit)

    def _table_digest(self, table: TensorProto) -> str:
        """sha256 of the table's float values, read a window of rows at a time."""
        rows, width = (int(d) for d in table.dims)
        digest = hashlib.sha256()
        step = column_step(width)  # rows of `width` floats per window
        for r0 in range(0, rows, step):
            window = read_window(table, self.src_dir, (r0, min(rows, r0 + step)))
            digest.update(window.astype(np.float32, copy=False).tobytes())
        return digest.hexdigest()

    def _quantize_table(self, table: TensorProto) -> tuple[TensorProto, TensorProto]:
        """A [rows, width] table packed as GatherBlockQuantized reads it ([rows, width*bits/8]
        uint8, scales [rows, blocks]), a window of rows at a time."""
        spec = self.spec
        rows, width = (int(d) for d in table.dims)
        scale_parts: list[Array] = []

        def windows() -> Iterator[Array]:
            for window in packed_windows(
                table, self.src_dir, self.quantizer, stored_transposed=False
            ):
                scale_parts.append(window.scales)
                yield window.blocks

        data = self.data.stream(
            f"{table.name}_Q{spec.bits}", np.uint8, [rows, width * spec.bits // 8], windows()
        )
        return data, self.data.tensor(f"{table.name}_scales", np.concatenate(scale_parts))

    def _gather_reference(self, name: str, tied: _Packed) -> tuple[TensorProto, TensorProto]:
        """Initializers naming the bytes of another graph's packed weight and scales, shaped
        for GatherBlockQuantized: [rows, width*bits/8] and [rows, blocks]."""
        data = _copy(tied.weight)
        data.name = f"{name}_Q{self.spec.bits}"
        del data.dims[:]
        data.dims.extend([tied.rows, tied.width * self.spec.bits // 8])
        scales = _copy(tied.scales)
        scales.name = f"{name}_scales"
        self.tally.shared.append(
            f"{name} is the tied lm-head's packed weight and scales in {tied.stem}.onnx_data, "
            "stored once"
        )
        return data, scales

    def _gather_in_graph(
        self, node: onnx.NodeProto, name: str, tied: _Packed
    ) -> list[onnx.NodeProto]:
        """The Gather reads the tied head's [rows, blocks, blob] weight of this very graph as a
        rank-3 table; its scales [rows, blocks] are reshaped to [rows, blocks, 1] (a constant,
        folded at load) and the gathered [..., blocks, block] rows merged back to [..., width].
        """
        spec, n = self.spec, node.name
        blocks = tied.width // spec.block_size
        shape3 = self._const(f"{n}/scales_shape", [tied.rows, blocks, 1])
        width = self._const(f"{n}/width", [tied.width])
        scales3, rows3, index_shape, out_shape = (
            f"{n}_Q{spec.bits}/scales3",
            f"{n}_Q{spec.bits}/blocks",
            f"{n}_Q{spec.bits}/index_shape",
            f"{n}_Q{spec.bits}/out_shape",
        )
        self.tally.shared.append(
            f"{name} (Gather {n}) reads the tied head's packed weight {tied.weight.name}, "
            "stored once"
        )
        return [
            helper.make_node(
                "Reshape", [tied.scales.name, shape3], [scales3], name=f"{n}_Q{spec.bits}/Reshape"
            ),
            helper.make_node(
                "GatherBlockQuantized",
                [tied.weight.name, node.input[1], scales3],
                [rows3],
                name=f"{n}_Q{spec.bits}",
                domain=MS_DOMAIN,
                bits=spec.bits,
                block_size=spec.block_size,
                gather_axis=0,
                quantize_axis=2,
            ),
            helper.make_node(
                "Shape", [node.input[1]], [index_shape], name=f"{n}_Q{spec.bits}/Shape"
            ),
            helper.make_node(
                "Concat", [index_shape, width], [out_shape], name=f"{n}_Q{spec.bits}/Concat", axis=0
            ),
            helper.make_node(
                "Reshape", [rows3, out_shape], [node.output[0]], name=f"{n}_Q{spec.bits}/merge"
            ),
        ]

    def _const(self, name: str, values: list[int]) -> str:
        tensor = numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)
        self.model.graph.initializer.append(tensor)
        self.done.add(name)
        return name

    # -- writing ---------------------------------------------------------------------------

    def _externalize(self, tensor: TensorProto, *, force: bool = False) -> None:
        """Move an in-memory initializer's bytes into this graph's data file."""
        array = numpy_helper.to_array(tensor)
        if force or array.nbytes >= EXTERNAL_MIN_BYTES:
            tensor.CopyFrom(self.data.tensor(tensor.name, array))
        self.done.add(tensor.name)

    def _copy_external(self, tensor: TensorProto) -> TensorProto:
        """An external float initializer of the fp32 graph, its bytes copied into this graph's
        data file (`PIECE_BYTES` at a time)."""
        dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
        return self.data.stream(
            tensor.name, dtype, list(tensor.dims), iter_bytes(tensor, self.src_dir)
        )

    def finish(self) -> str:
        """Drop unused initializers, copy the remaining float ones over, write the graph."""
        used: set[str] = {o.name for o in self.model.graph.output}
        consumers: dict[str, set[str]] = {}
        for node, _ in self._nodes():
            for name in node.input:
                used.add(name)
                consumers.setdefault(name, set()).add(node.op_type)
        float_bytes: dict[str, int] = {}

        def settle(graph: onnx.GraphProto) -> None:
            keep = [t for t in graph.initializer if t.name in used]
            graph.ClearField("initializer")
            graph.initializer.extend(keep)
            for tensor in graph.initializer:
                if tensor.name in self.done:
                    continue
                if tensor.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16):
                    op = "/".join(sorted(consumers.get(tensor.name, {"?"})))
                    float_bytes[op] = float_bytes.get(op, 0) + _nbytes(tensor)
                if is_external(tensor):  # copied over piece by piece
                    tensor.CopyFrom(self._copy_external(tensor))
                    self.done.add(tensor.name)
                else:
                    self._externalize(tensor)
            for node in graph.node:
                for attr in node.attribute:
                    if attr.type == onnx.AttributeProto.GRAPH:
                        settle(attr.g)
                    for sub in attr.graphs:
                        settle(sub)

        settle(self.model.graph)
        self.float_bytes = dict(sorted(float_bytes.items(), key=lambda kv: -kv[1]))
        if not any(o.domain == MS_DOMAIN for o in self.model.opset_import):
            self.model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
        self.data.close()
        if self.data.path.stat().st_size == 0:
            self.data.path.unlink()
        file = f"{self.stem}.onnx"
        save(self.model, self.out / file)
        return file

    def report(self) -> GraphReport:
        t, spec = self.tally, self.spec
        quantized = sum(1 for node, _ in self._nodes() if node.op_type == "MatMulNBits")
        kept = tuple(
            Kept(op=op, reason=reason, nodes=_fold(names), count=len(names))
            for (op, reason), names in t.kept.items()
        )
        return GraphReport(
            file=f"{self.stem}.onnx",
            bits=spec.bits,
            block_size=spec.block_size,
            accuracy_level=spec.accuracy_level,
            matmul_total=t.matmul_total,
            matmul_weights=t.matmul_weights,
            matmul_quantized=quantized,
            gather_tables=t.gather_tables,
            gather_quantized=t.gather_quantized,
            quantized_params=t.quantized_params,
            quantized_bytes=t.quantized_bytes,
            shared=tuple(t.shared),
            kept=kept,
            float_bytes=self.float_bytes,
        )


def _nbytes(tensor: TensorProto) -> int:
    """Stored bytes of an initializer (external or not)."""
    for entry in tensor.external_data:
        if entry.key == "length":
            return int(entry.value)
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return int(numpy_helper.to_array(tensor).nbytes)


def _copy(tensor: TensorProto) -> TensorProto:
    copy = TensorProto()
    copy.CopyFrom(tensor)
    return copy
