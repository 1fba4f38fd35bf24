"""Built models are cached by build arguments and toolchain source."""

from __future__ import annotations

import shutil
from pathlib import Path

import lfm_toolchain
import pytest
from lfm_toolchain.cache import build_key, cached_model, toolchain_digest

from satellite.modeldir.verify import verify


def test_cached_model_is_built_once(tmp_path: Path) -> None:
    first = cached_model("tiny", root=tmp_path)
    stamp = (first / "manifest.json").stat().st_mtime_ns
    again = cached_model("tiny", root=tmp_path)
    assert again == first
    assert (again / "manifest.json").stat().st_mtime_ns == stamp
    assert verify(first).ok
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [first.name]


def test_key_changes_with_arguments() -> None:
    keys = {
        build_key("tiny", "fp32", 0),
        build_key("tiny", "fp32", 1),
        build_key("full", "fp32", 0),
    }
    assert len(keys) == 3
    assert build_key("tiny", "fp32", 0) == build_key("tiny", "fp32", 0)


def test_key_changes_with_toolchain_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "models"
    shutil.copytree(Path(lfm_toolchain.cache.__file__).parent, copy)
    assert toolchain_digest(copy) == toolchain_digest()
    before = toolchain_digest(copy)
    with (copy / "decoder.py").open("a") as f:
        f.write("\n# changed\n")
    assert toolchain_digest(copy) != before
    changed = toolchain_digest(copy)
    with (copy / "bench_build.py").open("a") as f:  # benchmarks do not shape a build
        f.write("\n# changed\n")
    assert toolchain_digest(copy) == changed
