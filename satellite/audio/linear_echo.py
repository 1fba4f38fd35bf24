"""A linear echo canceller (SpeexDSP's multidelay adaptive filter) for the wake word.

WebRTC's AEC3 (`satellite.audio.echo`) takes the echo down far (75 dB once settled on a real
PulseAudio server), but its residual-echo suppressor also takes the user down while the
satellite talks: with the reply playing and no echo at all, the user came out 7.2 dB lower,
and the wake word said over a reply was heard in 4 scripted rooms of 9. livekit's binding
exposes no setting of that suppressor. A linear filter only subtracts its estimate of the
echo and leaves the user as they were: 11-14 dB taken off, and the wake word heard in 9 rooms
of 9 (`lfm-satellite bench echo`). What it leaves of the satellite's own voice is loud enough
to wake on, though, so a wake word that the satellite itself played is told apart by
`satellite.audio.ownvoice`.

SpeexDSP is Xiph's library (BSD-3-Clause), packaged by Debian as `libspeexdsp1` for every
architecture. Its Python bindings on PyPI are source builds from 2018-2025 with no wheels, so
the four functions needed are called here through `ctypes` on the system's library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import weakref

from satellite.errors import UserError

RATE = 16_000
FRAME = RATE // 100
"""Samples per call: 10 ms, the same frames as AEC3's."""
TAIL_MS = 256
"""The echo path the filter can model: delay (the reference waits at most 50 ms for its
capture, plus the room's acoustic delay) and the room's reverberation."""
_SET_SAMPLING_RATE = 24
"""`SPEEX_ECHO_SET_SAMPLING_RATE` in speex_echo.h."""
LIBRARY = "libspeexdsp.so.1"


class SpeexMissingError(UserError):
    """SpeexDSP's shared library cannot be loaded."""


def _load() -> ctypes.CDLL:
    for name in (LIBRARY, ctypes.util.find_library("speexdsp")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.speex_echo_state_init.restype = ctypes.c_void_p
        lib.speex_echo_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.speex_echo_state_destroy.argtypes = [ctypes.c_void_p]
        lib.speex_echo_state_reset.argtypes = [ctypes.c_void_p]
        lib.speex_echo_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        lib.speex_echo_ctl.restype = ctypes.c_int
        lib.speex_echo_cancellation.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_void_p,
        ]
        return lib
    raise SpeexMissingError(
        f"audio.echo_cancellation needs SpeexDSP's library ({LIBRARY}), which is not "
        "installed: `apt-get install libspeexdsp1` (Debian, Ubuntu, Raspberry Pi OS)"
    )


class LinearEchoCanceller:
    """10 ms frames of capture and reference in (16 kHz 16-bit mono, the reference the one
    paired with the capture by `EchoCanceller`), the capture less the filter's estimate of
    the echo out."""

    def __init__(self) -> None:
        self._lib = _load()
        state = self._lib.speex_echo_state_init(FRAME, RATE * TAIL_MS // 1000)
        if not state:
            raise MemoryError("speex_echo_state_init failed")
        rate = ctypes.c_int(RATE)
        self._lib.speex_echo_ctl(state, _SET_SAMPLING_RATE, ctypes.byref(rate))
        self._state = state
        self._out = ctypes.create_string_buffer(2 * FRAME)
        self._finalizer = weakref.finalize(self, self._lib.speex_echo_state_destroy, state)

    def process(self, captured: bytes, reference: bytes) -> bytes:
        """One frame each (`2 * FRAME` bytes); the cleaned frame."""
        if len(captured) != 2 * FRAME or len(reference) != 2 * FRAME:
            raise ValueError(f"frames of {2 * FRAME} bytes, not {len(captured)}/{len(reference)}")
        self._lib.speex_echo_cancellation(self._state, captured, reference, self._out)
        return self._out.raw

    def reset(self) -> None:
        """Forget the echo path (the filter adapts anew)."""
        self._lib.speex_echo_state_reset(self._state)

    def close(self) -> None:
        self._finalizer()
