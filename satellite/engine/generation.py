"""Generation: the two modes of LFM2-Audio as generators of events, each stamped with
`time.monotonic()` the moment it exists.

Sequential (ASR, TTS): text until `<|audio_start|>` (128), then audio frames until one whose
first code is end-of-audio (2048), then text again; `<|im_end|>` (7) is yielded and ends the
turn.

Interleaved (conversation): up to `n_text` (6) text tokens, then up to `n_audio` (12) audio
frames, and so on; after `<|text_end|>` (130) audio runs to the end of the turn; `<|im_end|>`
ends the turn without being yielded. The budget of the current modality is counted down on
every decoder step; an end-of-audio frame switches to text *without* renewing the budget (the
budget check comes first), so the next text run has what is left of the audio budget.

An end-of-audio frame is yielded with all its codes set to 2048, and that frame (not the
sampled one) is what the decoder is fed, as in the reference. The step budget
(`max_new_tokens`) counts decoder runs, the first (the prompt) included.

Every sampled token is queued on the decoder (`Decoder.push`) before it is yielded and run at
the next step, so when the generator ends (or is closed early) the decoder's queue holds
whatever was yielded but not yet run; the conversation feeds it with the next turn. The one
exception is the `<|im_end|>` that ends a sequential turn: the turn's closing tokens
(`<|im_end|>\n`) stand for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from satellite.engine.decoder import Backbone, ContextFullError
from satellite.engine.depthformer import Depthformer
from satellite.engine.events import AudioFrame, Event, StopReason, TextToken, TurnEnd
from satellite.engine.model import Embeddings
from satellite.engine.sampling import GREEDY, INTERLEAVED_AUDIO, Sampler, Sampling
from satellite.engine.textstream import TextStream

_LOG = logging.getLogger("satellite.engine.generation")

IM_END = 7
AUDIO_START = 128
TEXT_END = 130

Mode = Literal["sequential", "interleaved"]


@dataclass(frozen=True)
class GenerationConfig:
    mode: Mode
    max_new_tokens: int = 1024
    text: Sampling = GREEDY
    audio: Sampling = INTERLEAVED_AUDIO
    n_text: int = 6
    """Interleaved mode: text tokens per run."""
    n_audio: int = 12
    """Interleaved mode: audio frames per run."""

    def __post_init__(self) -> None:
        if self.mode not in ("sequential", "interleaved"):
            raise ValueError(f"mode {self.mode!r} is not sequential or interleaved")
        if self.max_new_tokens < 1 or self.n_text < 1 or self.n_audio < 1:
            raise ValueError("max_new_tokens, n_text and n_audio must be >= 1")


def generate(
    decoder: Backbone,
    embeddings: Embeddings,
    depthformer: Depthformer,
    sampler: Sampler,
    config: GenerationConfig,
    text_stream: TextStream | None = None,
) -> Iterator[Event]:
    """Run the turn whose prompt is queued on `decoder`; yields TextToken and AudioFrame
    events, then one TurnEnd."""
    interleaved = config.mode == "interleaved"
    end_of_audio = embeddings.codebook_size - 1
    audio = False
    left = config.n_text
    text_done = False
    texts = frames = steps = 0
    reason: StopReason = "max_new_tokens"
    stream = text_stream or TextStream(None)
    while steps < config.max_new_tokens:
        left -= 1
        try:
            out = decoder.step(logits=not audio)
        except ContextFullError as err:
            _LOG.warning("%s: the turn stops here", err)
            reason = "context_full"
            break
        steps += 1
        if not audio:
            assert out.logits is not None
            token = sampler(out.logits, config.text)
            now = time.monotonic()
            if interleaved and token == IM_END:
                reason = "end_of_turn"
                break
            texts += 1
            event = TextToken(token=token, text=stream.push(token), time=now)
            if not interleaved and token == IM_END:
                reason = "end_of_turn"  # yielded, not run: the turn's closing tokens hold it
                yield event
                break
            decoder.push(embeddings.text([token]))
            yield event
            if not interleaved:
                if token == AUDIO_START:
                    audio = True
            else:
                if token == TEXT_END:
                    text_done = True
                if left == 0 or text_done:
                    audio, left = True, config.n_audio
        else:
            assert out.hidden is not None
            codes = depthformer.frame(out.hidden, config.audio, sampler)
            now = time.monotonic()
            if interleaved and left == 0 and not text_done:
                audio, left = False, config.n_text
            eoa = codes[0] == end_of_audio
            if eoa:
                codes = [end_of_audio] * len(codes)
                audio = False
            frames += 1
            decoder.push(embeddings.frames([codes]))
            yield AudioFrame(codes=tuple(codes), time=now, end_of_audio=eoa)
    yield TurnEnd(
        reason=reason,
        text_tokens=texts,
        audio_frames=frames,
        steps=steps,
        context_used=decoder.length + decoder.pending_length,
        time=time.monotonic(),
    )
