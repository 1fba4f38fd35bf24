"""Benchmark commands print their figures and save the same as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from satellite.cli import main


def test_bench_build_reports_sizes_and_parameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, saved = tmp_path / "model", tmp_path / "build.json"
    assert (
        main(
            [
                "bench",
                "build",
                "--size",
                "tiny",
                "--variant",
                "fp32",
                "--out",
                str(out),
                "--json",
                str(saved),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    figures = json.loads(saved.read_text())
    on_disk = sum(p.stat().st_size for p in out.iterdir() if p.name != "manifest.json")
    assert figures["total_bytes"] == on_disk
    assert figures["graph_bytes"]["decoder"] > 0 and figures["build_seconds"] >= 0
    assert figures["parameters_total"] == sum(figures["parameters"].values())
    assert "backbone" in printed and "(real model: about 1,170 M)" in printed


def test_bench_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "memory.json"
    assert main(["bench", "memory", "--megabytes", "32", "--json", str(saved)]) == 0
    assert json.loads(saved.read_text())["copy_gb_s"] > 0.1
    assert "GB/s" in capsys.readouterr().out


def test_peak_rss_is_the_benchmarks_own_not_its_parents() -> None:
    """A benchmark started by a large process (the suite's, about 2 GB by then) reported that
    process's peak through `ru_maxrss` (2,020 MB for the tiny model's `bench turns`)."""
    parent = np.ones(400_000_000 // 8)  # 400 MB resident here
    assert parent.sum() > 0
    child = subprocess.run(
        [sys.executable, "-c", "from satellite.bench.system import peak_rss_mb; "
         "print(peak_rss_mb())"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert float(child.stdout) < 150, child.stdout
