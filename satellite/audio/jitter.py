"""The playback buffer between the reply's audio (arriving in bursts) and the sound card's
callback (asking for fixed blocks at a steady pace).

Playback starts on the first frame: there is no pre-fill wait, so the first sound comes out as
soon as the first audio is written. While a reply is playing, a callback that finds fewer
samples than it needs plays silence for the gap and counts an underrun. `finish` marks the end
of the reply: what is buffered drains, then the buffer goes idle (silence, no underruns) and
`drained` is set. `hold` says the next gap is meant (the player holds the reply back so the
rest keeps up): when the buffer runs dry it plays silence counted as one hold, not as
underruns, until the next `write`.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

from satellite.audio.ringbuffer import RingBuffer

FloatArray = npt.NDArray[np.float32]


class JitterBuffer:
    """Float32 mono samples at one rate, `capacity` samples at most."""

    def __init__(self, capacity: int) -> None:
        self.ring = RingBuffer(capacity, np.float32)
        self.underruns = 0
        """Callbacks during a reply that found too few samples (silence filled the gap)."""
        self.holds = 0
        """Deliberate gaps (after `hold`) the callback met."""
        self.played = 0
        """Samples handed to the callback (silence excluded)."""
        self.volume = 1.0
        """Gain applied in `pull`, 0.0 to 1.0."""
        self.drained = threading.Event()
        self.drained.set()
        self._playing = False
        self._ending = False
        self._holding = False
        self._held = False

    @property
    def playing(self) -> bool:
        """A reply has started and not yet drained."""
        return self._playing

    @property
    def buffered(self) -> int:
        return len(self.ring)

    @property
    def space(self) -> int:
        return self.ring.space

    def write(self, samples: FloatArray) -> int:
        """Queue samples; playback starts with the first ones. Returns how many fit."""
        if samples.shape[0] == 0:
            return 0
        stored = self.ring.write(samples)
        if stored:
            self._ending = False
            self._holding = self._held = False
            self._playing = True
            self.drained.clear()
        return stored

    def finish(self) -> None:
        """No more samples for this reply: play out what is buffered, then go idle."""
        self._ending = True
        if not len(self.ring):
            self._idle()

    def hold(self) -> None:
        """The next time the buffer runs dry is a deliberate gap: silence, one hold."""
        self._holding = True

    def stop(self) -> None:
        """Drop what is buffered and go idle now (barge-in)."""
        self.ring.clear()
        self._idle()

    def _idle(self) -> None:
        self._playing = False
        self._ending = False
        self._holding = self._held = False
        self.drained.set()

    def pull(self, out: FloatArray) -> int:
        """Fill `out` (the callback's block) with the next samples, silence where there are
        none; allocates nothing. Returns the samples of audio it holds."""
        got = self.ring.read_into(out) if self._playing else 0
        if got < out.shape[0]:
            out[got:] = 0.0
            if self._playing:
                if self._ending and not len(self.ring):
                    self._idle()
                elif self._holding:
                    if not self._held:
                        self.holds += 1
                        self._held = True
                else:
                    self.underruns += 1
        if got and self.volume != 1.0:
            out[:got] *= self.volume
        self.played += got
        return got
