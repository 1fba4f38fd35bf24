"""`lfm-satellite bench services`: the Wyoming services as Home Assistant sees them.

A `ServicesServer` on loopback in a child process, driven by the real `wyoming` client the way
Home Assistant drives it from its own process (a new connection per request):

- speech-to-text of the benchmark's spoken query, sent in 1024-sample chunks, `audio-stop`
  once the server has taken them in (as with live audio): from `audio-stop` to
  `transcript-start`, to the first `transcript-chunk` and to the final
  `transcript`; and the front end's work left at `audio-stop` (`StreamingLogMel.finish`)
  against the one-shot log-mel of the whole query;
- text-to-speech of one sentence: from `synthesize` to the first `audio-chunk`, audio length
  and real-time factor (a random-weight model may give no audio: said so);
- conversation: `transcript` to `handled`;
- N speech-to-text requests at once with 1 and with 2 workers: wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import platform
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize

from satellite.bench.query import spoken_query
from satellite.engine.mel import LogMel, StreamingLogMel
from satellite.engine.model import Model
from satellite.engine.sessions import SessionConfig
from satellite.engine.template import Tokens
from satellite.telemetry.stats import Window
from satellite.wyoming.services.common import ServicesConfig
from satellite.wyoming.services.server import ServicesServer
from satellite.wyoming.speech import Limits

TTS_TEXT = "The kitchen lights are on, and the front door is locked."
CHUNK = 1024
SETTLE = 0.2
"""Seconds between the last audio-chunk and audio-stop: the chunks are sent at once, and a
live stream (Home Assistant's, at real time) would have been taken in by then."""


def _pcm(samples: np.ndarray) -> bytes:
    return bytes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


async def _transcribe(port: int, pcm: bytes) -> dict[str, float]:
    marks: dict[str, float] = {}
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(16000, 2, 1).event())
        for i in range(0, len(pcm), CHUNK * 2):
            await client.write_event(AudioChunk(16000, 2, 1, pcm[i : i + CHUNK * 2]).event())
        await asyncio.sleep(SETTLE)  # live audio arrives at real time: the server keeps up
        started = time.perf_counter()
        await client.write_event(AudioStop().event())
        for _ in range(100_000):
            event = await client.read_event()
            if event is None or event.type == "error":
                raise RuntimeError(f"transcription failed: {event}")
            marks.setdefault(event.type, (time.perf_counter() - started) * 1000)
            if event.type == "transcript":
                break
    return marks


async def _synthesize(port: int) -> tuple[float | None, float, float]:
    """(ms to the first audio-chunk, audio seconds, total seconds)."""

    first: float | None = None
    audio = 0
    rate = 24000
    async with AsyncTcpClient("127.0.0.1", port) as client:
        started = time.perf_counter()
        await client.write_event(Synthesize(text=TTS_TEXT).event())
        for _ in range(100_000):
            event = await client.read_event()
            if event is None or event.type in ("audio-stop", "error"):
                break
            if AudioStart.is_type(event.type):
                rate = AudioStart.from_event(event).rate
            elif AudioChunk.is_type(event.type):
                first = first if first is not None else (time.perf_counter() - started) * 1000
                audio += len(AudioChunk.from_event(event).audio) // 2
    return first, audio / rate, time.perf_counter() - started


async def _handle(port: int, n: int) -> float:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        started = time.perf_counter()
        context = {"conversation_id": f"bench-{n}"}
        await client.write_event(Transcript("Is the kitchen light on?", context=context).event())
        await client.read_event()
        return (time.perf_counter() - started) * 1000


def _serve(model: str, threads: int, workers: int, queue: int, conn: Connection) -> None:
    """In a child process (as Home Assistant is another process: the client's reads do not
    wait for the workers' hold on the GIL): serve until told to stop."""

    async def serve() -> None:
        loaded = Model.load(Path(model), SessionConfig(threads=threads))
        tokens = Tokens(loaded.tokenizer(), model)
        config = ServicesConfig(
            host="127.0.0.1", port=0, workers=workers, queue=queue,
            limits=Limits(asr_tokens=64, speech_seconds=5.0, reply_tokens=128, seed=0),
        )  # fmt: skip
        server = ServicesServer(loaded, tokens, config)
        await server.start()
        conn.send(server.bound_port)
        try:
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        finally:
            await server.stop()

    asyncio.run(serve())


@contextlib.contextmanager
def _server(model: Path, threads: int, workers: int, queue: int) -> Iterator[int]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(
        target=_serve, args=(str(model), threads, workers, queue, theirs), daemon=True
    )
    child.start()
    try:
        if not ours.poll(120):
            raise RuntimeError("the services server did not start within 120 s")
        yield int(ours.recv())
    finally:
        with contextlib.suppress(OSError):
            ours.send("stop")
        child.join(30)
        if child.is_alive():
            child.kill()
            child.join(5)


async def _measure(port: int, requests: int, pcm: bytes) -> dict[str, Any]:
    windows = {k: Window(requests) for k in ("start", "chunk", "transcript")}
    for _ in range(requests):
        marks = await _transcribe(port, pcm)
        windows["start"].add(marks["transcript-start"])
        windows["chunk"].add(marks.get("transcript-chunk", marks["transcript"]))
        windows["transcript"].add(marks["transcript"])
    tts = [await _synthesize(port) for _ in range(3)]
    spoken = [t for t in tts if t[0] is not None]
    handled = Window(requests)
    for n in range(requests):
        handled.add(await _handle(port, n % 2))
    return {
        "asr_ms": {k: w.summary().as_dict() for k, w in windows.items()},
        "tts": {
            "first_audio_ms": [round(t[0], 1) for t in spoken if t[0] is not None],
            "audio_seconds": [round(t[1], 2) for t in spoken],
            "real_time_factor": [round(t[2] / t[1], 3) for t in spoken if t[1]],
            "requests_without_audio": len(tts) - len(spoken),
        },
        "handle_ms": handled.summary().as_dict(),
    }


async def _concurrent(port: int, requests: int, pcm: bytes) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(_transcribe(port, pcm) for _ in range(requests)))
    return round(time.perf_counter() - started, 3)


def bench_services(model: Path, *, requests: int = 10, threads: int = 0) -> dict[str, Any]:
    query = spoken_query()
    samples = query.samples
    mel = LogMel()
    one_shot = Window(5)
    streamed = Window(5)
    for _ in range(5):
        began = time.perf_counter()
        mel(samples)
        one_shot.add((time.perf_counter() - began) * 1000)
        stream = StreamingLogMel(mel)
        for i in range(0, samples.size, CHUNK):
            stream.push(samples[i : i + CHUNK])
        began = time.perf_counter()
        stream.finish()
        streamed.add((time.perf_counter() - began) * 1000)
    started = time.monotonic()
    pcm = _pcm(samples)
    with _server(model, threads, 1, requests) as port:
        figures = asyncio.run(_measure(port, requests, pcm))
        figures["concurrent_asr_seconds_workers_1"] = asyncio.run(_concurrent(port, requests, pcm))
    with _server(model, threads, 2, requests) as port:
        figures["concurrent_asr_seconds_workers_2"] = asyncio.run(_concurrent(port, requests, pcm))
    return {
        "model": str(model),
        "requests": requests,
        "threads": threads,
        "query_seconds": query.seconds,
        "query": query.source,
        "machine": platform.machine(),
        "mel_at_audio_stop_ms": {
            "one_shot": one_shot.summary().as_dict(),
            "streamed_finish": streamed.summary().as_dict(),
        },
        **figures,
        "wall_seconds": round(time.monotonic() - started, 1),
    }


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_report(report: dict[str, Any]) -> str:
    asr = report["asr_ms"]
    mel = report["mel_at_audio_stop_ms"]
    tts = report["tts"]
    lines = [
        f"Wyoming services on {report['model']} ({report['query_seconds']:g} s query, "
        f"{report['requests']} requests each, {report['wall_seconds']} s in all)",
        f"{'':44}{'p50':>8}{'p95':>8}{'max':>8}",
    ]
    rows = (
        ("audio-stop -> transcript-start ms", asr["start"]),
        ("audio-stop -> first transcript-chunk ms", asr["chunk"]),
        ("audio-stop -> transcript ms", asr["transcript"]),
        ("transcript -> handled ms", report["handle_ms"]),
        ("log-mel left at audio-stop (streamed) ms", mel["streamed_finish"]),
        ("log-mel of the whole query (one shot) ms", mel["one_shot"]),
    )
    for label, s in rows:
        lines.append(f"{label:44}{_cell(s['p50']):>8}{_cell(s['p95']):>8}{_cell(s['max']):>8}")
    if tts["first_audio_ms"]:
        lines.append(
            f"text-to-speech: first audio-chunk {tts['first_audio_ms']} ms, real-time factor "
            f"{tts['real_time_factor']}"
        )
    if tts["requests_without_audio"]:
        lines.append(
            f"text-to-speech: {tts['requests_without_audio']} of 3 requests gave no audio "
            "(a random-weight model rarely starts audio by itself)"
        )
    lines.append(
        f"{report['requests']} transcriptions at once: "
        f"{report['concurrent_asr_seconds_workers_1']} s with 1 worker, "
        f"{report['concurrent_asr_seconds_workers_2']} s with 2"
    )
    return "\n".join(lines)
