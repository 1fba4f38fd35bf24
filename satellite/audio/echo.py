"""Echo cancellation: the satellite's own sound taken out of the microphone before the wake
word and end-of-speech models hear it.

WebRTC's audio processing module (AEC3 and its high-pass filter), through livekit's Python
binding (`livekit.rtc.AudioProcessingModule`): a well-kept build of the library the browsers
use, with wheels for x86_64 and aarch64 Linux, working on 10 ms frames in the caller's thread.
(`webrtc-noise-gain`, which wyoming-satellite uses, has noise suppression and gain only, no
echo canceller; speexdsp's canceller is older and needs its delay and tail set by hand.)

The reference is what the speaker plays, as it plays it: the backend hands each block to
`played` when it goes to the device (the sound card's callback) or, for the simulated
speakers, when its time comes. Blocks wait in a queue (appends from the audio thread, reads in
the loop's: the capture's preallocated `RingBuffer`, so the sound card's callback allocates
nothing) with the time the newest ends, and are read 10 ms at a time as capture frames are
processed, each capture frame paired with the oldest reference not yet read. AEC3 finds the
echo's delay from there (`set_stream_delay_ms` gives it the backend's latencies to start
from), as long as the pairing stays put and the reference comes before its echo.

So the reference's lag (how long ago the oldest unread reference played, when a capture
chunk comes) is kept small, but only by trims that are rare: over `STALL_SECONDS` (the
capture stalled: a stream reopened, the loop held up) it is trimmed at once, else only when
it has stayed over `STALE_SECONDS` for a whole `LAG_WINDOW_SECONDS` (then to
`TARGET_SECONDS`). The callbacks' and the capture's times jitter by tens of milliseconds on
PulseAudio; trimming on each reading over the limit (as this did at first) dropped a few ms
of reference every few tenths of a second, each drop moved the echo under AEC3, and the echo
leaked through (12-16 dB taken off; with the window, 75 dB once settled on a real
PulseAudio server's loopback). Where nothing plays, the reference is silence and the capture
passes through.

The pairing also stays put when a block comes late: a capture frame whose reference has not
come yet, while the speaker's next block is due, waits for it (`LATE_SECONDS`) instead of
being paired with silence, which moved the whole reference later by as much (on PulseAudio,
17 ms in the first half second after its input opened, and AEC3 lost the echo for seconds).
The queue keeps the newest blocks when a stalled capture leaves it full.

Each frame also goes through a linear canceller (`satellite.audio.linear_echo`, SpeexDSP)
with the same reference: AEC3's output is for the end-of-speech model, the stop word and
barge-in by voice (it takes the most echo off); the linear output is for the wake word (it
keeps the user's voice whole while the satellite talks). Both come out of `process`, with
the reference the frames were paired with (`Cancelled`).

`EchoMeter` reads the echo's figures for the health report from the same frames (see its
docstring; `lfm-satellite bench room` checks them against scripted rooms).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from livekit import rtc

from satellite.audio.convert import FloatArray, StreamResampler
from satellite.audio.framing import FrameSplitter
from satellite.audio.linear_echo import LinearEchoCanceller
from satellite.audio.ringbuffer import RingBuffer

RATE = 16_000
"""The capture's rate here (the wake word's and the VAD's)."""
FRAME = RATE // 100
"""The module works on 10 ms frames."""
STALE_SECONDS = 0.05
"""The reference's lag: how long ago the oldest reference not yet read played, when a capture
chunk is processed. Over this for all of `LAG_WINDOW_SECONDS`, the reference is trimmed to
`TARGET_SECONDS` of lag."""
TARGET_SECONDS = 0.025
STALL_SECONDS = 0.5
"""A lag over this is trimmed at once (to `STALE_SECONDS`): the capture stalled."""
LAG_WINDOW_SECONDS = 1.0
REFERENCE_QUALITY = "LQ"
"""soxr's quality for the reference's resampling: what the resampler holds back is paired
late with its capture, and an echo that comes before its reference cannot be cancelled. HQ
held back 21 ms and the pairing lost 37 ms all told: in rooms with an echo delay under 40 ms
the linear canceller then took 1-6 dB off, not 13-16 (`bench echo`); LQ holds back 6 ms, and
the reference needs no more than the 16 kHz capture hears."""
LATE_SECONDS = 0.1
"""A capture frame whose reference has not come yet, less than this after the last block
queued ends playing: the speaker's next block is late (its callback jitters), not absent.
The frame waits for it (`MAX_HELD` frames at most: on PulseAudio one or two, 10-20 ms; where
the speaker has stopped for good, as the simulated ones do after a sound, the capture waits
`LATE_SECONDS` once); before, it was paired with silence and the whole reference moved later
by that much for good (17 ms in the first half second on PulseAudio after its input opened:
AEC3 then lost the echo for a second or more, and barge-in by voice missed the user)."""
MAX_HELD = round(LATE_SECONDS * 100)
QUEUE_SECONDS = 2.0
"""Reference held for the capture at most (more waiting is stale in any case)."""
METER_BLOCK_FRAMES = 50
"""The health report's echo figures are read over blocks of this many frames (0.5 s: longer
than an echo's delay, so a block's echo is mostly of its own reference)..."""
METER_BLOCKS = 60
"""... the last this many blocks with something playing (30 s of it)."""
ECHO_OVER_NOISE = 4.0
"""A playing block's capture must hold this much more energy than the room's noise at the
microphone (6 dB) for its echo to count as heard: under that, what the microphone hears is
the room, and neither figure can be read from it."""
SILENT_ENERGY = 4.0
"""Energy per sample (PCM16 units: an RMS of 2 LSB, -84 dBFS) under which the microphone
heard nothing at all."""
RECOGNISED_DB = 3.0
"""ERL is read only from blocks the linear canceller took this much off: it takes off only
what follows from the reference, so there the microphone heard the echo (where it took less,
it heard the user or the room over a reply it could not hear; AEC3's suppressor takes some
of those off too, and cannot tell)."""
LOSS_PERCENTILE = 75
"""ERL over the blocks: this percentile. The user speaking over the reply only adds to what
the microphone hears (lowers a block's ERL); the upper quarter is the echo alone."""


@dataclass(frozen=True)
class Cancelled:
    """What `EchoCanceller.process` makes of the capture so far: whole 10 ms frames, each
    16 kHz 16-bit mono, all four the same length (frames that wait for their reference come
    out with a later call)."""

    cleaned: bytes
    """Through AEC3: the echo taken down as far as it goes, the user's voice too in part."""
    linear: bytes
    """Through the linear canceller only: less echo taken off, the user's voice kept."""
    reference: bytes
    """What the speaker played, as paired with these frames (silence where nothing did)."""
    captured: bytes
    """The capture frames these came from, as the microphone gave them."""


class EchoCanceller:
    """See the module docstring. `played` may be called from any thread; `process` from one."""

    def __init__(self, output_rate: int, delay_ms: int = 0) -> None:
        """`output_rate`: the rate of the blocks `played` gets; `delay_ms`: the backend's
        output plus input latency, AEC3's first guess of the echo's delay."""
        self._apm = rtc.AudioProcessingModule(echo_cancellation=True, high_pass_filter=True)
        self._apm.set_stream_delay_ms(max(0, int(delay_ms)))
        self._linear = LinearEchoCanceller()
        self.output_rate = output_rate
        self._queue = RingBuffer(round(QUEUE_SECONDS * output_rate), np.float32)
        self._queued_end = 0.0
        """`time.monotonic()` when the last sample in `_queue` is played."""
        self._resampler = StreamResampler(output_rate, RATE, REFERENCE_QUALITY)
        # the resampler holds back a few ms of what it is given: primed with silence, what
        # it holds back comes out ahead of the first block, not as a wait for every chunk
        # (it still gives its output 300 samples at a time, so a capture frame waits for up
        # to 19 ms at times: in 2 chunks of 3 in `bench echo`'s rooms, one frame)
        self._resampler.process(np.zeros(output_rate // 10, np.float32))
        self._reference = np.zeros(0, np.float32)
        self._reference_end = 0.0
        """`time.monotonic()` when the last sample of `_reference` is played."""
        self._capture = FrameSplitter(2 * FRAME)
        self._lags: deque[tuple[float, float, float]] = deque()
        """(when, lag, surplus) of the capture chunks of the last `LAG_WINDOW_SECONDS`: the
        surplus is the reference left over once the chunk has read its share, in seconds."""
        self._lag_known = False
        """Whether a lag has been read (the first reading is trimmed at once)."""
        self._held: list[bytes] = []
        """Capture frames waiting for their reference (see `LATE_SECONDS`)."""
        self.waits = 0
        """Times capture frames have had to wait for their reference."""
        self.trimmed = 0
        """Reference samples (16 kHz) dropped to keep the lag."""
        self.frames = 0
        """Capture frames processed."""
        self.echo_frames = 0
        """Of those, frames that had something playing in their reference."""
        self._energy_in = 0.0
        self._energy_out = 0.0
        self.meter = EchoMeter()
        """The echo's figures for the health report."""

    def played(self, samples: FloatArray, at: float | None = None) -> None:
        """A block the speaker plays from `at` on (mono float32 at `output_rate`; `at`:
        `time.monotonic()`, now unless given)."""
        when = time.monotonic() if at is None else at
        # a capture that stalled leaves the queue full: the oldest reference makes room, so
        # what is queued stays the last `QUEUE_SECONDS` played, with no hole before the
        # newest (dropping the newest, as at first, left a hole of every block played while
        # it was full)
        if self._queue.write(samples, keep_newest=True):
            self._queued_end = when + samples.shape[0] / self.output_rate

    def process(self, pcm: bytes, now: float | None = None) -> Cancelled:
        """16 kHz 16-bit mono capture in, the same with the echo taken out (two ways, see
        `Cancelled`). Whole 10 ms frames are processed; the rest waits for the next call (what
        comes out lags by under 10 ms, and by up to `LATE_SECONDS` more while the speaker's
        next block is late). `now`: when the capture came (`time.monotonic()` unless
        given)."""
        frames = self._held + self._capture.split(pcm)
        when = time.monotonic() if now is None else now
        self._take_reference(when, len(frames) * FRAME)
        ready = len(frames)
        if when - self._queued_end < LATE_SECONDS:  # the speaker's next block is due
            ready = max(ready - MAX_HELD, min(ready, self._reference.shape[0] // FRAME))
        if ready < len(frames) and not self._held:
            self.waits += 1
        self._held = frames[ready:]
        out, linear, played = bytearray(), bytearray(), bytearray()
        taken = frames[:ready]
        for captured in taken:
            reference = self._reference[:FRAME]
            self._reference = self._reference[FRAME:]
            if reference.shape[0] < FRAME:
                reference = np.pad(reference, (0, FRAME - reference.shape[0]))
            playing = bool(np.any(reference))
            reference_pcm = _pcm16(reference)
            played += reference_pcm
            kept = self._linear.process(captured, reference_pcm)
            linear += kept
            render = rtc.AudioFrame(reference_pcm, RATE, 1, FRAME)
            self._apm.process_reverse_stream(render)
            frame = rtc.AudioFrame(captured, RATE, 1, FRAME)
            self._apm.process_stream(frame)
            cleaned = bytes(frame.data)
            out += cleaned
            self.frames += 1
            heard, left = _energy(captured), _energy(cleaned)
            self.meter.add(_energy(reference_pcm) if playing else 0.0, heard, left, _energy(kept))
            if playing:
                self.echo_frames += 1
                self._energy_in += heard
                self._energy_out += left
        return Cancelled(bytes(out), bytes(linear), bytes(played), b"".join(taken))

    @property
    def reduction_db(self) -> float | None:
        """Capture energy in over energy out, in dB, over the frames with something playing:
        the echo return loss enhancement where the user was quiet meanwhile (None: nothing
        has played, or nothing was heard)."""
        if self._energy_in <= 0.0:
            return None
        return float(10 * np.log10(self._energy_in / max(self._energy_out, 1.0)))

    def _take_reference(self, now: float, needed: int) -> None:
        """The reference queued since the last call, the lag kept (see the module docstring);
        `needed`: the samples of it the capture frames now being processed will read."""
        reference = self._reference
        end = self._queued_end  # (a block written meanwhile shifts this by one block at most)
        waiting = np.empty(len(self._queue), np.float32)
        if waiting.shape[0]:
            self._queue.read_into(waiting)
            reference = np.concatenate([reference, self._resampler.process(waiting)])
            self._reference_end = end
        lag = now - (self._reference_end - reference.shape[0] / RATE)
        surplus = (reference.shape[0] - needed) / RATE
        self._lags.append((now, lag, surplus))
        while self._lags and self._lags[0][0] < now - LAG_WINDOW_SECONDS:
            self._lags.popleft()
        least = min(seen for _, seen, _ in self._lags)
        spare = min(left for _, _, left in self._lags)
        settled = now - self._lags[0][0] >= LAG_WINDOW_SECONDS / 2
        trim = 0.0
        if lag > STALL_SECONDS:
            trim = lag - STALE_SECONDS
        elif (settled or not self._lag_known) and least > STALE_SECONDS:
            # only what waited all along can go: where the capture reads the reference as
            # it comes, a lag is the clocks' and trimming would eat the reference
            trim = min(least - TARGET_SECONDS, spare)
        self._lag_known = True
        drop = min(reference.shape[0], round(trim * RATE))
        if drop > 0:
            reference = reference[drop:]
            self.trimmed += drop
            self._lags.clear()
        self._reference = reference


class EchoMeter:
    """Echo return loss (ERL: how far below what the speaker plays its echo reaches the
    microphone, digital full scale to full scale) and echo return loss enhancement (ERLE:
    how much of what the microphone heard AEC3 took off), read over the last `METER_BLOCKS`
    blocks of `METER_BLOCK_FRAMES` frames in which the echo was heard: something played, the
    capture rose over the room's noise (the median level of the blocks with nothing
    playing), and the linear canceller took `RECOGNISED_DB` off it. ERL is the
    `LOSS_PERCENTILE` of the blocks', ERLE their median: the user speaking over a reply (a
    minority of the blocks) must not pull them down. None where no block qualifies: nothing
    has played, or no echo rose over the room's noise (ERL is then more than the microphone
    can show)."""

    def __init__(self) -> None:
        self._playing = [0.0, 0.0, 0.0, 0.0]
        """Energies of the playing block in progress: reference, capture, AEC3's output, the
        linear canceller's output."""
        self._playing_frames = 0
        self._quiet = 0.0
        """Capture energy of the quiet block in progress."""
        self._quiet_frames = 0
        self._noise: deque[float] = deque(maxlen=METER_BLOCKS)
        """Capture energies of the latest blocks with nothing playing."""
        self._loss: deque[float] = deque(maxlen=METER_BLOCKS)
        self._enhancement: deque[float] = deque(maxlen=METER_BLOCKS)

    def add(self, reference: float, captured: float, cleaned: float, linear: float) -> None:
        """One 10 ms frame: the energies (PCM16 units) of its reference (0: nothing
        played), its capture, AEC3's output and the linear canceller's."""
        if reference <= 0.0:
            self._quiet += captured
            self._quiet_frames += 1
            if self._quiet_frames == METER_BLOCK_FRAMES:
                self._noise.append(self._quiet)
                self._quiet, self._quiet_frames = 0.0, 0
            return
        block = self._playing
        block[0] += reference
        block[1] += captured
        block[2] += cleaned
        block[3] += linear
        self._playing_frames += 1
        if self._playing_frames < METER_BLOCK_FRAMES:
            return
        played, heard, left, linear_left = block
        self._playing, self._playing_frames = [0.0, 0.0, 0.0, 0.0], 0
        noise = float(np.median(self._noise)) if self._noise else 0.0
        silent = SILENT_ENERGY * METER_BLOCK_FRAMES * FRAME
        if heard < max(silent, ECHO_OVER_NOISE * noise):
            return
        if _db(heard, max(linear_left, 1.0)) >= RECOGNISED_DB:
            self._loss.append(_db(played, heard))
            self._enhancement.append(_db(heard, max(left, 1.0)))

    @property
    def return_loss_db(self) -> float | None:
        """ERL (dB); None: see the class docstring."""
        return float(np.percentile(self._loss, LOSS_PERCENTILE)) if self._loss else None

    @property
    def enhancement_db(self) -> float | None:
        """ERLE (dB); None: see the class docstring."""
        return float(np.median(self._enhancement)) if self._enhancement else None


def _db(a: float, b: float) -> float:
    return float(10 * np.log10(a / b))


def _pcm16(samples: FloatArray) -> bytes:
    return (np.clip(samples, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()


def _energy(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)
    return float(np.dot(samples, samples))
