"""Speech to text on one connection: `transcribe{language}` (optional), `audio-start`,
`audio-chunk`..., `audio-stop` -> `transcript-start`, a `transcript-chunk` per generated piece
of text, `transcript-stop`, `transcript{text}`. Audio of any rate, width and channel count is
converted to 16 kHz mono and turned into log-mel frames as it arrives; the rest waits for
`audio-stop`, which hands the request to a worker at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart
from wyoming.event import Event

from satellite.audio.convert import (
    SUPPORTED_WIDTHS,
    AudioFormatError,
    StreamResampler,
    pcm_to_float,
)
from satellite.engine.mel import StreamingLogMel
from satellite.engine.textstream import printable
from satellite.wyoming.services.common import BadRequest, Engine, Link
from satellite.wyoming.speech import LANGUAGES, Finished, TextPiece, language_ok
from satellite.wyoming.workers import JobFailed

MIN_AUDIO_SECONDS = 0.1
MIN_RATE, MAX_RATE = 1000, 384000
MAX_CHANNELS = 16


@dataclass
class _Utterance:
    language: str | None
    rate: int = 0
    width: int = 0
    channels: int = 0
    started: bool = False
    resampler: StreamResampler | None = None
    mel: StreamingLogMel | None = None
    """The utterance's log-mel, computed as the audio comes in."""
    seconds: float = 0.0


class SpeechToText:
    """One connection's speech-to-text requests (see the module docstring)."""

    def __init__(self, link: Link, engine: Engine) -> None:
        self.link = link
        self.engine = engine
        self.utterance: _Utterance | None = None
        """The audio being received, from `transcribe` or `audio-start` to `audio-stop`."""

    def on_transcribe(self, request: Transcribe) -> None:
        if self.link.busy or self.utterance is not None:
            raise BadRequest("transcribe: a request is already in progress on this connection")
        if not language_ok(request.language):
            raise BadRequest(
                f"transcribe: language {request.language!r} is not supported; the model "
                f"transcribes {', '.join(LANGUAGES)}",
                "unsupported-language",
            )
        self.utterance = _Utterance(request.language)

    def on_audio_start(self, event: Event) -> None:
        if self.utterance is None:
            if self.link.busy:
                raise BadRequest("audio-start: a request is already in progress")
            self.utterance = _Utterance(None)  # audio without `transcribe`: the default language
        utterance = self.utterance
        if utterance.started:
            raise BadRequest("audio-start: audio has already started; send audio-stop first")
        start = AudioStart.from_event(event)
        try:
            check_format(start.rate, start.width, start.channels)
        except BadRequest:
            self.utterance = None
            raise
        utterance.rate, utterance.width, utterance.channels = (
            start.rate,
            start.width,
            start.channels,
        )
        utterance.resampler = StreamResampler(start.rate, self.engine.mel.settings.sample_rate)
        utterance.mel = StreamingLogMel(self.engine.mel)
        utterance.started = True

    def on_audio_chunk(self, event: Event) -> None:
        utterance = self.utterance
        if utterance is None or utterance.resampler is None or utterance.mel is None:
            raise BadRequest("audio-chunk: no audio-start before it")
        chunk = AudioChunk.from_event(event)
        expected = (utterance.rate, utterance.width, utterance.channels)
        if (chunk.rate, chunk.width, chunk.channels) != expected:
            self.utterance = None
            raise BadRequest(
                f"audio-chunk: format {chunk.rate} Hz/{chunk.width} bytes/{chunk.channels} ch "
                f"differs from audio-start's {'/'.join(map(str, expected))}; "
                "the transcription is abandoned"
            )
        try:
            samples = pcm_to_float(chunk.audio or b"", utterance.width, utterance.channels)
        except AudioFormatError as err:
            self.utterance = None
            raise BadRequest(f"audio-chunk: {err}; the transcription is abandoned") from None
        utterance.seconds += samples.size / utterance.rate
        limit = self.engine.config.max_audio_seconds
        if utterance.seconds > limit:
            self.utterance = None
            raise BadRequest(
                f"audio is longer than the {limit:g} s limit; the transcription is abandoned",
                "too-long",
            )
        utterance.mel.push(np.clip(utterance.resampler.process(samples), -1.0, 1.0))

    def on_audio_stop(self) -> None:
        utterance, self.utterance = self.utterance, None
        if utterance is None or utterance.resampler is None or utterance.mel is None:
            raise BadRequest("audio-stop: no audio-start before it")
        tail = utterance.resampler.process(np.zeros(0, np.float32), last=True)
        utterance.mel.push(np.clip(tail, -1, 1))
        rate = self.engine.mel.settings.sample_rate
        if utterance.mel.samples == 0:
            raise BadRequest("no audio: the audio stream was empty (0 s)", "no-audio")
        if utterance.mel.samples < MIN_AUDIO_SECONDS * rate:
            raise BadRequest(
                f"audio too short: {utterance.mel.samples / rate:.3f} s; at least "
                f"{MIN_AUDIO_SECONDS:g} s is needed",
                "no-audio",
            )
        features = utterance.mel.finish()
        self.link.start(self._transcribe(features, utterance.language), "audio-stop")

    async def _transcribe(self, features: np.ndarray, language: str | None) -> None:
        pool, send = self.engine.pool, self.link.send
        # the reply starts at once; then the worker (which competes for the GIL) gets the job
        pool.check()
        await send(TranscriptStart(language=language).event())
        job = pool.submit(lambda engine, job: engine.transcribe(features, job))
        text = ""
        try:
            async with self.engine.deadline(job):
                async for item in job:
                    if isinstance(item, TextPiece):
                        piece = printable(item.text, one_line=False).replace("\n", " ")
                        await send(TranscriptChunk(text=piece).event())
                    elif isinstance(item, Finished):
                        text = item.text
                    elif isinstance(item, JobFailed):
                        raise BadRequest(f"transcription failed: {item.error}", "failed")
            await send(TranscriptStop().event())
            await send(Transcript(text=text, language=language).event())
        finally:
            job.cancel()


def check_format(rate: Any, width: Any, channels: Any) -> None:
    """An `audio-start`'s format: BadRequest naming the field that is out of range."""
    for key, value, low, high in (
        ("rate", rate, MIN_RATE, MAX_RATE),
        ("width", width, 1, 4),
        ("channels", channels, 1, MAX_CHANNELS),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise BadRequest(f"audio {key} {value!r} is not supported; expected {low}..{high}")
    if width not in SUPPORTED_WIDTHS:  # pragma: no cover - 1..4 are all supported
        raise BadRequest(f"audio width {width} is not supported")
