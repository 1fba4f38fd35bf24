"""How fast a machine can make the model's speech: a cost model from memory bandwidth.

Making speech one token at a time is bound by memory: every step reads the weights of the
graph it runs. One 80 ms audio frame of an interleaved reply costs

- one decoder step for the frame, and half a step more for the text that runs between audio
  runs (6 text tokens per 12 frames);
- one depthformer run per codebook (8);
- one detokenizer run (the windowed graph of a directory without the cached one counts
  WINDOWED_DETOKENIZER_READS times: it re-runs 17 past frames a call);

so the bytes a frame reads are, at most, `decoder x 1.5 + depthformer x codebooks +
detokenizer`, each the size of that graph's weight files (`frame_bytes`). A machine that reads
memory at `B` bytes a second makes a frame in `frame_bytes / (B x efficiency)` seconds, where
`efficiency` is the part of the bandwidth the runtime turns into weight reads (and corrects the
bytes for what a step does not read: a depthformer run reads one codebook's head, not all).
It is calibrated where the model was measured (`CALIBRATION`): there, the model's measured
real-time factor and the machine's read bandwidth fix it. The real-time factor is then
`seconds per frame / 0.08`: above 1, the machine makes speech more slowly than it plays.

Board classes (`BOARDS`) carry a sustained read bandwidth: the memory's peak (transfers a
second x bus width) times SUSTAINED, the share a streaming read reaches on such boards. A
board whose cores are slow (no dot-product instructions) can be bound by compute instead:
for those the figure is a floor on the real-time factor, not an estimate.

At start the daemon measures this machine's read bandwidth (`read_bandwidth`, a 64 MB numpy
read, about 0.1 s) and warns when the model cannot speak in real time here, saying what to do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from satellite.engine.events import FRAME_SECONDS
from satellite.modeldir.manifest import Manifest

TEXT_STEPS_PER_FRAME = 0.5
"""Interleaved replies: 6 text tokens per 12 audio frames."""
SUSTAINED = 0.5
"""Share of a board's peak memory bandwidth a streaming read sustains (a Raspberry Pi 4's
STREAM copy reaches about 5.5 GB/s of its 12.8 GB/s peak)."""
DETOKENIZER_ROLES = ("audio_detokenizer_cached", "audio_detokenizer")
"""The streaming detokenizer runs the cached graph where the model has one."""
WINDOWED_DETOKENIZER_READS = 35
"""Without the cached graph, every call re-runs the stateless one over the 17 frames before the
new one, and that is bound by compute, not memory: it costs what reading its weights this many
times would. Measured in one sitting (full-size q4, AMD EPYC, 2 threads, `bench engine`,
2026-12-07): real-time factor 1.56 with the windowed graph against 0.96 with the cached one,
all else the same."""
PROBE_MB = 64
PROBE_PASSES = 3


@dataclass(frozen=True)
class Calibration:
    """Where `efficiency` was measured."""

    cpu: str
    date: str
    read_gbs: float
    """This machine's read bandwidth (`read_bandwidth`)."""
    measured_rtf: float
    """`bench engine`'s interleaved real-time factor, full-size q4, 2 threads."""
    frame_bytes: int
    """`frame_bytes` of that model."""

    @property
    def efficiency(self) -> float:
        seconds = self.measured_rtf * FRAME_SECONDS
        return self.frame_bytes / seconds / (self.read_gbs * 1e9)


CALIBRATION = Calibration(
    cpu="AMD EPYC (Zen 4, 2 vCPU, AVX-512, no AMX)",
    date="2026-12-07",
    read_gbs=28.3,
    measured_rtf=0.96,
    frame_bytes=3_141_245_120,
)
"""Measured on one day: `read_bandwidth()` five times (26.6-30.0 GB/s, median 28.3) and
`lfm-satellite bench engine --model FULL_Q4 --threads 2` on a full-size q4 model in the
published layout after `model optimize` (the streaming detokenizer made from the published
one), two rounds: RTF 0.926 and 1.00; `frame_bytes` of that directory."""


@dataclass(frozen=True)
class Board:
    """A class of machine the satellite is meant for."""

    name: str
    memory: str
    peak_gbs: float
    compute_bound: bool = False
    """Slow cores: the real-time factor from bandwidth is a floor."""

    @property
    def read_gbs(self) -> float:
        return self.peak_gbs * SUSTAINED


BOARDS = (
    Board("Raspberry Pi 4", "LPDDR4-3200, 32-bit", 12.8, compute_bound=True),
    Board("Raspberry Pi 5", "LPDDR4X-4267, 32-bit", 17.1),
    Board("Intel N100 mini PC", "DDR5-4800, one 64-bit channel", 38.4),
    Board("RK3588 NPU board (Orange Pi 5, Rock 5B)", "LPDDR4X-4224, 64-bit", 33.8),
)


def frame_bytes(manifest: Manifest, directory: Path) -> int:
    """Weight bytes one 80 ms frame reads at most (see the module docstring)."""

    def graph_bytes(role: str) -> int:
        entry = manifest.graphs.get(role)
        if entry is None:
            return 0
        files = [entry.file, *entry.data_files]
        return sum(
            (directory / name).stat().st_size for name in files if (directory / name).exists()
        )

    codebooks = int(manifest.config.get("codebooks", 8))
    detokenizer = next(
        (role for role in DETOKENIZER_ROLES if role in manifest.graphs), DETOKENIZER_ROLES[-1]
    )
    reads = WINDOWED_DETOKENIZER_READS if detokenizer == "audio_detokenizer" else 1
    return round(
        graph_bytes("decoder") * (1 + TEXT_STEPS_PER_FRAME)
        + graph_bytes("depthformer") * codebooks
        + graph_bytes(detokenizer) * reads
    )


def read_bandwidth(megabytes: int = PROBE_MB, passes: int = PROBE_PASSES) -> float:
    """This machine's read bandwidth in GB/s: the best of `passes` sums over a buffer larger
    than the caches."""
    buffer = np.ones(megabytes * 1_000_000 // 8, np.float64)
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        float(buffer.sum())
        best = min(best, time.perf_counter() - start)
    return buffer.nbytes / best / 1e9


def expected_rtf(bytes_per_frame: int, read_gbs: float, efficiency: float | None = None) -> float:
    """The real-time factor a machine reading `read_gbs` GB/s is expected to reach."""
    share = CALIBRATION.efficiency if efficiency is None else efficiency
    return bytes_per_frame / (read_gbs * 1e9 * share) / FRAME_SECONDS


def advice(rtf: float, variant: str | None = None, measured: bool = False) -> str | None:
    """What to tell a user whose machine reaches `rtf` with a model of `variant` (None: it
    speaks in real time)."""
    if rtf <= 1.0:
        return None
    how = "makes" if measured else "is expected to make"
    steps = []
    if variant is not None and variant != "q4":
        steps.append(f"the 4-bit model instead of {variant} (`lfm-satellite model fetch "
                     "LiquidAI/LFM2.5-Audio-1.5B-ONNX --variant q4`)")  # fmt: skip
    steps += ["Home Assistant's own pipeline on a faster machine (`satellite.mode: ha`)",
              "a board with an NPU and its model variant"]  # fmt: skip
    return (
        f"this machine {how} speech at {rtf:.2f}x real time with this model: each reply waits "
        "before it plays (held so that it never breaks up). To answer without the wait: "
        + "; or ".join(steps)
    )
