"""Machine figures the benchmarks quote next to their own: memory bandwidth and peak RSS."""

from __future__ import annotations

import os
import platform
import resource
import threading
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Bandwidth:
    copy_gb_s: float
    """Bytes read plus bytes written per second by large parallel copies (GB = 1e9 bytes)."""
    threads: int
    megabytes: int


def memory_bandwidth(
    megabytes: int = 512, threads: int | None = None, repeats: int = 5
) -> Bandwidth:
    """Best of `repeats` parallel copies of a `megabytes` buffer, far larger than any cache.
    numpy releases the GIL while copying, so the threads copy at the same time."""
    threads = threads or os.cpu_count() or 1
    count = megabytes * 1_000_000 // 8 // threads
    sources = [np.ones(count) for _ in range(threads)]
    targets = [np.empty_like(s) for s in sources]
    best = float("inf")
    for _ in range(max(1, repeats)):
        workers = [
            threading.Thread(target=np.copyto, args=(t, s))
            for s, t in zip(sources, targets, strict=True)
        ]
        started = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - started)
    moved = 2 * count * 8 * threads
    return Bandwidth(copy_gb_s=moved / best / 1e9, threads=threads, megabytes=megabytes)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (1e6 bytes): `VmHWM` from
    /proc (Linux). Not `ru_maxrss`: Linux carries the peak of the process image an `exec`
    replaced into it, so a benchmark started by a large process (the test suite, at about
    2 GB) reported that process's peak (2,020 MB for the tiny model's `bench turns`)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def current_rss_mb() -> float:
    """Resident set size now, from /proc (Linux), in MB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "asimddp", "i8mm")
"""CPU flags that decide which matrix kernels a runtime may use (x86 and Arm)."""


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name and its relevant features, e.g. "AMD EPYC (2 CPUs; avx2 avx512f)"
    (Linux; the platform's processor string elsewhere)."""
    name, flags = "", set[str]()
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not name:
                    name = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    features = " ".join(f for f in CPU_FEATURES if f in flags) or "none of " + "/".join(
        CPU_FEATURES[:3]
    )
    return f"{name} ({os.cpu_count() or 1} CPUs; {features})"
