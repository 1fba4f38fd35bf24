"""Noise suppression and automatic gain on the capture, before the wake word and end-of-speech
models hear it.

WebRTC's noise suppressor and its digital gain controller through `webrtc-noise-gain` (the
Open Home Foundation's binding, the one wyoming-satellite and linux-voice-assistant use;
Apache-2.0): configurable in strength, unlike livekit's module, whose suppressor is all or
nothing. It works on 10 ms frames of 16 kHz 16-bit mono in the caller's thread; a partial
frame waits for the next chunk, so what comes out lags what goes in by under 10 ms and no
audio is lost.
"""

from __future__ import annotations

from webrtc_noise_gain import AudioProcessor

from satellite.audio.framing import FRAME_BYTES, FrameSplitter


class NoiseGain:
    """`process` takes capture chunks of any length and gives back the cleaned frames."""

    def __init__(self, noise_suppression: int, auto_gain: int) -> None:
        """`noise_suppression`: 0 (off) to 4 (strongest); `auto_gain`: the level the gain
        controller aims for, in dB below full scale, 1 to 31 (0: off)."""
        if not 0 <= noise_suppression <= 4:
            raise ValueError(f"noise suppression {noise_suppression} is not 0 to 4")
        if not 0 <= auto_gain <= 31:
            raise ValueError(f"auto gain {auto_gain} dBFS is not 0 to 31")
        self.noise_suppression = noise_suppression
        self.auto_gain = auto_gain
        self._processor = AudioProcessor(auto_gain, noise_suppression)
        self._frames = FrameSplitter(FRAME_BYTES)
        self.frames = 0
        """Frames processed."""

    def process(self, pcm: bytes) -> bytes:
        """16 kHz 16-bit mono in; the same, cleaned, out, in whole 10 ms frames."""
        out = bytearray()
        for frame in self._frames.split(pcm):
            out += self._processor.Process10ms(frame).audio
            self.frames += 1
        return bytes(out)
