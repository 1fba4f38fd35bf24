"""`satellite.modeldir.contract`: role contracts as data, and the binding of a graph's real
names to contract slots that the runtime uses instead of assuming names."""

from __future__ import annotations

from pathlib import Path

import modeldir_graphs as g
import numpy as np
import onnxruntime as ort
import pytest

from satellite.engine.sessions import plain_session_options
from satellite.modeldir.contract import ContractError, contract_for, match_role, session_specs
from satellite.modeldir.manifest import TensorSpec
from satellite.modeldir.onnxread import read_graph

NUMPY = {"float32": np.float32, "int64": np.int64, "int32": np.int32}


def _specs(model: object, tmp_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    path = tmp_path / "graph.onnx"
    g.save(model, path)  # type: ignore[arg-type]
    info = read_graph(path)
    return list(info.inputs), list(info.outputs)


def test_decoder_binds_official_names_and_cache_feedback(tmp_path: Path) -> None:
    inputs, outputs = _specs(g.decoder(), tmp_path)
    match = match_role("decoder", inputs, outputs, g.CONFIG)
    assert match.problems == ()
    b = match.binding
    assert b.input_name("inputs_embeds") == "inputs_embeds"
    assert "input_ids" not in b.inputs
    assert b.input_name("past_conv.2") == "past_conv.2"
    assert b.input_name("past_key_values.1.key") == "past_key_values.1.key"
    assert b.output_name("present.1.value") == "present.1.value"
    assert set(b.feedback) == {
        ("present_conv.0", "past_conv.0"),
        ("present_conv.2", "past_conv.2"),
        ("present.1.key", "past_key_values.1.key"),
        ("present.1.value", "past_key_values.1.value"),
    }


def test_binding_feeds_a_real_session(tmp_path: Path) -> None:
    """Feeds built only from the binding and the read shapes run in onnxruntime, and the
    feedback pairs carry the caches from one step to the next."""
    path = tmp_path / "decoder.onnx"
    g.save(g.decoder(), path)
    info = read_graph(path)
    binding = match_role("decoder", info.inputs, info.outputs, g.CONFIG).binding
    session = ort.InferenceSession(
        str(path), plain_session_options(), providers=["CPUExecutionProvider"]
    )
    from_session = match_role("decoder", *session_specs(session), g.CONFIG)
    assert from_session.problems == ()
    assert from_session.binding == binding
    sizes = {"batch_size": 1, "sequence_length": 2, "total_sequence_length": 2}
    feeds = {}
    for spec in info.inputs:
        shape = [d if isinstance(d, int) else sizes.get(d, 0) for d in spec.shape]
        feeds[spec.name] = np.zeros(shape, NUMPY[spec.dtype])
    names = [o.name for o in session.get_outputs()]
    results = dict(zip(names, session.run(None, feeds), strict=True))
    assert results[binding.output_name("logits")].shape == (1, 2, g.CONFIG["vocab_size"])
    for out_name, in_name in binding.feedback:
        feeds[in_name] = results[out_name]
    assert feeds["past_key_values.1.key"].shape == (1, 2, 2, 4)


def test_input_ids_is_an_accepted_alternative(tmp_path: Path) -> None:
    inputs, outputs = _specs(g.decoder(embeds_name="input_ids", embeds_type=g.INT64), tmp_path)
    match = match_role("decoder", inputs, outputs, g.CONFIG)
    assert match.problems == ()
    assert match.binding.input_name("input_ids") == "input_ids"


def test_aliases_map_to_the_graph_names(tmp_path: Path) -> None:
    inputs, outputs = _specs(g.audio_encoder(mel_name="mel_features"), tmp_path)
    match = match_role("audio_encoder", inputs, outputs, g.CONFIG)
    assert match.problems == ()
    assert match.binding.input_name("mel_spectrogram") == "mel_features"


def test_caches_must_follow_layer_types(tmp_path: Path) -> None:
    graph_cfg = {**g.CONFIG, "layer_types": ["conv", "conv", "full_attention"]}
    inputs, outputs = _specs(g.decoder(graph_cfg), tmp_path)
    problems = match_role("decoder", inputs, outputs, g.CONFIG).problems
    text = "\n".join(problems)
    assert (
        "input past_key_values.1.key is missing (config layer_types[1] is full_attention)" in text
    )
    assert (
        "input past_conv.1 does not fit the config: config layer_types[1] is full_attention" in text
    )
    assert "input past_key_values.2.key does not fit the config" in text
    assert "output present.2.key does not fit the config" in text

    longer = {**g.CONFIG, "layer_types": ["conv", "full_attention", "conv", "conv"]}
    inputs, outputs = _specs(g.decoder(longer), tmp_path)
    problems = match_role("decoder", inputs, outputs, g.CONFIG).problems
    assert any(
        "past_conv.3 does not fit the config: config layer_types has 3" in p for p in problems
    )


def test_dtype_rank_and_config_dimensions(tmp_path: Path) -> None:
    inputs, outputs = _specs(g.audio_embedding(codes_type=g.INT32), tmp_path)
    problems = match_role("audio_embedding", inputs, outputs, g.CONFIG).problems
    assert problems == ("input audio_codes has element type int32, expected int64",)

    inputs, outputs = _specs(g.decoder({**g.CONFIG, "hidden_size": 24}), tmp_path)
    problems = match_role("decoder", inputs, outputs, g.CONFIG).problems
    assert (
        "input inputs_embeds axis 2 is 24, expected config hidden_size = 16 "
        "(shape [batch_size, sequence_length, 24])" in problems
    )

    wrong_rank = [TensorSpec("audio_codes", "int64", ["batch", "codebooks", "frames"])]
    problems = match_role("audio_embedding", wrong_rank, outputs[:0], g.CONFIG).problems
    assert any("audio_codes has rank 3" in p for p in problems)
    assert any("output audio_embeds is missing" in p for p in problems)


def test_missing_and_unknown_inputs_are_named(tmp_path: Path) -> None:
    inputs, outputs = _specs(g.audio_embedding(codes_name="codes"), tmp_path)
    problems = match_role("audio_embedding", inputs, outputs, g.CONFIG).problems
    assert problems[0].startswith("input audio_codes is missing; the audio_embedding contract")
    assert problems[1].startswith("input codes is not part of the audio_embedding contract")


def test_depthformer_granularities(tmp_path: Path) -> None:
    inputs, outputs = _specs(g.depthformer(), tmp_path)
    step = match_role("depthformer", inputs, outputs, g.CONFIG, {"granularity": "codebook_step"})
    assert step.problems == ()
    assert ("new_keys", "past_keys") in step.binding.feedback
    assert ("depth_slices", "depth_slices_in") in step.binding.feedback
    frame = match_role("depthformer", inputs, outputs, g.CONFIG, {"granularity": "frame"})
    assert any("input uniform is missing" in p for p in frame.problems)
    assert contract_for("depthformer", {"granularity": "frame"}).outputs[0].key == "audio_codes"
    with pytest.raises(ContractError, match="'chunk' is not one of codebook_step, frame"):
        contract_for("depthformer", {"granularity": "chunk"})
    with pytest.raises(ContractError, match="'vocoder' is not a graph role"):
        contract_for("vocoder")


def test_depthformer_cache_dims_come_from_the_config(tmp_path: Path) -> None:
    inputs, outputs = _specs(g.depthformer(), tmp_path)
    cfg = {**g.CONFIG}
    del cfg["depthformer_head_dim"]
    cfg["depthformer_heads"] = 4  # 8 / 4 = 2, but the graph has head_dim 4
    problems = match_role("depthformer", inputs, outputs, cfg).problems
    assert any(
        "past_keys axis 4 is 4, expected config depthformer_head_dim = 2" in p for p in problems
    )
