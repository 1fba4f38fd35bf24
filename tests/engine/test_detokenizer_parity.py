"""The audio_detokenizer graph against liquid-audio's `LFM2AudioDetokenizer` (sdpa, its sliding
window mask) on the tiny detokenizer: the STFT features before the ISTFT, max abs error <= 1e-4,
on inputs shorter and longer than the 30-position window."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from lfm_toolchain.config import tiny
from lfm_toolchain.detokenizer import build_audio_detokenizer
from lfm_toolchain.onnx_graph import ExternalData, GraphBuilder, save
from lfm_toolchain.weights import random_detokenizer_weights
from reference import TINY_SEED, liquid_audio, load_weights

from satellite.engine.sessions import plain_session_options

pytestmark = pytest.mark.parity

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return dict(random_detokenizer_weights(tiny(), TINY_SEED))


@pytest.fixture(scope="module")
def reference(weights: dict[str, np.ndarray]) -> Any:
    from transformers import Lfm2Config

    la = liquid_audio()
    torch.manual_seed(0)
    det = la.detokenizer.LFM2AudioDetokenizer(
        Lfm2Config(**tiny().detokenizer.backbone.reference_kwargs())
    )
    load_weights(det, weights)
    det.lfm.set_attn_implementation("sdpa")  # eager ignores the boolean window mask
    return det.float().eval()


@pytest.fixture(scope="module")
def session(
    tmp_path_factory: pytest.TempPathFactory, weights: dict[str, np.ndarray]
) -> ort.InferenceSession:
    out = tmp_path_factory.mktemp("detokenizer")
    data = ExternalData(out / "audio_detokenizer.onnx_data")
    model = build_audio_detokenizer(GraphBuilder("audio_detokenizer", data), tiny(), weights)
    data.close()
    save(model, out / "audio_detokenizer.onnx")
    path = str(out / "audio_detokenizer.onnx")
    return ort.InferenceSession(path, plain_session_options(), providers=["CPUExecutionProvider"])


def reference_features(det: Any, codes: np.ndarray) -> np.ndarray:
    """`LFM2AudioDetokenizer.forward` up to `lin` (its ISTFT is the caller's job here)."""
    with torch.no_grad():
        x = det.emb(torch.from_numpy(codes))
        x = torch.nn.functional.interpolate(x.mT, 6 * x.shape[1], mode="nearest-exact").mT
        idx = torch.arange(x.shape[1])
        d_idx = idx - idx[:, None]
        mask = torch.logical_and(d_idx <= 0, d_idx > -det.sliding_window_size)[None, None, ...]
        hidden = det.lfm(inputs_embeds=x, attention_mask=mask, use_cache=False).last_hidden_state
        return det.lin(hidden).numpy()


@pytest.mark.parametrize("frames", [1, 4, 13])
def test_stft_features(session: ort.InferenceSession, reference: Any, frames: int) -> None:
    """13 frames = 78 positions: well past the 30-position window."""
    codes = np.random.default_rng(frames).integers(0, 2048, size=(1, 8, frames))
    (got,) = session.run(None, {"audio_codes": codes})
    want = reference_features(reference, codes)
    assert got.shape == want.shape == (1, 6 * frames, 1282)
    error = float(np.max(np.abs(got - want)))
    assert error <= TOLERANCE, f"{frames} frames: max abs error {error:.3g} > {TOLERANCE:g}"


def test_batch(session: ort.InferenceSession, reference: Any) -> None:
    codes = np.random.default_rng(7).integers(0, 2048, size=(2, 8, 6))
    (got,) = session.run(None, {"audio_codes": codes})
    error = float(np.max(np.abs(got - reference_features(reference, codes))))
    assert error <= TOLERANCE, f"batch of 2: max abs error {error:.3g} > {TOLERANCE:g}"
