"""`lfm-satellite demo`: the whole satellite on a fresh machine, no microphone, no hub.

1. The model: `--model DIR`, else the tiny model (random weights, the real architecture, its
   special rows shaped so that the reply reaches audio), built once with the toolchain and
   cached (`lfm_toolchain.cache`). A model with random weights is named as such in one line.
2. The microphone: a WAV file (`--input`, else espeak-ng says "<wake word>", a pause, then a
   question), paced at real time through the `file` backend. The reply goes to `--output`.
3. The daemon runs in `local` mode on 127.0.0.1 with an ephemeral port, and a simulated Home
   Assistant connects to it with the `wyoming` client library as Home Assistant does
   (`run-satellite`, `describe`, a `ping` every 2 s) and prints what the satellite tells it.
   When mosquitto is installed, a broker is started on a free loopback port, the satellite
   publishes discovery, events and health there, and what it publishes is printed too.
4. When the input has been heard and answered, the turn's timings are printed and it exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from satellite.errors import UserError
from satellite.mqtt.localbroker import LocalBroker, mosquitto_program
from satellite.settings import Settings, loopback_wyoming

if TYPE_CHECKING:
    from satellite.events import TurnReport

REAL_MODEL = "LiquidAI/LFM2.5-Audio-1.5B-ONNX"
DEMO_QUESTION = "What is the weather like tomorrow?"
WAKE_PHRASES = {
    "okay_nabu": "okay nabu",
    "alexa": "alexa",
    "hey_mycroft": "hey mycroft",
    "hey_jarvis": "hey jarvis",
}
"""How espeak-ng is asked to say each wake word."""
PING_SECONDS = 2.0


def add_demo_command(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="run the satellite on built-in defaults: one spoken turn, with timings",
        description="Run the whole satellite with embedded defaults: the tiny model (built and "
        "cached on first use), a synthesized spoken query as the microphone, the reply written "
        "to a WAV file, and a simulated Home Assistant connected over Wyoming. Prints what "
        "happened and the turn's timings, then exits.",
    )
    demo.add_argument("--model", metavar="DIR", type=Path, help="model directory (default: tiny)")
    demo.add_argument(
        "--input", metavar="WAV", type=Path, help="microphone audio (default: espeak-ng)"
    )
    demo.add_argument(
        "--output", metavar="WAV", type=Path, default=Path("demo-reply.wav"),
        help="where the satellite's speech goes (default: demo-reply.wav)",
    )  # fmt: skip
    demo.add_argument("--question", default=DEMO_QUESTION, help="what espeak-ng asks")
    demo.add_argument(
        "--max-reply-seconds", type=float, default=4.0, help="longest reply (default: 4)"
    )
    demo.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all)")
    demo.set_defaults(handler=cmd_demo)


def espeak(text: str, path: Path, voice: str = "en-us", speed: int = 150) -> None:
    """Write `text` spoken by espeak-ng to the WAV file `path`."""
    program = shutil.which("espeak-ng")
    if program is None:
        raise UserError(
            "the demo speaks its question with espeak-ng, which is not installed "
            "(`sudo apt install espeak-ng`, or run script/setup); or pass --input WAV"
        )
    cmd = [program, "-v", voice, "-s", str(speed), "-w", str(path), text]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise UserError(f"espeak-ng failed: {done.stderr.strip() or done.returncode}")


def spoken_query(wake_word: str, question: str, path: Path) -> float:
    """Write `path`: 1 s of silence, the wake word, 0.6 s, the question, 2 s of silence (16 kHz
    mono). Returns its length in seconds."""
    from satellite.audio.convert import resample
    from satellite.audio.wavfile import read_wav, write_wav

    parts: list[np.ndarray] = [np.zeros(16000, np.float32)]
    with tempfile.TemporaryDirectory(prefix="lfm-demo-") as folder:
        for text, pause in ((WAKE_PHRASES.get(wake_word, wake_word), 0.6), (question, 2.0)):
            wav = Path(folder) / "speech.wav"
            espeak(text, wav)
            audio = read_wav(wav)
            parts += [
                resample(audio.samples, audio.rate, 16000),
                np.zeros(int(pause * 16000), np.float32),
            ]
    samples = np.concatenate(parts)
    write_wav(path, samples, 16000)
    return samples.size / 16000


def demo_settings(
    base: Settings,
    model: Path,
    source: Path,
    output: Path,
    args: argparse.Namespace,
    scratch: Path,
    mqtt_port: int | None = None,
) -> Settings:
    """The embedded defaults: `local` mode, file audio at real time, loopback, no zeroconf."""
    replace = dataclasses.replace
    return replace(
        base,
        satellite=replace(
            base.satellite,
            name="LFM Satellite demo",
            mode="local",
            state_file=str(scratch / "state.json"),  # not the user's saved controls
        ),
        audio=replace(
            base.audio,
            backend="file",
            input_file=str(source),
            output_file=str(output),
            realtime=True,
            barge_in=False,
        ),
        model=replace(base.model, directory=str(model), threads=args.threads),
        wyoming=loopback_wyoming(base.wyoming),
        safety=replace(base.safety, max_reply_seconds=args.max_reply_seconds),
        mqtt=replace(
            base.mqtt,
            enabled=mqtt_port is not None,
            host="127.0.0.1",
            port=mqtt_port or 1883,
            tls=False,
            username=None,
            password=None,
            password_file=None,
            base_topic=None,
        ),
        device_control=replace(base.device_control, enabled=False),
    )


@contextlib.contextmanager
def local_mosquitto(folder: Path) -> Iterator[int | None]:
    """A mosquitto broker on a free loopback port for the demo (None: not installed)."""
    program = mosquitto_program()
    if program is None:
        print("mqtt: mosquitto is not installed; the demo runs without MQTT")
        yield None
        return
    broker = LocalBroker(program, folder)
    try:
        if not broker.start():
            print("mqtt: mosquitto did not start; the demo runs without MQTT")
            yield None
            return
        print(f"mqtt: a local mosquitto on 127.0.0.1:{broker.port}")
        yield broker.port
    finally:
        broker.stop()


def tiny_model() -> Path:
    from satellite.cli.model import load_toolchain

    load_toolchain()
    from lfm_toolchain.cache import cached_model

    print("model: the tiny one (random weights; built on first use, then cached) ...", flush=True)
    return cached_model("tiny", "q4")


def model_notice(model: Path) -> str | None:
    """`random_notice` for the model directory `model` (None when its manifest cannot be read:
    the daemon says what is wrong with it)."""
    from satellite.cli.engine import random_notice
    from satellite.modeldir.manifest import ManifestError, read_manifest

    try:
        return random_notice(read_manifest(model))
    except ManifestError:
        return None


def cmd_demo(args: argparse.Namespace) -> int:
    from satellite.cli.loading import load_for_command

    base = load_for_command(args).settings
    model = args.model or tiny_model()
    notice = model_notice(model)
    if notice is not None:
        print(notice, flush=True)
    with tempfile.TemporaryDirectory(prefix="lfm-demo-") as folder:
        source = args.input
        if source is None:
            source = Path(folder) / "query.wav"
            seconds = spoken_query(base.wake.model, args.question, source)
            print(f"microphone: espeak-ng says {WAKE_PHRASES.get(base.wake.model, base.wake.model)!r}, "
                  f"then {args.question!r} ({seconds:.1f} s, played at real time)")  # fmt: skip
        else:
            print(f"microphone: {source} (played at real time)")
        with local_mosquitto(Path(folder)) as mqtt_port:
            settings = demo_settings(
                base, model, source, args.output, args, Path(folder), mqtt_port
            )
            return asyncio.run(_demo(settings, model, args))


async def _demo(settings: Settings, model: Path, args: argparse.Namespace) -> int:
    from satellite import events
    from satellite.daemon.core import Daemon

    started = time.monotonic()

    printing = threading.Lock()  # the MQTT subscriber prints from its own thread

    def say(line: str) -> None:
        with printing:
            print(f"[{time.monotonic() - started:6.2f} s] {line}", flush=True)

    def observe(event: events.DaemonEvent) -> None:
        match event:
            case events.WakeWordHeard():
                say(f"satellite: wake word {event.wake_word!r} (p={event.probability:.2f})")
            case events.StopWordHeard():
                say(f"satellite: stop word (p={event.probability:.2f}): stopped the "
                    f"{event.stopped}")  # fmt: skip
            case events.ListeningAgain():
                say(f"satellite: listening {event.seconds:g} s without the wake word "
                    f"({event.purpose.replace('_', '-')})")  # fmt: skip
            case events.SpeechStarted():
                say("satellite: speech started")
            case events.UtteranceHeard():
                say(f"satellite: end of speech ({event.seconds:.2f} s of audio to the model)")
            case events.TurnFinished():
                report = event.report
                say(f"satellite: reply done ({report.reply_reason}, "
                    f"{report.reply_audio_seconds:.2f} s of audio)")  # fmt: skip
            case events.Failure():
                say(f"satellite: error in {event.where}: {event.message}")

    daemon = Daemon(settings)
    daemon.observe(observe)
    say(f"loading the model from {model} ...")
    await daemon.start()
    say(f"satellite listening on 127.0.0.1:{daemon.server.bound_port}")
    ha = asyncio.create_task(_home_assistant(daemon.server.bound_port, say))
    watcher = _watch_mqtt(settings, say) if settings.mqtt.enabled else None
    try:
        await daemon.wait_stopped()
        await asyncio.sleep(0.3)  # let the simulated Home Assistant read the last events
    finally:
        ha.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ha
        await daemon.close()
        if watcher is not None:
            watcher.loop_stop()
            watcher.disconnect()
    if not daemon.turns:
        print("\nno turn happened: the wake word was not heard in the input", file=sys.stderr)
        return 1
    _print_report(daemon.turns[-1], args)
    return 0


def _watch_mqtt(settings: Settings, say: Any) -> Any:
    """A subscriber printing the satellite's events and availability, as Home Assistant
    would see them."""
    import json

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from satellite.mqtt.discovery import Topics

    topics = Topics.from_settings(settings)

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        text = bytes(message.payload).decode(errors="replace")
        if message.topic == topics.event:
            event = json.loads(text)
            kind = event.pop("event_type", "?")
            event.pop("reply", None)
            say(f"mqtt: event {kind} {event if event else ''}".rstrip())
        elif message.topic == topics.discovery:
            say(f"mqtt: discovery for {len(json.loads(text)['cmps'])} entities")
        else:
            say(f"mqtt: {message.topic.removeprefix(topics.base + '/')} = {text}")

    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.connect(settings.mqtt.host, settings.mqtt.port)
    client.subscribe([(topics.event, 1), (topics.availability, 1), (topics.discovery, 1)])
    client.loop_start()
    return client


async def _home_assistant(port: int, say: Any) -> None:
    """A simulated Home Assistant: what its Wyoming integration does with a satellite."""
    from wyoming.client import AsyncTcpClient
    from wyoming.info import Describe, Info
    from wyoming.ping import Ping, Pong
    from wyoming.satellite import RunSatellite

    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(RunSatellite().event())
        await client.write_event(Describe().event())
        say("home assistant: connected, sent run-satellite and describe")
        next_ping = time.monotonic() + PING_SECONDS
        reading = asyncio.ensure_future(client.read_event())
        try:
            while True:
                timeout = max(0.0, next_ping - time.monotonic())
                done, _ = await asyncio.wait([reading], timeout=timeout)
                if not done:
                    await client.write_event(Ping().event())
                    next_ping = time.monotonic() + 60.0  # the next one goes 2 s after the pong
                    continue
                event = reading.result()
                reading = asyncio.ensure_future(client.read_event())
                if event is None:
                    say("home assistant: the satellite closed the connection")
                    return
                if Pong.is_type(event.type):
                    next_ping = time.monotonic() + PING_SECONDS
                elif Info.is_type(event.type):
                    info = Info.from_event(event)
                    assert info.satellite is not None
                    say(f"home assistant: info: satellite {info.satellite.name!r}, "
                        f"wake words {info.satellite.active_wake_words}")  # fmt: skip
                else:
                    say(f"home assistant: got {event.type} {event.data or ''}".rstrip())
        finally:
            reading.cancel()


def playback_summary(report: TurnReport) -> str:
    """Whether the reply played at real time, in a sentence (what the speaker met)."""
    if report.underruns:
        said = f"broke up {report.underruns} time(s): the speaker ran out of audio (underruns)"
    elif report.holds:
        said = "paused once mid-reply so the rest would keep up, then played without a break"
    else:
        said = "played at real time, without a break"
    delay, rtf = report.start_delay, report.generation_rtf
    if delay is not None and delay >= 0.05 and rtf is not None:
        said += (f", after holding the start {delay * 1000:.0f} ms: the model makes audio at "
                 f"{rtf:.2f}x real time on this machine")  # fmt: skip
    return said


def _print_report(report: TurnReport, args: argparse.Namespace) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f} ms"

    print()
    print("turn")
    print(f"  wake word               {report.wake_word}")
    print(f"  utterance               {report.utterance_seconds:.2f} s ({report.end_reason})")
    print(f"  reply text              {report.reply_text!r}")
    print(
        f"  reply audio             {report.reply_audio_seconds:.2f} s, {report.frames} frames -> {args.output}"
    )
    print(f"  time to first audio     {ms(report.time_to_first_audio)}  (from the end of speech)")
    print(f"    engine                {ms(report.engine_first_audio)}")
    print(f"    daemon overhead       {ms(report.overhead)}")
    print(f"  end of speech -> done   {report.total_seconds:.2f} s")
    print(f"  playback                {playback_summary(report)}")
    if args.model is None:
        print()
        print("The tiny model has random weights: its reply is noise, by design; the timings and")
        print("the path through the satellite are real. For real answers fetch the real model:")
        print(f"  lfm-satellite model fetch {REAL_MODEL}")
        print("and run `lfm-satellite demo --model <its directory>` or set `model:` in the config.")
