"""Choosing a token from logits: greedy, or temperature with an optional top-k cut, seeded.

The rule is the reference's (`LFM2AudioModel._sample_text_token` / `_sample_audio_frame`):
greedy (the first largest logit) when the temperature is None or <= 0 or top_k is 1;
otherwise logits / temperature, every logit below the k-th largest dropped (ties with it kept),
softmax, one draw. Draws come from a numpy generator seeded once per conversation, so the same
seed, inputs and model give the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Sampling:
    temperature: float | None = None
    top_k: int | None = None

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, not {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature is None or self.temperature <= 0 or self.top_k == 1


GREEDY = Sampling()
TEXT_DEFAULT = GREEDY
"""Text is greedy by default (DESIGN §3.1)."""
INTERLEAVED_AUDIO = Sampling(temperature=1.0, top_k=4)
"""Audio of a conversation (interleaved mode)."""
TTS_AUDIO = Sampling(temperature=0.8, top_k=64)
"""Audio of text-to-speech (sequential mode)."""


class Sampler:
    """Draws tokens; one per conversation, seeded (None: fresh entropy)."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def __call__(self, logits: npt.NDArray[np.floating], sampling: Sampling) -> int:
        """The chosen index of the 1-D `logits`."""
        if sampling.greedy:
            return int(np.argmax(logits))
        assert sampling.temperature is not None
        scaled = np.asarray(logits, dtype=np.float64) / sampling.temperature
        k = sampling.top_k
        if k is not None and k < scaled.size:
            threshold = np.partition(scaled, scaled.size - k)[scaled.size - k]
            candidates = np.flatnonzero(scaled >= threshold)
        else:
            candidates = np.arange(scaled.size)
        chosen = scaled[candidates]
        weights = np.exp(chosen - chosen.max())
        cumulative = np.cumsum(weights)
        draw = self.rng.random() * cumulative[-1]
        index = int(np.searchsorted(cumulative, draw, side="right"))
        return int(candidates[min(index, candidates.size - 1)])
