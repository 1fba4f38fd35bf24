"""The audio_encoder graph (FastConformer + adapter) against liquid-audio's `ConformerEncoder`
and `audio_adapter` on the tiny model: max abs error <= 1e-4 on every valid frame, for the
mel lengths `ChatState` produces (1 s -> 101 frames -> 13 embeddings) and a padded batch."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from lfm_toolchain.encoder import build_audio_encoder
from lfm_toolchain.onnx_graph import ExternalData, GraphBuilder, save
from reference import tiny_reference

from satellite.engine.sessions import plain_session_options

pytestmark = pytest.mark.parity

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> ort.InferenceSession:
    config, weights, _ = tiny_reference()
    out = tmp_path_factory.mktemp("encoder")
    data = ExternalData(out / "audio_encoder.onnx_data")
    model = build_audio_encoder(GraphBuilder("audio_encoder", data), config, weights)
    data.close()
    save(model, out / "audio_encoder.onnx")
    return ort.InferenceSession(
        str(out / "audio_encoder.onnx"), plain_session_options(), providers=["CPUExecutionProvider"]
    )


def compare(session: ort.InferenceSession, lengths: list[int], seed: int) -> None:
    _, _, model = tiny_reference()
    frames = max(lengths)
    mel = np.random.default_rng(seed).standard_normal((len(lengths), frames, 128))
    mel = mel.astype(np.float32)
    for b, n in enumerate(lengths):
        mel[b, n:] = 0.0
    lens = np.array(lengths, dtype=np.int64)
    got, got_lens = session.run(None, {"mel_spectrogram": mel, "mel_lengths": lens})
    with torch.no_grad():
        encoded, want_lens = model.conformer(torch.from_numpy(mel).mT, torch.from_numpy(lens))
        want = model.audio_adapter(encoded.mT).numpy()
    assert got_lens.tolist() == want_lens.tolist() == [-(-n // 8) for n in lengths]
    assert got.shape == want.shape
    for b, n in enumerate(got_lens.tolist()):
        error = float(np.max(np.abs(got[b, :n] - want[b, :n])))
        assert error <= TOLERANCE, f"lengths {lengths}, item {b}: max abs error {error:.3g}"


# 3 frames is the shortest input the front end makes (320 samples, 20 ms); 1 is the
# shortest the graph accepts at all.
@pytest.mark.parametrize("frames", [101, 151, 9, 64, 3, 1])
def test_single_utterance(session: ort.InferenceSession, frames: int) -> None:
    compare(session, [frames], seed=frames)


def test_padded_batch(session: ort.InferenceSession) -> None:
    """Padding is masked as in the reference (subsampling, attention, conv module)."""
    compare(session, [77, 50, 23], seed=5)
