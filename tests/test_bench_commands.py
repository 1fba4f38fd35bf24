"""Benchmark commands print their figures and save the same as JSON."""

from __future__ import annotations

import json
from pathlib import Path

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
