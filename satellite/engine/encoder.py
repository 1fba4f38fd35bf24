"""Speech in: a closed utterance (mono float waveform at the model's input rate) -> log-mel
(`satellite.engine.mel.LogMel`) -> the `audio_encoder` graph -> one decoder embedding per 80 ms.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from satellite.engine.mel import LogMel, MelSettings
from satellite.engine.model import BoundGraph, FloatArray


class AudioEncoder:
    def __init__(self, graph: BoundGraph, config: dict[str, object]) -> None:
        self.graph = graph
        rate, mels = config.get("input_sample_rate", 16000), config.get("n_mels", 128)
        assert isinstance(rate, int) and isinstance(mels, int)
        self.sample_rate = rate
        self.mel = LogMel(MelSettings(sample_rate=rate, n_mels=mels))

    def features(self, samples: npt.ArrayLike) -> FloatArray:
        """[samples] -> [frames, n_mels] log-mel features."""
        return self.mel(samples)

    def encode_features(self, features: FloatArray) -> FloatArray:
        """[frames, n_mels] -> [ceil(frames / 8), hidden] embeddings."""
        mel = np.ascontiguousarray(features, dtype=np.float32)[None, :, :]
        lengths = np.array([mel.shape[1]], dtype=np.int64)
        embeds, counts = self.graph.run(
            ["audio_embeddings", "audio_lengths"],
            {"mel_spectrogram": mel, "mel_lengths": lengths},
        )
        count = int(np.asarray(counts).reshape(-1)[0])
        return np.asarray(embeds[0, :count], dtype=np.float32)

    def encode(self, samples: npt.ArrayLike) -> FloatArray:
        """[samples] of one utterance -> [ceil(frames / 8), hidden] embeddings."""
        return self.encode_features(self.features(samples))
