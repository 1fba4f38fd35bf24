"""llama.cpp's `llama-bench` and `llama-quantize`, and the `libllama` that llama-cpp-python's
binding loads, built from source on this machine, for the peer benchmark and the llama.cpp
backbone backend.

The source is the llama.cpp that llama-cpp-python's source distribution vendors (a pinned
version, fetched with pip from the package index this machine uses), built for this CPU
(`GGML_NATIVE`), CPU only, as shared libraries that the tools find beside them (`$ORIGIN`):
about four minutes on two cores. The build is cached (`tools_root`) under a file lock, keyed by
the version, and reused. `LLAMA_CPP_LIB_PATH=<bin>` points the binding at the library (the
binding's own switch; `library_dir`).

One source fix is applied before building: on CPUs with AMX, GCC 12 drops the stores that fill
the tile configuration before `_tile_loadconfig` in ggml's AMX matrix kernel (`amx/mmq.cpp`), so
the first tile instruction raises SIGILL; a compiler barrier that takes the configuration's
address keeps the stores. Elsewhere that code is not compiled.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LLAMA_CPP_PYTHON = "0.3.36"
"""The llama-cpp-python release whose vendored llama.cpp is built (llama.cpp 0c1e570)."""
TOOLS = ("llama-bench", "llama-quantize")
LIBRARY = "llama"
"""The shared library target (`libllama.so` and the `libggml*.so` it links)."""
BUILD_NAME = f"llama-cpp-python-{LLAMA_CPP_PYTHON}-shared"
AMX_FILE = Path("ggml/src/ggml-cpu/amx/mmq.cpp")
AMX_LOAD = "    _tile_loadconfig(&tc);\n"
AMX_BARRIER = '    asm volatile("" : : "r"(&tc) : "memory");\n'
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DBUILD_SHARED_LIBS=ON",
    "-DCMAKE_BUILD_RPATH_USE_ORIGIN=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
)


class LlamaCppError(RuntimeError):
    """Fetching, building or running llama.cpp failed (the message says which step and why)."""


@dataclass(frozen=True)
class LlamaTools:
    bench: Path
    quantize: Path
    version: str

    @property
    def library_dir(self) -> Path:
        """Where `libllama.so` is (the binding's `LLAMA_CPP_LIB_PATH`)."""
        return self.bench.parent


@dataclass(frozen=True)
class LlamaFigures:
    """One `llama-bench` run: prefill of `prompt_tokens`, decode of `decode_tokens`."""

    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    decode_stddev_tokens_per_s: float
    prompt_tokens: int
    decode_tokens: int
    threads: int
    model_type: str
    model_bytes: int
    model_params: int
    build: str

    @property
    def decode_ms_per_token(self) -> float:
        return 1000.0 / self.decode_tokens_per_s


def tools_root() -> Path:
    """`$XDG_CACHE_HOME/lfm-satellite/peers` (default `~/.cache/...`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lfm-satellite" / "peers"


def build_tools(
    root: Path | None = None,
    jobs: int | None = None,
    progress: Callable[[str], None] = print,
) -> LlamaTools:
    """The built tools, building them first where they are not cached."""
    home = (root or tools_root()) / BUILD_NAME
    tools = LlamaTools(home / "bin" / TOOLS[0], home / "bin" / TOOLS[1], LLAMA_CPP_PYTHON)
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        library = tools.library_dir / f"lib{LIBRARY}.so"
        if tools.bench.exists() and tools.quantize.exists() and library.exists():
            return tools
        with tempfile.TemporaryDirectory(dir=home, prefix="build-") as scratch:
            work = Path(scratch)
            source = _fetch_source(work, progress)
            patch_amx(source / AMX_FILE)
            _build(source, work / "build", jobs or os.cpu_count() or 2, progress)
            staged = work / "bin"
            staged.mkdir()
            built = work / "build" / "bin"
            for item in [*(built / tool for tool in TOOLS), *built.glob("lib*.so*")]:
                shutil.copy2(item, staged / item.name, follow_symlinks=False)
            shutil.rmtree(home / "bin", ignore_errors=True)
            staged.rename(home / "bin")
    return tools


def _run(command: list[str], what: str, cwd: Path | None = None) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout)[-3000:]
        raise LlamaCppError(
            f"{what} failed (exit {result.returncode}): {' '.join(command)}\n{tail}"
        )
    return result.stdout


def _fetch_source(work: Path, progress: Callable[[str], None]) -> Path:
    progress(f"llama.cpp: fetching llama-cpp-python {LLAMA_CPP_PYTHON}'s source with pip")
    download = work / "sdist"
    _run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:",
         "--no-deps", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(download)],
        "pip download",
    )  # fmt: skip
    archives = sorted(download.glob("llama_cpp_python-*.tar.gz"))
    if not archives:
        raise LlamaCppError(f"pip download left no llama_cpp_python source archive in {download}")
    with tarfile.open(archives[0]) as archive:
        archive.extractall(work, filter="data")
    source = work / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"
    if not (source / "CMakeLists.txt").exists():
        raise LlamaCppError(f"{archives[0].name}: no vendored llama.cpp at {source}")
    return source


def patch_amx(path: Path) -> bool:
    """Apply the AMX tile-configuration fix to `path` (see the module docstring); False where
    it was already applied."""
    text = path.read_text(encoding="utf-8")
    if AMX_BARRIER + AMX_LOAD in text:
        return False
    if text.count(AMX_LOAD) != 1:
        raise LlamaCppError(
            f"{path}: expected one `{AMX_LOAD.strip()}` to patch, found {text.count(AMX_LOAD)}"
        )
    path.write_text(text.replace(AMX_LOAD, AMX_BARRIER + AMX_LOAD), encoding="utf-8")
    return True


def _build(source: Path, build: Path, jobs: int, progress: Callable[[str], None]) -> None:
    for tool in ("cmake", "ninja", "c++"):
        if shutil.which(tool) is None:
            raise LlamaCppError(f"{tool} is not installed (script/setup installs it)")
    targets = (*TOOLS, LIBRARY)
    progress(f"llama.cpp: building {', '.join(targets)} for this CPU ({jobs} jobs, minutes)")
    _run(["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja", *CMAKE_OPTIONS],
         "cmake configure")  # fmt: skip
    _run(["cmake", "--build", str(build), "-j", str(jobs), "--target", *targets], "cmake build")


def quantize(
    tools: LlamaTools, source: Path, target: Path, kind: str = "Q4_0", threads: int = 2
) -> int:
    """`llama-quantize --pure` (every matrix `kind`, the embedding too); the size written."""
    _run([str(tools.quantize), "--pure", str(source), str(target), kind, str(threads)],
         "llama-quantize")  # fmt: skip
    return target.stat().st_size


def run_bench(
    tools: LlamaTools,
    model: Path,
    threads: int,
    prompt_tokens: int = 64,
    decode_tokens: int = 32,
    repeats: int = 5,
) -> LlamaFigures:
    """One `llama-bench` run (prefill and decode tests, `repeats` each)."""
    out = _run(
        [str(tools.bench), "-m", str(model), "-t", str(threads), "-p", str(prompt_tokens),
         "-n", str(decode_tokens), "-r", str(repeats), "-o", "json"],
        "llama-bench",
    )  # fmt: skip
    return parse_bench(json.loads(out))


def parse_bench(rows: list[dict[str, Any]]) -> LlamaFigures:
    """`llama-bench -o json`'s rows: one prefill test (n_gen 0), one decode test (n_prompt 0)."""
    prefill = [r for r in rows if r.get("n_prompt", 0) > 0 and r.get("n_gen", 0) == 0]
    decode = [r for r in rows if r.get("n_gen", 0) > 0 and r.get("n_prompt", 0) == 0]
    if len(prefill) != 1 or len(decode) != 1:
        raise LlamaCppError(
            f"llama-bench: expected one prefill and one decode test, got {len(rows)} rows"
        )
    p, d = prefill[0], decode[0]
    return LlamaFigures(
        prefill_tokens_per_s=float(p["avg_ts"]),
        decode_tokens_per_s=float(d["avg_ts"]),
        decode_stddev_tokens_per_s=float(d.get("stddev_ts", 0.0)),
        prompt_tokens=int(p["n_prompt"]),
        decode_tokens=int(d["n_gen"]),
        threads=int(d.get("n_threads", 0)),
        model_type=str(d.get("model_type", "")),
        model_bytes=int(d.get("model_size", 0)),
        model_params=int(d.get("model_n_params", 0)),
        build=str(d.get("build_commit", "")),
    )
