"""The satellite's audio exchange with Home Assistant's pipeline: the microphone streamed to
it during a turn in `ha` mode (`PipelineStream`), and the audio it sends to be played, its
reply in a turn or an announcement outside one (`IncomingPlayer`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.pipeline import PipelineStage, RunPipeline
from wyoming.snd import Played

from satellite import events
from satellite.daemon.playback import Playback
from satellite.wyoming.incoming import Ending, IncomingAudio, StreamFormatError
from satellite.wyoming.info import MIC_FORMAT

_LOG = logging.getLogger("satellite.daemon")

Send = Callable[[Event], bool]


class PipelineStream:
    """One turn's microphone audio to Home Assistant: `run-pipeline` (asr -> tts), the
    chunks with their timestamps, `audio-stop`."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.timestamp = 0
        """Milliseconds of audio streamed in this turn."""

    def start(self, wake_word: str) -> None:
        self.timestamp = 0
        self.send(
            RunPipeline(
                start_stage=PipelineStage.ASR,
                end_stage=PipelineStage.TTS,
                wake_word_name=wake_word,
                restart_on_end=False,
            ).event()
        )

    def chunk(self, pcm: bytes) -> None:
        """16 kHz 16-bit mono capture audio."""
        chunk = AudioChunk(
            rate=MIC_FORMAT.rate,
            width=MIC_FORMAT.width,
            channels=MIC_FORMAT.channels,
            audio=pcm,
            timestamp=self.timestamp,
        )
        self.timestamp += len(pcm) * 1000 // (2 * MIC_FORMAT.rate)
        self.send(chunk.event())

    def stop(self) -> None:
        self.send(AudioStop(timestamp=self.timestamp).event())


class IncomingPlayer:
    """Plays what Home Assistant streams (`audio-start/chunk/stop`), read no faster than it
    plays (`satellite.wyoming.incoming`), in place of what plays now."""

    def __init__(
        self, playback: Playback, send: Send, notify: Callable[[events.DaemonEvent], None]
    ) -> None:
        self.playback = playback
        self.backend = playback.backend
        self.send = send
        self.notify = notify
        self._stream: IncomingAudio | None = None
        """The stream being received, until its audio-stop."""
        self.most_queued_seconds = 0.0
        """The most audio a stream held at once (bounded by
        `satellite.wyoming.incoming.AHEAD_SECONDS` plus a chunk)."""

    def start(self, start: AudioStart, kind: str) -> None:
        """`audio-start` of a stream (`kind`: tts or announcement)."""
        self.end("replaced")
        try:
            incoming = IncomingAudio(start.rate, start.width, start.channels)
        except StreamFormatError as err:
            _LOG.warning("Home Assistant's %s not played: %s", kind, err)
            self.send(Error(text=f"{err}; not played", code="audio-format").event())
            return
        self._stream = incoming
        self.playback.start(kind, self._play(kind, incoming))

    def chunk(self, chunk: AudioChunk) -> None:
        incoming = self._stream
        if incoming is None:
            return  # stopped (barge-in) or no audio-start: dropped
        if not incoming.put(chunk.audio, chunk.width, chunk.channels):
            text = f"audio longer than {incoming.most_seconds:g} s: the rest is not played"
            _LOG.warning("Home Assistant's audio stream: %s", text)
            self.send(Error(text=text, code="audio-too-long").event())

    def end(self, ending: Ending) -> None:
        """The stream ends (`complete` at its audio-stop, `disconnected`, `replaced`)."""
        if self._stream is not None:
            self._stream.end(ending)
            self._stream = None

    async def room(self) -> None:
        """Return once the stream being received can take more."""
        if self._stream is not None:
            await self._stream.room()

    async def _play(self, kind: str, incoming: IncomingAudio) -> None:
        lost_before = self.backend.stats().lost
        try:
            async for samples in incoming.samples():
                await self.backend.play(samples, incoming.rate)
                # the speaker's queue, too, holds at most `ahead_seconds`: what is queued
                # beyond it plays out first (a speaker's buffer can be far larger)
                excess = self.backend.queued / self.backend.output_rate - incoming.ahead_seconds
                if excess > 0:
                    await asyncio.sleep(excess)
            await self.backend.drain()
        finally:
            incoming.end("stopped")  # cut (barge-in, another sound): the rest is dropped
            self.most_queued_seconds = max(self.most_queued_seconds, incoming.most_queued_seconds)
            if self._stream is incoming:
                self._stream = None
        played = f"{incoming.received_seconds:.1f} s"
        if incoming.ending == "stalled":
            _LOG.warning("Home Assistant's %s stopped arriving (no audio for %g s); ended "
                         "after %s", kind, incoming.stall_seconds, played)  # fmt: skip
        elif incoming.ending == "disconnected":
            _LOG.warning("Home Assistant disconnected during its %s; played the %s that had "
                         "arrived", kind, played)  # fmt: skip
        else:
            self.send(Played().event())
        lost = (self.backend.stats().lost - lost_before) / self.backend.output_rate
        if lost:
            _LOG.warning("%.1f s of Home Assistant's %s was lost: the audio output died while "
                         "it played", lost, kind)  # fmt: skip
        self.notify(
            events.Played(
                what=kind,
                seconds=round(incoming.received_seconds, 2),
                ending=incoming.ending or "stopped",
                lost_seconds=round(lost, 2),
            )
        )
