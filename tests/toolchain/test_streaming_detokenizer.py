"""`model optimize` / `model fetch` give a published directory a streaming detokenizer made from
the published `audio_detokenizer`'s own weights (`lfm_toolchain.streaming_detokenizer`), on
tiny directories laid out like the published export.

Bounds reached (measured on this machine): float32, the new graph streamed 3.3e-7 of full scale
off the published graph's one-shot audio (the windowed path 4.2e-7), and within 1e-3 of
liquid-audio's `LFM2AudioDetokenizer` waveform (asserted, as tests/engine/test_engine_detokenize.py
does for the project's own graph); q4, 3.4e-3 off the one-shot audio where the windowed path the
engine used before is 2.8e-3 off it itself (int8 activations, `Agreement`). A window, RoPE theta
or norm epsilon read wrongly puts the new graph 0.12-0.38 off: refused.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from lfm_toolchain import streaming_detokenizer as streaming
from lfm_toolchain.build import build_model
from lfm_toolchain.config import tiny
from lfm_toolchain.streaming_detokenizer import (
    ROLE,
    PublishedDetokenizer,
    add_streaming_detokenizer,
    read_published,
)
from lfm_toolchain.weights import random_detokenizer_weights
from reference import TINY_SEED, liquid_audio, load_weights

from satellite.cli import main
from satellite.engine.detokenize import CachedDecoder, choose_role
from satellite.engine.detokenizers import open_detokenizer
from satellite.modeldir.manifest import read_manifest
from satellite.modeldir.verify import verify

TOLERANCE = 1e-3
"""Of full scale, against the reference (float32 graphs)."""
FRAMES = 48


@pytest.fixture(scope="module")
def published_q4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("published") / "q4"
    build_model(out, size="tiny", variant="q4", layout="published", seed=TINY_SEED)
    return out


@pytest.fixture(scope="module")
def published_fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("published") / "fp32"
    build_model(out, size="tiny", variant="fp32", layout="published", seed=TINY_SEED)
    return out


def _copy(source: Path, tmp_path: Path) -> Path:
    out = tmp_path / source.name
    shutil.copytree(source, out)
    return out


def _codes(seed: int, frames: int = FRAMES) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2048, size=(8, frames))


def _streamed(directory: Path, choice: Any, codes: np.ndarray) -> np.ndarray:
    detok = open_detokenizer(directory, choice)
    pieces = [detok.push(codes[:, a : a + 3]) for a in range(0, codes.shape[1], 3)]
    return np.concatenate([*pieces, detok.finish()])


def test_optimize_gives_a_published_q4_model_a_streaming_detokenizer(
    published_q4: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = _copy(published_q4, tmp_path)
    assert ROLE not in read_manifest(directory).graphs
    assert main(["model", "optimize", str(directory)]) == 0
    said = capsys.readouterr().out
    assert "the detokenizer streams" in said and "windowed path" in said
    manifest = read_manifest(directory)
    entry = manifest.graphs[ROLE]
    assert entry.file == "onnx/audio_detokenizer_q4.cached.onnx"
    assert entry.options["from"] == "onnx/audio_detokenizer_q4.onnx"
    for name in (entry.file, *entry.data_files):  # listed with their checksums
        assert manifest.files[name].size == (directory / name).stat().st_size
    assert verify(directory).ok
    # the engine takes it by itself, and it carries the published 4-bit weights as they are
    assert choose_role(manifest) == ROLE
    assert isinstance(open_detokenizer(directory).decoder, CachedDecoder)
    new = onnx.load(str(directory / entry.file), load_external_data=False)
    old = onnx.load(str(directory / "onnx/audio_detokenizer_q4.onnx"), load_external_data=False)
    count = [sum(n.op_type == "MatMulNBits" for n in g.graph.node) for g in (new, old)]
    assert count[0] == count[1] > 0
    # it speaks as the windowed path does (both off the one-shot audio by int8 rounding)
    codes = _codes(5)
    oneshot = open_detokenizer(directory, "windowed").decode(codes)
    cached = _streamed(directory, "cached", codes)
    windowed = _streamed(directory, "windowed", codes)
    assert np.max(np.abs(oneshot)) > 0.05, "near silence: a weak test"
    off, before = np.max(np.abs(cached - oneshot)), np.max(np.abs(windowed - oneshot))
    assert off <= max(TOLERANCE, 2 * before), f"{off:.3g} off, the windowed path {before:.3g}"
    # a second run finds it there and leaves it
    assert main(["model", "optimize", str(directory)]) == 0
    assert "nothing to fix, repack, fold or make streaming" in capsys.readouterr().out


@pytest.mark.parity
def test_float_graph_streams_the_references_waveform(published_fp32: Path, tmp_path: Path) -> None:
    from transformers import Lfm2Config

    directory = _copy(published_fp32, tmp_path)
    _, lines = add_streaming_detokenizer(directory)
    assert lines and "the detokenizer streams" in lines[0], lines
    la = liquid_audio()
    torch.manual_seed(0)
    reference = la.detokenizer.LFM2AudioDetokenizer(
        Lfm2Config(**tiny().detokenizer.backbone.reference_kwargs())
    )
    load_weights(reference, dict(random_detokenizer_weights(tiny(), TINY_SEED)))
    reference.lfm.set_attn_implementation("sdpa")  # eager ignores the boolean window mask
    reference = reference.float().eval()
    codes = _codes(6)
    with torch.no_grad():
        want = np.asarray(reference(torch.from_numpy(codes[None]))[0].numpy())
    got = _streamed(directory, "cached", codes)
    assert np.max(np.abs(want)) > 0.05
    err = float(np.max(np.abs(got - want)))
    assert err <= TOLERANCE, f"streamed vs liquid-audio: max abs error {err:.3g}"


def _export_spelling(directory: Path) -> None:
    """Rename the published detokenizer's weights the way Liquid4All/onnx-export's
    `AudioDetokenizerBuilder` names them (`lfm.layers.0.in_proj.weight`, `q.weight`, `o.weight`,
    `q_ln.weight`, `emb.weight`, one `[H, 1, 3]` conv kernel), packed ones with the
    onnxruntime quantizer's `_Q4` / `_scales` suffixes; the graph still runs."""
    path = directory / read_manifest(directory).graphs["audio_detokenizer"].file
    model = onnx.load(str(path), load_external_data=True)
    short = {"conv.in_proj": "in_proj", "conv.out_proj": "out_proj",
             "feed_forward.w1": "w1", "feed_forward.w2": "w2", "feed_forward.w3": "w3",
             "self_attn.q_proj": "q", "self_attn.k_proj": "k", "self_attn.v_proj": "v",
             "self_attn.out_proj": "o", "self_attn.q_layernorm": "q_ln",
             "self_attn.k_layernorm": "k_ln"}  # fmt: skip

    def renamed(name: str) -> str:
        name = name.replace(".weight.T_", ".weight_").removesuffix(".T")
        if name == "emb.emb.weight":
            return "emb.weight"
        for long, brief in short.items():
            name = name.replace(f".{long}.", f".{brief}.")
        if ".conv.conv.weight." in name:  # the taps, hidden from the tap spelling
            return name.replace(".conv.conv.weight.", ".conv.tap.")
        return name

    names = {t.name: renamed(t.name) for t in model.graph.initializer}
    kernels: dict[str, list[np.ndarray]] = {}
    for tensor in model.graph.initializer:
        if ".conv.conv.weight." in tensor.name:
            layer = tensor.name.split(".conv.conv.weight.")[0]
            kernels.setdefault(layer, []).append(onnx.numpy_helper.to_array(tensor))
        tensor.name = names[tensor.name]
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = names.get(name, name)
    for layer, taps in kernels.items():
        kernel = np.stack(taps, axis=-1)[:, None, :]
        model.graph.initializer.append(onnx.numpy_helper.from_array(kernel, f"{layer}.conv.weight"))
    path.with_name(path.name + "_data").unlink()
    onnx.save(model, str(path), save_as_external_data=True, location=path.name + "_data")


def test_the_exports_own_spelling_is_read_too(published_q4: Path, tmp_path: Path) -> None:
    directory = _copy(published_q4, tmp_path)
    before = read_published(directory / "onnx/audio_detokenizer_q4.onnx")
    _export_spelling(directory)
    model = onnx.load(str(directory / "onnx/audio_detokenizer_q4.onnx"), load_external_data=False)
    names = {t.name for t in model.graph.initializer}
    assert "lfm.layers.1.q.weight_Q4" in names and "emb.weight" in names
    assert "lfm.layers.0.conv.weight" in names
    after = read_published(directory / "onnx/audio_detokenizer_q4.onnx")
    assert after.config == before.config
    assert after.packed.keys() == before.packed.keys() and len(after.packed) == 18
    for key, array in before.weights.items():
        np.testing.assert_array_equal(after.weights[key], array)
    manifest, lines = add_streaming_detokenizer(directory)
    assert ROLE in manifest.graphs, lines


@pytest.mark.parametrize(
    "field, value", [("sliding_window", 20), ("rope_theta", 1e4), ("norm_eps", 1e-3)]
)
def test_a_misread_shape_is_refused_and_leaves_nothing_behind(
    published_q4: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, value: Any
) -> None:
    """A window, theta or epsilon read wrongly makes a graph that runs but speaks wrongly: the
    check refuses it, the files go, the manifest stays as it was."""
    directory = _copy(published_q4, tmp_path)
    real = streaming.read_published

    def misread(path: Path) -> PublishedDetokenizer:
        found = real(path)
        backbone = dataclasses.replace(found.config.backbone, **{field: value})
        return dataclasses.replace(
            found, config=dataclasses.replace(found.config, backbone=backbone)
        )

    monkeypatch.setattr(streaming, "read_published", misread)
    before = (directory / "manifest.json").read_text()
    manifest, lines = add_streaming_detokenizer(directory)
    assert ROLE not in manifest.graphs
    assert len(lines) == 1 and lines[0].startswith("kept the windowed detokenizer"), lines
    assert (directory / "manifest.json").read_text() == before
    assert not list((directory / "onnx").glob("*.cached.onnx*"))


def test_an_unknown_layout_keeps_the_windowed_detokenizer(
    published_q4: Path, tmp_path: Path
) -> None:
    directory = _copy(published_q4, tmp_path)
    path = directory / "onnx/audio_detokenizer_q4.onnx"
    model = onnx.load(str(path), load_external_data=True)
    for tensor in model.graph.initializer:
        if tensor.name == "lin.bias":
            tensor.name = "head_bias"
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == "lin.bias":
                node.input[i] = "head_bias"
    path.with_name(path.name + "_data").unlink()
    onnx.save(model, str(path), save_as_external_data=True, location=path.name + "_data")
    manifest, lines = add_streaming_detokenizer(directory)
    assert ROLE not in manifest.graphs
    assert lines == [f"kept the windowed detokenizer: {path}: no weight for lin.bias under any "
                     "known name"]  # fmt: skip


def test_a_hard_linked_copy_is_read(published_q4: Path, tmp_path: Path) -> None:
    """A model directory copied with hard links (`cp -al`): onnx's own loader refuses such
    data files ("a potential hardlink attack"); the weights are read from them directly."""
    directory = tmp_path / "linked"
    shutil.copytree(published_q4, directory, copy_function=os.link)
    shutil.copy(published_q4 / "manifest.json", directory / "manifest.json.new")
    os.replace(directory / "manifest.json.new", directory / "manifest.json")
    manifest, lines = add_streaming_detokenizer(directory)
    assert ROLE in manifest.graphs, lines
    assert ROLE not in read_manifest(published_q4).graphs  # the source's manifest untouched


def test_a_damaged_graph_keeps_the_windowed_detokenizer(published_q4: Path, tmp_path: Path) -> None:
    directory = _copy(published_q4, tmp_path)
    path = directory / "onnx/audio_detokenizer_q4.onnx"
    path.write_bytes(b"\x0a\xff\xff\xff" + path.read_bytes()[:100])
    manifest, lines = add_streaming_detokenizer(directory)
    assert ROLE not in manifest.graphs
    assert len(lines) == 1 and lines[0].startswith(
        f"kept the windowed detokenizer: {path}: cannot read the graph"
    ), lines
