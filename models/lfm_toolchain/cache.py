"""Built model directories cached by what determines their bytes, so that tests, the demo and
benchmarks build a model once and reuse it until the builder or its arguments change.

The key hashes the build arguments (size, variant, seed, shaping, family), the architecture
numbers of that size, and the source of the toolchain (every `models/*.py` and the manifest
format), so an edit to a graph builder invalidates the cache by itself. Entries are built in a
temporary sibling directory and renamed into place, under a file lock, so a crash or a
concurrent build never leaves a half-written entry.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lfm_toolchain.build import build_model
from lfm_toolchain.config import config_for
from lfm_toolchain.weights import default_seed, shaped_by_default
from satellite.modeldir import manifest as manifest_module
from satellite.modeldir.manifest import MANIFEST_NAME

CACHE_ENV = "LFM_SATELLITE_MODEL_CACHE"
"""Environment variable naming the cache folder."""


def cache_root() -> Path:
    """`$LFM_SATELLITE_MODEL_CACHE`, else `$XDG_CACHE_HOME/lfm-satellite/built`."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lfm-satellite" / "built"


NOT_BUILD_INPUTS = (
    "bench_build.py",
    "bench_peers.py",
    "bench_reference.py",
    "cache.py",
    "gguf_export.py",
    "llamacpp.py",
    "reference.py",
)
"""Toolchain files that do not shape what a build writes; editing them keeps the cache."""


def toolchain_digest(folder: Path | None = None) -> str:
    """sha256 over the toolchain's source files (in `folder`, default: this package's) that
    shape a build, and the manifest format, in name order."""
    digest = hashlib.sha256()
    # not `models.__file__`: with an editable install `models` may import as a namespace
    folder = folder or Path(__file__).parent
    builders = sorted(p for p in folder.glob("*.py") if p.name not in NOT_BUILD_INPUTS)
    sources = [*builders, Path(manifest_module.__file__)]
    for path in sources:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build_key(size: str, variant: str, seed: int, **extra: Any) -> str:
    """A short hex key for one set of build arguments and the current toolchain."""
    description = {
        "size": size,
        "variant": variant,
        "seed": seed,
        "extra": extra,
        "config": asdict(config_for(size)),  # type: ignore[arg-type]
        "toolchain": toolchain_digest(),
    }
    blob = json.dumps(description, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_model(
    size: str = "tiny",
    variant: str = "fp32",
    seed: int | None = None,
    root: Path | None = None,
    **extra: Any,
) -> Path:
    """The directory of a model built with these arguments, building it on first use.

    `seed` and `shaped` (in `extra`) default as `build_model`'s do, so `cached_model("tiny",
    "q4")` is the shaped tiny model of the demo, the commands and the tests
    (`lfm_toolchain.weights.shaped_model_weights`)."""

    if seed is None:
        seed = default_seed(size)
    if extra.get("shaped") is None and extra.get("checkpoint") is None:
        extra["shaped"] = shaped_by_default(size)
    root = root or cache_root()
    key = build_key(size, variant, seed, **extra)
    target = root / f"{size}-{variant}-seed{seed}-{key}"
    if (target / MANIFEST_NAME).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / MANIFEST_NAME).is_file():  # built by another process meanwhile
            return target
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
        try:
            build_model(scratch, size=size, variant=variant, seed=seed, overwrite=True, **extra)
            scratch.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target
