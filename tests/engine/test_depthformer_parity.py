"""The depthformer graph (one codebook step) against liquid-audio's depthformer on the tiny
model: per-step logits with the same codes fed back, max abs error <= 1e-4; greedy frames equal
the reference's `_sample_audio_frame`."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from lfm_toolchain.depthformer import INPUTS, OUTPUTS, build_depthformer
from lfm_toolchain.onnx_graph import ExternalData, GraphBuilder, save
from reference import tiny_reference

from satellite.engine.sessions import plain_session_options

pytestmark = pytest.mark.parity

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> ort.InferenceSession:
    config, weights, _ = tiny_reference()
    out = tmp_path_factory.mktemp("depthformer")
    data = ExternalData(out / "depthformer.onnx_data")
    model = build_depthformer(GraphBuilder("depthformer", data), config, weights)
    data.close()
    save(model, out / "depthformer.onnx")
    return ort.InferenceSession(
        str(out / "depthformer.onnx"), plain_session_options(), providers=["CPUExecutionProvider"]
    )


def run_frame(
    session: ort.InferenceSession, hidden: np.ndarray, codes: list[int] | None
) -> tuple[list[np.ndarray], list[int]]:
    """8 steps; feeds back `codes` (or the argmax where None). Returns logits and codes."""
    config, _, _ = tiny_reference()
    df = config.depthformer
    slices = np.zeros((1, config.codebooks, df.dim), dtype=np.float32)
    keys = np.zeros((df.layers, 1, df.num_kv_heads, 0, df.head_dim), dtype=np.float32)
    values = keys.copy()
    prev = np.array([2048], dtype=np.int64)  # ignored at step 0, whatever it holds
    all_logits, chosen = [], []
    for step in range(config.codebooks):
        feeds = {
            "hidden_states": hidden[None, :],
            "depth_slices_in": slices,
            "step_idx": np.array(step, dtype=np.int64),
            "prev_token": prev,
            "past_keys": keys,
            "past_values": values,
            "seqlens_k": np.array([step], dtype=np.int32),
            "total_seq_len": np.array(step + 1, dtype=np.int32),
        }
        logits, slices, keys, values = session.run(None, feeds)
        assert keys.shape == (df.layers, 1, df.num_kv_heads, step + 1, df.head_dim)
        code = int(np.argmax(logits[0])) if codes is None else codes[step]
        all_logits.append(logits[0])
        chosen.append(code)
        prev = np.array([code], dtype=np.int64)
    return all_logits, chosen


def reference_frame_logits(hidden: np.ndarray, codes: list[int]) -> list[np.ndarray]:
    """The reference's per-codebook logits with `codes` fed back (its sampling loop, unrolled)."""
    config, _, model = tiny_reference()
    out = []
    with torch.no_grad():
        slices = model.depth_linear(torch.from_numpy(hidden)).reshape(config.codebooks, -1)
        previous = torch.zeros_like(slices[0])
        cache = None
        for i in range(config.codebooks):
            h, cache = model.depthformer.forward_cached(
                (slices[i] + previous)[None, None, :], cache
            )
            out.append(model.depth_embeddings[i].get_logits(h.squeeze()).numpy())
            previous = model.depth_embeddings[i](torch.tensor([codes[i]])).squeeze()
    return out


def hidden_state(seed: int) -> np.ndarray:
    config, _, _ = tiny_reference()
    rng = np.random.default_rng(seed)
    return rng.standard_normal(config.backbone.hidden_size).astype(np.float32)


def test_interface(session: ort.InferenceSession) -> None:
    assert tuple(i.name for i in session.get_inputs()) == INPUTS
    assert tuple(o.name for o in session.get_outputs()) == OUTPUTS


def test_greedy_frame_matches_the_reference(session: ort.InferenceSession) -> None:
    _, _, model = tiny_reference()
    hidden = hidden_state(1)
    logits, codes = run_frame(session, hidden, None)
    with torch.no_grad():
        want = model._sample_audio_frame(torch.from_numpy(hidden), temperature=None).tolist()
    assert codes == want
    for step, (got, ref) in enumerate(
        zip(logits, reference_frame_logits(hidden, codes), strict=True)
    ):
        error = float(np.max(np.abs(got - ref)))
        assert error <= TOLERANCE, f"step {step}: max abs error {error:.3g} > {TOLERANCE:g}"


def test_fed_codes_including_end_of_audio(session: ort.InferenceSession) -> None:
    """Sampled (non-greedy) codes are fed back as given; 2048 is a valid code to embed."""
    hidden = hidden_state(2)
    codes = [17, 2048, 0, 2047, 1024, 5, 2048, 99]
    logits, _ = run_frame(session, hidden, codes)
    for step, (got, ref) in enumerate(
        zip(logits, reference_frame_logits(hidden, codes), strict=True)
    ):
        assert got.shape == (2049,)
        error = float(np.max(np.abs(got - ref)))
        assert error <= TOLERANCE, f"step {step}: max abs error {error:.3g} > {TOLERANCE:g}"


def test_frames_are_independent(session: ort.InferenceSession) -> None:
    """The cache restarts each frame: a frame's result does not depend on the one before."""
    first, _ = run_frame(session, hidden_state(3), None)
    run_frame(session, hidden_state(4), None)
    again, _ = run_frame(session, hidden_state(3), None)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
