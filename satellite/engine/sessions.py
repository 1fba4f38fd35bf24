"""ONNX Runtime sessions: execution providers from the config, threads, graph optimisation.

`auto` picks the best provider this onnxruntime build offers (CUDA, CoreML, QNN, OpenVINO, else
CPU) and logs its choice; a provider named explicitly that this build lacks is an error naming
it. The CPU provider is always appended last, so an operator the chosen provider cannot run
still has somewhere to go.

Graphs are opened from their path, never read into Python first: onnxruntime then maps their
`.onnx_data` files into memory and uses the mapped weights in place (CPU provider), so large
external weights are not held twice. Weight pre-packing (a faster copy of each MatMul weight)
can be switched off to save that copy at some cost in speed; with it on, the mapped pages read
while packing are given back afterwards (`satellite.engine.mapped`).
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import onnxruntime as ort
from onnxruntime.capi import _pybind_state as ort_state

from satellite.engine.malloc import fix_mmap_threshold
from satellite.engine.mapped import release_mapped_pages
from satellite.errors import UserError
from satellite.settings import Backbone, ModelSettings

_LOG = logging.getLogger("satellite.engine.sessions")

PROVIDER_NAMES: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
}
"""Config names (`model.providers`) -> onnxruntime's provider names."""

AUTO_ORDER = ("cuda", "coreml", "qnn", "openvino")
"""What `auto` tries, best first, before falling back to the CPU."""

Optimization = Literal["disabled", "basic", "extended", "all"]
OPTIMIZATION_LEVELS: dict[str, ort.GraphOptimizationLevel] = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class ProviderError(UserError):
    """An execution provider was asked for that this onnxruntime cannot give."""


class SessionError(UserError):
    """onnxruntime cannot open a graph; the message names the file."""


@dataclass(frozen=True)
class SessionConfig:
    """How every graph of a model is run."""

    providers: tuple[str, ...] = ("auto",)
    """Config names in order of preference (see PROVIDER_NAMES), or `auto`."""
    threads: int = 0
    """Intra-op threads; 0 lets onnxruntime use every core."""
    optimization: Optimization = "all"
    """Graph optimisation level."""
    prepack: bool = True
    """Pre-pack MatMul weights (faster; holds a second, packed copy of those weights)."""
    spinning: bool = False
    """Let idle worker threads spin. Off by default: each session has its own thread pool, and
    while the decoder, depthformer and detokenizer take turns within a frame, spinning pools
    fight over the cores (measured on 2 cores: real-time factor 1.6 with spinning, 0.96
    without)."""
    arena: bool = True
    """onnxruntime's CPU memory arena. An arena keeps the most it ever held (the encoder's
    buffers for the longest utterance, a prefill chunk's, each session's own) for the life of
    the session; without it a run's buffers are freed when the run ends and, with
    `satellite.engine.malloc`, given back to the system. Measured on the full-size q4 model
    (`bench engine --no-arena`, 2 cores): peak RSS 1,082 MB instead of 1,154, but the encoder
    takes 111 ms instead of 76 and time to first audio grows by about 100 ms (fresh pages are
    faulted in on every run), so it stays on by default."""

    shared_pool: bool = True
    """All sessions share one pool of `threads` worker threads instead of one pool each
    (onnxruntime's global thread pool, whose idle workers spin briefly without fighting each
    other). A choice for the whole process: the first session opened with it fixes the pool,
    and every later session runs on it (`plain_session_options`). Measured on the full-size
    q4 model, 2 cores (`bench engine` against `--no-shared-pool`, two interleaved rounds):
    real-time factor 1.31-1.34 instead of 1.39-1.44, audio step 24.8-28.7 ms instead of
    29.7-30.9. Not with the llama.cpp backbone: the pool's spinning workers and llama.cpp's
    threads would fight over the cores (real-time factor 1.71 against 1.22 with a pool per
    session, AMD EPYC, 2 threads); the sessions then run on pools of their own, without
    spinning, unless the process has the shared pool already."""

    backbone: Backbone = "onnxruntime"
    """What runs the backbone: the decoder graph on onnxruntime, or a GGUF on llama.cpp
    (`satellite.engine.backbone`)."""

    backbone_gguf: str | None = None
    """The GGUF file for the llama.cpp backbone; None: the one `.gguf` in the model directory."""

    @classmethod
    def from_settings(cls, settings: ModelSettings, **overrides: Any) -> SessionConfig:
        """The config's `model` section (providers, threads, backbone), with `overrides`."""
        values: dict[str, Any] = {
            "providers": tuple(settings.providers),
            "threads": settings.threads,
            "shared_pool": settings.shared_thread_pool,
            "backbone": settings.backbone,
            "backbone_gguf": settings.backbone_gguf,
            **overrides,
        }
        return cls(**values)


def resolve_providers(
    requested: Sequence[str], available: Sequence[str] | None = None
) -> list[str]:
    """onnxruntime provider names for `requested` config names, CPU last.

    `auto` becomes the first of AUTO_ORDER that `available` (default: this onnxruntime's) has,
    else the CPU, and the choice is logged. Raises ProviderError naming an unknown provider or
    one that `available` lacks."""
    have = list(ort.get_available_providers() if available is None else available)
    chosen: list[str] = []
    for name in requested or ("auto",):
        key = name.strip().lower()
        if key == "auto":
            pick = next((p for p in AUTO_ORDER if PROVIDER_NAMES[p] in have), "cpu")
            _LOG.info(
                "execution provider: auto chose %s (%s) from those available: %s",
                pick,
                PROVIDER_NAMES[pick],
                ", ".join(have) or "none",
            )
            full = PROVIDER_NAMES[pick]
        elif key in PROVIDER_NAMES:
            full = PROVIDER_NAMES[key]
            if full not in have:
                raise ProviderError(
                    f"model.providers: {name!r} ({full}) is not available in this onnxruntime "
                    f"build (available: {', '.join(have) or 'none'}); install the onnxruntime "
                    "package for that accelerator, or use auto or cpu"
                )
        else:
            raise ProviderError(
                f"model.providers: {name!r} is not a provider; choose from auto, "
                + ", ".join(PROVIDER_NAMES)
            )
        if full not in chosen:
            chosen.append(full)
    cpu = PROVIDER_NAMES["cpu"]
    if cpu in chosen:
        chosen.remove(cpu)
    chosen.append(cpu)
    return chosen


_shared_pool_threads: int | None = None
_widths_refused: set[int] = set()
"""Widths asked for after the pool had another (each warned of once)."""


def use_shared_pool(threads: int) -> bool:
    """Make onnxruntime's global pool `threads` wide (0: every core), once per process, before
    any session exists; False (logged) where it cannot be had: another width was set first, or
    onnxruntime's environment already exists."""
    global _shared_pool_threads
    if _shared_pool_threads is None:
        try:
            ort_state.set_global_thread_pool_sizes(threads, 1)
        except Exception as err:  # onnxruntime raises its own untyped errors
            _LOG.warning("onnxruntime: no shared thread pool (%s); one pool per session", err)
            return False
        _shared_pool_threads = threads
    if _shared_pool_threads == threads:
        return True
    if threads not in _widths_refused:
        _widths_refused.add(threads)
        _LOG.warning(
            "onnxruntime: the shared thread pool has %d threads already, not %d; sessions "
            "run on it", _shared_pool_threads, threads,
        )  # fmt: skip
    return False


def plain_session_options() -> ort.SessionOptions:
    """onnxruntime's default SessionOptions, except that once this process has a shared pool
    the session runs on it: a session with a pool of its own then fails to open."""
    options = ort.SessionOptions()
    if _shared_pool_threads is not None:
        options.use_per_session_threads = False
    return options


def open_to_check(path: Path) -> ort.InferenceSession:
    """`path` opened as onnxruntime loads it, unoptimised, on the CPU (`model verify --load`);
    onnxruntime's own errors pass through."""
    options = plain_session_options()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def session_options(config: SessionConfig) -> ort.SessionOptions:
    """SessionOptions for `config`: threads, optimisation level, pre-packing, spinning, arena."""
    if config.threads < 0:
        raise ValueError(f"threads must be >= 0, not {config.threads}")
    if config.optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(
            f"optimization: {config.optimization!r} is not one of {', '.join(OPTIMIZATION_LEVELS)}"
        )
    if config.shared_pool and config.backbone == "onnxruntime":
        use_shared_pool(config.threads)
    options = plain_session_options()
    if options.use_per_session_threads:  # a shared pool's width is set once, for all
        options.intra_op_num_threads = config.threads
        options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = OPTIMIZATION_LEVELS[config.optimization]
    options.log_severity_level = 3  # errors only: onnxruntime's warnings are not the user's
    if not config.prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    if not config.spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not config.arena:
        options.enable_cpu_mem_arena = False
        fix_mmap_threshold()
    return options


def open_session(path: Path, config: SessionConfig, providers: Sequence[str]) -> Any:
    """An `onnxruntime.InferenceSession` of the graph at `path` (opened from the path so that
    external weights are memory-mapped, not copied). Raises SessionError naming the file."""
    if not path.is_file():
        raise SessionError(f"{path}: graph file not found")
    try:
        session = ort.InferenceSession(
            str(path), session_options(config), providers=list(providers)
        )
    except Exception as err:  # onnxruntime raises its own untyped errors
        text = str(err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
        raise SessionError(f"{path}: onnxruntime cannot open it: {first}") from None
    if config.prepack:
        for data in sorted(path.parent.glob(f"{glob.escape(path.name)}*data")):
            released = release_mapped_pages(data)
            if released:
                _LOG.debug("%s: released the mapped pages of %d MB", data.name, released >> 20)
    return session
