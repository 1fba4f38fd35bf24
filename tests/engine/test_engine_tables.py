"""`satellite.engine.tables`: embedding rows read with pread, never mapped.

The q4/q8 lookup graphs (`embed_tokens`, `audio_embedding`: one GatherBlockQuantized node each)
are read directly by `BlockTable`; its rows must equal what onnxruntime's session of the same
graph computes, bit for bit (both compute (code - 2^(bits-1)) * scale in float32). The engine
then opens no session for them, and reading rows leaves no page of the table resident.
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from lfm_toolchain.cache import cached_model

from satellite.engine.model import Model
from satellite.engine.sessions import SessionConfig, plain_session_options
from satellite.engine.tables import BlockTable, block_table
from satellite.modeldir.onnxread import read_graph


def run_graph(directory: Path, role: str, ids: np.ndarray) -> np.ndarray:
    model = Model.load(directory)
    path = directory / model.manifest.graphs[role].file
    session = ort.InferenceSession(
        str(path), plain_session_options(), providers=["CPUExecutionProvider"]
    )
    (name,) = [i.name for i in session.get_inputs()]
    (out,) = session.run(None, {name: ids[None, :]})
    return np.asarray(out[0])


@pytest.mark.parametrize("variant", ["q4", "q8"])
@pytest.mark.parametrize("role", ["embed_tokens", "audio_embedding"])
def test_block_table_equals_the_graph(variant: str, role: str) -> None:
    directory = cached_model("tiny", variant)
    model = Model.load(directory, SessionConfig(threads=1))
    table = model.table(role)
    assert isinstance(table, BlockTable), f"{variant} {role}: not read as a block table"
    assert table.bits == int(variant[1:])
    rng = np.random.default_rng(0)
    ids = np.concatenate([[0, table.rows - 1, 5, 5], rng.integers(0, table.rows, 60)])
    want = run_graph(directory, role, ids.astype(np.int64))
    got = table(ids)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    with pytest.raises(IndexError, match=rf"row {table.rows} outside 0\.\.{table.rows - 1}"):
        table([table.rows])
    with pytest.raises(IndexError, match=r"row -1 outside"):
        table([-1])
    assert table([]).shape == (0, table.width)


def test_engine_opens_no_session_for_the_lookups() -> None:
    """Embeddings of a q4 build come from the tables; the lookup graphs' sessions stay closed,
    and no page of the tables is left in the process after the reads."""
    directory = cached_model("tiny", "q4")
    model = Model.load(directory, SessionConfig(threads=1))
    text = model.embeddings.text([1, 6, 20])
    frames = model.embeddings.frames([[0, 1, 2, 3, 4, 5, 6, 7]])
    assert text.shape == (3, model.hidden_size) and frames.shape == (1, model.hidden_size)
    assert "embed_tokens" not in model._graphs and "audio_embedding" not in model._graphs
    data = {
        (directory / t.location).resolve()
        for role in ("embed_tokens", "audio_embedding")
        for t in read_graph(directory / model.manifest.graphs[role].file).external_tensors
    }
    gc.collect()  # sessions of earlier tests' models that only a collection frees (their
    # decoders share the file of the tied tables) are not this model's
    with open("/proc/self/maps", encoding="utf-8") as maps:
        mapped = {line.split(maxsplit=5)[-1].strip() for line in maps if len(line.split()) >= 6}
    assert not any(str(path) in mapped for path in data), "a table file is mapped"


def test_graphs_it_does_not_read_are_left_to_the_session(tmp_path: Path) -> None:
    """A lookup graph with zero points, or more than one node, is not a block table."""
    from onnx import TensorProto, helper, numpy_helper, save_model

    rows, width, block = 8, 32, 32
    data = numpy_helper.from_array(np.zeros((rows, width // 2), np.uint8), "data")
    scales = numpy_helper.from_array(np.ones((rows, 1), np.float32), "scales")
    zeros = numpy_helper.from_array(np.full((rows, 1), 0x88, np.uint8), "zeros")
    for name, inputs, inits in (
        ("zero_points", ["data", "ids", "scales", "zeros"], [data, scales, zeros]),
        ("plain", ["data", "ids", "scales"], [data, scales]),
    ):
        node = helper.make_node(
            "GatherBlockQuantized",
            inputs,
            ["out"],
            domain="com.microsoft",
            bits=4,
            block_size=block,
            gather_axis=0,
            quantize_axis=1,
        )
        graph = helper.make_graph(
            [node],
            name,
            [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, None])],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, None, width])],
            list(inits),
        )
        path = tmp_path / f"{name}.onnx"
        save_model(
            helper.make_model(
                graph,
                opset_imports=[
                    helper.make_opsetid("", 17),
                    helper.make_opsetid("com.microsoft", 1),
                ],
            ),
            str(path),
            save_as_external_data=True,
            location=f"{name}.onnx_data",
            size_threshold=0,
        )
        table = block_table(read_graph(path))
        if name == "zero_points":
            assert table is None
        else:
            assert isinstance(table, BlockTable)
            np.testing.assert_array_equal(table([3]), np.full((1, width), -8.0, np.float32))


def test_a_missing_table_file_is_named(tmp_path: Path) -> None:
    """The lookup graph is there but its data file is not: loading the table says which."""
    import shutil

    from satellite.engine.model import ModelLoadError
    from satellite.modeldir.integrity import DamagedModelError
    from satellite.modeldir.manifest import read_manifest

    directory = tmp_path / "model"
    shutil.copytree(cached_model("tiny", "q4"), directory)
    (directory / "audio_embedding_q4.onnx_data").unlink()
    # the load's file check names it first (satellite.modeldir.integrity) ...
    with pytest.raises(DamagedModelError, match=r"audio_embedding_q4\.onnx_data: missing"):
        Model.load(directory, SessionConfig(threads=1))
    # ... and the table reader names it too, where no check ran before
    model = Model(directory, read_manifest(directory), SessionConfig(threads=1))
    with pytest.raises(ModelLoadError, match=r"audio_embedding_q4\.onnx: cannot read its table"):
        model.table("audio_embedding")
