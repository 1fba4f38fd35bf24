"""Make the C heap give large freed buffers back to the system.

With onnxruntime's memory arena off (`SessionConfig.arena`), every tensor a session needs
during a run is a `malloc` and a `free`. glibc serves large requests with their own `mmap`, and
unmaps them on `free` — but only up to a threshold that it raises, by default, to the size of
the largest such buffer ever freed (up to 32 MB): after the first turn, the encoder's and the
prefill's buffers would come from the heap instead and stay there, fragmented, for the life of
the process. `fix_mmap_threshold()` pins the threshold, which also switches that adjustment
off, so a turn's large buffers leave when the turn is done. Process-wide; glibc only (on any
other C library, or if anything fails, nothing is done).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

_LOG = logging.getLogger("satellite.engine.malloc")

M_MMAP_THRESHOLD = -3
"""mallopt parameter: requests at least this large are served by their own mapping."""
MMAP_THRESHOLD = 256 * 1024
"""Twice glibc's starting value: a token's activations (a few kB to 256 kB for a 65536-entry
row of logits) stay on the heap, a prefill chunk's or the encoder's (MBs) get their own
mapping."""

_fixed = False


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold at `threshold` bytes (once per process); returns whether it
    is pinned."""
    global _fixed
    if _fixed:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, threshold) != 1:
        _LOG.debug("mallopt(M_MMAP_THRESHOLD, %d) refused", threshold)
        return False
    _fixed = True
    return True
