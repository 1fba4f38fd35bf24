"""Text to speech on one connection: `synthesize{text, voice{name}}` -> `audio-start`, an
`audio-chunk` per generated frame (80 ms), `audio-stop`. Streaming: `synthesize-start`,
`synthesize-chunk`... (each complete sentence is spoken as soon as it is there,
`audio-start/chunk/stop` per sentence), the whole text again in `synthesize` (Home Assistant's
backward-compatible copy: ignored), `synthesize-stop` -> the rest, then `synthesize-stopped`.
16-bit mono at 24 kHz, or at the rate a request names in an extra `rate` field of its data."""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.tts import SynthesizeChunk, SynthesizeStopped

from satellite.audio.convert import StreamResampler, float_to_pcm16
from satellite.engine.template import VOICES, control_token_in
from satellite.wyoming.sentences import pieces, split_complete
from satellite.wyoming.services.common import BadRequest, Engine, Link, check_text
from satellite.wyoming.speech import LANGUAGES, AudioBlock, Finished, language_ok
from satellite.wyoming.workers import JobFailed

_LOG = logging.getLogger("satellite.wyoming.services")


@dataclass
class _Stream:
    voice: str
    rate: int
    buffer: str = ""
    characters: int = 0
    sentences: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    stopped: bool = False


class TextToSpeech:
    """One connection's text-to-speech requests (see the module docstring)."""

    def __init__(self, link: Link, engine: Engine) -> None:
        self.link = link
        self.engine = engine
        self.stream: _Stream | None = None
        """The streamed text, from `synthesize-start` until it has all been spoken."""

    def on_synthesize(self, event: Event) -> None:
        if self.stream is not None:  # Home Assistant's copy of the streamed text
            _LOG.debug("services: synthesize inside a stream ignored")
            return
        text = check_text(event.data.get("text"), "synthesize", self.engine.config.max_text)
        voice, rate = self._voice(event.data, "synthesize")
        self.link.start(self._speak(pieces(text), voice, rate), "synthesize")

    def on_synthesize_start(self, event: Event) -> None:
        if self.link.busy or self.stream is not None:
            raise BadRequest("synthesize-start: a request is already in progress", "busy")
        voice, rate = self._voice(event.data, "synthesize-start")
        stream = _Stream(voice, rate)
        self.stream = stream
        self.link.start(self._speak_stream(stream), "synthesize-start")

    def on_synthesize_chunk(self, event: Event) -> None:
        text = SynthesizeChunk.from_event(event).text
        stream = self.stream
        if stream is None or stream.stopped:
            raise BadRequest("synthesize-chunk: no synthesize-start before it")
        if not isinstance(text, str):
            raise BadRequest("synthesize-chunk: text must be a string")
        stream.characters += len(text)
        limit = self.engine.config.max_text
        if stream.characters > limit:
            stream.stopped = True
            stream.sentences.put_nowait(None)
            raise BadRequest(
                f"synthesize-chunk: the streamed text is over the limit of {limit} characters "
                "(services_max_text); the rest is dropped",
                "too-long",
            )
        special = control_token_in(stream.buffer + text)
        if special is not None:
            raise BadRequest(f"synthesize-chunk: the text holds the control token {special}")
        complete, stream.buffer = split_complete(stream.buffer + text)
        for sentence in complete:
            stream.sentences.put_nowait(sentence)

    def on_synthesize_stop(self) -> None:
        stream = self.stream
        if stream is None:
            raise BadRequest("synthesize-stop: no synthesize-start before it")
        if not stream.stopped:
            stream.stopped = True
            if stream.buffer.strip():
                stream.sentences.put_nowait(stream.buffer.strip())
            stream.buffer = ""
            stream.sentences.put_nowait(None)

    def _voice(self, data: dict[str, Any], what: str) -> tuple[str, int]:
        voice = data.get("voice") or {}
        if not isinstance(voice, dict):
            raise BadRequest(f'{what}: voice must be an object like {{"name": "us_female"}}')
        name, speaker, language = voice.get("name"), voice.get("speaker"), voice.get("language")
        if name is not None:
            key = str(name).strip().lower().replace("-", "_")
            if key not in VOICES:
                raise BadRequest(
                    f"{what}: unknown voice {name!r}; voices: {', '.join(VOICES)}", "unknown-voice"
                )
            if speaker not in (None, ""):
                raise BadRequest(f"{what}: voice {name!r} has no speakers (got {speaker!r})")
        else:
            if not language_ok(language if language is None else str(language)):
                raise BadRequest(
                    f"{what}: language {language!r} is not supported; voices speak "
                    f"{', '.join(LANGUAGES)}",
                    "unsupported-language",
                )
            key = self.engine.config.voice
        rate = data.get("rate", self.engine.sample_rate)
        if not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 192000:
            raise BadRequest(f"{what}: rate {rate!r} is not supported; expected 8000..192000 Hz")
        return key, rate

    async def _speak(self, texts: list[str], voice: str, rate: int, stream: bool = False) -> None:
        """Speak `texts` in one job: audio-start at the first audio, a chunk per frame,
        audio-stop. With no audio at all: an `error` (unless `stream`)."""
        send = self.link.send
        texts = await self._allowed(texts)
        job = self.engine.pool.submit(lambda engine, job: engine.speak(texts, voice, job))
        resampler = StreamResampler(self.engine.sample_rate, rate)
        started = False
        finished: Finished | None = None
        try:
            async with self.engine.deadline(job):
                async for item in job:
                    if isinstance(item, AudioBlock):
                        pcm = float_to_pcm16(resampler.process(item.samples))
                        if not started:
                            await send(AudioStart(rate, 2, 1).event())
                            started = True
                        if pcm:
                            await send(AudioChunk(rate, 2, 1, pcm).event())
                    elif isinstance(item, Finished):
                        finished = item
                    elif isinstance(item, JobFailed):
                        raise BadRequest(f"speech synthesis failed: {item.error}", "failed")
        finally:
            job.cancel()
        if started:
            tail = float_to_pcm16(resampler.process(np.zeros(0, np.float32), last=True))
            if tail:
                await send(AudioChunk(rate, 2, 1, tail).event())
            await send(AudioStop().event())
        elif not stream:
            reason = finished.reason if finished is not None else "no result"
            raise BadRequest(f"the model gave no audio for this text ({reason})", "no-audio")

    async def _allowed(self, texts: list[str]) -> list[str]:
        """`texts` if they pass the safety rules, else the refusal (none: `blocked`)."""
        config = self.engine.config
        policy = config.policy
        if not policy.enabled:
            return texts
        policy.reload_if_changed()
        found = await policy.check(" ".join(texts))
        if found is None:
            return texts
        policy.count(found)
        _LOG.warning("services: text to speak stopped by rule %r: %r", found.rule, found.excerpt)
        if not config.refusal:
            raise BadRequest(f"the text was blocked by the safety rule {found.rule!r}", "blocked")
        return pieces(config.refusal)

    async def _speak_stream(self, stream: _Stream) -> None:
        timeout = self.engine.config.client_timeout
        try:
            for _ in itertools.count():
                try:
                    async with asyncio.timeout(timeout):
                        sentence = await stream.sentences.get()
                except TimeoutError:
                    raise BadRequest(
                        f"synthesize-stop did not come: no text for {timeout:g} s",
                        "timeout",
                        close=True,
                    ) from None
                if sentence is None:
                    break
                await self._speak(pieces(sentence), stream.voice, stream.rate, stream=True)
            await self.link.send(SynthesizeStopped().event())
        finally:
            if self.stream is stream:
                self.stream = None
