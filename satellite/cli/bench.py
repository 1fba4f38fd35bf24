"""`lfm-satellite bench ...`: benchmark commands that print figures and save them as JSON."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

from satellite.cli.model import load_toolchain, print_step
from satellite.errors import UserError
from satellite.modeldir.manifest import VARIANTS, human_size
from satellite.settings import BACKBONES, AudioSettings


def add_bench_commands(commands: Any) -> None:
    bench = commands.add_parser(
        "bench",
        help="measure build, speed and memory figures (prints them, saves JSON)",
        description="Benchmarks. Each prints its figures and, with --json, saves them.",
    )
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCH_COMMAND")
    sub.required = True

    build = sub.add_parser(
        "build",
        help="build a model and report time, peak memory, sizes and parameter counts",
        description="Build a random-weight model directory (needs the export extra) and report "
        "build time, peak RSS, each graph's size and parameters per component.",
    )
    build.add_argument("--size", choices=("tiny", "full"), default="full", help="default: full")
    build.add_argument("--variant", choices=VARIANTS, default="q4", help="default: q4")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument(
        "--from",
        dest="checkpoint",
        type=Path,
        metavar="CHECKPOINT_DIR",
        help="build from this checkpoint directory (as `model build --from`) instead of random "
        "weights; `bench checkpoint` writes a full-size one",
    )
    build.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory to write")
    build.add_argument("--json", type=Path, metavar="FILE", help="also save the figures here")
    build.set_defaults(handler=cmd_bench_build)

    checkpoint = sub.add_parser(
        "checkpoint",
        help="write a random-weight checkpoint in the hub's layout (for `bench build --from`)",
        description="Write a checkpoint directory laid out like LiquidAI/LFM2.5-Audio-1.5B "
        "(model.safetensors, audio_detokenizer/, configs, a stand-in tokenizer) with seeded "
        "random weights, one tensor at a time (needs the export extra).",
    )
    checkpoint.add_argument(
        "--size", choices=("tiny", "full"), default="full", help="default: full"
    )
    checkpoint.add_argument("--seed", type=int, default=0)
    checkpoint.add_argument(
        "--dtype", choices=("BF16", "F32"), default="BF16", help="default: BF16"
    )
    checkpoint.add_argument("--out", type=Path, required=True, metavar="DIR")
    checkpoint.set_defaults(handler=cmd_bench_checkpoint)

    system = sub.add_parser(
        "memory",
        help="measure this machine's memory bandwidth",
        description="Parallel large copies: bytes read plus written per second.",
    )
    system.add_argument("--megabytes", type=int, default=512)
    system.add_argument("--json", type=Path, metavar="FILE")
    system.set_defaults(handler=cmd_bench_memory)

    boards = sub.add_parser(
        "boards",
        help="expected real-time factor of a model on this machine and on each board class",
        description="The cost model (satellite/engine/costmodel.py): bytes a frame of speech "
        "reads, memory bandwidth, and the efficiency calibrated where the model was measured. "
        "Prints this machine's read bandwidth and expected real-time factor, then each board "
        "class's.",
    )
    boards.add_argument("--model", type=Path, metavar="DIR", help="model directory (default: tiny)")
    boards.add_argument("--json", type=Path, metavar="FILE", help="also save the figures here")
    boards.set_defaults(handler=cmd_bench_boards)

    engine = sub.add_parser(
        "engine",
        help="per-stage timings, time-to-first-audio, real-time factor and peak RSS of the engine",
        description="Run the engine on a model directory with a 4-second spoken query: mel, "
        "encoder, prefill, decoder step (and its Python side), depthformer and detokenizer "
        "timings, time-to-first-audio and real-time factor in interleaved mode, peak RSS, and "
        "the decoder step against this machine's memory-bandwidth floor. --reference runs the "
        "reference implementation (liquid-audio + torch on CPU) on the same weights alongside.",
    )
    engine.add_argument("--model", type=Path, required=True, metavar="DIR", help="model directory")
    engine.add_argument("--json", type=Path, metavar="FILE", help="also save the figures here")
    engine.add_argument("--threads", type=int, default=0, help="intra-op threads (default: all)")
    engine.add_argument("--repeats", type=int, default=5, help="repeats per timing (default 5)")
    engine.add_argument("--steps", type=int, default=64, help="decoder steps timed (default 64)")
    engine.add_argument(
        "--audio-seconds",
        type=float,
        default=3.0,
        help="audio generated for the real-time factor (default 3)",
    )
    engine.add_argument("--seed", type=int, default=0, help="audio sampling seed")
    engine.add_argument(
        "--bandwidth-mb", type=int, default=512, help="buffer of the bandwidth measurement"
    )
    engine.add_argument(
        "--no-prepack",
        action="store_true",
        help="onnxruntime: do not pre-pack MatMul weights (less memory; 4-bit models run far "
        "slower without it)",
    )
    engine.add_argument(
        "--spinning",
        action="store_true",
        help="onnxruntime: let idle worker threads spin (off by default, as in the daemon)",
    )
    engine.add_argument(
        "--no-arena",
        action="store_true",
        help="onnxruntime: run without the CPU memory arenas (less memory, slower runs)",
    )
    engine.add_argument(
        "--no-shared-pool",
        action="store_true",
        help="onnxruntime: one thread pool per session instead of one for all (slower; to compare)",
    )
    _backbone_options(engine)
    engine.add_argument(
        "--reference",
        action="store_true",
        help="also run the reference on the same weights (needs the export and test extras)",
    )
    engine.set_defaults(handler=cmd_bench_engine)

    peers = sub.add_parser(
        "peers",
        help="the engine against llama.cpp on the same backbone, in interleaved rounds",
        description="Build llama.cpp's llama-bench for this CPU (from llama-cpp-python's "
        "source, cached; needs cmake, ninja and a C++ compiler, and the peers extra for the "
        "GGUF writer), write the model's backbone as a llama.cpp Q4_0 file with the same "
        "seeded weights, then run `bench engine` and llama-bench in turn for each round and "
        "compare the decoder's text and audio steps with llama.cpp's decode, and prefill with "
        "its prompt processing, round by round, with the CPU model.",
    )
    peers.add_argument("--size", choices=("tiny", "full"), default="full", help="default: full")
    peers.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    peers.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    peers.add_argument("--threads", type=int, default=2, help="threads of both (default 2)")
    peers.add_argument("--repeats", type=int, default=5, help="repeats per timing (default 5)")
    peers.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="the engine's q4 model directory (default: built from --size and --seed); its "
        "backbone should have the shapes of --size",
    )
    peers.add_argument("--json", type=Path, metavar="FILE", help="also save the figures here")
    peers.set_defaults(handler=cmd_bench_peers)

    turns = sub.add_parser(
        "turns",
        help="time to first audio of local turns through the daemon, and the daemon's overhead",
        description="Run the daemon (null audio at real time) and drive N local turns through "
        "its reply path with a 4-second spoken query: time to first audio, the engine's part of "
        "it, and the daemon's own overhead (the difference), as p50/p95/p99/max.",
    )
    turns.add_argument("--model", type=Path, metavar="DIR", help="model directory (default: tiny)")
    turns.add_argument("--turns", type=int, default=50, help="turns (default 50)")
    turns.add_argument("--threads", type=int, default=0, help="intra-op threads (default: all)")
    turns.add_argument(
        "--reply-seconds", type=float, default=1.0, help="longest reply per turn (default 1)"
    )
    turns.add_argument(
        "--pause",
        type=float,
        metavar="S",
        help="speculative work (prefill, then the reply up to its first audio) S seconds before "
        "the end of each utterance (the trailing silence after a 100 ms pause: 0.6 with the "
        "default vad.trailing_silence_ms)",
    )
    turns.add_argument(
        "--query",
        metavar="TEXT",
        help="what the user says (espeak-ng; default: a 3.7 s weather question)",
    )
    turns.add_argument(
        "--query-seconds",
        type=float,
        default=4.0,
        metavar="S",
        help="the query's length, speech padded with silence or cut (default 4)",
    )
    _backbone_options(turns)
    turns.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="safety policy file the replies must pass (its wait is measured; default: none)",
    )
    turns.add_argument("--json", type=Path, metavar="FILE", help="also save the figures here")
    turns.set_defaults(handler=cmd_bench_turns)

    services = sub.add_parser(
        "services",
        help="latency of the Wyoming speech-to-text, text-to-speech and conversation services",
        description="Run the Wyoming services on loopback and drive them with the wyoming "
        "client as Home Assistant does: audio-stop to transcript-start, first chunk and "
        "transcript; the log-mel work left at audio-stop; first TTS audio; conversation; N "
        "transcriptions at once with 1 and 2 workers.",
    )
    services.add_argument(
        "--model", type=Path, metavar="DIR", help="model directory (default: tiny)"
    )
    services.add_argument(
        "--requests", type=int, default=10, help="requests per figure (default 10)"
    )
    services.add_argument("--threads", type=int, default=0, help="intra-op threads (default: all)")
    services.add_argument("--json", type=Path, metavar="FILE", help="also save the figures here")
    services.set_defaults(handler=cmd_bench_services)

    stopword = sub.add_parser(
        "stopword",
        help="the stop word's false triggers on an hour of speech without it, and its "
        "detections of it",
        description="Stream speech that never says the stop word (espeak-ng, eight voices, "
        "three speeds, sentences from the Python standard library's docstrings) through the "
        "stop-word model and count what fires; then say 'stop' and three phrases with it in "
        "the same voices, clean and in 20 and 10 dB noise, and count what is heard. Needs "
        "espeak-ng.",
    )
    stopword.add_argument(
        "--model", default="stop", help="the stop-word model: `stop` or a .json (default stop)"
    )
    stopword.add_argument(
        "--sensitivity", type=float, default=0.5, help="as wake.stop_sensitivity (default 0.5)"
    )
    stopword.add_argument(
        "--minutes", type=float, default=60.0, help="speech without the word (default 60)"
    )
    stopword.add_argument("--json", type=Path, metavar="FILE", help="also save the figures here")
    stopword.set_defaults(handler=cmd_bench_stopword)

    echo = sub.add_parser(
        "echo",
        help="the echo canceller in scripted rooms: ERLE, the user's speech kept, the wake "
        "word and end of speech over the satellite's reply",
        description="Play a reply (espeak-ng) into simulated rooms (delay 20 to 120 ms, a "
        "decaying impulse response, the echo 6 to 20 dB below the reply) with the user saying "
        "the wake word and a question over it, run the microphone through the echo canceller "
        "as the daemon does, and report echo return loss enhancement, the user's speech kept, "
        "whether the wake word is heard and whether the echo alone looks like speech, with "
        "and without the canceller. Needs espeak-ng.",
    )
    echo.add_argument("--json", type=Path, metavar="FILE", help="also save the figures here")
    echo.set_defaults(handler=cmd_bench_echo)

    room = sub.add_parser(
        "room",
        help="the scripted rooms through the daemon's capture chain: the health report's "
        "echo, noise and speech meters beside what each room was made with, the detection "
        "marks, as JSON and a PNG",
        description="Replay bench echo's rooms (the reply's echo at 20 to 120 ms, 3 to 20 dB "
        "below it, the user saying the wake word and a question over it) with a fan's noise "
        "under each, through what the daemon runs (echo cancellers, noise suppression and "
        "gain, wake word with the own-voice check, barge-in by voice when on, end of "
        "speech); print the echo return loss and its enhancement, the noise and speech "
        "levels as the health report reads them, beside the room's own, and when the wake "
        "word, the barge-in and the question's start and end were heard. --png draws each "
        "room: the microphone, what the models hear, the user's words, the marks. Then the "
        "satellite talks alone in each room (--false-minutes) and what it takes for the "
        "wake word, 'stop' or the user barging in is counted. Needs espeak-ng (and "
        "matplotlib for --png).",
    )
    room.add_argument(
        "--noise-suppression",
        type=int,
        default=AudioSettings().noise_suppression,
        help=f"as audio.noise_suppression, 0 to 4 (default {AudioSettings().noise_suppression})",
    )
    room.add_argument(
        "--auto-gain",
        type=int,
        default=AudioSettings().auto_gain,
        help=f"as audio.auto_gain, 0 to 31 dBFS (default {AudioSettings().auto_gain})",
    )
    room.add_argument(
        "--barge-in-by-voice",
        action="store_true",
        help="as audio.barge_in: voice (default: the wake word only)",
    )
    room.add_argument(
        "--false-minutes",
        type=float,
        default=2.0,
        help="the satellite talking alone in each room, nobody else: false wake words, stop "
        "words and barge-ins (default 2 minutes a room; 0: none)",
    )
    room.add_argument("--json", type=Path, metavar="FILE", help="also save the figures here")
    room.add_argument("--png", type=Path, metavar="FILE", help="also draw the rooms here")
    room.set_defaults(handler=cmd_bench_room)

    noise = sub.add_parser(
        "noise",
        help="the wake word and end of speech with a TV on, with and without noise "
        "suppression, automatic gain and the endpointer's voice gate",
        description="Make a TV (espeak-ng talk over synthetic music), have the user say the "
        "wake word and a command over it at 10, 5 and 0 dB SNR (and clean, and far away), in "
        "six voices at two speeds, stream each clip through the capture chain as the daemon "
        "does (noise suppression and gain when on, the wake word, the endpointer), and "
        "report the wake words heard, the ends of speech found, false triggers on the TV "
        "alone, long sentences cut in two, and the processor's cost. Needs espeak-ng.",
    )
    noise.add_argument(
        "--tv-minutes",
        type=float,
        default=10.0,
        help="the TV alone, for false triggers (default 10)",
    )
    noise.add_argument(
        "--voices", type=int, default=6, help="how many of the user's six voices (default 6)"
    )
    noise.add_argument("--json", type=Path, metavar="FILE", help="also save the figures here")
    noise.set_defaults(handler=cmd_bench_noise)

    integrity = sub.add_parser(
        "integrity",
        help="the per-frame audio integrity check: faults found, false alarms on clean "
        "speech, cost per frame",
        description="Make clean speech (espeak-ng prose in eight voices at 130, 175 and 220 "
        "words a minute, at 24 kHz, in replies of 20 s), hand it to the audio integrity check "
        "80 ms at a time as the daemon does, and count false alarms per detector; then inject "
        "each fault (a click at a frame join, a DC offset, +20 dB, a 40 ms dropout, a looped "
        "frame or pattern, a block at 16 kHz, a stereo block) into copies of 6 s of it and "
        "count how often its detector finds it. Needs espeak-ng.",
    )
    integrity.add_argument(
        "--minutes",
        type=float,
        default=10.0,
        help="clean speech for false alarms (default 10)",
    )
    integrity.add_argument(
        "--trials", type=int, default=200, help="injections of each fault (default 200)"
    )
    integrity.add_argument("--seed", type=int, default=0, help="seed of the speech and faults")
    integrity.add_argument("--json", type=Path, metavar="FILE", help="also save the figures here")
    integrity.set_defaults(handler=cmd_bench_integrity)

    soak = sub.add_parser(
        "soak",
        help="the daemon under a hostile peer: Wyoming fuzz, MQTT floods, broker kills, "
        "client drops; crashes, wedges, recovery times, RSS growth",
        description="Run the daemon (null audio, loopback Wyoming ports with services, MQTT "
        "to a mosquitto of its own) and, round after round: malformed frames on both Wyoming "
        "ports, an MQTT flood over every command topic, the broker killed and restarted, and "
        "clients dropping mid-request, each followed by a request that must succeed. Prints "
        "crashes, wedges, recovery times and RSS growth. Needs mosquitto.",
    )
    soak.add_argument("--model", type=Path, metavar="DIR", help="model directory (default: tiny)")
    soak.add_argument("--rounds", type=int, default=1, help="rounds (default 1)")
    soak.add_argument("--minutes", type=float, help="run rounds until this many minutes passed")
    soak.add_argument("--frames", type=int, default=1000, help="malformed frames per port a round")
    soak.add_argument("--flood", type=int, default=1000, help="MQTT payloads a round")
    soak.add_argument("--kills", type=int, default=2, help="broker kills a round")
    soak.add_argument("--drops", type=int, default=12, help="client drops mid-request a round")
    soak.add_argument("--seed", type=int, default=0, help="seed of the malformed frames")
    soak.add_argument("--json", type=Path, metavar="FILE", help="also save the report here")
    soak.set_defaults(handler=cmd_bench_soak)


def _save(path: Path | None, figures: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        print(f"saved {path}")


def cmd_bench_build(args: argparse.Namespace) -> int:
    load_toolchain()
    from lfm_toolchain.bench_build import bench_build, format_report

    report = bench_build(
        args.out, args.size, args.variant, args.seed, args.checkpoint, progress=print_step()
    )
    print(format_report(report))
    _save(args.json, report)
    return 0


def cmd_bench_checkpoint(args: argparse.Namespace) -> int:
    load_toolchain()
    from lfm_toolchain.random_checkpoint import write_random_checkpoint

    if (args.out / "model.safetensors").exists():
        raise UserError(f"--out {args.out}: already holds a checkpoint (model.safetensors)")
    write_random_checkpoint(args.out, args.size, args.seed, args.dtype)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out}: {args.size} checkpoint, {args.dtype}, {human_size(total)}")
    return 0


def cmd_bench_memory(args: argparse.Namespace) -> int:
    from satellite.bench.system import memory_bandwidth

    result = memory_bandwidth(args.megabytes)
    print(
        f"memory bandwidth: {result.copy_gb_s:.1f} GB/s (copy, read + write, {result.threads} threads)"
    )
    _save(args.json, {"copy_gb_s": round(result.copy_gb_s, 2), "threads": result.threads})
    return 0


def cmd_bench_boards(args: argparse.Namespace) -> int:
    from satellite.cli.demo import tiny_model
    from satellite.engine import costmodel
    from satellite.modeldir.manifest import read_manifest

    directory = args.model or tiny_model()
    manifest = read_manifest(directory)
    per_frame = costmodel.frame_bytes(manifest, directory)
    here = costmodel.read_bandwidth()
    cal = costmodel.CALIBRATION
    rows = [("this machine", f"measured read, {here:.1f} GB/s", here, False)]
    rows += [(b.name, f"{b.memory}, {b.peak_gbs:g} GB/s peak", b.read_gbs, b.compute_bound)
             for b in costmodel.BOARDS]  # fmt: skip
    print(f"{directory}: a frame of speech (80 ms) reads at most {per_frame / 1e6:,.0f} MB; "
          f"efficiency {cal.efficiency:.2f} (calibrated on {cal.cpu}, {cal.date})")  # fmt: skip
    print(f"{'':42}{'read GB/s':>10}{'expected RTF':>14}")
    figures = []
    for name, memory, read, floor in rows:
        rtf = costmodel.expected_rtf(per_frame, read)
        mark = " (a floor: compute-bound cores)" if floor else ""
        print(f"{name:42}{read:>10.1f}{rtf:>14.2f}{mark}")
        print(f"  {memory}")
        figures.append({"name": name, "memory": memory, "read_gb_s": round(read, 2),
                        "expected_rtf": round(rtf, 3), "compute_bound": floor})  # fmt: skip
    _save(args.json, {"model": str(directory), "frame_bytes": per_frame,
                      "efficiency": round(cal.efficiency, 4), "boards": figures})  # fmt: skip
    return 0


def _backbone_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backbone",
        choices=BACKBONES,
        default="onnxruntime",
        help="what runs the backbone (model.backbone; default onnxruntime)",
    )
    parser.add_argument(
        "--backbone-gguf",
        type=Path,
        metavar="FILE",
        help="the llama.cpp backbone's GGUF (default: the one .gguf in the model directory)",
    )


def cmd_bench_engine(args: argparse.Namespace) -> int:
    from satellite.bench.engine import bench_engine, format_report

    report = bench_engine(
        args.model,
        threads=args.threads,
        repeats=args.repeats,
        decoder_steps=args.steps,
        audio_seconds=args.audio_seconds,
        seed=args.seed,
        reference=args.reference,
        bandwidth_mb=args.bandwidth_mb,
        prepack=not args.no_prepack,
        spinning=args.spinning,
        arena=not args.no_arena,
        shared_pool=not args.no_shared_pool,
        backbone=args.backbone,
        backbone_gguf=args.backbone_gguf,
    )
    print(format_report(report))
    _save(args.json, report)
    return 0


def cmd_bench_peers(args: argparse.Namespace) -> int:
    load_toolchain()
    try:
        from lfm_toolchain.bench_peers import bench_peers, format_report
    except ImportError as err:
        raise UserError(
            f"bench peers needs the peers extra (cannot import {err.name!r}): "
            "pip install 'lfm-satellite[peers]'"
        ) from None
    from lfm_toolchain.llamacpp import LlamaCppError

    if args.rounds < 1:
        raise UserError(f"--rounds must be at least 1, not {args.rounds}")
    if args.threads < 1:
        raise UserError(f"--threads must be at least 1, not {args.threads}")
    if args.model is not None and not (args.model / "manifest.json").is_file():
        raise UserError(f"--model {args.model}: not a model directory (no manifest.json)")
    try:
        report = bench_peers(
            args.size, args.seed, args.rounds, args.threads, args.repeats, args.model,
            progress=print,
        )  # fmt: skip
    except LlamaCppError as err:
        raise UserError(f"bench peers: {err}") from None
    print(format_report(report))
    _save(args.json, report)
    return 0


def cmd_bench_turns(args: argparse.Namespace) -> int:
    from satellite.bench.turns import bench_turns, format_report
    from satellite.cli.demo import tiny_model

    if args.turns < 1:
        raise UserError(f"--turns must be at least 1, not {args.turns}")
    if not 0.5 <= args.query_seconds <= 30:
        raise UserError(f"--query-seconds must be between 0.5 and 30, not {args.query_seconds}")
    if args.query is not None and not args.query.strip():
        raise UserError("--query: the text is empty")
    report = bench_turns(
        args.model or tiny_model(),
        turns=args.turns,
        threads=args.threads,
        reply_seconds=args.reply_seconds,
        query_seconds=args.query_seconds,
        query_text=args.query,
        pause=args.pause,
        backbone=args.backbone,
        backbone_gguf=args.backbone_gguf,
        policy=args.policy,
    )
    print(format_report(report))
    _save(args.json, report)
    return 0


def cmd_bench_services(args: argparse.Namespace) -> int:
    from satellite.bench.services import bench_services, format_report
    from satellite.cli.demo import tiny_model

    if args.requests < 1:
        raise UserError(f"--requests must be at least 1, not {args.requests}")
    report = bench_services(
        args.model or tiny_model(), requests=args.requests, threads=args.threads
    )
    print(format_report(report))
    _save(args.json, report)
    return 0


def cmd_bench_stopword(args: argparse.Namespace) -> int:
    from satellite.bench.stopword import bench_stopword, format_report

    if not 0.0 <= args.sensitivity <= 1.0:
        raise UserError(f"--sensitivity must be between 0 and 1, not {args.sensitivity}")
    if not 0.0 < args.minutes <= 600:
        raise UserError(f"--minutes must be more than 0 and at most 600, not {args.minutes}")
    report = bench_stopword(args.model, args.sensitivity, args.minutes * 60)
    print(format_report(report))
    _save(args.json, report)
    return 0


def cmd_bench_echo(args: argparse.Namespace) -> int:
    from satellite.bench.echo import bench_echo, format_report

    report = bench_echo()
    print(format_report(report))
    _save(args.json, report)
    return 0


def cmd_bench_room(args: argparse.Namespace) -> int:
    from satellite.bench.room import bench_room, format_report

    if not 0 <= args.noise_suppression <= 4:
        raise UserError(f"--noise-suppression must be 0 to 4, not {args.noise_suppression}")
    if not 0 <= args.auto_gain <= 31:
        raise UserError(f"--auto-gain must be 0 to 31, not {args.auto_gain}")
    if not 0 <= args.false_minutes <= 600:
        raise UserError(f"--false-minutes must be 0 to 600, not {args.false_minutes}")
    audio = dataclasses.replace(
        AudioSettings(),
        noise_suppression=args.noise_suppression,
        auto_gain=args.auto_gain,
        barge_in="voice" if args.barge_in_by_voice else True,
    )
    report = bench_room(audio, png=args.png, false_seconds=args.false_minutes * 60)
    print(format_report(report))
    _save(args.json, report)
    if args.png is not None:
        print(f"saved {args.png}")
    return 0


def cmd_bench_noise(args: argparse.Namespace) -> int:
    from satellite.bench.noise import bench_noise, format_report

    if not 0.0 < args.tv_minutes <= 600:
        raise UserError(f"--tv-minutes must be more than 0 and at most 600, not {args.tv_minutes}")
    if not 1 <= args.voices <= 6:
        raise UserError(f"--voices must be 1 to 6, not {args.voices}")
    report = bench_noise(args.tv_minutes * 60, args.voices)
    print(format_report(report))
    _save(args.json, report)
    return 0


def cmd_bench_integrity(args: argparse.Namespace) -> int:
    from satellite.bench.integrity import bench_integrity, format_report

    if not 0.0 < args.minutes <= 600:
        raise UserError(f"--minutes must be more than 0 and at most 600, not {args.minutes}")
    if args.trials < 1:
        raise UserError(f"--trials must be at least 1, not {args.trials}")
    report = bench_integrity(args.minutes, args.trials, args.seed)
    print(format_report(report))
    _save(args.json, report)
    return 0


def cmd_bench_soak(args: argparse.Namespace) -> int:
    from satellite.bench.soak import SoakReport, run_soak
    from satellite.cli.demo import tiny_model

    for name in ("rounds", "frames", "flood", "kills", "drops"):
        if getattr(args, name) < (1 if name == "rounds" else 0):
            raise UserError(f"--{name} must not be {'below 1' if name == 'rounds' else 'negative'}")
    if args.minutes is not None and args.minutes <= 0:
        raise UserError(f"--minutes must be above 0, not {args.minutes}")

    def show(report: SoakReport) -> None:
        print(f"round {report.rounds} done after {report.seconds:.0f} s: {len(report.crashes)} "
              f"crashes, {len(report.wedges)} wedges, RSS {report.rss_end_mb:.0f} MB",
              flush=True)  # fmt: skip

    report = asyncio.run(
        run_soak(
            args.model or tiny_model(),
            rounds=None if args.minutes is not None else args.rounds,
            minutes=args.minutes,
            frames=args.frames,
            flood=args.flood,
            kills=args.kills,
            drops=args.drops,
            seed=args.seed,
            progress=show,
        )
    )
    print(report.summary())
    _save(args.json, report.as_dict())
    return 0 if report.ok else 1
