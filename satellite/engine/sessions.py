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

from satellite.engine.malloc import fix_mmap_threshold
from satellite.engine.mapped import release_mapped_pages
from satellite.errors import UserError
from satellite.settings import ModelSettings

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

    @classmethod
    def from_settings(cls, settings: ModelSettings, **overrides: Any) -> SessionConfig:
        """The config's `model` section (providers, threads), with `overrides`."""
        values: dict[str, Any] = {
            "providers": tuple(settings.providers),
            "threads": settings.threads,
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


def session_options(config: SessionConfig) -> ort.SessionOptions:
    """SessionOptions for `config`: threads, optimisation level, pre-packing, spinning, arena."""
    if config.threads < 0:
        raise ValueError(f"threads must be >= 0, not {config.threads}")
    if config.optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(
            f"optimization: {config.optimization!r} is not one of {', '.join(OPTIMIZATION_LEVELS)}"
        )
    options = ort.SessionOptions()
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
