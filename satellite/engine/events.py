"""What a turn of generation yields, in order: text tokens and audio frames as the model makes
them, then one `TurnEnd` (`satellite.engine.generation`). Plain data, no model: the reply
pipeline and the benchmarks read them without loading onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

StopReason = Literal["end_of_turn", "max_new_tokens", "context_full"]

FRAME_SECONDS = 0.08
"""Audio seconds per frame."""
FRAMES_PER_SECOND = 12.5
"""Audio frames per second of speech (1 / FRAME_SECONDS)."""


@dataclass(frozen=True)
class TextToken:
    """One text token of the reply."""

    token: int
    text: str
    """Its decoded text as far as it is complete (empty for special tokens, for the first
    bytes of a character split over tokens, and without a tokenizer)."""
    time: float


@dataclass(frozen=True)
class AudioFrame:
    """One audio frame: a code per codebook (80 ms of audio)."""

    codes: tuple[int, ...]
    time: float
    end_of_audio: bool = False
    """The end-of-audio frame (all codes 2048): not audio, it closes an audio run."""


@dataclass(frozen=True)
class TurnEnd:
    """The last event of every turn."""

    reason: StopReason
    text_tokens: int
    audio_frames: int
    """Frames yielded, end-of-audio frames included."""
    steps: int
    """Decoder runs (the prompt's included)."""
    context_used: int
    """Positions in the decoder's cache (plus those queued) when the turn ended."""
    time: float


Event = TextToken | AudioFrame | TurnEnd
