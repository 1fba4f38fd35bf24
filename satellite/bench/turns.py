"""`lfm-satellite bench turns`: the daemon's own share of the time to first audio.

The daemon runs as in production (capture at real time through the null backend, so the
wake-word model and the VAD keep working on the loop; the Wyoming server up), and N local
turns are driven through its reply path (`Daemon.answer`) with the benchmark's spoken query.
For each turn:

- time to first audio: from the end of the utterance to the first reply audio handed to the
  speaker;
- engine: from the worker taking the turn to the detokenizer's first samples;
- start delay: how long the first audio was held so that the rest of the reply would keep up
  (0 where the engine makes audio faster than real time; see `satellite.audio.pacing`);
- overhead = time to first audio - engine - start delay: handing the utterance to the worker
  thread, the event hop back to the loop, queueing for playback, resampling;
- underruns and holds: breaks in the reply's playback (a speaker that ran dry) and
  deliberate gaps; and the engine's real-time factor over the reply;
- safety wait: what the text check added to the first audio (`satellite.safety.gate`: the
  first frame's wait for its text to pass, and the rules' time before it), with the rules of
  `--policy FILE` (none by default).

Turns run back to back, each reply played out at real time before the next (so the tiny
model's noisy replies are cut to `--reply-seconds`). With `--pause S`, each turn is as if the
user paused S seconds before the endpointer decided (`vad.speculative`): the speculative
prefill starts S seconds before the time to first audio starts counting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from satellite.bench.query import QUERY_TEXT, Query, spoken_query
from satellite.bench.system import peak_rss_mb
from satellite.daemon.core import Daemon
from satellite.settings import Backbone, Settings, loopback_wyoming
from satellite.telemetry.stats import Window

WINDOWS = {
    "time_to_first_audio_ms": "time to first audio ms",
    "engine_ms": "engine ms",
    "start_delay_ms": "start delay ms",
    "overhead_ms": "daemon overhead ms",
    "safety_wait_ms": "safety wait ms",
    "generation_rtf": "engine real-time factor",
}
"""The figures of each turn (name in the report: label in the table)."""


async def _run(
    settings: Settings, turns: int, query: Query, pause: float | None = None
) -> list[Any]:
    daemon = Daemon(settings)
    await daemon.start()
    reports = []
    try:
        for _ in range(turns):
            reports.append(await daemon.answer(query.samples, pause=pause))
    finally:
        await daemon.close()
    return reports


def bench_turns(
    model: Path, *, turns: int = 50, threads: int = 0, reply_seconds: float = 1.0,
    query_seconds: float = 4.0, query_text: str | None = None, pause: float | None = None,
    backbone: Backbone = "onnxruntime", backbone_gguf: Path | None = None,
    policy: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    base = Settings()
    replace = dataclasses.replace
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lfm-bench-") as scratch:
        settings = replace(
            base,
            satellite=replace(
                base.satellite,
                conversation_timeout_seconds=0.0,
                state_file=str(Path(scratch) / "state.json"),  # not the user's saved controls
            ),
            audio=replace(base.audio, backend="null", realtime=True),
            model=replace(
                base.model,
                directory=str(model),
                threads=threads,
                backbone=backbone,
                backbone_gguf=str(backbone_gguf.resolve()) if backbone_gguf else None,
            ),
            wyoming=loopback_wyoming(base.wyoming),
            safety=replace(
                base.safety,
                max_reply_seconds=reply_seconds,
                policy_file=str(policy.resolve()) if policy else None,
            ),
            mqtt=replace(base.mqtt, enabled=False),
        )
        query = spoken_query(query_seconds, text=query_text or QUERY_TEXT)
        reports = asyncio.run(_run(settings, turns, query, pause))
    windows = {name: Window(turns) for name in WINDOWS}
    for report in reports:
        if report.overhead is None:
            continue
        windows["time_to_first_audio_ms"].add(report.time_to_first_audio * 1000)
        windows["engine_ms"].add(report.engine_first_audio * 1000)
        windows["start_delay_ms"].add((report.start_delay or 0.0) * 1000)
        windows["overhead_ms"].add(report.overhead * 1000)
        if report.safety_wait is not None:
            windows["safety_wait_ms"].add(report.safety_wait * 1000)
        if report.generation_rtf is not None:
            windows["generation_rtf"].add(report.generation_rtf)
    return {
        "model": str(model),
        "turns": turns,
        "turns_with_audio": len(windows["overhead_ms"]),
        "threads": threads,
        "backbone": backbone,
        "query_seconds": query_seconds,
        "query": query.source,
        "speech_seconds": query.speech_seconds,
        "reply_seconds": reply_seconds,
        "speculative_pause_seconds": pause,
        "policy": str(policy) if policy else None,
        "blocked_turns": sum(report.blocked_rule is not None for report in reports),
        "machine": platform.machine(),
        "wall_seconds": round(time.monotonic() - started, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "underruns": [report.underruns for report in reports],
        "holds": [report.holds for report in reports],
        **{name: window.summary().as_dict() for name, window in windows.items()},
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"local turns on {report['model']}: {report['turns_with_audio']} of {report['turns']} "
        f"with audio ({report['query_seconds']:g} s query, "
        f"{report.get('speech_seconds', report['query_seconds']):g} s of speech, replies cut at "
        f"{report['reply_seconds']:g} s, backbone on {report.get('backbone', 'onnxruntime')}, "
        f"{report['wall_seconds']} s in all)"
        + (
            f"; speculative work {report['speculative_pause_seconds']:g} s before the end"
            if report.get("speculative_pause_seconds") is not None
            else ""
        ),
        f"{'':24}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}",
    ]
    for name, label in WINDOWS.items():
        s = report.get(name)
        if s is None:
            continue
        digits = {"generation_rtf": ".2f", "safety_wait_ms": ".3f"}.get(name, ".1f")
        cells = "".join(
            f"{'-' if s[k] is None else format(s[k], digits):>9}"
            for k in ("p50", "p95", "p99", "max")
        )
        lines.append(f"{label:24}{cells}")
    if "underruns" in report:
        breaks = sum(report["underruns"])
        lines.append(
            f"playback: {breaks} underrun(s) in {sum(1 for u in report['underruns'] if u)} of "
            f"{report['turns']} replies, {sum(report['holds'])} hold(s)"
            + ("" if breaks else " (every reply played without a break)")
        )
    if report.get("policy"):
        lines.append(f"safety policy {report['policy']}: {report['blocked_turns']} of "
                     f"{report['turns']} replies blocked")  # fmt: skip
    if report.get("peak_rss_mb") is not None:
        lines.append(
            f"peak RSS of this process (the daemon and the bench): {report['peak_rss_mb']:,.0f} MB"
        )
    return "\n".join(lines)
