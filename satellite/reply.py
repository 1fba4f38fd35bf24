"""Spoken replies from the local model, generated off the event loop.

`Responder` owns the model's conversation (a `Chat` on the interleaved system prompt, kept
across turns until it has been idle for `satellite.conversation_timeout_seconds`) and one
worker thread. `Responder.reply(samples)` starts a turn on 16 kHz mono speech and returns a
`Reply`, an async iterator of what the worker produces, the moment it exists:

- `ReplyText`: a piece of the reply's text;
- `ReplyAudio`: a block of float32 audio at `Responder.sample_rate` (24 kHz) from the
  streaming detokenizer, one per generated frame (80 ms) in steady state;
- `ReplyDone` (last): why the turn ended, the whole text, and the engine's own timings.

`Reply.cancel()` (barge-in) stops generation before the next token; the conversation stays
consistent (the turn is closed as the model expects). A frame holding the end-of-audio code
in a codebook other than the first cannot be decoded (a random tiny model makes them, a
trained one does not); it is skipped and counted, never clamped.

Speculative work (`speculate`, while the user pauses): the speech is encoded and read into the
conversation, then the reply itself is begun and run until its first audio is out of the
detokenizer (the first text tokens and audio frame; about 0.2 s on the full-size model) and
held there. `reply(..., speculated=True)` hands over what is held at once and goes on;
`abandon` (the user spoke on) closes it and puts the conversation, the sampler's random state
and the detokenizer back as they were, so a speculation never changes what a later turn says.

Timings are `time.monotonic()` seconds. `ReplyDone.engine_first_audio` is the engine's share
of the time to first audio: from the worker taking the turn to the detokenizer returning the
first samples. Whatever the caller measures beyond that is the daemon's own overhead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from satellite.engine.asr import transcribe_one
from satellite.engine.chat import Chat, ContextReset, Speech, system_prefix, user_turn
from satellite.engine.decoder import DecoderState
from satellite.engine.detokenize import StreamingDetokenizer
from satellite.engine.detokenizers import from_model
from satellite.engine.events import FRAME_SECONDS, FRAMES_PER_SECOND, AudioFrame, TextToken, TurnEnd
from satellite.engine.framebatch import BATCH_FRAMES, Step, decoded
from satellite.engine.generation import TEXT_END
from satellite.engine.load import model_directory
from satellite.engine.model import Model
from satellite.engine.sessions import SessionConfig
from satellite.engine.template import ASR_PROMPT, INTERLEAVED_PROMPT, VOICES, Tokens, tts_prompt
from satellite.engine.tts import SpeechStream
from satellite.handoff import Handoff
from satellite.settings import Settings

_LOG = logging.getLogger("satellite.reply")

FloatArray = npt.NDArray[np.float32]
TEXT_ALLOWANCE = 64
"""Tokens beyond the audio frames a reply may take (its text runs, the end markers)."""
SPECULATED_PARTS = 2
"""A user turn's parts read speculatively: its header and the speech (its closing tokens and
the assistant's header are read when the turn is committed)."""
AHEAD_STEPS = 64
"""Most events a speculatively begun reply runs before it is held (it is held at its first
audio: 6 text tokens and one frame in interleaved mode, more when frames are skipped)."""
ASR_TOKENS = 128
"""Longest transcript of a short answer (a confirmation), in tokens."""


@dataclass(frozen=True)
class ReplyText:
    text: str
    time: float
    complete: bool = False
    """The reply's text is all in (the model closed its text run for good)."""


@dataclass(frozen=True)
class ReplyAudio:
    samples: FloatArray
    """float32 mono at the responder's sample rate."""
    time: float
    """When the detokenizer returned it (worker thread)."""


@dataclass(frozen=True)
class ReplyDone:
    reason: Literal["end_of_turn", "max_new_tokens", "context_full", "cancelled", "error"]
    text: str
    frames: int
    """Audio frames decoded."""
    skipped: int
    """Frames skipped: a code the detokenizer cannot decode (see the module docstring)."""
    audio_seconds: float
    requested: float
    """When `Responder.reply` was called."""
    engine_start: float
    """When the worker took the turn."""
    engine_first_audio: float | None
    """Seconds from `engine_start` to the first samples (None: the reply had no audio)."""
    engine_seconds: float
    """Seconds the worker spent on the turn."""
    error: str | None = None
    context_reset: bool = False
    """The conversation history was dropped to make room for this turn."""


ReplyEvent = ReplyText | ReplyAudio | ReplyDone


class Reply(Handoff[ReplyEvent]):
    """One turn in progress: `async for event in reply` until ReplyDone; `cancel()` to stop.
    The worker thread posts its events (`satellite.handoff`)."""

    def __init__(self, requested: float, batch: int = 1) -> None:
        super().__init__()
        self.requested = requested
        self.batch = batch
        """Frames per detokenizer call (`satellite.engine.framebatch`); the player's pacer
        counts on chunks of that length."""
        self.done: ReplyDone | None = None

    @property
    def chunk_seconds(self) -> float:
        """Most audio the reply hands over at once: a batch of frames (one frame when it
        decodes them one by one; the first chunk of a reply is shorter, by the streaming
        ISTFT's lag)."""
        return self.batch * FRAME_SECONDS

    async def __aiter__(self) -> AsyncIterator[ReplyEvent]:
        if self.done is not None:
            return
        async for event in super().__aiter__():
            if isinstance(event, ReplyDone):
                self.done = event
            yield event
            if self.done is not None:
                return


SLOW_RTF = 1.0
"""A reply generated slower than this (wall seconds per audio second, after its first audio)
makes the next reply decode its frames in batches (`satellite.engine.framebatch`)."""
FAST_RTF = 0.75
"""A batched reply generated faster than this makes the next one decode frame by frame again
(below SLOW_RTF: batching itself lowers the rate, which must not switch it off at once)."""


def next_batch(batch: int, done: ReplyDone, most: int) -> int:
    """Frames per detokenizer call for the reply after `done`, decoded `batch` at a time:
    `most` once a reply is slower than real time, 1 again once one is comfortably faster."""
    if done.reason == "cancelled" or done.engine_first_audio is None:
        return batch
    after_first = done.audio_seconds - FRAME_SECONDS
    if after_first < 1.0:  # too short to tell
        return batch
    rtf = (done.engine_seconds - done.engine_first_audio) / after_first
    if rtf > SLOW_RTF:
        return most
    if rtf < FAST_RTF:
        return 1
    return batch


@dataclass
class _Ahead:
    """A reply begun speculatively and held at its first audio."""

    turn: Iterator[Any]
    """The chat's turn generator (closing it closes the turn)."""
    steps: Iterator[Step]
    """The rest of the reply, decoded."""
    held: list[Step]
    """What it produced so far, not yet handed over."""
    rng_state: Mapping[str, Any]
    """The sampler's random state before it began."""
    turns: int
    """The chat's turn count before it began."""


class Responder:
    """The local model as a conversation partner (see the module docstring)."""

    def __init__(
        self,
        model: Model,
        tokens: Tokens,
        *,
        max_reply_seconds: float = 30.0,
        conversation_timeout: float = 300.0,
        seed: int | None = None,
        system_prompt: str | None = None,
    ) -> None:
        self.model = model
        self.system_prompt = system_prompt
        self.tokens = tokens
        self.max_new_tokens = int(max_reply_seconds * FRAMES_PER_SECOND * 1.5) + TEXT_ALLOWANCE
        self.max_frames = max(1, round(max_reply_seconds * FRAMES_PER_SECOND))
        self.conversation_timeout = conversation_timeout
        self.seed = seed
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._chat: Chat | None = None
        self._tts: dict[str, Chat] = {}
        self._asr: Chat | None = None
        self._detokenizer: StreamingDetokenizer | None = None
        self._last_turn: float | None = None
        self.turns = 0
        self._spec: DecoderState | None = None
        """The checkpoint from before the last speculative prefill, while it stands."""
        self._ahead: _Ahead | None = None
        """The reply begun after that prefill, held at its first audio."""
        self.speculations = 0
        self.speculated_turns = 0
        """Turns that went on from a speculative prefill."""
        self.held_audio_turns = 0
        """Of those, turns whose first audio was ready (held) before they were asked for."""
        self.busy_since: float | None = None
        """`time.monotonic()` when the worker took the turn in progress (None: idle)."""
        self.batch = 1
        """Frames per detokenizer call for the next reply: BATCH_FRAMES after a reply slower
        than real time (see `next_batch`), else 1."""

    @classmethod
    def load(
        cls,
        settings: Settings,
        spec: str | None = None,
        system_prompt: str | None = None,
    ) -> Responder:
        """The model `spec` (a directory or catalog name) or else the one the settings name,
        with its sessions opened (blocking: seconds)."""

        choice = model_directory(spec, settings.model)
        model = Model.load(choice.directory, SessionConfig.from_settings(settings.model))
        tokens = model.tokens("the satellite needs one to read the model's text")
        _LOG.info(
            "model: %s (%s) from %s", model.manifest.name, model.manifest.variant, choice.origin
        )
        return cls(
            model,
            tokens,
            max_reply_seconds=settings.safety.max_reply_seconds,
            conversation_timeout=settings.satellite.conversation_timeout_seconds,
            system_prompt=system_prompt,
        )

    @property
    def conversation_turns(self) -> int:
        """Turns in the conversation the next reply goes on (0: a new one)."""
        return 0 if self._chat is None else self._chat.turns

    @property
    def sample_rate(self) -> int:
        return 24_000 if self._detokenizer is None else self._detokenizer.sample_rate

    async def prepare(self) -> None:
        """Open every session and run the system prompt, in the worker (so the first turn
        does not pay for it)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._prepare)

    def _prepare(self) -> None:
        if self._chat is not None:
            return
        prefix = system_prefix(self.tokens, self.system_prompt or INTERLEAVED_PROMPT)
        self._chat = Chat(self.model, prefix=prefix, seed=self.seed)
        self._chat.encoder  # noqa: B018 (opens the encoder's session now)
        self._detokenizer = from_model(self.model)

    def reply(self, samples: FloatArray, *, speculated: bool = False) -> Reply:
        """Start a turn on `samples` (16 kHz mono float32) and return it at once. With
        `speculated`, the turn goes on from the last `speculate` (whose speech stands for
        `samples`) when that is still in place; otherwise it starts afresh."""
        reply = Reply(time.monotonic(), self.batch)
        audio = np.asarray(samples, np.float32)
        self._executor.submit(
            self._guarded,
            reply,
            lambda start: self._turn(reply, audio, start, speculated),
            True,
        )
        return reply

    def speculate(self, samples: FloatArray) -> None:
        """Encode `samples` and read them into the conversation now, in the worker, while
        the user pauses; `reply(..., speculated=True)` then only has the turn's closing
        tokens left to read. `abandon` undoes it (the user spoke on)."""
        self._executor.submit(self._speculate, np.asarray(samples, np.float32))

    def abandon(self) -> None:
        """Undo the last `speculate` (after the turn in progress, in order)."""
        self._executor.submit(self._abandon)

    def _speculate(self, samples: FloatArray) -> None:
        try:
            self._prepare()
            chat, detokenizer = self._chat, self._detokenizer
            assert chat is not None and detokenizer is not None
            self._abandon()
            self._idle_reset(chat, time.monotonic())
            started = time.monotonic()
            parts = user_turn(self.tokens, Speech(samples))
            self._spec = chat.speculate(parts[:SPECULATED_PARTS])
            self.speculations += 1
            read = time.monotonic()
            ahead = self._begin(chat, detokenizer, parts[SPECULATED_PARTS:])
            _LOG.debug("speculative prefill of %.2f s of speech in %.0f ms, first %d reply "
                       "events in %.0f ms", samples.size / 16000, (read - started) * 1000,
                       len(ahead.held), (time.monotonic() - read) * 1000)  # fmt: skip
        except Exception:
            _LOG.debug("speculative work failed; the turn will start afresh", exc_info=True)
            self._abandon()

    def _begin(self, chat: Chat, detokenizer: StreamingDetokenizer, rest: list[Any]) -> _Ahead:
        """Begin the reply (the turn's `rest` read, then generation) and run it to its first
        audio, or AHEAD_STEPS events. It is `self._ahead` from the start, so that `_abandon`
        closes it whatever happens here."""
        rng_state = chat.sampler.rng.bit_generator.state
        turns = chat.turns
        config = chat.generation_config("interleaved", max_new_tokens=self.max_new_tokens)
        turn = chat.turn(rest, config)
        steps = decoded(turn, detokenizer, self.batch, self.max_frames)
        ahead = self._ahead = _Ahead(turn, steps, [], rng_state, turns)
        for step in ahead.steps:
            ahead.held.append(step)
            audio = step[1]
            if (audio is not None and audio.size) or len(ahead.held) >= AHEAD_STEPS:
                break
        return ahead

    def _abandon(self) -> None:
        """Undo the speculative work, if any: close the begun reply, put the sampler's random
        state and the detokenizer back, roll the conversation back."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and self._chat is not None:
            close = getattr(ahead.turn, "close", None)
            if close is not None:
                close()
            self._chat.sampler.rng.bit_generator.state = ahead.rng_state
            self._chat.turns = ahead.turns
            if self._detokenizer is not None:
                self._detokenizer.reset()
        if self._spec is not None and self._chat is not None:
            self._chat.rollback(self._spec)
        self._spec = None

    def _idle_reset(self, chat: Chat, now: float) -> None:
        if self._last_turn is not None and now - self._last_turn > self.conversation_timeout:
            _LOG.info("conversation idle for %.0f s; starting a new one", now - self._last_turn)
            chat.reset()
            self._last_turn = None

    def speak(self, text: str, voice: str = "us_female") -> Reply:
        """Say `text` (text to speech, sequential mode) in one of the four voices; the Reply
        yields its audio blocks as they are generated."""
        reply = Reply(time.monotonic())
        self._executor.submit(
            self._guarded, reply, lambda start: self._speak(reply, text, voice, start)
        )
        return reply

    def transcribe(self, samples: FloatArray) -> Reply:
        """Speech to text (the ASR prompt, greedy); `ReplyDone.text` is the transcript."""
        reply = Reply(time.monotonic(), self.batch)
        audio = np.asarray(samples, np.float32)
        self._executor.submit(
            self._guarded, reply, lambda start: self._transcribe(reply, audio, start)
        )
        return reply

    def _guarded(
        self, reply: Reply, work: Callable[[float], ReplyDone], conversation: bool = False
    ) -> None:
        """Run `work` in the worker and post its ReplyDone; an exception becomes an `error`
        ReplyDone that the loop logs before it goes on listening. A `conversation` turn is
        counted and timed for the idle timeout."""
        start = time.monotonic()
        self.busy_since = start
        try:
            self._prepare()
            done = work(start)
        except Exception as err:
            _LOG.debug("engine task failed", exc_info=True)
            done = ReplyDone(
                "error", "", 0, 0, 0.0, reply.requested, start, None,
                time.monotonic() - start, error=str(err) or type(err).__name__,
            )  # fmt: skip
        if conversation:
            self._last_turn = time.monotonic()
            self.turns += 1
        self.busy_since = None
        reply.post(done)

    def _side_chat(self, prompt: str) -> Chat:
        return Chat(self.model, prefix=system_prefix(self.tokens, prompt), seed=self.seed)

    def _speak(self, reply: Reply, text: str, voice: str, start: float) -> ReplyDone:
        self._abandon()  # the detokenizer is shared
        accent, gender = VOICES.get(voice, ("US", "female"))
        chat = self._tts.get(voice)
        if chat is None:
            chat = self._tts[voice] = self._side_chat(tts_prompt(accent, gender))
        detokenizer = self._detokenizer
        assert detokenizer is not None
        stream = SpeechStream(chat, self.tokens, detokenizer, text, max_frames=self.max_frames,
                              cancelled=lambda: reply.cancelled)  # fmt: skip
        first: float | None = None
        out = 0
        for audio in stream:
            now = time.monotonic()
            first = now if first is None else first
            out += audio.size
            reply.post(ReplyAudio(audio, now))
        reason = {"end_of_audio": "end_of_turn", "max_seconds": "max_new_tokens",
                  "no_audio_start": "end_of_turn"}.get(stream.reason, stream.reason)  # fmt: skip
        return ReplyDone(
            reason, text, stream.frames, stream.skipped,  # type: ignore[arg-type]
            out / detokenizer.sample_rate, reply.requested, start,
            None if first is None else first - start, time.monotonic() - start,
        )  # fmt: skip

    def _transcribe(self, reply: Reply, samples: FloatArray, start: float) -> ReplyDone:
        if self._asr is None:
            self._asr = self._side_chat(ASR_PROMPT)
        result = transcribe_one(self._asr, self.tokens, samples, ASR_TOKENS)
        reason = (
            result.reason if result.reason in ("end_of_turn", "max_new_tokens") else "end_of_turn"
        )
        return ReplyDone(
            reason, result.text, 0, 0, 0.0, reply.requested, start, None,  # type: ignore[arg-type]
            time.monotonic() - start,
        )  # fmt: skip

    def reset(self) -> None:
        """Forget the conversation before the next turn (runs in the worker, after any turn
        in progress)."""
        self._executor.submit(self._reset)

    def _reset(self) -> None:
        self._abandon()
        if self._chat is not None:
            self._chat.reset()
        self._last_turn = None

    def close(self) -> None:
        """Stop the worker after the turn in progress (callers cancel it first)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _turn(
        self, reply: Reply, samples: FloatArray, start: float, speculated: bool = False
    ) -> ReplyDone:
        chat, detokenizer = self._chat, self._detokenizer
        assert chat is not None and detokenizer is not None
        parts = user_turn(self.tokens, Speech(samples))
        ahead: _Ahead | None = None
        if speculated and self._spec is not None:
            parts = parts[SPECULATED_PARTS:]  # the speech is in the conversation already
            ahead, self._ahead = self._ahead, None
            self._spec = None
            self.speculated_turns += 1
            # until now the worker was finishing the speculative work: engine time too
            start = min(start, reply.requested)
        else:
            self._abandon()
            self._idle_reset(chat, start)
        steps: Iterator[Step]
        if ahead is not None:
            turn, steps = ahead.turn, chain(ahead.held, ahead.steps)
            self.held_audio_turns += any(a is not None and a.size for _, a in ahead.held)
        else:
            config = chat.generation_config("interleaved", max_new_tokens=self.max_new_tokens)
            turn = chat.turn(parts, config)
            steps = decoded(turn, detokenizer, reply.batch, self.max_frames)
        reason: str = "max_new_tokens"
        pieces: list[str] = []
        frames = skipped = 0
        samples_out = 0
        first: float | None = None
        reset = False
        try:
            for event, audio in steps:
                if reply.cancelled:
                    reason = "cancelled"
                    break
                if isinstance(event, TextToken):
                    if event.text:
                        pieces.append(event.text)
                        reply.post(ReplyText(event.text, event.time))
                    if event.token == TEXT_END:
                        reply.post(ReplyText("", event.time, complete=True))
                elif isinstance(event, AudioFrame):
                    if event.end_of_audio:
                        continue
                    if audio is None:
                        skipped += 1
                        continue
                    frames += 1
                    if audio.size:
                        now = time.monotonic()
                        first = now if first is None else first
                        samples_out += audio.size
                        reply.post(ReplyAudio(audio, now))
                    if frames >= self.max_frames:
                        reason = "max_new_tokens"
                        break
                elif isinstance(event, TurnEnd):
                    reason = event.reason
                elif isinstance(event, ContextReset):
                    reset = True
        finally:
            close = getattr(turn, "close", None)
            if close is not None:
                close()
        if reason == "cancelled":
            detokenizer.reset()
        else:
            tail = detokenizer.finish()
            if tail.size:
                samples_out += tail.size
                reply.post(ReplyAudio(tail, time.monotonic()))
        end = time.monotonic()
        done = ReplyDone(
            reason=reason,  # type: ignore[arg-type]
            text="".join(pieces),
            frames=frames,
            skipped=skipped,
            audio_seconds=samples_out / detokenizer.sample_rate,
            requested=reply.requested,
            engine_start=start,
            engine_first_audio=None if first is None else first - start,
            engine_seconds=end - start,
            context_reset=reset,
        )
        batch = next_batch(self.batch, done, BATCH_FRAMES)
        if batch != self.batch:
            _LOG.info(
                "replies are made %s real time: the detokenizer now takes %d frame%s a call",
                "slower than" if batch > 1 else "faster than", batch, "s" if batch > 1 else "",
            )  # fmt: skip
            self.batch = batch
        return done
