"""`model optimize` on a tiny directory laid out like the published q4 export: the float32
lm-head repacked into 4-bit blocks, skipped when no logits are asked for, and stored once with
the text embeddings; and `model fetch` of such a repository ending with a fixed, repacked,
verified directory that the engine loads.

Bounds: the repacked head against the dequantized table computed in float (what the packed
bytes mean, read by the engine's own table reader): int8 activations only, the bounds of
tests/toolchain/test_quantize.py's VS_ROUNDED for q4 (rms 0.08, max 0.8, top-1 0.85); the body of the
decoder is untouched (hidden states bit-identical).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hubserver import serve_hub
from lfm_toolchain.build import build_model

from satellite.cli import main
from satellite.engine.chat import Chat
from satellite.engine.model import Model
from satellite.engine.sessions import SessionConfig, plain_session_options
from satellite.engine.tables import BlockTable
from satellite.modeldir import repack
from satellite.modeldir.catalog import catalog_path, find_entry, load_catalog
from satellite.modeldir.fetch import fetch
from satellite.modeldir.manifest import read_manifest
from satellite.modeldir.onnxread import read_graph
from satellite.modeldir.repack import repack_model
from satellite.modeldir.verify import verify

NAME = "LiquidAI/LFM2.5-Audio-1.5B-ONNX"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("published") / "q4"
    build_model(out, size="tiny", variant="q4", layout="published")
    return out


@pytest.fixture(scope="module")
def optimized(published: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("optimized") / "q4"
    shutil.copytree(published, out)
    assert main(["model", "optimize", str(out)]) == 0
    return out


def run_decoder(path: Path, embeds: np.ndarray, keep: int | None) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(
        str(path), plain_session_options(), providers=["CPUExecutionProvider"]
    )
    feeds: dict[str, np.ndarray] = {}
    for i in session.get_inputs():
        if i.name == "inputs_embeds":
            feeds[i.name] = embeds
        elif i.name == "attention_mask":
            feeds[i.name] = np.ones((1, embeds.shape[1]), dtype=np.int64)
        elif i.name == "num_logits_to_keep":
            feeds[i.name] = np.array(keep if keep is not None else embeds.shape[1], np.int64)
        else:
            shape = [d if isinstance(d, int) else (1 if "batch" in d else 0) for d in i.shape]
            feeds[i.name] = np.zeros(shape, dtype=np.float32)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def test_the_head_is_repacked_and_stored_once(published: Path, optimized: Path) -> None:
    before, after = read_manifest(published), read_manifest(optimized)
    decoder = after.graphs["decoder"]
    assert decoder.file == "onnx/decoder_q4.repacked.onnx"
    assert decoder.options["repack"]["from"] == "onnx/decoder_q4.onnx"
    assert "num_logits_to_keep" in {t.name for t in decoder.inputs}
    ops = read_graph(optimized / decoder.file).op_types()
    assert (
        ops["MatMulNBits"]
        == read_graph(published / "onnx/decoder_q4.onnx").op_types()["MatMulNBits"] + 1
    )
    assert "Transpose" not in {
        n.op_type for n in read_graph(optimized / decoder.file).nodes if "lm_head" in n.name
    }
    # the lookup graph and the head name the same bytes of one file
    table = read_graph(optimized / after.graphs["embed_tokens"].file).external_tensors
    head = [
        t
        for t in read_graph(optimized / decoder.file).external_tensors
        if t.name.startswith("lm_head")
    ]
    assert {(t.location, t.offset, t.length) for t in table} == {
        (t.location, t.offset, t.length) for t in head
    }
    assert "embed_tokens" in before.side_files and "embed_tokens" not in after.side_files
    model = Model.load(optimized)
    assert isinstance(model.table("embed_tokens"), BlockTable)
    # the downloaded files are untouched
    for name in ("onnx/decoder_q4.onnx", "onnx/decoder_q4.onnx_data", "onnx/embed_tokens.bin"):
        assert after.files[name] == before.files[name]
    assert verify(optimized).ok


def test_repacked_logits_within_the_q4_bounds(published: Path, optimized: Path) -> None:
    rng = np.random.default_rng(5)
    embeds = rng.standard_normal((1, 40, 64)).astype(np.float32)
    old = run_decoder(published / "onnx/decoder_q4.onnx", embeds, None)
    new = run_decoder(optimized / "onnx/decoder_q4.repacked.onnx", embeds, None)
    np.testing.assert_array_equal(new["hidden_states"], old["hidden_states"])
    table = Model.load(optimized).table("embed_tokens")
    assert table is not None
    dequantized = table(np.arange(512, dtype=np.int64))  # [vocab, hidden]
    want = new["hidden_states"][0] @ dequantized.T
    got = new["logits"][0]
    rms = float(np.sqrt(np.mean((got - want) ** 2)))
    top1 = float(np.mean(got.argmax(-1) == want.argmax(-1)))
    print(f"repacked head vs its dequantized table: rms {rms:.4f}, top-1 {top1:.2f}")
    assert rms <= 0.08 and float(np.max(np.abs(got - want))) <= 0.8 and top1 >= 0.85
    vs_float = float(np.mean(got.argmax(-1) == old["logits"][0].argmax(-1)))
    print(f"repacked head vs the float32 head: top-1 agreement {vs_float:.2f}")
    assert vs_float >= 0.5


def test_no_logits_when_none_are_asked_for(optimized: Path) -> None:
    embeds = np.random.default_rng(6).standard_normal((1, 5, 64)).astype(np.float32)
    path = optimized / "onnx/decoder_q4.repacked.onnx"
    full, none, last = (run_decoder(path, embeds, keep) for keep in (None, 0, 1))
    assert none["logits"].shape == (1, 0, 512)
    np.testing.assert_array_equal(last["logits"][0, 0], full["logits"][0, -1])


def test_the_engine_speaks_from_it(optimized: Path) -> None:
    model = Model.load(optimized, SessionConfig(threads=1))
    chat = Chat(model, prefix=[[1, 6, 20, 10, 279, 141, 7, 10]], turn_end=(7, 10))
    config = chat.generation_config("interleaved", max_new_tokens=40)
    events = list(chat.turn([[6, 21, 10, *range(60, 70), 7, 10, 6, 22, 10]], config))
    assert len(events) > 10


def test_an_interrupted_repack_leaves_the_directory_as_it_was(
    published: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "q4"
    shutil.copytree(published, out)
    before = (out / "manifest.json").read_bytes()

    def full_disk(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(repack, "rewrite_decoder", full_disk)
    with pytest.raises(OSError):
        repack_model(out)
    assert (out / "manifest.json").read_bytes() == before
    assert not list(out.rglob("*.tmp")) and not (out / "onnx/decoder_q4.head.onnx_data").exists()
    monkeypatch.undo()
    _, done = repack_model(out)
    assert done and read_manifest(out).graphs["decoder"].file.endswith(".repacked.onnx")
    assert main(["model", "optimize", str(out)]) == 0  # the depthformer fix, then verified


def test_fetch_ends_fixed_repacked_and_loadable(
    published: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The repository as the hub serves it (no manifest), fetched at the pinned commit."""
    repo = tmp_path / "repo"
    shutil.copytree(published, repo)
    (repo / "manifest.json").unlink()
    shipped = find_entry(load_catalog(catalog_path()), NAME)
    manifest = read_manifest(published)
    # the tiny model's numbers (the shipped entry states the full model's) and no known sizes
    entry = dataclasses.replace(shipped, config=dict(manifest.config), known_files={})
    with serve_hub({NAME: repo}, commit=shipped.revision) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        result = fetch(entry, variant="q4", directory=tmp_path / "model")
    assert result.report.ok, result.report.errors
    printed = capsys.readouterr().out
    assert "fixed onnx/vocoder_depthformer_q4.onnx" in printed
    assert "repacked onnx/decoder_q4.onnx: float32 lm-head" in printed
    fetched = read_manifest(tmp_path / "model")
    assert "folded onnx/vocoder_depthformer_q4.rope_fixed.onnx" in printed
    assert fetched.graphs["depthformer"].file.endswith(".rope_fixed.folded.onnx")
    assert fetched.graphs["decoder"].file.endswith(".repacked.onnx")
    assert fetched.source["revision"] == shipped.revision
    Model.load(tmp_path / "model").open()
