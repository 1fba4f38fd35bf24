"""Audio Home Assistant streams to the satellite to play (an announcement, or its TTS reply in
`ha` mode), between the connection that receives it and the player.

Home Assistant sends such audio as fast as ffmpeg decodes it (`async_announce` writes 2048-byte
chunks and awaits only the socket), then `audio-stop`, then waits for `played`. The stream here:

- holds at most `ahead_seconds` of audio not yet handed to the speaker: `room()` waits while
  more is queued, and the server does not read the connection meanwhile, so a fast or hostile
  sender is held back by TCP instead of growing the satellite's memory (the daemon hands audio
  on while the speaker's own queue holds less than `ahead_seconds`: 2 x 10 s at most in all);
- takes at most `most_seconds` of audio (`MOST_SECONDS`, 10 minutes): what comes after is
  read and dropped (the connection stays in step) and `put` says so once, for the daemon to
  answer with an `error`;
- ends when `audio-stop` comes (`end("complete")`), when the connection goes
  (`end("disconnected")`: what arrived plays out), or when no chunk has come for
  `stall_seconds` while nothing is left to play (`"stalled"`): a stream that stops arriving
  ends its playback within that time, whatever the sender does.

A chunk that cannot be read (a width the converter does not take) is skipped, logged once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Literal

import numpy as np

from satellite.audio.convert import AudioFormatError, pcm_to_float

_LOG = logging.getLogger("satellite.wyoming")

MOST_SECONDS = 600.0
"""The longest stream the satellite plays (10 minutes); the rest is dropped."""
AHEAD_SECONDS = 10.0
"""Audio held ahead of the player before the connection is no longer read."""
STALL_SECONDS = 5.0
"""A stream with nothing to play and no chunk for this long has stopped (Home Assistant's own
rule for a silent peer)."""
WIDTHS = (1, 2, 3, 4)
MOST_CHANNELS = 8
MOST_RATE = 384_000

Ending = Literal["complete", "disconnected", "stalled", "replaced", "stopped"]


class StreamFormatError(ValueError):
    """`audio-start` names a format that cannot be played; the message names the field."""


class IncomingAudio:
    """One stream from `audio-start` to its end; see the module docstring."""

    def __init__(
        self,
        rate: object,
        width: object,
        channels: object,
        *,
        most_seconds: float | None = None,
        ahead_seconds: float | None = None,
        stall_seconds: float | None = None,
    ) -> None:
        """Raises StreamFormatError for a rate, width or channel count that is not playable.
        The limits default to the module's MOST_SECONDS, AHEAD_SECONDS and STALL_SECONDS."""
        self.rate = _whole(rate, "rate", 1, MOST_RATE)
        self.width = _whole(width, "width", 1, max(WIDTHS))
        self.channels = _whole(channels, "channels", 1, MOST_CHANNELS)
        self.most_seconds = MOST_SECONDS if most_seconds is None else most_seconds
        self.ahead_seconds = AHEAD_SECONDS if ahead_seconds is None else ahead_seconds
        self.stall_seconds = STALL_SECONDS if stall_seconds is None else stall_seconds
        self.received_seconds = 0.0
        """Audio taken into the stream (not counting what was dropped past the limit)."""
        self.dropped_seconds = 0.0
        """Audio past `most_seconds`, read and dropped."""
        self.most_queued_seconds = 0.0
        """The most audio the stream held at once."""
        self.ending: Ending | None = None
        self._blocks: deque[tuple[bytes, int, int]] = deque()
        self._queued_seconds = 0.0
        self._changed = asyncio.Event()
        self._warned = False

    def put(self, audio: bytes, width: int | None = None, channels: int | None = None) -> bool:
        """Take a chunk (its own width and channels where it says). False when it went past
        `most_seconds` (and was dropped) for the first time: the caller tells the sender."""
        if self.ending is not None:
            return True
        width = width if width in WIDTHS else self.width
        channels = channels if isinstance(channels, int) and channels > 0 else self.channels
        seconds = len(audio) / (width * channels * self.rate)
        if self.received_seconds + seconds > self.most_seconds:
            first = self.dropped_seconds == 0.0
            self.dropped_seconds += seconds
            return not first
        self.received_seconds += seconds
        self._queued_seconds += seconds
        self.most_queued_seconds = max(self.most_queued_seconds, self._queued_seconds)
        self._blocks.append((audio, width, channels))
        self._changed.set()
        return True

    def end(self, ending: Ending = "complete") -> None:
        """No more audio (the first ending given is kept)."""
        if self.ending is None:
            self.ending = ending
        self._changed.set()

    @property
    def over(self) -> bool:
        """Ended, and everything taken has been handed to the player."""
        return self.ending is not None and not self._blocks

    async def room(self) -> None:
        """Return once the stream holds at most `ahead_seconds` (or has ended)."""
        while self._queued_seconds > self.ahead_seconds and self.ending is None:
            self._changed.clear()
            await self._changed.wait()

    async def samples(self) -> AsyncIterator[np.ndarray]:
        """The audio as float32 mono at `rate`, chunk by chunk, until the stream ends (the
        `ending` says how)."""
        while True:
            while not self._blocks:
                if self.ending is not None:
                    return
                self._changed.clear()
                try:
                    async with asyncio.timeout(self.stall_seconds):
                        await self._changed.wait()
                except TimeoutError:
                    self.end("stalled")
                    return
            audio, width, channels = self._blocks.popleft()
            self._queued_seconds -= len(audio) / (width * channels * self.rate)
            self._changed.set()  # room() may go on
            try:
                converted = pcm_to_float(audio, width, channels)
            except AudioFormatError as err:
                if not self._warned:
                    _LOG.warning("audio from Home Assistant skipped: %s", err)
                    self._warned = True
                continue
            yield converted


def _whole(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise StreamFormatError(f"audio-start: {name} {value!r} is not a whole number from "
                                f"{low} to {high}")  # fmt: skip
    return value
