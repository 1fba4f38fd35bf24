"""`lfm-satellite model fix DIR`: write corrected graphs beside a published model's defective
ones, and record it in the manifest.

The depthformer (`satellite.modeldir.rotary` says what is wrong): every GroupQueryAttention
node gets `do_rotary=1`, and every cos/sin table the nodes read is rebuilt for theta 1,000,000
at its own shape and element type (`satellite.modeldir.rope`, the formula the project's own
builds use). `rotary_interleaved` is left as the graph has it: the published graph rearranges
each head's q and k from interleaved pairs into two halves before attention, which is what
makes onnxruntime's rotate-half rotation equal the model's interleaved one.
tests/modeldir/test_published_model.py proves it against the reference: with the fix the engine's
tokens are the reference's, with `rotary_interleaved=1` as well they are not.

The corrected graph is `<stem>.rope_fixed.onnx` beside the original and reads the original's
data file (the rebuilt tables, a few kB, are stored in the graph itself), so the fix costs no
copy of the weights and the downloaded files stay as the hub has them. It is written to a
temporary name and renamed, then the manifest is rewritten to point at it: an interrupted fix
leaves the directory as it was.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import onnx
from onnx import helper, numpy_helper

from satellite.errors import UserError
from satellite.modeldir.manifest import FileEntry, Manifest, read_manifest, sha256_file
from satellite.modeldir.onnxread import read_graph
from satellite.modeldir.rope import rope_tables
from satellite.modeldir.rotary import COS_INPUT, MODEL_THETA, SIN_INPUT, RotaryCheck, check_rotary

FIXED_SUFFIX = ".rope_fixed.onnx"
"""The corrected depthformer graph is the original's name with this in place of `.onnx`."""


class RepairError(UserError):
    """A graph cannot be corrected; the message names the file and why."""

    exit_code = 1


@dataclasses.dataclass(frozen=True)
class Repair:
    """What `fix_model` did to one graph."""

    role: str
    original: str
    fixed: str
    problems: tuple[str, ...]


def fixed_name(graph_file: str) -> str:
    """`onnx/vocoder_depthformer_q4.onnx` -> `onnx/vocoder_depthformer_q4.rope_fixed.onnx`."""
    path = PurePosixPath(graph_file)
    return str(path.with_name(path.name.removesuffix(".onnx") + FIXED_SUFFIX))


def depthformer_check(directory: Path, manifest: Manifest) -> RotaryCheck | None:
    """The rotary facts of the directory's depthformer graph (None without one)."""
    entry = manifest.graphs.get("depthformer")
    if entry is None:
        return None
    return check_rotary(read_graph(directory / entry.file))


def fix_model(directory: Path, manifest: Manifest | None = None) -> tuple[Manifest, list[Repair]]:
    """Correct the known defects of the model directory's graphs (today: the depthformer's
    rotary embedding), rewrite its manifest, and return it with what was done (nothing for a
    directory without defects). Raises RepairError naming the file when it cannot."""
    manifest = manifest or read_manifest(directory)
    check = depthformer_check(directory, manifest)
    if check is None or not check.defective:
        return manifest, []
    entry = manifest.graphs["depthformer"]
    if check.unreadable:
        raise RepairError(
            f"{directory / entry.file}: cannot rebuild the rotary tables "
            f"{', '.join(check.unreadable)}: they are not plain initializers"
        )
    fixed = fixed_name(entry.file)
    write_fixed_depthformer(directory / entry.file, directory / fixed)
    after = check_rotary(read_graph(directory / fixed))
    if after.defective:  # pragma: no cover - a fault of this module, not of the input
        raise RepairError(f"{directory / fixed}: still defective: {'; '.join(after.problems())}")
    record: dict[str, Any] = {
        "from": entry.file,
        "problems": check.problems(),
        "do_rotary": 1,
        "theta": MODEL_THETA,
        "theta_before": round(check.theta, 1) if check.theta is not None else None,
        "tables": [name for pair in check.tables for name in pair],
        "rotary_interleaved": check.interleaved > 0,
    }
    graphs = dict(manifest.graphs)
    graphs["depthformer"] = dataclasses.replace(
        entry, file=fixed, options={**entry.options, "rope_fix": record}
    )
    files = dict(manifest.files)
    path = directory / fixed
    files[fixed] = FileEntry(sha256=sha256_file(path), size=path.stat().st_size)
    manifest = dataclasses.replace(manifest, graphs=graphs, files=files)
    manifest.write(directory)
    return manifest, [Repair("depthformer", entry.file, fixed, tuple(check.problems()))]


def write_fixed_depthformer(source: Path, target: Path) -> None:
    """Write `source` with rotary embedding on and its tables rebuilt to `target` (same
    folder, so the external data references still resolve)."""
    model = onnx.load(str(source), load_external_data=False)
    tables: dict[str, int] = {}
    for node in all_nodes(model.graph):
        if node.op_type != "GroupQueryAttention":
            continue
        _set_int(node, "do_rotary", 1)
        for slot in (COS_INPUT, SIN_INPUT):
            if len(node.input) > slot and node.input[slot]:
                tables[node.input[slot]] = slot
    for name, slot in tables.items():
        tensor = _initializer(model.graph, name)
        if tensor is None or len(tensor.dims) != 2:
            raise RepairError(f"{source}: rotary table {name} is not a 2-D initializer")
        positions, half = (int(d) for d in tensor.dims)
        cos, sin = rope_tables(2 * half, MODEL_THETA, positions)
        dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
        value = (cos if slot == COS_INPUT else sin).astype(dtype)
        tensor.CopyFrom(numpy_helper.from_array(value, name))
    tmp = target.with_name(target.name + ".tmp")
    try:
        onnx.save(model, str(tmp))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of `graph`, its subgraphs' (If, Loop, Scan) included."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attr.g)
            for sub in attr.graphs:
                yield from all_nodes(sub)


def _initializer(graph: onnx.GraphProto, name: str) -> onnx.TensorProto | None:
    for tensor in graph.initializer:
        if tensor.name == name:
            found: onnx.TensorProto = tensor
            return found
    for node in graph.node:
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subgraphs:
                inner = _initializer(sub, name)
                if inner is not None:
                    return inner
    return None


def _set_int(node: onnx.NodeProto, name: str, value: int) -> None:
    for attr in node.attribute:
        if attr.name == name:
            attr.CopyFrom(helper.make_attribute(name, value))
            return
    node.attribute.append(helper.make_attribute(name, value))
