"""Fixed-size frames out of chunks of any size: the unit audio processors work on."""

from __future__ import annotations

FRAME_BYTES = 320
"""10 ms of 16 kHz 16-bit mono: the frame WebRTC's processors and the VAD work on."""


class FrameSplitter:
    """Cuts a byte stream into frames of `size` bytes; a partial frame waits for the next
    chunk, so nothing is lost and the frames do not depend on how the stream was chunked."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._pending = b""

    def split(self, chunk: bytes) -> list[bytes]:
        """The whole frames `chunk` completes, oldest first."""
        data = self._pending + chunk
        whole = len(data) - len(data) % self.size
        self._pending = data[whole:]
        return [data[start : start + self.size] for start in range(0, whole, self.size)]

    def clear(self) -> None:
        """Drop the partial frame."""
        self._pending = b""
