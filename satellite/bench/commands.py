"""`lfm-satellite bench ...`: benchmark commands that print figures and save them as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from satellite.modeldir.commands import load_toolchain
from satellite.modeldir.manifest import VARIANTS


def add_bench_commands(commands: Any) -> None:
    bench = commands.add_parser(
        "bench",
        help="measure build, speed and memory figures (prints them, saves JSON)",
        description="Benchmarks. Each prints its figures and, with --json, saves them.",
    )
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCH_COMMAND")
    sub.required = True

    build = sub.add_parser(
        "build",
        help="build a model and report time, peak memory, sizes and parameter counts",
        description="Build a random-weight model directory (needs the export extra) and report "
        "build time, peak RSS, each graph's size and parameters per component.",
    )
    build.add_argument("--size", choices=("tiny", "full"), default="full", help="default: full")
    build.add_argument("--variant", choices=VARIANTS, default="q4", help="default: q4")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory to write")
    build.add_argument("--json", type=Path, metavar="FILE", help="also save the figures here")
    build.set_defaults(handler=cmd_bench_build)

    system = sub.add_parser(
        "memory",
        help="measure this machine's memory bandwidth",
        description="Parallel large copies: bytes read plus written per second.",
    )
    system.add_argument("--megabytes", type=int, default=512)
    system.add_argument("--json", type=Path, metavar="FILE")
    system.set_defaults(handler=cmd_bench_memory)


def _save(path: Path | None, figures: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        print(f"saved {path}")


def cmd_bench_build(args: argparse.Namespace) -> int:
    load_toolchain()
    from models.bench_build import bench_build, format_report

    report = bench_build(args.out, args.size, args.variant, args.seed)
    print(format_report(report))
    _save(args.json, report)
    return 0


def cmd_bench_memory(args: argparse.Namespace) -> int:
    from satellite.bench.system import memory_bandwidth

    result = memory_bandwidth(args.megabytes)
    print(
        f"memory bandwidth: {result.copy_gb_s:.1f} GB/s (copy, read + write, {result.threads} threads)"
    )
    _save(args.json, {"copy_gb_s": round(result.copy_gb_s, 2), "threads": result.threads})
    return 0
