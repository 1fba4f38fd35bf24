"""Give back the pages of memory-mapped weight files once a session no longer reads them.

onnxruntime maps a graph's `.onnx_data` file and, with pre-packing on, copies each MatMul
weight into its own packed layout while the session is created. The mapped file pages it read
to do so stay resident (and count in the process's RSS: 139 MB for the full-size q4 decoder)
although the session runs on the packed copies. `release_mapped_pages(path)` asks the kernel
to drop this process's resident pages of every mapping of that file
(`madvise(MADV_PAGEOUT)`; onnxruntime maps the files private and writable, so `MADV_DONTNEED`,
which would also discard pages it may have changed, is not used). A page read again later is
faulted back in from the file. Linux only; on any other system, an older kernel, or if
anything fails, nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from pathlib import Path

_LOG = logging.getLogger("satellite.engine.mapped")

MADV_PAGEOUT = 21
"""Reclaim the range's pages: clean file pages are dropped (read back from the file if touched
again); pages the process changed (copy-on-write) are kept unless there is swap. Never loses
data, unlike MADV_DONTNEED on a private mapping. Linux 5.4 and later."""


def _madvise() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def release_mapped_pages(path: Path) -> int:
    """Reclaim this process's resident pages of the mappings of `path`; returns the number of
    bytes of mappings advised (0 when there were none or it is not supported)."""
    madvise = _madvise()
    if madvise is None:
        return 0
    target = str(path.resolve())
    advised = 0
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            lines = maps.readlines()
    except OSError:
        return 0
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or parts[5].strip() != target:
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        if madvise(start, end - start, MADV_PAGEOUT) == 0:
            advised += end - start
        else:
            _LOG.debug("madvise %s failed: errno %d", target, ctypes.get_errno())
    return advised
