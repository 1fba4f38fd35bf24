"""`satellite.modeldir.onnxread`: the wire-format reader agrees with the `onnx` package on
inputs, outputs, nodes and external data, skips weights it does not need, and names the file
when it cannot read one."""

from __future__ import annotations

import re
from pathlib import Path

import modeldir_graphs as g
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from satellite.modeldir.manifest import UNKNOWN_RANK
from satellite.modeldir.onnxread import ELEMENT_TYPES, GraphReadError, read_graph


def _onnx_specs(values: list[onnx.ValueInfoProto]) -> list[tuple[str, str, list[int | str]]]:
    out = []
    for v in values:
        t = v.type.tensor_type
        shape: list[int | str] = [
            d.dim_param if d.HasField("dim_param") else d.dim_value for d in t.shape.dim
        ]
        out.append((v.name, ELEMENT_TYPES[t.elem_type], shape))
    return out


@pytest.mark.parametrize("role", sorted(g.BUILDERS))
def test_interface_matches_the_onnx_package(role: str, tmp_path: Path) -> None:
    model = g.BUILDERS[role](g.CONFIG)
    path = tmp_path / f"{role}.onnx"
    g.save(model, path)
    info = read_graph(path)
    assert [(t.name, t.dtype, t.shape) for t in info.inputs] == _onnx_specs(list(model.graph.input))
    assert [(t.name, t.dtype, t.shape) for t in info.outputs] == _onnx_specs(
        list(model.graph.output)
    )
    assert [n.op_type for n in info.nodes] == [n.op_type for n in model.graph.node]
    assert info.opsets == {"": 17, "com.microsoft": 1}
    assert info.ir_version == 10
    assert info.initializer_count == len(model.graph.initializer)
    assert info.external_data == ()


def test_external_data_locations_and_large_embedded_weights(tmp_path: Path) -> None:
    path = tmp_path / "onnx" / "decoder_q4.onnx"
    g.save(g.decoder(), path, ["decoder_q4.onnx_data", "decoder_q4.onnx_data_1"])
    assert read_graph(path).external_data == ("decoder_q4.onnx_data", "decoder_q4.onnx_data_1")

    big = g.audio_embedding({**g.CONFIG, "codebooks": 8, "codebook_size": 2049, "hidden_size": 256})
    embedded = tmp_path / "audio_embedding.onnx"
    g.save(big, embedded)
    assert embedded.stat().st_size > 16_000_000  # weights inside the file, skipped by length
    info = read_graph(embedded)
    assert [t.name for t in info.inputs] == ["audio_codes"]
    assert info.outputs[0].shape == ["batch_size", "audio_length", 256]


def test_subgraph_nodes_attributes_and_old_ir_initializer_inputs(tmp_path: Path) -> None:
    then_branch = helper.make_graph(
        [helper.make_node("SimplifiedLayerNormalization", ["x", "w"], ["y"], epsilon=1e-5)],
        "then",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["z"])],
        "else",
        [],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
    )
    weight = numpy_helper.from_array(np.ones(4, np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node(
                "If", ["c"], ["out"], then_branch=then_branch, else_branch=else_branch
            ),
            helper.make_node(
                "GroupQueryAttention", ["x"], ["a"], domain="com.microsoft", do_rotary=1
            ),
        ],
        "main",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", None]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [4]),  # IR 3 style
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "nested.onnx"
    onnx.save_model(model, str(path))
    info = read_graph(path)
    assert [t.name for t in info.inputs] == ["c", "x"]
    assert info.inputs[0].shape == []
    assert info.inputs[1].shape == ["n", "?"]
    assert info.outputs[0].shape == [UNKNOWN_RANK]
    assert info.op_types()["SimplifiedLayerNormalization"] == 1
    gqa = next(n for n in info.nodes if n.op_type == "GroupQueryAttention")
    assert gqa.domain == "com.microsoft" and gqa.ints == {"do_rotary": 1}


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "empty file"),
        (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "not a valid ONNX graph"),
        (b'{"not": "onnx"}', "not a valid ONNX graph"),
    ],
)
def test_unreadable_files_are_named(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(GraphReadError, match=expected) as caught:
        read_graph(path)
    assert str(path) in str(caught.value)


def test_truncated_graph_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.onnx"
    g.save(g.decoder(), path)
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(GraphReadError, match=re.escape("cut.onnx: not a valid ONNX graph")):
        read_graph(path)
    with pytest.raises(GraphReadError, match=re.escape("nowhere.onnx: graph file not found")):
        read_graph(tmp_path / "nowhere.onnx")
