"""`lfm-satellite bench build`: build a model directory and report what it cost and holds.

Figures: build seconds, peak RSS of the building process, each graph's size on disk (graph +
external data) and the total, and parameter counts per component next to the real
LFM2.5-Audio-1.5B's. Saved as JSON when asked.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from lfm_toolchain.build import build_model
from lfm_toolchain.config import config_for
from lfm_toolchain.quantize import Progress
from lfm_toolchain.weights import detokenizer_specs, model_specs
from satellite.bench.system import peak_rss_mb

COMPONENTS = (
    ("backbone", ("lfm.",)),
    ("audio encoder", ("conformer.",)),
    ("audio adapter", ("audio_adapter.",)),
    ("audio embedding", ("audio_embedding.",)),
    ("depthformer", ("depth_linear.", "depthformer.", "depth_embeddings.")),
)
"""Main-checkpoint components by tensor-name prefix; the detokenizer is its own checkpoint."""

REAL_MODEL_PARAMETERS = {"backbone": 1.17e9, "audio encoder": 115e6}
"""Published sizes of LFM2.5-Audio-1.5B's parts (approximate), for comparison."""


def parameter_counts(size: str) -> dict[str, int]:
    """Parameters per component of the `size` architecture (from the weight layout)."""
    config = config_for(size)  # type: ignore[arg-type]
    counts: dict[str, int] = defaultdict(int)
    for spec in model_specs(config):
        component = next(
            (name for name, prefixes in COMPONENTS if spec.name.startswith(prefixes)), "other"
        )
        counts[component] += math.prod(spec.shape)
    counts["detokenizer"] = sum(math.prod(s.shape) for s in detokenizer_specs(config))
    return dict(counts)


def bench_build(
    out: Path,
    size: str,
    variant: str,
    seed: int = 0,
    checkpoint: Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Build into `out` (replacing what is there), from random weights of `size` or from the
    `checkpoint` directory (then `size` only names the architecture the parameter counts are
    given for), and return the figures."""
    started = time.monotonic()
    manifest = build_model(
        out,
        size=size,
        variant=variant,
        seed=seed,
        checkpoint=checkpoint,
        overwrite=True,
        progress=progress,
    )
    seconds = time.monotonic() - started
    graphs: dict[str, int] = {}
    counted: set[str] = set()
    for role, entry in manifest.graphs.items():
        # A data file shared by two graphs (q4: the tied embedding table lives in the
        # decoder's) is counted with the first graph that names it.
        names = [n for n in (entry.file, *entry.data_files) if n in manifest.files]
        graphs[role] = sum(manifest.files[n].size for n in names if n not in counted)
        counted.update(names)
    counts = parameter_counts(size)
    return {
        "size": size,
        "variant": variant,
        "seed": seed,
        "from": str(checkpoint) if checkpoint is not None else "random weights",
        "directory": str(out),
        "build_seconds": round(seconds, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "graph_bytes": graphs,
        "total_bytes": sum(e.size for e in manifest.files.values()),
        "parameters": counts,
        "parameters_total": sum(counts.values()),
        "real_model_parameters": REAL_MODEL_PARAMETERS,
    }


def format_report(report: dict[str, Any]) -> str:
    mb = 1e6
    lines = [
        f"build {report['size']} {report['variant']} from {report['from']} "
        f"(seed {report['seed']}) -> {report['directory']}",
        f"  build time   {report['build_seconds']:.1f} s",
        f"  peak RSS     {report['peak_rss_mb']:.0f} MB",
        "  on disk",
    ]
    for role, size in report["graph_bytes"].items():
        lines.append(f"    {role:<26} {size / mb:10.1f} MB")
    lines.append(f"    {'total (all files)':<26} {report['total_bytes'] / mb:10.1f} MB")
    lines.append("  parameters")
    real = report["real_model_parameters"]
    for component, count in report["parameters"].items():
        note = f"   (real model: about {real[component] / 1e6:,.0f} M)" if component in real else ""
        lines.append(f"    {component:<26} {count / 1e6:12,.2f} M{note}")
    lines.append(f"    {'total':<26} {report['parameters_total'] / 1e6:12,.2f} M")
    return "\n".join(lines)
