"""What the benchmark children share: their settings, the timing helpers, and how a parent
runs a child (`python -m MODULE SETTINGS.json`, figures back as JSON) so that each child's peak
RSS is its own. Used by `satellite.bench.engine` (ours) and `lfm_toolchain.bench_reference` (the
reference implementation)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import satellite
from satellite.engine.events import FRAMES_PER_SECOND
from satellite.errors import UserError
from satellite.settings import Backbone

FloatArray = npt.NDArray[np.float32]

OUTPUT_RATE = 24_000
CHILD_TIMEOUT_S = 3600.0
"""Longest a measuring child may run (the full-size reference takes minutes)."""


class BenchError(UserError):
    """A benchmark cannot run or a measurement failed; the message says which."""


@dataclass(frozen=True)
class BenchSettings:
    """What a measuring child measures, written as JSON for it (paths as strings)."""

    model: str
    """The model directory."""
    threads: int = 0
    """Intra-op threads (0: every core) for onnxruntime and torch alike."""
    prepack: bool = True
    """onnxruntime: pre-pack MatMul weights (`SessionConfig.prepack`)."""
    spinning: bool = False
    """onnxruntime: idle worker threads spin (`SessionConfig.spinning`)."""
    arena: bool = True
    """onnxruntime: CPU memory arena on (`SessionConfig.arena`)."""
    shared_pool: bool = True
    """onnxruntime: one thread pool for every session (`SessionConfig.shared_pool`)."""
    backbone: Backbone = "onnxruntime"
    """What runs the backbone (`SessionConfig.backbone`): onnxruntime or llamacpp."""
    backbone_gguf: str = ""
    """The llama.cpp backbone's GGUF file (`SessionConfig.backbone_gguf`); empty: the model's."""
    repeats: int = 5
    decoder_steps: int = 64
    depthformer_frames: int = 16
    detokenizer_frames: int = 24
    audio_seconds: float = 3.0
    """Audio to generate for the real-time factor."""
    seed: int = 0
    query: str = ""
    """The query's .npy file."""
    prompt: dict[str, Any] = dataclasses.field(default_factory=dict)
    out: str = ""
    """Where the child writes its figures (JSON)."""

    def __post_init__(self) -> None:
        if self.threads < 0 or self.repeats < 1 or self.decoder_steps < 2:
            raise BenchError("--threads must be >= 0, --repeats >= 1, --steps >= 2")
        if self.depthformer_frames < 1 or self.detokenizer_frames < 2:
            raise BenchError("depthformer frames must be >= 1 and detokenizer frames >= 2")
        if not 0.1 <= self.audio_seconds <= 60:
            raise BenchError(f"--audio-seconds {self.audio_seconds}: choose 0.1 to 60")

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> BenchSettings:
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    @property
    def max_new_tokens(self) -> int:
        """Step budget of the real-time-factor turn: enough for `audio_seconds` of frames
        with the text runs between them, end-of-audio frames and some slack."""
        frames = math.ceil(self.audio_seconds * FRAMES_PER_SECOND)
        return 2 * frames + 64


class TimedSession:
    """Wraps an onnxruntime session; counts `run` calls and the seconds spent inside them.
    Everything else is passed through."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.calls = 0
        self.seconds = 0.0

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        started = time.perf_counter()
        try:
            return self.session.run(output_names, input_feed, run_options)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def to_ms(seconds: float) -> float:
    return round(seconds * 1000.0, 4)


def median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def p95(values: Sequence[float]) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), 95))


def timed_runs(count: int, action: Callable[[], Any]) -> list[float]:
    """Seconds of `count` runs of `action` after one untimed warm-up run."""
    action()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return times


@dataclass(frozen=True)
class FirstAudio:
    ttfa: float
    """Seconds from handing over the utterance to the first output samples."""
    first_text: float
    first_frame: float
    text_tokens: int
    """Text tokens yielded before the first audio frame."""
    frames_not_decodable: int = 0
    """Frames before the first audio that the detokenizer refuses (`decodable`)."""


def rtf_figures(
    t0: float,
    first_text: float,
    t_end: float,
    produced: int,
    texts: int,
    frames: int,
    skipped: int,
) -> dict[str, Any]:
    """The figures of one real-time-factor turn (ours and the reference's alike): from the
    utterance handed over at `t0`, the first text token and the end, with `produced` samples
    at OUTPUT_RATE; raises BenchError when it made no audio."""
    if produced == 0:
        raise BenchError("the interleaved turn produced no audio: no real-time factor")
    audio_s = produced / OUTPUT_RATE
    return {
        "rtf": round((t_end - first_text) / audio_s, 4),
        "rtf_with_prompt": round((t_end - t0) / audio_s, 4),
        "rtf_audio_seconds": round(audio_s, 3),
        "rtf_text_tokens": texts,
        "rtf_audio_frames": frames,
        "rtf_frames_not_decodable": skipped,
    }  # fmt: skip


def _project_root() -> Path:
    return Path(satellite.__file__).resolve().parent.parent


def run_child(
    module: str, settings: BenchSettings, timeout: float = CHILD_TIMEOUT_S
) -> dict[str, Any]:
    """Run `python -m module SETTINGS.json` and return the figures it wrote to `settings.out`.
    Raises BenchError with the child's message (or the tail of its output)."""
    out = Path(settings.out)
    out.unlink(missing_ok=True)
    settings_path = out.with_suffix(".settings.json")
    settings.write(settings_path)
    env = dict(os.environ)
    root = str(_project_root())
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, str(settings_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{module}: still running after {timeout:.0f} s; stopped") from None
    result: dict[str, Any] = {}
    if out.is_file():
        result = json.loads(out.read_text(encoding="utf-8"))
    if done.returncode != 0 or "error" in result or not result:
        status = (
            f"killed by signal {-done.returncode}"
            if done.returncode < 0
            else f"exit status {done.returncode}"
        )
        message = result.get("error") or (done.stderr.strip() or done.stdout.strip())[-2000:]
        raise BenchError(f"{module}: {message or status}")
    return result


def child_main(
    argv: Sequence[str], measure: Callable[[BenchSettings, FloatArray], dict[str, Any]]
) -> int:
    """Entry of a measuring child: read the settings, measure, write the figures (or the error
    as `{"error": ...}`)."""
    if len(argv) != 1:
        print("usage: python -m MODULE SETTINGS.json", file=sys.stderr)
        return 2
    settings = BenchSettings.read(Path(argv[0]))
    out = Path(settings.out)
    try:
        samples = np.load(settings.query).astype(np.float32)
        figures = measure(settings, samples)
    except UserError as err:
        out.write_text(json.dumps({"error": str(err)}), encoding="utf-8")
        return 1
    except Exception as err:
        out.write_text(json.dumps({"error": f"{type(err).__name__}: {err}"}), encoding="utf-8")
        raise
    out.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0
