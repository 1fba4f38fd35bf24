"""The benchmark's spoken query and the chat template around it as token ids."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from satellite.audio.convert import resample
from satellite.audio.wavfile import read_wav
from satellite.bench.harness import BenchError, FloatArray
from satellite.engine.template import BOS, IM_END, IM_START, INTERLEAVED_PROMPT, Tokens

QUERY_TEXT = "What will the weather be like tomorrow morning? Do I need an umbrella?"
QUERY_SECONDS = 4.0
INPUT_RATE = 16_000


@dataclass(frozen=True)
class Query:
    samples: FloatArray
    """Mono float32 at 16 kHz, exactly `seconds` long."""
    seconds: float
    speech_seconds: float
    """How much of it is speech (the rest is trailing silence)."""
    source: str


def synthetic_speech(seconds: float, rate: int = INPUT_RATE, seed: int = 0) -> FloatArray:
    """A speech-like stand-in: a 120 Hz voice with formant-ish harmonics, four syllables a
    second, some breath noise. Seeded."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    pitch = 120 + 15 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5
    noise = 0.02 * rng.standard_normal(t.size)
    return (0.2 * voice * syllables + noise).astype(np.float32)


def espeak_speech(
    text: str, voice: str = "en-us", speed: int | None = None, rate: int = INPUT_RATE
) -> FloatArray:
    """`text` spoken by espeak-ng (`voice`, `speed` words a minute or its default), at `rate`.
    Raises BenchError when espeak-ng is missing or fails."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise BenchError("espeak-ng is not installed (script/setup installs it)")
    with tempfile.TemporaryDirectory(prefix="lfm-bench-") as tmp:
        source, wav = Path(tmp) / "text.txt", Path(tmp) / "speech.wav"
        source.write_text(text, encoding="utf-8")
        pace = [] if speed is None else ["-s", str(speed)]
        cmd = [espeak, "-v", voice, *pace, "-f", str(source), "-w", str(wav)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0 or not wav.is_file():
            raise BenchError(
                f"espeak-ng failed on voice {voice}: {done.stderr.strip() or done.returncode}"
            )
        audio = read_wav(wav)
    return resample(audio.samples, audio.rate, rate)


def spoken_query(
    seconds: float = QUERY_SECONDS, rate: int = INPUT_RATE, text: str = QUERY_TEXT
) -> Query:
    """`text` spoken by espeak-ng, resampled to `rate`, padded with silence (or cut) to
    `seconds`; a synthetic stand-in when espeak-ng is not installed (the source says which)."""

    n = round(seconds * rate)
    if shutil.which("espeak-ng") is None:
        speech = synthetic_speech(seconds, rate)
        source = "synthetic speech-like signal (espeak-ng is not installed)"
    else:
        speech = espeak_speech(text, rate=rate)
        source = f"espeak-ng en-us resampled to {rate} Hz: {text!r}"
    speech_seconds = min(speech.size, n) / rate
    samples = np.zeros(n, np.float32)
    samples[: min(n, speech.size)] = speech[:n]
    return Query(samples, seconds, round(speech_seconds, 3), source)


@dataclass(frozen=True)
class PromptIds:
    """The interleaved-conversation template around one spoken user turn, as token ids:
    `system` (`<|startoftext|><|im_start|>system\\n...<|im_end|>\\n`), `user_open`
    (`<|im_start|>user\\n`), the audio, `user_close` (`<|im_end|>\\n<|im_start|>assistant\\n`)."""

    system: tuple[int, ...]
    user_open: tuple[int, ...]
    user_close: tuple[int, ...]
    turn_end: tuple[int, ...]
    source: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PromptIds:
        return cls(
            system=tuple(raw["system"]),
            user_open=tuple(raw["user_open"]),
            user_close=tuple(raw["user_close"]),
            turn_end=tuple(raw["turn_end"]),
            source=str(raw["source"]),
        )


STAND_IN_PROMPT = PromptIds(
    system=(1, 6, 20, 10, 413, 400, 443, 195, 356, 401, 302, 143, 7, 10),
    user_open=(6, 21, 10),
    user_close=(7, 10, 6, 22, 10),
    turn_end=(7, 10),
    source="stand-in ids (the model directory has no tokenizer)",
)
"""Ids of the real template's lengths, for a model directory without a tokenizer."""


def prompt_ids(tokenizer: Any) -> PromptIds:
    """The template's ids from a `tokenizers.Tokenizer` (None: STAND_IN_PROMPT)."""
    if tokenizer is None:
        return STAND_IN_PROMPT

    tokens = Tokens(tokenizer)
    close = tokens.encode(f"{IM_END}\n")
    # each piece tokenized on its own, as `satellite.engine.chat.system_prefix` does
    system = [
        *tokens.encode(BOS),
        *tokens.encode(f"{IM_START}system\n"),
        *tokens.encode(INTERLEAVED_PROMPT),
        *close,
    ]
    return PromptIds(
        system=tuple(system),
        user_open=tuple(tokens.encode(f"{IM_START}user\n")),
        user_close=(*close, *tokens.encode(f"{IM_START}assistant\n")),
        turn_end=tuple(close),
        source=f"the model's tokenizer; system prompt {INTERLEAVED_PROMPT!r}",
    )
