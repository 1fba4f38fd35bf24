"""`lfm-satellite model optimize DIR`, the depthformer's part: two rewrites of the published
`vocoder_depthformer` graph that leave its arithmetic as it is and make each of the eight runs a
frame read less.

- **The q/k rearrangement folded into the weights.** Before attention, the published graph turns
  each head's q and k from interleaved pairs (x0, x1, x2, x3, ...) into two halves (x0, x2, ...,
  x1, x3, ...) with a Reshape, a Transpose and a Reshape, twice a layer (`satellite.modeldir.
  repair` says why it is there). The rearrangement is a fixed permutation of each head's
  elements, and between the projection and it there are only reshapes and a per-head RMSNorm
  (whose sum of squares does not depend on the order), so the same permutation of the
  projection's output rows and of the norm's gain gives the halves directly. The 4-bit rows are
  moved whole (packed weights, scales, zero points and bias alike): the numbers are the same
  bytes, only the norm's sum runs in another order.
- **One head per codebook.** The published head is one MatMulNBits over all eight codebooks'
  tables (1024 x 16,392 at full size, 8.4 MB of the step's 47) followed by a Gather of the step's
  2,049 logits: every run reads the eight tables to use one. The rewrite gives each codebook its
  own MatMulNBits over its rows of the same packed table, chosen by `step_idx` through a binary
  tree of If nodes (three a run). Each branch holds its own weights as initializers: onnxruntime
  pre-packs a subgraph's own initializers but not the outer graph's it reads, which ran the
  branches 2x slower.

Measured on the full-size published q4 (AMD EPYC, 2 threads, docs/PERFORMANCE.md): 30.0 ms a
frame before, 21.7 after, the two graphs timed side by side (the rearrangement alone: 26.9 to
23.8). In float the rewritten graph is token-exact with the reference; on q4 the moved 4-bit
bytes are the same, but the norms' reordered sums can move an activation across an int8
rounding edge: within 0.04 of the logits (tests/modeldir/test_depthformer_fold.py).

The rewritten graph is `<stem>.folded.onnx` beside the one the manifest names, with the moved
weights in `<stem>.folded.onnx_data` (about 14 MB at full size); the rest of its weights are
still read from the original data file. Both are written under temporary names and renamed
before the manifest points at them, so an interrupted rewrite leaves the directory as it was. A
graph without either pattern (the project's own builds, or one already folded) is left alone.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from satellite.errors import UserError
from satellite.modeldir.manifest import FileEntry, Manifest, read_manifest, sha256_file
from satellite.modeldir.repair import all_nodes
from satellite.modeldir.tensorio import read_array

FOLDED_SUFFIX = ".folded.onnx"
"""The rewritten depthformer graph is the current one's name with this in place of `.onnx`."""
PAIRS_TO_HALVES = [0, 1, 2, 4, 3]
"""The published rearrangement's Transpose perm over [batch, seq, heads, head_dim / 2, 2]."""
ALIGN = 64
"""Each tensor in the new data file starts at a multiple of this many bytes."""
MS_DOMAIN = "com.microsoft"


class FoldError(UserError):
    """The depthformer cannot be rewritten; the message names the file and why."""

    exit_code = 1


@dataclasses.dataclass(frozen=True)
class Rearrangement:
    """One q or k pairs-to-halves rearrangement and the projection rows it reorders."""

    nodes: tuple[onnx.NodeProto, ...]
    """Its Reshape, Transpose and Reshape back: dropped when folded."""
    source: str
    """The value it rearranges (the per-head norm's reshaped-back output)."""
    projection: onnx.NodeProto
    """The MatMulNBits (or MatMul by a float initializer) whose output rows it reorders."""
    start: int
    """The first of its rows in the projection's output."""
    heads: int
    head_dim: int
    norms: tuple[onnx.NodeProto, ...]
    """The per-head RMSNorms between the projection and it (gain [head_dim])."""


@dataclasses.dataclass(frozen=True)
class StackedHead:
    """Every codebook's head in one MatMulNBits (or float MatMul), then the step's rows picked
    by a Gather."""

    matmul: onnx.NodeProto
    reshape: onnx.NodeProto
    gather: onnx.NodeProto
    books: int
    vocab: int


def halves_order(head_dim: int) -> npt.NDArray[np.int64]:
    """Within one head, the element each position of the halves layout takes from the pairs
    layout: (0, 2, 4, ..., 1, 3, 5, ...)."""
    return np.concatenate([np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)]).astype(np.int64)


class _Graph:
    """Lookups over one graph's top level: producers, consumers, initializers."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output if out}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in all_nodes(graph):  # a subgraph's reads of outer values count too
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        outputs = {o.name for o in graph.output}
        for name in outputs:
            self.consumers.setdefault(name, []).append(onnx.NodeProto())  # the graph reads it
        self.initializers = {t.name: t for t in graph.initializer}
        self.inputs = {i.name for i in graph.input}

    def const(self, name: str) -> npt.NDArray[Any] | None:
        tensor = self.initializers.get(name)
        if tensor is None or tensor.data_location == TensorProto.EXTERNAL:
            return None
        return numpy_helper.to_array(tensor)

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        found = self.consumers.get(name, [])
        return found[0] if len(found) == 1 else None

    def feeds_only(self, name: str, node: onnx.NodeProto) -> bool:
        """Whether `node` is the one reader of the value `name`."""
        return self.only_consumer(name) is node


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def find_rearrangements(graph: onnx.GraphProto) -> list[Rearrangement]:
    """Every pairs-to-halves rearrangement whose chain back to its projection can be folded."""
    g = _Graph(graph)
    found: list[Rearrangement] = []
    for transpose in graph.node:
        if (
            transpose.op_type != "Transpose"
            or list(_attr(transpose, "perm", [])) != PAIRS_TO_HALVES
        ):
            continue
        match = _rearrangement(g, transpose)
        if match is not None:
            found.append(match)
    return found


def _rearrangement(g: _Graph, transpose: onnx.NodeProto) -> Rearrangement | None:
    split_view = g.producer.get(transpose.input[0])
    back = g.only_consumer(transpose.output[0])
    if split_view is None or split_view.op_type != "Reshape" or back is None:
        return None
    shape = g.const(split_view.input[1])
    if back.op_type != "Reshape" or shape is None or shape.shape != (5,) or shape[4] != 2:
        return None
    heads, head_dim = int(shape[2]), 2 * int(shape[3])
    if heads <= 0 or not g.feeds_only(split_view.output[0], transpose):
        return None
    back_shape = g.const(back.input[1])
    if back_shape is None or back_shape.shape != (3,) or int(back_shape[2]) != heads * head_dim:
        return None
    # Back from the rearrangement: reshapes that keep heads of head_dim whole, per-head norms.
    norms: list[onnx.NodeProto] = []
    value = split_view.input[0]
    while True:
        node = g.producer.get(value)
        if node is None or g.only_consumer(value) is None:
            return None
        if node.op_type == "Reshape":
            view = g.const(node.input[1])
            if view is None or int(view[-1]) not in (head_dim, heads * head_dim):
                return None
        elif node.op_type == "SimplifiedLayerNormalization":
            gain = g.const(node.input[1])
            shaper = g.producer.get(node.input[0])
            view_shape = (
                g.const(shaper.input[1])
                if shaper is not None and shaper.op_type == "Reshape"
                else None
            )
            if gain is None or gain.shape != (head_dim,) or view_shape is None:
                return None
            if int(view_shape[-1]) != head_dim or int(_attr(node, "axis", -1)) not in (
                -1,
                len(view_shape) - 1,
            ):
                return None
            norms.append(node)
        else:
            break
        value = node.input[0]
    start = 0
    if node.op_type == "Split":
        split = _split_sizes(g, node)
        if split is None or value not in node.output:
            return None
        index = list(node.output).index(value)
        start = sum(split[:index])
        if split[index] != heads * head_dim:
            return None
        value = node.input[0]
        node = g.producer.get(value)
        if node is None or g.only_consumer(value) is None:
            return None
    width = projection_width(node, g)
    if width is None or start + heads * head_dim > width:
        return None
    if node.op_type == "MatMulNBits" and len(node.input) > 4 and node.input[4]:
        return None  # a g_idx reorders K, not N; not worth a rule of its own
    return Rearrangement(
        nodes=(split_view, transpose, back),
        source=split_view.input[0],
        projection=node,
        start=start,
        heads=heads,
        head_dim=head_dim,
        norms=tuple(norms),
    )


def _split_sizes(g: _Graph, split: onnx.NodeProto) -> list[int] | None:
    """The sizes of a Split over the last axis (of a [batch, seq, features] value)."""
    if int(_attr(split, "axis", 0)) not in (-1, 2):
        return None
    if len(split.input) > 1 and split.input[1]:
        sizes = g.const(split.input[1])
        return None if sizes is None else [int(s) for s in sizes]
    sizes = _attr(split, "split")
    return None if sizes is None else [int(s) for s in sizes]


def find_stacked_head(graph: onnx.GraphProto) -> StackedHead | None:
    """The head computing every codebook's logits to keep the step's, if the graph has one."""
    g = _Graph(graph)
    for gather in graph.node:
        if gather.op_type != "Gather" or gather.input[1] != "step_idx":
            continue
        found = _stacked_head(g, gather)
        if found is not None:
            return found
    return None


def _stacked_head(g: _Graph, gather: onnx.NodeProto) -> StackedHead | None:
    reshape = g.producer.get(gather.input[0])
    if int(_attr(gather, "axis", 0)) != 1 or reshape is None or reshape.op_type != "Reshape":
        return None
    shape = g.const(reshape.input[1])
    matmul = g.producer.get(reshape.input[0])
    if shape is None or shape.shape != (3,) or matmul is None:
        return None
    books, vocab = int(shape[1]), int(shape[2])
    if projection_width(matmul, g) != books * vocab:
        return None
    if not g.feeds_only(reshape.output[0], gather) or not g.feeds_only(matmul.output[0], reshape):
        return None
    if len(matmul.input) > 4 and matmul.input[4]:
        return None  # a g_idx reorders K, not N; not worth a rule of its own
    return StackedHead(matmul, reshape, gather, books, vocab)


class _DataFile:
    """The new data file: tensors appended, each at an aligned offset, named for the graph."""

    def __init__(self, out: BinaryIO, location: str) -> None:
        self.out = out
        self.location = location
        self.offset = 0

    def add(self, name: str, array: npt.NDArray[Any]) -> TensorProto:
        pad = -self.offset % ALIGN
        self.out.write(b"\0" * pad)
        self.offset += pad
        data = np.ascontiguousarray(array).tobytes()
        self.out.write(data)
        tensor = TensorProto()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (
            ("location", self.location),
            ("offset", str(self.offset)),
            ("length", str(len(data))),
        ):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.offset += len(data)
        return tensor


@dataclasses.dataclass(frozen=True)
class _Rows:
    """One weight input of a projection, seen as one row per output feature."""

    index: int
    """The node's input it is."""
    rows: npt.NDArray[Any]
    """[N, ...]: row n holds what output feature n reads."""
    transposed: bool
    """Stored as [K, N] (a float MatMul's weight): rows are its columns."""
    dims: tuple[int, ...]
    """The stored shape."""

    def stored(self, order: npt.NDArray[np.int64] | slice) -> npt.NDArray[Any]:
        """The rows `order` picks, in the stored layout."""
        picked = self.rows[order]
        if self.transposed:
            return np.ascontiguousarray(picked.T)
        if len(self.dims) == 1:
            return picked.reshape(-1)
        return picked.reshape(picked.shape[0], *self.dims[1:])


def projection_width(node: onnx.NodeProto, g: _Graph) -> int | None:
    """Output features of a MatMulNBits, or of a MatMul by a 2-D initializer; else None."""
    if node.op_type == "MatMulNBits":
        return int(_attr(node, "N"))
    if node.op_type == "MatMul":
        weight = g.initializers.get(node.input[1])
        return int(weight.dims[1]) if weight is not None and len(weight.dims) == 2 else None
    return None


def _row_inputs(g: _Graph, node: onnx.NodeProto, folder: Path, where: Path) -> list[_Rows]:
    """The projection's weight inputs laid out by output feature: a MatMul's [K, N] weight; a
    MatMulNBits's packed weight, scales, zero points and bias."""
    n = projection_width(node, g)
    assert n is not None  # checked when found
    indices = (1,) if node.op_type == "MatMul" else (1, 2, 3, 5)
    found: list[_Rows] = []
    for index in indices:
        if index >= len(node.input) or not node.input[index]:
            continue
        tensor = g.initializers.get(node.input[index])
        if tensor is None:
            raise FoldError(
                f"{where}: {node.name}: input {node.input[index]} is not an initializer"
            )
        array = read_array(tensor, folder)
        dims = tuple(int(d) for d in tensor.dims)
        if node.op_type == "MatMul":
            found.append(_Rows(index, array.T, True, dims))
            continue
        if array.size % n:
            raise FoldError(f"{where}: {node.name}: {tensor.name} does not split into {n} rows")
        found.append(_Rows(index, array.reshape(n, -1), False, dims))
    return found


def _fold_rearrangements(
    g: _Graph, found: Sequence[Rearrangement], folder: Path, where: Path, data: _DataFile
) -> tuple[list[onnx.NodeProto], dict[str, str]]:
    """Reorder each projection's rows and each norm's gain; returns the nodes to drop and the
    value renames (the rearrangement's output -> its source)."""
    by_projection: dict[str, list[Rearrangement]] = {}
    for item in found:
        by_projection.setdefault(item.projection.name, []).append(item)
    gains: dict[str, int] = {}
    norms = [norm for item in found for norm in item.norms]
    for items in by_projection.values():
        projection = items[0].projection
        order = np.arange(projection_width(projection, g) or 0, dtype=np.int64)
        for item in items:
            within = halves_order(item.head_dim)
            for head in range(item.heads):
                first = item.start + head * item.head_dim
                order[first : first + item.head_dim] = first + within
            for norm in item.norms:
                gain = norm.input[1]
                if gains.setdefault(gain, item.head_dim) != item.head_dim:
                    raise FoldError(f"{where}: {gain} is the gain of heads of two sizes")
        for part in _row_inputs(g, projection, folder, where):
            name = f"{projection.input[part.index]}.halves"
            g.graph.initializer.append(data.add(name, part.stored(order)))
            projection.input[part.index] = name
    for name, head_dim in gains.items():
        value = g.const(name)
        assert value is not None  # checked when found
        g.graph.initializer.append(
            numpy_helper.from_array(value[halves_order(head_dim)], f"{name}.halves")
        )
    for norm in norms:
        norm.input[1] = f"{norm.input[1]}.halves"
    drop = [node for item in found for node in item.nodes]
    renames = {item.nodes[-1].output[0]: item.source for item in found}
    return drop, renames


def _split_head(
    g: _Graph, head: StackedHead, folder: Path, where: Path, data: _DataFile
) -> list[onnx.NodeProto]:
    """The If tree choosing codebook `step_idx`'s own MatMulNBits; returns the new main-graph
    nodes (its conditions and the root If)."""
    matmul, vocab = head.matmul, head.vocab
    parts = _row_inputs(g, matmul, folder, where)
    output = head.gather.output[0]
    elem = next(
        (o.type.tensor_type.elem_type for o in g.graph.output if o.name == output),
        TensorProto.FLOAT,
    )
    attrs = {a.name: helper.get_attribute_value(a) for a in matmul.attribute}
    if matmul.op_type == "MatMulNBits":
        attrs["N"] = vocab
    conditions: list[onnx.NodeProto] = []

    def leaf(book: int, out: str) -> onnx.GraphProto:
        inputs = ["" for _ in matmul.input]
        inputs[0] = matmul.input[0]
        weights: list[TensorProto] = []
        for part in parts:
            name = f"{matmul.input[part.index]}.book{book}"
            weights.append(data.add(name, part.stored(slice(book * vocab, (book + 1) * vocab))))
            inputs[part.index] = name
        if matmul.op_type == "MatMul":
            node = helper.make_node("MatMul", inputs, [out], name=f"/head/book{book}/MatMul")
        else:
            node = helper.make_node(
                "MatMulNBits", inputs, [out], name=f"/head/book{book}/MatMulNBits",
                domain=MS_DOMAIN, **attrs,
            )  # fmt: skip
        return helper.make_graph(
            [node],
            f"head_book{book}",
            [],
            [helper.make_tensor_value_info(out, elem, None)],
            weights,
        )

    def choose(low: int, high: int, out: str) -> onnx.NodeProto:
        middle = (low + high) // 2
        below = f"/head/below{middle}"
        bound = numpy_helper.from_array(np.array(middle, dtype=np.int64), f"{below}/bound")
        g.graph.initializer.append(bound)
        conditions.append(helper.make_node("Less", ["step_idx", bound.name], [below], name=below))
        branches = []
        for part_low, part_high, tag in ((low, middle, "then"), (middle, high, "else")):
            inner = f"{out}/{tag}"
            if part_high - part_low == 1:
                branches.append(leaf(part_low, inner))
            else:
                node = choose(part_low, part_high, inner)
                branches.append(
                    helper.make_graph(
                        [node], f"head_books{part_low}_{part_high}", [],
                        [helper.make_tensor_value_info(inner, elem, None)],
                    )
                )  # fmt: skip
        return helper.make_node(
            "If", [below], [out], name=f"/head/books{low}_{high}",
            then_branch=branches[0], else_branch=branches[1],
        )  # fmt: skip

    root = choose(0, head.books, output)
    return [*conditions, root]


def fold_graph(model: onnx.ModelProto, folder: Path, where: Path, data: _DataFile) -> list[str]:
    """Rewrite `model` in place (its external data read from `folder`, new tensors written to
    `data`); returns what was done, empty when neither pattern is there."""
    graph = model.graph
    found = find_rearrangements(graph)
    head = find_stacked_head(graph)
    if not found and head is None:
        return []
    g = _Graph(graph)
    done: list[str] = []
    drop: list[onnx.NodeProto] = []
    renames: dict[str, str] = {}
    new_nodes: list[onnx.NodeProto] = []
    if found:
        drop, renames = _fold_rearrangements(g, found, folder, where, data)
        projections = len({item.projection.name for item in found})
        done.append(
            f"{len(found)} q/k pairs-to-halves rearrangements folded into {projections} "
            f"projections' rows and their norms' gains ({len(drop)} nodes fewer a run)"
        )
    if head is not None:
        new_nodes = _split_head(g, head, folder, where, data)
        drop += [head.matmul, head.reshape, head.gather]
        done.append(
            f"head split into {head.books} of {head.vocab} rows, chosen by step_idx "
            f"(reads 1/{head.books} of it a run)"
        )
    dropped = {id(node) for node in drop}
    nodes = [node for node in graph.node if id(node) not in dropped]
    for node in nodes:
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
    graph.ClearField("node")
    graph.node.extend([*nodes, *new_nodes])
    used = {name for node in all_nodes(graph) for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):  # pragma: no cover
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return done


def folded_name(graph_file: str) -> str:
    """`onnx/x.rope_fixed.onnx` -> `onnx/x.rope_fixed.folded.onnx`."""
    path = PurePosixPath(graph_file)
    return str(path.with_name(path.name.removesuffix(".onnx") + FOLDED_SUFFIX))


def fold_model(directory: Path, manifest: Manifest | None = None) -> tuple[Manifest, list[str]]:
    """Rewrite the directory's depthformer if it has either pattern; rewrite the manifest.
    Returns the manifest and what was done (nothing when there is nothing to fold)."""
    manifest = manifest or read_manifest(directory)
    entry = manifest.graphs.get("depthformer")
    if entry is None:
        return manifest, []
    source = directory / entry.file
    model = onnx.load(str(source), load_external_data=False)
    folded = folded_name(entry.file)
    target = directory / folded
    data_name = PurePosixPath(folded).name + "_data"
    data_path = target.with_name(data_name)
    tmp_data = data_path.with_name(data_name + ".tmp")
    tmp_graph = target.with_name(target.name + ".tmp")
    try:
        with tmp_data.open("wb") as out:
            done = fold_graph(model, source.parent, source, _DataFile(out, data_name))
            out.flush()
            os.fsync(out.fileno())
        if not done:
            return manifest, []
        onnx.save(model, str(tmp_graph))
        os.replace(tmp_data, data_path)
        os.replace(tmp_graph, target)
    finally:
        tmp_data.unlink(missing_ok=True)
        tmp_graph.unlink(missing_ok=True)
    data_file = str(PurePosixPath(folded).parent / data_name)
    graphs = dict(manifest.graphs)
    graphs["depthformer"] = dataclasses.replace(
        entry,
        file=folded,
        data_files=[*entry.data_files, data_file],
        options={**entry.options, "fold": {"from": entry.file, "done": done}},
    )
    files = dict(manifest.files)
    for name, path in ((folded, target), (data_file, data_path)):
        files[name] = FileEntry(sha256=sha256_file(path), size=path.stat().st_size)
    manifest = dataclasses.replace(manifest, graphs=graphs, files=files)
    manifest.write(directory)
    return manifest, [f"{entry.file} -> {folded}: {line}" for line in done]
