"""Conversation state: a multi-turn chat that keeps the decoder's cache from turn to turn.

Only what is new is ever run: the prefix (system prompt) once, when the chat is made; then per
turn the turn's own parts (token ids, speech, embeddings), plus whatever the previous turn left
queued: its closing tokens (`<|im_end|>\\n`, queued as soon as a reply ends) and, when the
reply was cut short (step budget, or the consumer closed the generator), its last token, which
was yielded but not yet run. The cache after the prefix is kept, so `reset` (forget the
conversation, keep the system prompt) costs nothing.

Context limit: when a turn's input plus `reserve` positions for the reply does not fit in what
is left, the history is dropped (back to the prefix) before the turn, and the turn's first
event says so (`ContextReset`); a reply that fills the context ends with
`TurnEnd(reason="context_full")`. Input that does not fit even after a reset raises
ContextFullError.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from satellite.engine.backbone import open_backbone
from satellite.engine.decoder import DEFAULT_CHUNK, ContextFullError, DecoderState
from satellite.engine.depthformer import Depthformer
from satellite.engine.encoder import AudioEncoder
from satellite.engine.events import Event
from satellite.engine.generation import GenerationConfig, Mode, generate
from satellite.engine.model import FloatArray, Model
from satellite.engine.sampling import (
    INTERLEAVED_AUDIO,
    TEXT_DEFAULT,
    TTS_AUDIO,
    Sampler,
    Sampling,
)
from satellite.engine.template import BOS, IM_END, IM_START
from satellite.engine.textstream import TextStream

_LOG = logging.getLogger("satellite.engine.chat")

DEFAULT_CONTEXT = 8192
"""Context used when neither the caller nor the model gives a limit."""
DEFAULT_RESERVE = 256
"""Positions kept free for a reply when deciding whether to drop the history."""


@dataclass(frozen=True)
class Speech:
    """A closed utterance: mono float samples in [-1, 1] at the model's input rate (16 kHz)."""

    samples: npt.NDArray[np.floating]


@dataclass(frozen=True)
class Embeds:
    """Ready decoder inputs [n, hidden] (e.g. speech encoded ahead of time)."""

    values: FloatArray


Part = Sequence[int] | Speech | Embeds
"""Token ids, speech, or embeddings; a turn is a sequence of them, run in order."""


@dataclass(frozen=True)
class ContextReset:
    """The history was dropped before this turn to make room (the prefix is kept)."""

    dropped: int
    """Positions forgotten."""
    time: float


class Chat:
    """One conversation on a loaded model. Not thread-safe; one turn at a time."""

    def __init__(
        self,
        model: Model,
        *,
        prefix: Sequence[Part] = (),
        turn_end: Sequence[int] | None = None,
        context_length: int | None = None,
        reserve: int = DEFAULT_RESERVE,
        seed: int | None = None,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        """`prefix` is run now and kept (the system prompt); `turn_end` are the ids closing a
        turn (`<|im_end|>\\n`; default: from the model's tokenizer); `context_length` caps the
        decoder's context (default and maximum: the model's); `seed` seeds sampling."""
        self.model = model
        config = model.manifest.config
        limit = model.max_context
        if context_length is None:
            context_length = limit or DEFAULT_CONTEXT
        elif limit is not None and context_length > limit:
            raise ValueError(f"context_length {context_length} exceeds the model's {limit}")
        self.decoder = open_backbone(model, context_length, chunk)
        self.depthformer = Depthformer(model.graph("depthformer"), config)
        self._encoder: AudioEncoder | None = None
        self.sampler = Sampler(seed)
        self.reserve = reserve
        if turn_end is None:
            tokenizer = model.tokenizer()
            if tokenizer is None:
                raise ValueError("turn_end is needed: the model directory has no tokenizer")
            turn_end = list(tokenizer.encode("<|im_end|>\n", add_special_tokens=False).ids)
        self.turn_end = [int(t) for t in turn_end]
        self.n_text = int(config.get("interleaved_n_text", 6))
        self.n_audio = int(config.get("interleaved_n_audio", 12))
        self._busy = False
        self.turns = 0
        for part in prefix:
            self.decoder.push(self.embed(part))
        if self.decoder.pending_length:
            self.decoder.step(logits=False)
        self._start = self.decoder.snapshot()

    @property
    def encoder(self) -> AudioEncoder:
        if self._encoder is None:
            self._encoder = AudioEncoder(
                self.model.graph("audio_encoder"), self.model.manifest.config
            )
        return self._encoder

    @property
    def context_length(self) -> int:
        return self.decoder.context_length

    @property
    def context_used(self) -> int:
        """Positions held, queued input included."""
        return self.decoder.length + self.decoder.pending_length

    @property
    def prefix_length(self) -> int:
        return self._start.length

    def embed(self, part: Part) -> FloatArray:
        """A part as decoder inputs [n, hidden]."""
        if isinstance(part, Speech):
            return self.encoder.encode(part.samples)
        if isinstance(part, Embeds):
            return np.asarray(part.values, dtype=np.float32)
        return self.model.embeddings.text(list(part))

    def reset(self) -> None:
        """Forget the conversation; keep the prefix (already run)."""
        if self._busy:
            raise RuntimeError("cannot reset while a turn is being generated; close it first")
        self.decoder.restore(self._start)
        self.turns = 0

    def checkpoint(self) -> DecoderState:
        """The conversation as it is now, to come back to with `rollback` (e.g. after work
        done speculatively before the user finished speaking). Costs no copy on onnxruntime
        (the cache arrays are shared); llama.cpp's runner copies its state out (12 kB a
        position on the full model)."""
        if self._busy:
            raise RuntimeError("cannot checkpoint while a turn is being generated")
        return self.decoder.snapshot()

    def rollback(self, state: DecoderState) -> None:
        """Back to a `checkpoint` of this chat."""
        if self._busy:
            raise RuntimeError("cannot roll back while a turn is being generated; close it first")
        self.decoder.restore(state)

    def speculate(self, parts: Sequence[Part]) -> DecoderState:
        """Run `parts`, the start of a user turn, now (e.g. the user's speech while they
        pause) and return the checkpoint from before them. Then either `turn(rest, config)`
        with the rest of the turn, as if all had been given at once, or `rollback(state)` if
        the user went on speaking. Dropping the history for room happens here if needed."""
        if self._busy:
            raise RuntimeError("cannot speculate while a turn is being generated")
        state = self.checkpoint()
        inputs = [self.embed(p) for p in parts]
        size = sum(x.shape[0] for x in inputs)
        self._make_room(size)
        if size > self.decoder.free:
            self.decoder.restore(state)
            raise ContextFullError(self.context_used + size, self.context_length)
        for x in inputs:
            self.decoder.push(x)
        self.decoder.step(logits=False)
        return state

    def _make_room(self, size: int) -> int:
        """Make room for `size` new positions and the reply's reserve: the conversation's
        history is dropped (back to the prefix) when they do not fit next to it. Returns the
        positions dropped (0: none); whether `size` then fits is the caller's check."""
        dropped = 0
        if size + self.reserve > self.decoder.free and self.decoder.length > self._start.length:
            dropped = self.context_used - self._start.length
            _LOG.warning(
                "context: %d of %d positions used, the turn needs %d (+%d for the reply); "
                "dropping the conversation history (%d positions)",
                self.context_used, self.context_length, size, self.reserve, dropped,
            )  # fmt: skip
            self.decoder.restore(self._start)
        return dropped

    def flush(self) -> None:
        """Run whatever is queued (a reply's closing tokens) now, e.g. while idle, so that the
        next turn starts with less to do."""
        if self._busy:
            raise RuntimeError("cannot flush while a turn is being generated")
        if self.decoder.pending_length and self.decoder.free >= 0:
            self.decoder.step(logits=False)

    def turn(
        self, parts: Sequence[Part], config: GenerationConfig
    ) -> Iterator[Event | ContextReset]:
        """Feed `parts` (the user's turn and the assistant header) and generate the reply.
        Yields ContextReset (when the history was dropped), the reply's TextToken and
        AudioFrame events, then TurnEnd. Closing the generator early ends the turn there."""
        if self._busy:
            raise RuntimeError("a turn is still being generated; finish or close it first")
        self._busy = True
        started = False
        try:
            inputs = [self.embed(p) for p in parts]
            size = sum(x.shape[0] for x in inputs)
            if dropped := self._make_room(size):
                yield ContextReset(dropped=dropped, time=time.monotonic())
            if size > self.decoder.free:
                raise ContextFullError(self.context_used + size, self.context_length)
            for x in inputs:
                self.decoder.push(x)
            started = True
            stream = TextStream(self.model.tokenizer())
            yield from generate(
                self.decoder, self.model.embeddings, self.depthformer, self.sampler, config, stream
            )
        finally:
            if started:
                self.decoder.push(self.model.embeddings.text(self.turn_end))
                self.turns += 1
            self._busy = False

    def generation_config(
        self,
        mode: Mode,
        *,
        max_new_tokens: int = 1024,
        text: Sampling = TEXT_DEFAULT,
        audio: Sampling | None = None,
    ) -> GenerationConfig:
        """A GenerationConfig for `mode` with the model's interleave numbers; audio sampling
        defaults to INTERLEAVED_AUDIO (interleaved) or TTS_AUDIO (sequential)."""
        if audio is None:
            audio = INTERLEAVED_AUDIO if mode == "interleaved" else TTS_AUDIO
        return GenerationConfig(
            mode=mode,
            max_new_tokens=max_new_tokens,
            text=text,
            audio=audio,
            n_text=self.n_text,
            n_audio=self.n_audio,
        )


class Encoder(Protocol):
    """Text -> ids, nothing added (`satellite.engine.template.Tokens`)."""

    def encode(self, text: str) -> list[int]: ...


def system_prefix(tokens: Encoder, system: str) -> list[Part]:
    """`<|startoftext|><|im_start|>system\\n{system}<|im_end|>\\n`, each piece tokenized on its
    own as liquid-audio's `ChatState` (and `template.ChatBuilder`) does."""
    return [
        tokens.encode(BOS),
        tokens.encode(f"{IM_START}system\n"),
        tokens.encode(system),
        tokens.encode(f"{IM_END}\n"),
    ]


def user_turn(tokens: Encoder, *parts: str | Speech | Embeds) -> list[Part]:
    """A user turn of text and speech parts, closed, and the assistant's header:
    `<|im_start|>user\\n{parts}<|im_end|>\\n<|im_start|>assistant\\n`."""
    pieces: list[Part] = [tokens.encode(f"{IM_START}user\n")]
    pieces += [tokens.encode(p) if isinstance(p, str) else p for p in parts]
    pieces += [tokens.encode(f"{IM_END}\n"), tokens.encode(f"{IM_START}assistant\n")]
    return pieces
