"""Malformed Wyoming frames thrown at a running satellite's ports, as a hostile peer would
(`bench soak`, and the suite's fuzz test).

`malformed_frames` makes them from a seed: frames that break the stream (a header that is not
a JSON object, lengths that are not numbers or over the limits), frames read whole but
malformed (no `type`, data that is not JSON, nested past the recursion limit, integers past
4,300 digits), and events of the types the satellite handles with a required field left out
(each must get an `error`) or with fields of the wrong type (an `error`, or nothing where the
value is harmless). `fuzz_port` sends them one at a time, each followed by a `ping` whose
`pong` shows the connection still serves; it counts the answers, reconnects where the
satellite closed, and ends with a `describe` that must be answered. Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import Describe
from wyoming.ping import Ping
from wyoming.satellite import RunSatellite

REQUIRED: dict[str, tuple[str, ...]] = {
    "audio-start": ("rate", "width", "channels"),
    "audio-chunk": ("rate", "width", "channels"),
    "transcript": ("text",),
    "synthesize": ("text",),
    "timer-started": ("id", "total_seconds"),
    "timer-updated": ("id", "is_active", "total_seconds"),
    "timer-finished": ("id",),
    "timer-cancelled": ("id",),
    "error": ("text",),
}
"""Event types both ports answer, with the fields wyoming's `from_event` requires."""
VALID: dict[str, dict[str, Any]] = {
    "audio-start": {"rate": 22050, "width": 2, "channels": 1},
    "audio-chunk": {"rate": 22050, "width": 2, "channels": 1},
    "transcript": {"text": "hello"},
    "synthesize": {"text": "hello"},
    "timer-started": {"id": "t", "total_seconds": 60},
    "timer-updated": {"id": "t", "is_active": True, "total_seconds": 30},
    "timer-finished": {"id": "t"},
    "timer-cancelled": {"id": "t"},
    "error": {"text": "oops"},
}
WRONG: tuple[Any, ...] = (None, "x" * 3, -1, 1.5, [], {}, True, 10**40, {"a": [1, {"b": None}]})
"""Values of the wrong type or range for any field."""
IO_TIMEOUT = 5.0


@dataclass(frozen=True)
class Frame:
    raw: bytes
    kind: str
    """What is wrong with it, for the report."""
    breaks_stream: bool = False
    """The satellite must answer with one `error` and close the connection."""
    must_error: bool = False
    """The satellite must answer with one `error` (and go on, unless it breaks the stream)."""


def _frame(header: dict[str, Any], data: bytes = b"", payload: bytes = b"") -> bytes:
    if data:
        header = {**header, "data_length": len(data)}
    if payload:
        header = {**header, "payload_length": len(payload)}
    return json.dumps(header).encode() + b"\n" + data + payload


def malformed_frames(count: int, seed: int = 0) -> Iterator[Frame]:
    """`count` malformed frames, the same for the same seed."""
    rng = random.Random(seed)
    makers = [
        (1, _breaking),
        (3, _in_step),
        (4, _missing_field),
        (4, _wrong_types),
    ]
    weights = [w for w, _ in makers]
    for _ in range(count):
        maker = rng.choices([m for _, m in makers], weights)[0]
        yield maker(rng)


def _breaking(rng: random.Random) -> Frame:
    choice = rng.randrange(7)
    if choice == 0:
        junk = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 60))).replace(b"\n", b"")
        return Frame(junk + b"\n", "header not JSON", breaks_stream=True, must_error=True)
    if choice == 1:
        return Frame(b"[" * 3000 + b"]" * 3000 + b"\n", "header nested", True, True)
    if choice == 2:
        raw = b'{"type": "audio-chunk", "payload_length": ' + b"7" * 5000 + b"}\n"
        return Frame(raw, "header integer over 4,300 digits", True, True)
    if choice == 3:
        return Frame(b'"just a string"\n', "header not an object", True, True)
    key = rng.choice(["data_length", "payload_length"])
    value = rng.choice([-1, "12", 1.5, 10**12, [3]])
    raw = json.dumps({"type": "audio-chunk", key: value}).encode() + b"\n"
    return Frame(raw, f"{key} {value!r}", breaks_stream=True, must_error=True)


def _in_step(rng: random.Random) -> Frame:
    kind = rng.choice(list(REQUIRED))
    choice = rng.randrange(6)
    if choice == 0:
        return Frame(_frame({"data": {"text": "x"}}), "no type", must_error=True)
    if choice == 1:
        return Frame(_frame({"type": kind, "data": [1, 2]}), "data not an object", must_error=True)
    data = [
        b"{not json",
        b"[" * 2000 + b"]" * 2000,
        b'{"n": ' + b"9" * 5000 + b"}",
        b"[1, 2, 3]",
    ][choice - 2]
    return Frame(_frame({"type": kind}, data), "bad data section", must_error=True)


def _missing_field(rng: random.Random) -> Frame:
    kind = rng.choice(list(REQUIRED))
    data = dict(VALID[kind])
    gone = rng.choice(REQUIRED[kind])
    del data[gone]
    payload = rng.randbytes(rng.randrange(0, 64)) if kind == "audio-chunk" else b""
    return Frame(_frame({"type": kind, "data": data}, payload=payload), f"{kind} without {gone}",
                 must_error=True)  # fmt: skip


def _wrong_types(rng: random.Random) -> Frame:
    kind = rng.choice(list(REQUIRED))
    data = dict(VALID[kind])
    for name in rng.sample(REQUIRED[kind], rng.randrange(1, len(REQUIRED[kind]) + 1)):
        data[name] = rng.choice(WRONG)
    payload = rng.randbytes(rng.randrange(0, 64)) if kind == "audio-chunk" else b""
    return Frame(_frame({"type": kind, "data": data}, payload=payload), f"{kind} wrong types")


@dataclass
class FuzzReport:
    """What one port did with the frames."""

    port: int
    frames: int = 0
    errors: int = 0
    missing_errors: list[str] = field(default_factory=list)
    """Frames that had to get an `error` and did not."""
    extra_errors: list[str] = field(default_factory=list)
    """Frames answered with more than one `error`."""
    closes: int = 0
    unexpected_closes: list[str] = field(default_factory=list)
    """Frames read whole after which the satellite closed the connection."""
    unanswered: list[str] = field(default_factory=list)
    """Frames after which the connection neither answered the ping nor closed in time."""
    seconds: float = 0.0
    final_describe: bool = False

    @property
    def ok(self) -> bool:
        return self.final_describe and not (
            self.missing_errors or self.extra_errors or self.unanswered
        )

    def summary(self) -> str:
        return (f"port {self.port}: {self.frames} frames in {self.seconds:.1f} s, "
                f"{self.errors} errors, {self.closes} closes "
                f"({len(self.unexpected_closes)} after a frame read whole), "
                f"{len(self.missing_errors)} unanswered malformed, {len(self.extra_errors)} "
                f"answered twice, {len(self.unanswered)} wedged; final describe "
                f"{'answered' if self.final_describe else 'NOT answered'}")  # fmt: skip


class _Peer:
    def __init__(self, host: str, port: int, satellite: bool) -> None:
        self.host, self.port, self.satellite = host, port, satellite
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        await self.close()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        if self.satellite:  # events reach the daemon only from the active connection
            await async_write_event(RunSatellite().event(), self.writer)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def read(self) -> Event | None:
        assert self.reader is not None
        async with asyncio.timeout(IO_TIMEOUT):
            return await async_read_event(self.reader)


async def fuzz_port(
    host: str, port: int, frames: Iterator[Frame], *, satellite: bool, allow_close: bool
) -> FuzzReport:
    """Send each frame, then a ping; see the module docstring. `allow_close`: the port may
    close after a frame read whole (the services port ends a request it refuses)."""
    report = FuzzReport(port)
    peer = _Peer(host, port, satellite)
    started = time.monotonic()
    await peer.open()
    try:
        for number, frame in enumerate(frames):
            report.frames += 1
            assert peer.writer is not None
            tag = f"fuzz-{number}"
            try:
                peer.writer.write(frame.raw)
                await async_write_event(Ping(text=tag).event(), peer.writer)
            except (ConnectionError, OSError):
                pass  # closed before the ping: read what came
            errors, closed = 0, False
            try:
                while True:
                    event = await peer.read()
                    if event is None:
                        closed = True
                        break
                    if event.type == "error":
                        errors += 1
                    elif event.type == "pong" and event.data.get("text") == tag:
                        break
            except (ConnectionError, OSError):
                closed = True
            except TimeoutError:
                report.unanswered.append(frame.kind)
                closed = True
            report.errors += errors
            what = f"{number}: {frame.kind}"
            if frame.must_error and errors == 0:
                report.missing_errors.append(what)
            if errors > 1:
                report.extra_errors.append(what)
            if closed:
                report.closes += 1
                if not frame.breaks_stream and not allow_close:
                    report.unexpected_closes.append(what)
                await peer.open()
        assert peer.writer is not None
        await async_write_event(Describe().event(), peer.writer)
        for _ in range(100):
            event = await peer.read()
            if event is None:
                break
            if event.type == "info":
                report.final_describe = True
                break
    finally:
        await peer.close()
        report.seconds = time.monotonic() - started
    return report
