"""Built models are cached by build arguments and toolchain source."""

from __future__ import annotations

import shutil
from pathlib import Path

import lfm_toolchain
import pytest
from lfm_toolchain.cache import build_key, cached_model, toolchain_digest
from lfm_toolchain.weights import default_seed

from satellite.modeldir.manifest import read_manifest
from satellite.modeldir.verify import verify


def test_cached_model_is_built_once(tmp_path: Path) -> None:
    first = cached_model("tiny", root=tmp_path)
    stamp = (first / "manifest.json").stat().st_mtime_ns
    again = cached_model("tiny", root=tmp_path)
    assert again == first
    assert (again / "manifest.json").stat().st_mtime_ns == stamp
    assert verify(first).ok
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [first.name]


def test_the_default_tiny_model_is_the_shaped_one(tmp_path: Path) -> None:
    """`cached_model("tiny")` is built with the tiny default seed and shaped, like
    `build_model(size="tiny")` and `model build --size tiny`; `shaped=False` is another entry."""
    default = cached_model("tiny", root=tmp_path)
    source = read_manifest(default).source
    assert source["seed"] == default_seed("tiny") == 216 and source["shaped"] is True
    assert source["weights"] == "random" and read_manifest(default).random_weights
    assert cached_model("tiny", seed=216, shaped=True, root=tmp_path) == default
    plain = cached_model("tiny", shaped=False, root=tmp_path)
    assert plain != default and read_manifest(plain).source["shaped"] is False


def test_key_changes_with_arguments() -> None:
    keys = {
        build_key("tiny", "fp32", 0),
        build_key("tiny", "fp32", 1),
        build_key("full", "fp32", 0),
    }
    assert len(keys) == 3
    assert build_key("tiny", "fp32", 0) == build_key("tiny", "fp32", 0)
    assert build_key("tiny", "fp32", 0, shaped=True) != build_key("tiny", "fp32", 0, shaped=False)


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
