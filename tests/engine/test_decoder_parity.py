"""The decoder graph against the reference backbone (transformers `Lfm2Model` inside
liquid-audio's `LFM2AudioModel`) on the tiny model: same weights, max abs error <= 1e-4.

Incremental decoding (prefill, single steps, multi-token chunks on a filled cache) is compared
with the reference's *full-sequence* forward over the same tokens: transformers 4.57's own
multi-token conv-cache path is wrong (DESIGN §3.3), its single-step path is checked separately.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from lfm_toolchain.cache import cached_model
from lfm_toolchain.decoder import cache_names
from reference import TINY_SEED, tiny_reference

from satellite.engine.sessions import plain_session_options
from satellite.modeldir.manifest import read_manifest

pytestmark = pytest.mark.parity

TOLERANCE = 1e-4
Feeds = dict[str, np.ndarray]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return cached_model("tiny", seed=TINY_SEED)


@pytest.fixture(scope="module")
def session(model_dir: Path) -> ort.InferenceSession:
    options = plain_session_options()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        str(model_dir / "decoder.onnx"), options, providers=["CPUExecutionProvider"]
    )


def empty_cache() -> Feeds:
    config, _, _ = tiny_reference()
    b = config.backbone
    past, _ = cache_names(b)
    return {
        name: np.zeros(
            (1, b.hidden_size, b.conv_cache)
            if name.startswith("past_conv")
            else (1, b.num_key_value_heads, 0, b.head_dim),
            dtype=np.float32,
        )
        for name in past
    }


class Decoder:
    """Runs the decoder graph, carrying its caches from call to call."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.names = [o.name for o in session.get_outputs()]
        self.cache = empty_cache()
        self.length = 0

    def __call__(self, embeds: np.ndarray) -> dict[str, np.ndarray]:
        self.length += embeds.shape[1]
        feeds = {
            "inputs_embeds": embeds,
            "attention_mask": np.ones((1, self.length), dtype=np.int64),
            **self.cache,
        }
        out = dict(zip(self.names, self.session.run(None, feeds), strict=True))
        config, _, _ = tiny_reference()
        past, present = cache_names(config.backbone)
        self.cache = {p: out[q] for p, q in zip(past, present, strict=True)}
        return out


def reference_forward(embeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Full-sequence reference: final-normed hidden states and tied-head logits."""
    _, _, model = tiny_reference()
    with torch.no_grad():
        hidden = model.lfm(
            inputs_embeds=torch.from_numpy(embeds), use_cache=False
        ).last_hidden_state
        logits = torch.nn.functional.linear(hidden, model.lfm.embed_tokens.weight)
    return hidden.numpy(), logits.numpy()


def embeddings(length: int, seed: int) -> np.ndarray:
    config, _, _ = tiny_reference()
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, length, config.backbone.hidden_size)).astype(np.float32)


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> float:
    assert got.shape == want.shape, f"{what}: shape {got.shape}, reference {want.shape}"
    error = float(np.max(np.abs(got - want)))
    assert error <= TOLERANCE, f"{what}: max abs error {error:.3g} > {TOLERANCE:g}"
    return error


def test_graph_interface(model_dir: Path, session: ort.InferenceSession) -> None:
    config, _, _ = tiny_reference()
    past, present = cache_names(config.backbone)
    assert [i.name for i in session.get_inputs()] == ["inputs_embeds", "attention_mask", *past]
    assert [o.name for o in session.get_outputs()] == ["logits", "hidden_states", *present]
    assert past[:3] == ["past_conv.0", "past_conv.1", "past_key_values.2.key"]
    assert present[2:4] == ["present.2.key", "present.2.value"]
    manifest = read_manifest(model_dir)
    entry = manifest.graphs["decoder"]
    assert [t.name for t in entry.inputs] == [i.name for i in session.get_inputs()]
    assert entry.inputs[1].dtype == "int64"
    assert entry.outputs[0].shape == ["batch_size", "sequence_length", config.backbone.vocab_size]


def test_graph_uses_fused_operators(model_dir: Path) -> None:
    import onnx

    graph = onnx.load(str(model_dir / "decoder.onnx"), load_external_data=False).graph
    ops = {node.op_type for node in graph.node}
    config, _, _ = tiny_reference()
    counts = {op: sum(n.op_type == op for n in graph.node) for op in ops}
    assert counts["GroupQueryAttention"] == len(config.backbone.attention_layers)
    assert counts["SkipSimplifiedLayerNormalization"] == 2 * config.backbone.num_hidden_layers
    assert "Gemm" not in ops, "the 4-bit quantizer skips Gemm: projections must be MatMul"


def test_full_sequence(session: ort.InferenceSession) -> None:
    embeds = embeddings(11, seed=1)
    out = Decoder(session)(embeds)
    hidden, logits = reference_forward(embeds)
    assert_close(out["hidden_states"], hidden, "hidden_states")
    assert_close(out["logits"], logits, "logits")


def test_prefill_then_single_steps(session: ort.InferenceSession) -> None:
    prompt, steps = 5, 6
    embeds = embeddings(prompt + steps, seed=2)
    hidden, logits = reference_forward(embeds)
    decoder = Decoder(session)
    out = decoder(embeds[:, :prompt])
    assert_close(out["hidden_states"], hidden[:, :prompt], "prefill hidden_states")
    for t in range(prompt, prompt + steps):
        out = decoder(embeds[:, t : t + 1])
        assert_close(out["hidden_states"], hidden[:, t : t + 1], f"step {t} hidden_states")
        assert_close(out["logits"], logits[:, t : t + 1], f"step {t} logits")


def test_chunks_on_a_filled_cache(session: ort.InferenceSession) -> None:
    """Multi-token chunks after a prefill (e.g. a user turn appended to a cached prompt)."""
    sizes = [4, 5, 1, 3, 7]
    embeds = embeddings(sum(sizes), seed=3)
    hidden, logits = reference_forward(embeds)
    decoder = Decoder(session)
    start = 0
    for size in sizes:
        out = decoder(embeds[:, start : start + size])
        stop = start + size
        assert_close(out["hidden_states"], hidden[:, start:stop], f"chunk {start}:{stop} hidden")
        assert_close(out["logits"], logits[:, start:stop], f"chunk {start}:{stop} logits")
        start = stop


def test_long_context_positions(session: ort.InferenceSession) -> None:
    """RoPE tables at positions far from zero: a 700-token prompt, then steps."""
    embeds = embeddings(704, seed=4)
    hidden, _ = reference_forward(embeds)
    decoder = Decoder(session)
    decoder(embeds[:, :700])
    for t in range(700, 704):
        out = decoder(embeds[:, t : t + 1])
        assert_close(out["hidden_states"], hidden[:, t : t + 1], f"step {t} hidden_states")


def test_cache_contents_match_the_reference(session: ort.InferenceSession) -> None:
    """present_conv = the last 3 inputs of the conv (B*x); present.{i}.key holds normed, rotated
    keys [B, kv_heads, T, head_dim]: the same state as transformers' Lfm2HybridConvCache."""
    config, _, model = tiny_reference()
    embeds = embeddings(6, seed=5)
    decoder = Decoder(session)
    out = decoder(embeds)
    with torch.no_grad():
        cache: Any = model.lfm(
            inputs_embeds=torch.from_numpy(embeds), use_cache=True
        ).past_key_values
    for i in range(config.backbone.num_hidden_layers):
        if config.backbone.is_attention(i):
            assert_close(out[f"present.{i}.key"], cache.key_cache[i].numpy(), f"present.{i}.key")
            assert_close(
                out[f"present.{i}.value"], cache.value_cache[i].numpy(), f"present.{i}.value"
            )
        else:
            assert_close(out[f"present_conv.{i}"], cache.conv_cache[i].numpy(), f"present_conv.{i}")


def test_reference_single_step_agrees_with_full_forward() -> None:
    """The reference's own single-step cache path (used by its generate loops) matches its full
    forward, so a step-by-step comparison would give the same verdict."""
    _, _, model = tiny_reference()
    embeds = embeddings(8, seed=6)
    hidden, _ = reference_forward(embeds)
    with torch.no_grad():
        result = model.lfm(inputs_embeds=torch.from_numpy(embeds[:, :5]), use_cache=True)
        cache = result.past_key_values
        for t in range(5, 8):
            step = model.lfm(
                inputs_embeds=torch.from_numpy(embeds[:, t : t + 1]),
                past_key_values=cache,
                use_cache=True,
            )
            cache = step.past_key_values
            assert_close(
                step.last_hidden_state.numpy(), hidden[:, t : t + 1], f"reference step {t}"
            )
