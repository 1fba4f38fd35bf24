"""What the speaker plays, one thing at a time: a reply, something said, a sound, a stream
from Home Assistant; and a ringing timer's chime, which never plays over other sound and
never cuts it (something that starts playing cuts the chime instead; see
`satellite.daemon.timers`)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from satellite.audio.backends import AudioBackend
from satellite.audio.sounds import Sound


class Playback:
    """The task playing now (`kind` says what it is: reply, speech, sound, tts,
    announcement) and the timer's chime."""

    def __init__(self, backend: AudioBackend) -> None:
        self.backend = backend
        self.task: asyncio.Task[Any] | None = None
        self.kind = ""
        self._chime: asyncio.Task[None] | None = None

    @property
    def playing(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self, kind: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Play `coro` in place of what plays now; a chime playing now is cut."""
        self.stop()
        self.cut_chime()
        self.kind = kind
        self.task = task = asyncio.create_task(coro)
        return task

    def stop(self) -> None:
        """Stop what plays now (the speaker's queue is dropped)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            self.backend.stop_playback()
        self.task = None
        self.kind = ""

    def play_sound(self, sound: Sound) -> None:
        """Play `sound` unless something plays now."""
        if not self.playing:
            self.start("sound", self._play(sound))

    async def wait(self) -> None:
        """Until what plays now has ended (at once when nothing plays)."""
        if self.task is not None and not self.task.done():
            await asyncio.wait([self.task])

    async def chime(self, sound: Sound) -> None:
        """Play one ring of a timer's chime (cut if something starts playing)."""
        self._chime = asyncio.create_task(self._play(sound))
        await asyncio.wait([self._chime])

    def cut_chime(self) -> None:
        if self._chime is not None and not self._chime.done():
            self._chime.cancel()
            self.backend.stop_playback()
        self._chime = None

    def cancel_all(self) -> list[asyncio.Task[Any]]:
        """Cancel what plays and the chime (shutdown); the tasks, to be awaited."""
        tasks = [t for t in (self.task, self._chime) if t is not None]
        for task in tasks:
            if not task.done():
                task.cancel()
        return tasks

    async def _play(self, sound: Sound) -> None:
        await self.backend.play(sound.samples, sound.rate)
        await self.backend.drain()
