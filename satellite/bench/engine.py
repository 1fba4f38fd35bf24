"""`lfm-satellite bench engine`: what each stage of the engine costs on this machine.

Figures (issue 4, point 8), for a 4-second spoken query:

- per stage: log-mel ms; encoder ms and ms per second of audio; prefill tokens/s (system prompt,
  audio embeddings and template on a fresh cache); decoder ms per step on a filled cache and,
  of that, the time inside `session.run` and the Python side (everything else: feeds, cache
  bookkeeping, embedding lookup, sampling), for text steps and for audio steps (text head
  skipped); depthformer ms per frame (8 codebook steps);
  streaming detokenizer ms per frame (which backend is named);
- time-to-first-audio in interleaved mode: from the moment the last input sample is handed to
  the engine (the closed utterance) to the moment the first output samples are ready: encoder,
  prefill, the text tokens before the first audio frame, that frame's depthformer, the
  detokenizer's first push. Measured with the system prompt run beforehand (as the daemon
  keeps it) and cold (system prompt in the same prefill, as the reference always does);
- real-time factor of interleaved generation: wall time per second of audio produced;
- peak RSS of a child process that only loads and runs the engine;
- this machine's memory bandwidth and the bytes the decoder reads per step (its MatMul weights,
  the lm-head included on text steps and skipped on audio steps where the graph allows it, plus
  the small weights and the KV cache), hence the floor ms/step that bandwidth allows and how far
  the measured steps are above it.

With `--reference`, the reference implementation (liquid-audio + torch on CPU,
`lfm_toolchain.bench_reference`) runs on the same weights in its own child process, and ours /
reference ratios are printed side by side.

The engine's figures are measured in a child process (`python -m satellite.bench.engine
SETTINGS.json`, `satellite.bench.harness`) so its peak RSS holds nothing but the engine; the
parent synthesizes the query (`satellite.bench.query`), measures the bandwidth and counts the
bytes (`satellite.bench.floor`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from satellite.bench.floor import decoder_floor
from satellite.bench.harness import (
    OUTPUT_RATE,
    BenchError,
    BenchSettings,
    FirstAudio,
    FloatArray,
    TimedSession,
    child_main,
    median,
    p95,
    rtf_figures,
    run_child,
    timed_runs,
    to_ms,
)
from satellite.bench.query import INPUT_RATE, PromptIds, prompt_ids, spoken_query
from satellite.bench.system import current_rss_mb, memory_bandwidth, peak_rss_mb
from satellite.engine.backbone import open_backbone
from satellite.engine.chat import Chat, Speech
from satellite.engine.depthformer import Depthformer
from satellite.engine.detokenizers import from_model
from satellite.engine.encoder import AudioEncoder
from satellite.engine.events import AudioFrame, TextToken, TurnEnd
from satellite.engine.framebatch import BATCH_FRAMES, decoded
from satellite.engine.model import BoundGraph, Model
from satellite.engine.sampling import INTERLEAVED_AUDIO, Sampler
from satellite.engine.sessions import SessionConfig
from satellite.settings import Backbone


class TimedModel(Model):
    """`satellite.engine.model.Model` whose sessions are wrapped in TimedSession."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timers: dict[str, TimedSession] = {}
        self._timed: dict[str, BoundGraph] = {}

    def graph(self, role: str) -> BoundGraph:
        bound = self._timed.get(role)
        if bound is None:
            inner = super().graph(role)
            timer = TimedSession(inner.session)
            bound = dataclasses.replace(inner, session=timer)
            self.timers[role] = timer
            self._timed[role] = bound
        return bound


ENGINE_ROLES = ("decoder", "audio_encoder", "depthformer", "embed_tokens", "audio_embedding")
"""Roles the engine opens besides the detokenizer's (those the model has)."""


def measure_engine(settings: BenchSettings, samples: FloatArray) -> dict[str, Any]:
    """Every figure of our engine for the query `samples` (see the module docstring)."""

    figures: dict[str, Any] = {}
    started = time.perf_counter()
    config = SessionConfig(
        threads=settings.threads,
        prepack=settings.prepack,
        spinning=settings.spinning,
        arena=settings.arena,
        shared_pool=settings.shared_pool,
        backbone=settings.backbone,
        backbone_gguf=settings.backbone_gguf or None,
    )
    model = TimedModel.load(Path(settings.model), config)
    rss: dict[str, float] = {"before sessions": current_rss_mb()}

    def grown(part: str, before: float) -> None:
        rss[part] = round(current_rss_mb() - before, 1)

    before = current_rss_mb()
    tables = {key for key in ("embed_tokens", "audio_embedding") if model.table(key) is not None}
    grown("tables", before)
    skipped = {"decoder"} if settings.backbone != "onnxruntime" else set()
    for role in (
        r for r in ENGINE_ROLES if r in model.manifest.graphs and r not in tables | skipped
    ):
        before = current_rss_mb()
        model.graph(role)  # what the engine runs; a lookup read as a table opens no session
        grown(role, before)

    before = current_rss_mb()
    detokenizer = from_model(model)
    grown("detokenizer", before)
    figures["load_seconds"] = round(time.perf_counter() - started, 3)
    figures["rss_after_load_mb"] = round(current_rss_mb(), 1)
    figures["rss_at_load_mb"] = {k: round(v, 1) for k, v in rss.items()}
    figures["session_config"] = dataclasses.asdict(model.config)
    figures["providers"] = list(model.providers)
    detok_role = next(r for r in model.timers if r not in ENGINE_ROLES)
    figures["detokenizer_role"] = detok_role
    figures["detokenizer_backend"] = _backend_name(detokenizer.decoder)

    prompt = PromptIds.from_json(settings.prompt)
    embeds = _measure_encoder(model, settings, samples, figures)
    decoder, out = _measure_prefill(model, settings, prompt, embeds, figures)
    out = _measure_decoder_steps(model, settings, decoder, out, figures)
    _measure_depthformer(model, settings, out.hidden, figures)
    _measure_detokenizer(detokenizer, settings, figures)
    _measure_first_audio(model, detokenizer, settings, prompt, samples, figures)
    _measure_real_time_factor(model, detokenizer, settings, prompt, samples, detok_role, figures)
    figures["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return figures


def _measure_encoder(
    model: Any, settings: BenchSettings, samples: FloatArray, figures: dict[str, Any]
) -> FloatArray:
    """Log-mel and encoder times; returns the query's audio embeddings."""

    seconds_in = samples.size / INPUT_RATE
    encoder = AudioEncoder(model.graph("audio_encoder"), model.manifest.config)
    mel = encoder.features(samples)
    embeds = encoder.encode_features(mel)
    figures["audio_seconds_in"] = round(seconds_in, 3)
    figures["mel_frames"] = int(mel.shape[0])
    figures["audio_embeddings"] = int(embeds.shape[0])
    mel_s = median(timed_runs(settings.repeats, lambda: encoder.features(samples)))
    figures["mel_ms"] = to_ms(mel_s)
    encoder_s = median(timed_runs(settings.repeats, lambda: encoder.encode_features(mel)))
    figures["encoder_ms"] = to_ms(encoder_s)
    figures["encoder_ms_per_audio_second"] = round(figures["encoder_ms"] / seconds_in, 4)
    return embeds


def _measure_prefill(
    model: Any,
    settings: BenchSettings,
    prompt: PromptIds,
    embeds: FloatArray,
    figures: dict[str, Any],
) -> tuple[Any, Any]:
    """The whole prompt (system, user header, audio embeddings, closing and assistant header)
    on a fresh cache; returns the last run's decoder and its output."""

    text = model.embeddings.text
    parts = [text(list(prompt.system)), text(list(prompt.user_open)), embeds]
    inputs = np.concatenate([*parts, text(list(prompt.user_close))])
    context = min(model.max_context or 8192, 8192)
    fresh = open_backbone(model, context)

    def prefill() -> tuple[Any, Any]:
        fresh.reset()
        fresh.push(inputs)
        return fresh, fresh.step()

    prefill_s = median(timed_runs(settings.repeats, prefill))
    figures["prefill_tokens"] = int(inputs.shape[0])
    figures["prefill_ms"] = to_ms(prefill_s)
    figures["prefill_tokens_per_s"] = round(inputs.shape[0] / prefill_s, 2)
    return prefill()


def _measure_decoder_steps(
    model: Any, settings: BenchSettings, decoder: Any, out: Any, figures: dict[str, Any]
) -> Any:
    """Text steps on the filled cache, as generation runs them (greedy choice, embedding
    lookup, push, run), then as many audio steps; the Python side is a step's wall time minus
    its time in `session.run` (on the llama.cpp backbone, which has no session to time, the
    whole step counts as the run). Returns the last step's output."""
    timer = model.timers.get("decoder")

    def run_seconds() -> float:
        return timer.seconds if timer is not None else 0.0

    def run_of(wall: float, run_before: float) -> float:  # no session: the run is all of it
        return run_seconds() - run_before if timer is not None else wall

    figures["decoder_context_start"] = decoder.length
    walls, runs = [], []
    for _ in range(settings.decoder_steps):
        before, run_before = time.perf_counter(), run_seconds()
        token = int(np.argmax(out.logits))
        decoder.push(model.embeddings.text([token]))
        out = decoder.step()
        walls.append(time.perf_counter() - before)
        runs.append(run_of(walls[-1], run_before))
    walls, runs = walls[1:], runs[1:]  # the first step after a prefill warms up
    overheads = [w - r for w, r in zip(walls, runs, strict=True)]
    figures["decoder_steps"] = len(walls)
    figures["decoder_ms_per_step"] = to_ms(median(walls))
    figures["decoder_run_ms_per_step"] = to_ms(median(runs))
    figures["python_overhead_ms_per_step"] = to_ms(median(overheads))
    figures["python_overhead_p95_ms"] = to_ms(p95(overheads))
    figures["decoder_context_end"] = decoder.length

    # audio steps: a frame's embedding in, the hidden state out, the text head skipped where
    # the graph allows it (as generation runs them)
    rng = np.random.default_rng(settings.seed)
    codes = rng.integers(0, 2048, size=(settings.decoder_steps, model.embeddings.codebooks))
    walls, runs = [], []
    for frame in codes:
        before, run_before = time.perf_counter(), run_seconds()
        decoder.push(model.embeddings.frames([frame]))
        out = decoder.step(logits=False)
        walls.append(time.perf_counter() - before)
        runs.append(run_of(walls[-1], run_before))
    walls, runs = walls[1:], runs[1:]
    figures["decoder_audio_ms_per_step"] = to_ms(median(walls))
    figures["decoder_audio_run_ms_per_step"] = to_ms(median(runs))
    figures["python_overhead_audio_ms_per_step"] = to_ms(
        median([w - r for w, r in zip(walls, runs, strict=True)])
    )
    graph = getattr(decoder, "graph", None)  # llama.cpp's embeddings mode skips its head
    figures["decoder_audio_skips_lm_head"] = graph is None or graph.has_input("num_logits_to_keep")
    return out


def _measure_depthformer(
    model: Any, settings: BenchSettings, hidden: FloatArray, figures: dict[str, Any]
) -> None:
    """Whole frames (8 codebook steps, interleaved-mode sampling) for one hidden state."""

    depthformer = Depthformer(model.graph("depthformer"), model.manifest.config)
    sampler = Sampler(settings.seed)
    timer = model.timers["depthformer"]
    depthformer.frame(hidden, INTERLEAVED_AUDIO, sampler)  # warm-up
    walls, runs = [], []
    for _ in range(settings.depthformer_frames):
        before, run_before = time.perf_counter(), timer.seconds
        depthformer.frame(hidden, INTERLEAVED_AUDIO, sampler)
        walls.append(time.perf_counter() - before)
        runs.append(timer.seconds - run_before)
    figures["depthformer_frames"] = len(walls)
    figures["depthformer_ms_per_frame"] = to_ms(median(walls))
    figures["depthformer_run_ms_per_frame"] = to_ms(median(runs))
    overheads = [w - r for w, r in zip(walls, runs, strict=True)]
    figures["depthformer_overhead_ms_per_frame"] = to_ms(median(overheads))


def _measure_detokenizer(
    detokenizer: Any, settings: BenchSettings, figures: dict[str, Any]
) -> None:
    """A stream of seeded random frames pushed one at a time; the first push of a stream is
    reported apart (it starts the ISTFT and the backend's state)."""
    rng = np.random.default_rng(settings.seed)
    codes = rng.integers(0, 2048, size=(detokenizer.codebooks, settings.detokenizer_frames))
    detokenizer.push(codes[:, 0])  # warm-up
    detokenizer.reset()
    walls = []
    for i in range(settings.detokenizer_frames):
        before = time.perf_counter()
        detokenizer.push(codes[:, i])
        walls.append(time.perf_counter() - before)
    detokenizer.reset()
    figures["detokenizer_frames"] = len(walls) - 1
    figures["detokenizer_ms_per_frame"] = to_ms(median(walls[1:]))
    figures["detokenizer_first_frame_ms"] = to_ms(walls[0])


def _user_turn(prompt: PromptIds, samples: FloatArray) -> list[Any]:
    return [list(prompt.user_open), Speech(samples), list(prompt.user_close)]


def _measure_first_audio(
    model: Any,
    detokenizer: Any,
    settings: BenchSettings,
    prompt: PromptIds,
    samples: FloatArray,
    figures: dict[str, Any],
) -> None:
    """Time-to-first-audio with the system prompt run beforehand (`ttfa_ms`) and cold (the
    system prompt in the same prefill: `ttfa_cold_ms`); the breakdown is the median run's."""

    system: list[Any] = [list(prompt.system)]
    user = _user_turn(prompt, samples)
    warm_chat = Chat(model, prefix=system, turn_end=prompt.turn_end, seed=settings.seed)
    cold_chat = Chat(model, turn_end=prompt.turn_end, seed=settings.seed)
    config = warm_chat.generation_config("interleaved", max_new_tokens=settings.max_new_tokens)
    warm: list[FirstAudio] = []
    cold: list[FirstAudio] = []
    for _ in range(settings.repeats + 1):  # the first of each is a warm-up
        for chat, parts, into in ((warm_chat, user, warm), (cold_chat, system + user, cold)):
            chat.reset()
            detokenizer.reset()
            into.append(_first_audio(chat.turn(parts, config), detokenizer))
    warm, cold = warm[1:], cold[1:]
    middle = sorted(warm, key=lambda t: t.ttfa)[len(warm) // 2]
    figures["ttfa_ms"] = to_ms(median([t.ttfa for t in warm]))
    figures["ttfa_min_ms"] = to_ms(min(t.ttfa for t in warm))
    figures["ttfa_cold_ms"] = to_ms(median([t.ttfa for t in cold]))
    figures["ttfa_first_text_ms"] = to_ms(middle.first_text)
    figures["ttfa_first_frame_ms"] = to_ms(middle.first_frame)
    figures["ttfa_detokenizer_ms"] = to_ms(middle.ttfa - middle.first_frame)
    figures["text_tokens_before_audio"] = middle.text_tokens
    figures["ttfa_repeats"] = len(warm)
    figures["ttfa_frames_not_decodable"] = sum(t.frames_not_decodable for t in warm + cold)
    detokenizer.reset()


def _measure_real_time_factor(
    model: Any,
    detokenizer: Any,
    settings: BenchSettings,
    prompt: PromptIds,
    samples: FloatArray,
    detok_role: str,
    figures: dict[str, Any],
) -> None:
    """Interleaved turns (system prompt run beforehand) until `audio_seconds` of audio are
    out of the detokenizer: one decoding frame by frame (`rtf`, the figures beside it), one
    decoding in batches as the daemon does for replies slower than real time
    (`rtf_batched`, `satellite.engine.framebatch`). A real-time factor: from the first text
    token (the prompt done) to then, per second of audio; `rtf_with_prompt`: from the
    utterance handed over."""
    one = _real_time_turn(model, detokenizer, settings, prompt, samples, detok_role, 1)
    batched = _real_time_turn(
        model, detokenizer, settings, prompt, samples, detok_role, BATCH_FRAMES
    )
    figures.update(one)
    figures["rtf_batched"] = batched["rtf"]
    figures["rtf_batched_frames"] = BATCH_FRAMES
    figures["rtf_batched_seconds_in"] = batched["rtf_seconds_in"]


def _real_time_turn(
    model: Any,
    detokenizer: Any,
    settings: BenchSettings,
    prompt: PromptIds,
    samples: FloatArray,
    detok_role: str,
    batch: int,
) -> dict[str, Any]:
    chat = Chat(model, prefix=[list(prompt.system)], turn_end=prompt.turn_end, seed=settings.seed)
    config = chat.generation_config("interleaved", max_new_tokens=settings.max_new_tokens)
    run_before = {r: t.seconds for r, t in model.timers.items()}
    first_text: float | None = None
    produced = frames = texts = skipped = 0
    target = int(settings.audio_seconds * OUTPUT_RATE)
    t0 = time.monotonic()
    turn = chat.turn(_user_turn(prompt, samples), config)
    try:
        for event, audio in decoded(turn, detokenizer, batch):
            if isinstance(event, TextToken):
                texts += 1
                first_text = event.time if first_text is None else first_text
            elif isinstance(event, AudioFrame) and not event.end_of_audio:
                frames += 1
                skipped += audio is None
                produced += 0 if audio is None else audio.size
                if produced >= target:
                    break
            elif isinstance(event, TurnEnd):
                break
    finally:
        if isinstance(turn, Generator):
            turn.close()
    t_end = time.monotonic()
    detokenizer.reset()
    if first_text is None:
        raise BenchError("the interleaved turn produced no audio: no real-time factor")
    spent = {r: t.seconds - run_before[r] for r, t in model.timers.items()}
    return {
        **rtf_figures(t0, first_text, t_end, produced, texts, frames, skipped),
        "rtf_seconds_in": {
            "decoder": round(spent.get("decoder", 0.0), 4),
            "depthformer": round(spent.get("depthformer", 0.0), 4),
            "detokenizer": round(spent.get(detok_role, 0.0), 4),
            "encoder": round(spent.get("audio_encoder", 0.0), 4),
            "total": round(t_end - t0, 4),
        },
    }


def _backend_name(decoder: Any) -> str:
    name = type(decoder).__name__
    return {"CachedDecoder": "cached", "WindowedDecoder": "windowed"}.get(name, name)


def _first_audio(events: Iterator[Any], detokenizer: Any) -> FirstAudio:
    """Run a turn until the detokenizer gives its first samples; closes the turn there."""

    t0 = time.monotonic()
    first_text = first_frame = None
    texts = skipped = 0
    try:
        for event, audio in decoded(events, detokenizer):
            if isinstance(event, TextToken):
                texts += 1
                first_text = event.time if first_text is None else first_text
            elif isinstance(event, AudioFrame):
                first_frame = event.time if first_frame is None else first_frame
                skipped += audio is None
                if audio is not None and audio.size:
                    now = time.monotonic()
                    return FirstAudio(
                        ttfa=now - t0,
                        first_text=(first_text or first_frame) - t0,
                        first_frame=first_frame - t0,
                        text_tokens=texts,
                        frames_not_decodable=skipped,
                    )
    finally:
        if isinstance(events, Generator):
            events.close()
    raise BenchError(
        f"the interleaved turn ended after {texts} text tokens without audio: no "
        "time-to-first-audio (the model ended its turn; try another --seed)"
    )


def reference_available() -> str | None:
    """None when the reference can run here, else why not (one line)."""

    missing = [
        m
        for m in (
            "torch",
            "transformers",
            "einops",
            "accelerate",
            "librosa",
            "lfm_toolchain.reference",
        )
        if importlib.util.find_spec(m) is None
    ]
    if missing:
        return (
            f"--reference needs the export and test extras (missing: {', '.join(missing)}): "
            "pip install -e '.[export,test]' from a source checkout"
        )
    return None


COMPARED = (
    ("mel_ms", "mel (ms)"),
    ("encoder_ms", "encoder (ms)"),
    ("encoder_ms_per_audio_second", "encoder (ms per s of audio)"),
    ("prefill_tokens_per_s", "prefill (tokens/s)"),
    ("decoder_ms_per_step", "decoder, text step (ms)"),
    ("python_overhead_ms_per_step", "  Python side (ms/step)"),
    ("decoder_audio_ms_per_step", "decoder, audio step (ms)"),
    ("depthformer_ms_per_frame", "depthformer (ms/frame)"),
    ("detokenizer_ms_per_frame", "detokenizer (ms/frame)"),
    ("ttfa_ms", "TTFA, system prompt cached (ms)"),
    ("ttfa_cold_ms", "TTFA, cold (ms)"),
    ("rtf", "real-time factor"),
    ("rtf_batched", "  detokenizer in batches"),
    ("peak_rss_mb", "peak RSS (MB)"),
)
"""Figures printed side by side: key, label."""


def ratios(ours: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, float]:
    """ours / reference for every figure both have (as numbers)."""
    out = {}
    for key, _ in COMPARED:
        a, b = ours.get(key), reference.get(key)
        if isinstance(a, int | float) and isinstance(b, int | float) and b:
            out[key] = round(float(a) / float(b), 4)
    return out


def bench_engine(
    model: Path,
    *,
    threads: int = 0,
    repeats: int = 5,
    decoder_steps: int = 64,
    audio_seconds: float = 3.0,
    seed: int = 0,
    reference: bool = False,
    bandwidth_mb: int = 512,
    prepack: bool = True,
    spinning: bool = False,
    arena: bool = True,
    shared_pool: bool = True,
    backbone: Backbone = "onnxruntime",
    backbone_gguf: Path | None = None,
) -> dict[str, Any]:
    """Measure the engine on the model directory `model` (and the reference, when asked);
    returns the report (see `format_report`)."""

    if reference:
        why = reference_available()
        if why:
            raise BenchError(why)
    loaded = Model.load(model)
    prompt = prompt_ids(loaded.tokenizer())
    query = spoken_query()
    report: dict[str, Any] = {
        "model": str(model),
        "model_name": loaded.manifest.name,
        "family": loaded.manifest.family,
        "variant": loaded.manifest.variant,
        "model_source": dict(loaded.manifest.source),
        "query": {
            "seconds": query.seconds,
            "speech_seconds": query.speech_seconds,
            "source": query.source,
        },
        "prompt": {"source": prompt.source, "system_ids": len(prompt.system)},
        "machine": {"cpus": os.cpu_count()},
    }
    with tempfile.TemporaryDirectory(prefix="lfm-bench-engine-") as tmp:
        query_path = Path(tmp) / "query.npy"
        np.save(query_path, query.samples)
        settings = BenchSettings(
            model=str(model.resolve()),
            threads=threads,
            prepack=prepack,
            spinning=spinning,
            arena=arena,
            shared_pool=shared_pool,
            backbone=backbone,
            backbone_gguf=str(backbone_gguf.resolve()) if backbone_gguf else "",
            repeats=repeats,
            decoder_steps=decoder_steps,
            audio_seconds=audio_seconds,
            seed=seed,
            query=str(query_path),
            prompt=prompt.to_json(),
            out=str(Path(tmp) / "engine.json"),
        )
        report["settings"] = {
            k: v
            for k, v in dataclasses.asdict(settings).items()
            if k not in ("query", "prompt", "out")
        }
        report["engine"] = run_child("satellite.bench.engine", settings)
        if reference:
            ref_settings = dataclasses.replace(settings, out=str(Path(tmp) / "reference.json"))
            report["reference"] = run_child("lfm_toolchain.bench_reference", ref_settings)
            report["ratios"] = ratios(report["engine"], report["reference"])
    bandwidth = memory_bandwidth(bandwidth_mb)
    report["machine"]["memory_bandwidth_gb_s"] = round(bandwidth.copy_gb_s, 2)
    report["machine"]["bandwidth_threads"] = bandwidth.threads
    engine = report["engine"]
    middle = (engine["decoder_context_start"] + engine["decoder_context_end"]) // 2
    report["decoder_bound"] = decoder_floor(
        model,
        loaded.manifest.config,
        middle,
        bandwidth.copy_gb_s,
        engine["decoder_ms_per_step"],
        engine["decoder_audio_ms_per_step"],
        skips_head=engine["decoder_audio_skips_lm_head"],
    )
    report["targets"] = {
        "python_overhead_ms_per_step_max": PYTHON_OVERHEAD_TARGET_MS,
        "python_overhead_met": engine["python_overhead_ms_per_step"] <= PYTHON_OVERHEAD_TARGET_MS,
        "peak_rss_mb_max_full_q4": PEAK_RSS_TARGET_MB,
        "peak_rss_met": engine["peak_rss_mb"] <= PEAK_RSS_TARGET_MB,
    }
    return report


PYTHON_OVERHEAD_TARGET_MS = 1.0
"""Issue 4 point 8: the Python side of a decoder step (everything but `session.run`)."""
PEAK_RSS_TARGET_MB = 1200.0
"""Issue 4 point 8: peak RSS of the full-size q4 model."""


def _number(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def format_report(report: Mapping[str, Any]) -> str:
    engine = report["engine"]
    reference = report.get("reference")
    bound = report["decoder_bound"]
    query = report["query"]

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    text_head = (
        "skipped" if engine["decoder_audio_skips_lm_head"] else "run: the graph cannot skip it"
    )

    lines = [
        f"engine benchmark: {report['model_name']} ({report['variant']}) at {report['model']}",
        f"  query: {query['seconds']} s ({query['speech_seconds']} s speech), {query['source']}",
        f"  threads {report['settings']['threads'] or 'all'}, prepack "
        f"{'on' if report['settings']['prepack'] else 'off'}, spinning "
        f"{'on' if report['settings']['spinning'] else 'off'}, arena "
        f"{'on' if report['settings'].get('arena', True) else 'off'}, shared pool "
        f"{'on' if report['settings'].get('shared_pool', False) else 'off'}, backbone on "
        f"{report['settings'].get('backbone', 'onnxruntime')}, {report['settings']['repeats']} "
        f"repeats, providers {', '.join(engine['providers'])}; detokenizer: "
        f"{engine['detokenizer_backend']} ({engine['detokenizer_role']})",
        "",
    ]
    head = f"  {'figure':<34}{'ours':>12}"
    if reference:
        head += f"{'reference':>12}{'ours/ref':>10}"
    lines.append(head)
    ratio = report.get("ratios", {})
    for key, label in COMPARED:
        row = f"  {label:<34}{_number(engine.get(key)):>12}"
        if reference:
            value = ratio.get(key)
            row += f"{_number(reference.get(key)):>12}{(f'{value:.2f}' if value else '-'):>10}"
        lines.append(row)
    lines += [
        "",
        f"  prefill: {engine['prefill_tokens']} positions ({engine['audio_embeddings']} audio "
        f"embeddings) in {_number(engine['prefill_ms'])} ms",
        f"  text step: {_number(engine['decoder_ms_per_step'])} ms, of which session.run "
        f"{_number(engine['decoder_run_ms_per_step'])} ms and Python "
        f"{_number(engine['python_overhead_ms_per_step'])} ms (p95 "
        f"{_number(engine['python_overhead_p95_ms'])} ms; target <= "
        f"{PYTHON_OVERHEAD_TARGET_MS:g} ms: {met(report['targets']['python_overhead_met'])})",
        f"  audio step: {_number(engine['decoder_audio_ms_per_step'])} ms, of which Python "
        f"{_number(engine['python_overhead_audio_ms_per_step'])} ms (text head {text_head})",
        f"  TTFA {_number(engine['ttfa_ms'])} ms: first text token at "
        f"{_number(engine['ttfa_first_text_ms'])} ms, first audio frame at "
        f"{_number(engine['ttfa_first_frame_ms'])} ms after "
        f"{engine['text_tokens_before_audio']} text tokens, detokenizer "
        f"{_number(engine['ttfa_detokenizer_ms'])} ms",
        f"  RTF {_number(engine['rtf'])} over {engine['rtf_audio_seconds']} s of audio "
        f"({_number(engine['rtf_with_prompt'])} with encoder and prefill); with the "
        f"detokenizer taking {engine.get('rtf_batched_frames', '-')} frames a call "
        f"{_number(engine.get('rtf_batched'))}",
        "  RSS at load (MB): "
        + ", ".join(f"{k} {_number(v)}" for k, v in engine["rss_at_load_mb"].items()),
        f"  peak RSS {_number(engine['peak_rss_mb'])} MB (after loading "
        f"{_number(engine['rss_after_load_mb'])} MB; target for the full-size q4 model <= "
        f"{PEAK_RSS_TARGET_MB:,.0f} MB: {met(report['targets']['peak_rss_met'])})",
        f"  memory bandwidth {bound['bandwidth_gb_s']} GB/s (copy, read + write); decoder reads "
        f"{bound['bytes_per_step'] / 1e6:,.1f} MB per step (MatMul weights "
        f"{bound['matmul_bytes'] / 1e6:,.1f} MB incl. lm-head {bound['lm_head_bytes'] / 1e6:,.1f}"
        f" MB, cache {bound['cache_bytes'] / 1e6:,.2f} MB)",
        f"  floor {bound['floor_ms_per_step']} ms/step "
        f"({bound['floor_ms_per_step_without_lm_head']} without the lm-head); measured "
        f"{bound['measured_ms_per_step']} ms = {bound['measured_over_floor']}x the floor; "
        f"audio step {bound['measured_audio_ms_per_step']} ms = {bound['audio_over_floor']}x "
        f"its floor {bound['floor_ms_per_audio_step']} ms",
    ]
    if reference:
        lines.append(
            "  ours/ref: below 1 is better for times, the real-time factor and RSS; above 1 "
            "for tokens/s"
        )
        lines.append(
            f"  reference: liquid-audio + torch {reference.get('torch_version', '?')} on CPU, "
            f"{reference.get('weights', '')}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:], measure_engine))
