"""The engine against llama.cpp on the same backbone, side by side, on this machine.

llama.cpp is the fastest CPU runtime for LFM2 text models, so its decode step is the bar for
the engine's decoder step. Both run the same backbone shapes with the same seeded weights
(`lfm_toolchain.weights`), quantized to 4 bits each its own way (the engine's q4 build; llama.cpp's
Q4_0 from a float16 GGUF, `lfm_toolchain.gguf_export`), on the same threads. The CPU under a cloud
machine changes from day to day and its speed drifts within a sitting, so the two are measured
in interleaved rounds (engine, llama.cpp, engine, ...) and compared round by round; the
report gives each round's ratios and their median, with the CPU model.

The engine is measured by `lfm-satellite bench engine` in a child process (its own memory and
threads), llama.cpp by `llama-bench` (`lfm_toolchain.llamacpp`), each round with the backbone on each
runner the engine has: onnxruntime (the model's decoder graph) and llama.cpp (`model.backbone:
llamacpp`, on the very Q4_0 file and library llama-bench runs; where llama-cpp-python is
installed). Compared:

- the decoder's text step and audio step against llama.cpp's decode time per token (the
  audio step skips the text head, llama.cpp's decode does not);
- prefill tokens per second against llama.cpp's prompt processing (the engine's prefill is
  the spoken query's audio embeddings and its prompt; llama.cpp's, random token ids).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lfm_toolchain import gguf_export, llamacpp
from lfm_toolchain.cache import cached_model
from lfm_toolchain.config import config_for
from lfm_toolchain.llamacpp import LlamaFigures, LlamaTools
from lfm_toolchain.weights import backbone_specs, model_weights
from satellite.bench.system import cpu_model
from satellite.settings import BACKBONES, Backbone

TARGETS = {
    "text_step_over_llama": 1.0,
    "audio_step_over_llama": 1.0,
    "prefill_over_llama_min": 1.0,
}
"""Issue 14's bar: each step no slower than llama.cpp's, prefill no slower."""


def peer_gguf(size: str, seed: int, tools: LlamaTools, folder: Path, threads: int) -> Path:
    """llama.cpp's Q4_0 file of the backbone (`size`, `seed`), made once and kept in `folder`
    (keyed by the sources that decide its bytes)."""
    digest = hashlib.sha256()
    for module in ("config.py", "weights.py", "gguf_export.py"):
        digest.update((Path(__file__).parent / module).read_bytes())
    digest.update(tools.version.encode())
    target = folder / f"{size}-seed{seed}-{digest.hexdigest()[:12]}.q4_0.gguf"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    config = config_for(size)  # type: ignore[arg-type]
    backbone = config.backbone
    specs = backbone_specs(backbone)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        f16 = Path(scratch) / "backbone.f16.gguf"
        # the engine model's own backbone weights (`cached_model`: the tiny one shaped)
        weights = model_weights(config, seed)
        gguf_export.write_backbone_gguf(backbone, weights, specs, f16)
        partial = Path(scratch) / target.name
        llamacpp.quantize(tools, f16, partial, "Q4_0", threads)
        partial.rename(target)
    return target


def engine_round(
    model: Path,
    threads: int,
    repeats: int,
    backbone: Backbone = "onnxruntime",
    gguf: Path | None = None,
    library: Path | None = None,
) -> dict[str, Any]:
    """`lfm-satellite bench engine` in a child process, the backbone on `backbone` (llama.cpp:
    the GGUF `gguf`, the binding pointed at `library`); its report's `engine` figures."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "engine.json"
        command = [sys.executable, "-m", "satellite", "bench", "engine", "--model", str(model),
                   "--threads", str(threads), "--repeats", str(repeats), "--json", str(out),
                   "--backbone", backbone]  # fmt: skip
        env = dict(os.environ)
        if backbone == "llamacpp":
            command += ["--backbone-gguf", str(gguf)]
            env["LLAMA_CPP_LIB_PATH"] = str(library)
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise RuntimeError(
                f"bench engine ({backbone}) failed (exit {result.returncode}): "
                f"{result.stderr[-2000:]}"
            )
        engine: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))["engine"]
        return engine


def available_backbones() -> tuple[Backbone, ...]:
    """The runners this install can measure: llama.cpp's needs llama-cpp-python's binding."""
    if importlib.util.find_spec("llama_cpp") is None:
        return BACKBONES[:1]
    return BACKBONES


def compare(ours: dict[str, Any], theirs: LlamaFigures) -> dict[str, float]:
    """One round's figures and ratios (ours over llama.cpp's; below 1 is faster for steps)."""
    llama_ms = theirs.decode_ms_per_token
    return {
        "text_step_ms": ours["decoder_ms_per_step"],
        "audio_step_ms": ours["decoder_audio_ms_per_step"],
        "prefill_tokens_per_s": ours["prefill_tokens_per_s"],
        "depthformer_ms_per_frame": ours["depthformer_ms_per_frame"],
        "rtf": ours["rtf"],
        "rtf_batched": ours["rtf_batched"],
        "peak_rss_mb": ours["peak_rss_mb"],
        "llama_decode_ms": llama_ms,
        "llama_prefill_tokens_per_s": theirs.prefill_tokens_per_s,
        "text_step_over_llama": ours["decoder_ms_per_step"] / llama_ms,
        "audio_step_over_llama": ours["decoder_audio_ms_per_step"] / llama_ms,
        "prefill_over_llama": ours["prefill_tokens_per_s"] / theirs.prefill_tokens_per_s,
    }


def bench_peers(
    size: str = "full",
    seed: int = 0,
    rounds: int = 3,
    threads: int = 2,
    repeats: int = 5,
    model: Path | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build what is missing, run `rounds` interleaved rounds; the report (`format_report`)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    tools = llamacpp.build_tools(progress=progress)
    progress(f"llama.cpp: Q4_0 backbone ({size}, seed {seed})")
    peer = peer_gguf(size, seed, tools, llamacpp.tools_root() / "models", threads)
    if model is None:
        progress(f"engine: q4 model ({size}, seed {seed})")
        model = cached_model(size, "q4", seed)
    backbones = available_backbones()
    if len(backbones) < len(BACKBONES):
        progress(
            "engine: the llama.cpp backbone is not measured: llama-cpp-python is not installed "
            "(pip install 'lfm-satellite[llamacpp]')"
        )
    figures: dict[str, list[dict[str, float]]] = {b: [] for b in backbones}
    theirs: LlamaFigures | None = None
    for index in range(rounds):
        progress(f"round {index + 1} of {rounds}: {', '.join(backbones)}, then llama-bench")
        ours = {
            b: engine_round(model, threads, repeats, b, peer, tools.library_dir) for b in backbones
        }
        theirs = llamacpp.run_bench(tools, peer, threads, repeats=repeats)
        for b in backbones:
            figures[b].append(compare(ours[b], theirs))
    assert theirs is not None
    return {
        "cpu": cpu_model(),
        "size": size,
        "seed": seed,
        "threads": threads,
        "repeats": repeats,
        "model": str(model),
        "peer": {
            "runtime": f"llama.cpp {theirs.build} (llama-cpp-python {tools.version})",
            "file": str(peer),
            "type": theirs.model_type,
            "bytes": theirs.model_bytes,
            "params": theirs.model_params,
            "prompt_tokens": theirs.prompt_tokens,
            "decode_tokens": theirs.decode_tokens,
        },
        "targets": TARGETS,
        "engines": {b: summary(rounds_of) for b, rounds_of in figures.items()},
    }


def summary(rounds: list[dict[str, float]]) -> dict[str, Any]:
    """One backbone's rounds, their medians, and which targets the medians meet."""
    medians = {key: statistics.median(f[key] for f in rounds) for key in rounds[0]}
    return {
        "rounds": rounds,
        "median": medians,
        "met": {
            "text_step": medians["text_step_over_llama"] <= TARGETS["text_step_over_llama"],
            "audio_step": medians["audio_step_over_llama"] <= TARGETS["audio_step_over_llama"],
            "prefill": medians["prefill_over_llama"] >= TARGETS["prefill_over_llama_min"],
        },
    }


def format_report(report: dict[str, Any]) -> str:
    peer = report["peer"]
    engines = report["engines"]
    lines = [
        f"peers: the engine against {peer['runtime']}, {report['size']} backbone, "
        f"{report['threads']} threads, {len(next(iter(engines.values()))['rounds'])} "
        "interleaved rounds",
        f"  CPU: {report['cpu']}",
        f"  engine: {report['model']} (q4), the backbone on {', '.join(engines)}",
        f"  llama.cpp: {peer['type']}, {peer['bytes'] / 1e6:,.1f} MB "
        f"(prefill {peer['prompt_tokens']} tokens, decode {peer['decode_tokens']})",
    ]
    for backbone, result in engines.items():
        lines += _backbone_lines(backbone, result)
    return "\n".join(lines)


def _backbone_lines(backbone: str, result: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"  backbone on {backbone}:",
        f"  {'round':<8}{'text ms':>9}{'audio ms':>10}{'llama ms':>10}{'text/llama':>12}"
        f"{'audio/llama':>13}{'prefill t/s':>13}{'llama t/s':>11}{'ratio':>7}",
    ]
    rows = [(str(i + 1), f) for i, f in enumerate(result["rounds"])] + [
        ("median", result["median"])
    ]
    for name, f in rows:
        lines.append(
            f"  {name:<8}{f['text_step_ms']:>9.1f}{f['audio_step_ms']:>10.1f}"
            f"{f['llama_decode_ms']:>10.1f}{f['text_step_over_llama']:>12.2f}"
            f"{f['audio_step_over_llama']:>13.2f}{f['prefill_tokens_per_s']:>13.0f}"
            f"{f['llama_prefill_tokens_per_s']:>11.0f}{f['prefill_over_llama']:>7.2f}"
        )
    m, met = result["median"], result["met"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    return [
        *lines,
        f"  text step <= llama.cpp's decode: {verdict(met['text_step'])} "
        f"({m['text_step_over_llama']:.2f}x)",
        f"  audio step <= llama.cpp's decode: {verdict(met['audio_step'])} "
        f"({m['audio_step_over_llama']:.2f}x)",
        f"  prefill >= llama.cpp's: {verdict(met['prefill'])} ({m['prefill_over_llama']:.2f}x)",
        f"  engine besides: depthformer {m['depthformer_ms_per_frame']:.1f} ms/frame, "
        f"real-time factor {m['rtf']:.2f} ({m['rtf_batched']:.2f} with the detokenizer in "
        f"batches), peak RSS {m['peak_rss_mb']:,.0f} MB (medians)",
    ]
