"""Replies play without a break when the engine makes audio more slowly than real time.

The engine here is the real tiny model in the daemon's real reply path, slowed by a delay
injected per audio frame in its worker thread (each frame is held until the audio before it
would have been made at the chosen real-time factor): 0.5, 1.5, 2 and 3. The speaker is, in
turn, the `null` backend's simulated real-time speaker and a real PulseAudio server (a null
sink, `../shared/FINDINGS.md` §3) through PortAudio. Each reply must meet no underrun, and
its start delay must be within 10 % of the least delay that would have avoided them,
computed afterwards from the times the audio really arrived.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import satellite.reply as reply_module
from satellite.audio.backends import NullBackend
from satellite.audio.jitter import JitterBuffer
from satellite.audio.pacing import CUSHION_SECONDS, MARGIN, Pacer, least_start_delay
from satellite.audio.player import Generated, PlaybackReport, ReplyPlayer, TextProgress
from satellite.audio.wake import Detection
from satellite.bench.query import spoken_query
from satellite.cli.demo import playback_summary
from satellite.daemon.core import Daemon
from satellite.engine import costmodel
from satellite.engine.events import AudioFrame
from satellite.engine.framebatch import BATCH_FRAMES
from satellite.events import TurnFinished, TurnReport
from satellite.modeldir.manifest import read_manifest
from satellite.settings import AudioSettings, HealthSettings, Settings
from satellite.telemetry.health import HealthMonitor
from satellite.telemetry.stats import InterarrivalJitter
from tests.conftest import PulseServer
from tests.satellite_support import daemon_settings, tiny_model, unshaped_model

pytestmark = pytest.mark.realtime

RATES = (0.5, 1.5, 2.0, 3.0)
REPLY_SECONDS = 4.08
"""51 frames: slow replies, decoded in batches of 1, 2, then 4, end on a whole batch. (A last
batch cut short by the reply's bound makes the pacer wait up to 3 frames longer than the
least, which hindsight knows: 8 % of it at rate 1.5.)"""
FRAME = 0.08
SLACK_SECONDS = 0.015
"""Absolute allowance on top of 10 %: where the least delay is 0, the first audio still has
to cross from the engine's thread to the speaker. A sound card also takes a whole block at a
time, so its least delay is one block (`lead_seconds`) longer than the arrivals' alone."""


class Slowdown:
    """The engine made slow: holds each audio frame the model generates until the frames
    before it would have been made at `rtf` (set between turns; changed mid-reply after
    `switch_after` frames). The frames then go through the reply's own detokenizer batching,
    so a slow reply's audio arrives in batches as it would from a slow engine."""

    def __init__(self) -> None:
        self.rtf = 1.0
        self.later_rtf: float | None = None
        self.switch_after = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        decoded = reply_module.decoded

        def slowed(
            events: Iterator[Any], detokenizer: Any, batch: int = 1, limit: int | None = None
        ) -> Iterator[Any]:
            return decoded(self._paced(events, detokenizer), detokenizer, batch, limit)

        monkeypatch.setattr(reply_module, "decoded", slowed)

    def _paced(self, events: Iterator[Any], detokenizer: Any) -> Iterator[Any]:
        due: float | None = None
        frames = 0
        for event in events:
            if (
                isinstance(event, AudioFrame)
                and not event.end_of_audio
                and detokenizer.decodable(event.codes)
            ):
                now = time.monotonic()
                if due is None:
                    due = now
                elif due > now:
                    time.sleep(due - now)
                frames += 1
                rtf = self.rtf
                if self.later_rtf is not None and frames > self.switch_after:
                    rtf = self.later_rtf
                due += rtf * FRAME
            yield event


@pytest.fixture
def slowdown(monkeypatch: pytest.MonkeyPatch) -> Slowdown:
    slow = Slowdown()
    slow.install(monkeypatch)
    return slow


@pytest.fixture(autouse=True)
def same_reply(greedy_replies: None) -> None:
    """Every reply alike: greedy (conftest's `greedy_replies`) and each turn a new
    conversation (`conversation_timeout_seconds: 0`, set in `_settings`), so that the length
    the pacer expects is the length each reply has."""


@pytest.fixture
def played(monkeypatch: pytest.MonkeyPatch) -> list[PlaybackReport]:
    """Every reply player's report, as it finishes (the arrival times are in them)."""
    reports: list[PlaybackReport] = []
    run = ReplyPlayer.run

    async def recorded(self: ReplyPlayer, queue: Any) -> PlaybackReport:
        report = await run(self, queue)
        reports.append(report)
        return report

    monkeypatch.setattr(ReplyPlayer, "run", recorded)
    return reports


def _settings(**kwargs: Any) -> Settings:
    """The tiny model's daemon, every turn a new conversation (see `same_reply`), on the model
    whose replies run to `max_reply_seconds` (`unshaped_model`): pacing is measured over
    replies of a known length, and the default model's end after a few frames."""
    settings = daemon_settings(unshaped_model(), **kwargs)
    satellite = dataclasses.replace(settings.satellite, conversation_timeout_seconds=0.0)
    return dataclasses.replace(settings, satellite=satellite)


def _question() -> np.ndarray:
    return spoken_query(2.0).samples


def _check_rate(
    rtf: float, turns: list[TurnReport], reports: list[PlaybackReport], lead: float
) -> None:
    for turn in turns:
        assert turn.underruns == 0, f"rtf {rtf}: {turn.underruns} underruns"
        assert turn.frames >= 10, "the replies are too short to measure a start delay on"
    # the first reply at a new rate may start on the old rate's figure and hold once
    assert turns[0].holds <= 1 and turns[1].holds == 0
    report = reports[-1]
    least = least_start_delay(report.arrivals)
    delay = report.start_delay
    assert delay is not None
    if rtf > 1:  # the least delay grows with the reply: (length - frame) * (rtf - 1)
        length = turns[1].reply_audio_seconds
        assert least > 0.6 * (length - FRAME) * (rtf - 1)
    assert delay <= 1.10 * least + SLACK_SECONDS + lead, (
        f"rtf {rtf}: waited {delay:.3f} s, least {least:.3f} s"
    )
    assert turns[1].start_delay == pytest.approx(delay)
    assert turns[1].generation_rtf == pytest.approx(rtf, rel=0.1)


async def _answer_at_rates(
    daemon: Daemon, slowdown: Slowdown, played: list[PlaybackReport]
) -> None:
    question = _question()
    for rtf in RATES:
        slowdown.rtf = rtf
        turns = [await daemon.answer(question) for _ in range(2)]
        _check_rate(rtf, turns, played, daemon.backend.lead_seconds)


async def test_no_underrun_at_any_rate_on_a_real_time_speaker(
    slowdown: Slowdown, played: list[PlaybackReport]
) -> None:
    daemon = Daemon(_settings(backend="null", max_reply_seconds=REPLY_SECONDS))
    await daemon.start()
    try:
        await _answer_at_rates(daemon, slowdown, played)
        assert daemon.backend.stats().underruns == 0
    finally:
        await daemon.close()


async def test_no_underrun_at_any_rate_on_a_pulseaudio_server(
    pulseaudio: PulseServer, slowdown: Slowdown, played: list[PlaybackReport]
) -> None:
    settings = _settings(backend="sounddevice", input_device="pulse",
                               output_device="pulse", max_reply_seconds=REPLY_SECONDS)  # fmt: skip
    daemon = Daemon(settings)
    await daemon.start()
    try:
        await _answer_at_rates(daemon, slowdown, played)
        stats = daemon.backend.stats()
        assert stats.underruns == 0 and stats.played > 8 * REPLY_SECONDS * 24_000 * 0.8
    finally:
        await daemon.close()


async def test_a_rate_that_drops_mid_reply_holds_once(
    slowdown: Slowdown, played: list[PlaybackReport]
) -> None:
    daemon = Daemon(_settings(backend="null", max_reply_seconds=3.0))
    await daemon.start()
    try:
        question = _question()
        slowdown.rtf = 0.5
        await daemon.answer(question)
        slowdown.later_rtf, slowdown.switch_after = 2.0, 20  # 1.6 s in, 0.8 s buffered
        turn = await daemon.answer(question)
    finally:
        await daemon.close()
    assert turn.underruns == 0 and turn.holds == 1
    assert turn.start_delay is not None and turn.start_delay < 0.05  # it looked fast at first
    assert not turn.played_at_real_time
    assert "paused once" in playback_summary(turn)


async def test_barge_in_cuts_a_held_reply_at_once(
    slowdown: Slowdown, played: list[PlaybackReport]
) -> None:
    daemon = Daemon(_settings(backend="null", max_reply_seconds=REPLY_SECONDS))
    await daemon.start()
    try:
        slowdown.rtf = 3.0
        answering = asyncio.create_task(daemon.answer(_question()))
        deadline = time.monotonic() + 20
        while daemon.backend.stats().played == 0 and not daemon.playing:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # audio has arrived and is held: a 3x engine waits ~3.8 s
        assert daemon.backend.queued == 0 and daemon.playing
        daemon._on_wake(Detection("Okay Nabu", "okay_nabu", 1.0, 0.99))  # the barge-in path
        assert not daemon.playing and daemon.backend.queued == 0
        with pytest.raises(asyncio.CancelledError):
            await answering
        before = daemon.backend.stats().played
        await asyncio.sleep(0.5)
        assert daemon.backend.stats().played == before == 0  # nothing held came out later
        assert daemon.interrupted == 1
    finally:
        await daemon.close()


# -- the pieces ---------------------------------------------------------------------------


def _uniform(pacer: Pacer, rtf: float, frames: int, start: float = 100.0) -> list[float]:
    """Arrivals of `frames` 80 ms frames at `rtf`; the pacer's start time after each."""
    starts = []
    for index in range(frames):
        pacer.arrived(start + index * FRAME * rtf, FRAME)
        starts.append(pacer.start_time(0.0))
    return starts


@pytest.mark.parametrize("rtf", [1.2, 1.5, 2.0, 3.0])
def test_the_start_is_the_least_that_keeps_up_plus_the_margin(rtf: float) -> None:
    pacer = Pacer()
    pacer.last_rtf = rtf
    pacer.begin(at_most=25 * FRAME)
    starts = _uniform(pacer, rtf, 25)
    least = 24 * FRAME * (rtf - 1)
    assert starts[0] - 100.0 == pytest.approx(least * (1 + MARGIN) + CUSHION_SECONDS)
    # the start never moves later as frames arrive at the expected pace
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(starts))
    assert starts[-1] == -np.inf  # every frame of the bound is in: nothing left to wait for


@pytest.mark.parametrize("rtf", [1.2, 2.0])
def test_batched_audio_keeps_up_from_the_least_start_plus_the_margin(rtf: float) -> None:
    """Frames decoded in batches (`satellite.engine.framebatch`): chunks of 1, 2, then 4
    frames, each arriving when its last frame is made. The rate is read off the chunks
    whatever their lengths, and the start the pacer gives plays every chunk in time, within
    the margin of the least start that does."""
    pacer = Pacer()
    pacer.last_rtf = rtf
    sizes = [1, 2] + [4] * 10 + [3]
    total = sum(sizes) * FRAME
    pacer.begin(at_most=total, chunk=4 * FRAME)
    arrivals: list[tuple[float, float]] = []
    made = 0
    starts = []
    for size in sizes:
        made += size
        arrivals.append((100.0 + made * FRAME * rtf, size * FRAME))
        pacer.arrived(*arrivals[-1])
        starts.append(pacer.start_time(0.0))
    assert pacer.rtf() == pytest.approx(rtf)
    least = 100.0 + FRAME * rtf + least_start_delay(arrivals)
    first_start = starts[1]  # the rate is the reply's own from the second chunk on
    assert least - 1e-9 <= first_start <= least + (total * MARGIN + CUSHION_SECONDS) * rtf


MEASURED_REPLY = [
    (0.0, 0.06), (0.116, 0.16), (0.359, 0.32), (0.614, 0.32), (1.082, 0.32), (1.35, 0.32),
    (1.618, 0.32), (2.123, 0.32), (2.437, 0.32), (2.729, 0.32), (3.167, 0.24), (3.167, 0.02),
]  # fmt: skip
"""A reply's chunks (time after the first, seconds) as the full-size q4 model made them on an
AMD EPYC, 2 threads (`bench turns --pause 0.6 --reply-seconds 3`, batched decoding): its first
chunks come faster than the rest, which have a text run between audio runs."""


def test_a_reply_whose_first_chunks_come_fast_still_plays_through() -> None:
    """The pacer foresees the end from every chunk so far, not only the last: after the first
    fast chunks of such a reply the least start is still met (with the rate foreseen from the
    last chunk alone it started 46 ms too early and ran dry)."""
    pacer = Pacer()
    for arrival in MEASURED_REPLY:
        pacer.arrived(*arrival)
    pacer.finished()
    pacer.begin(at_most=3.0, chunk=4 * FRAME)
    least = least_start_delay(MEASURED_REPLY)
    for time_, seconds in MEASURED_REPLY:
        pacer.arrived(time_, seconds)
        start = pacer.start_time(0.0)
        if start <= time_:  # the player starts on this chunk
            break
    assert start >= least, f"started at {start:.3f} s, the least that plays through: {least:.3f}"
    assert start <= least * 1.35


def test_a_fast_engine_starts_at_once_and_an_unknown_one_waits_for_its_rate() -> None:
    pacer = Pacer()
    pacer.begin(at_most=30.0)
    pacer.arrived(10.0, FRAME)
    assert pacer.start_time(0.0) == np.inf  # one arrival, no earlier reply: rate unknown
    pacer.arrived(10.04, FRAME)
    assert pacer.rtf() == pytest.approx(0.5)
    # the audio in ends 2 frames after the first arrival, the next frame comes 0.5 of a
    # frame after the last: in the past
    assert pacer.start_time(0.0) == pytest.approx(10.04 - 1.5 * FRAME + CUSHION_SECONDS)
    assert pacer.start_time(0.0, lead=0.02) == pytest.approx(10.04 - 1.5 * FRAME + 0.04)
    pacer.finished()
    assert pacer.last_rtf == pytest.approx(0.5) and pacer.start_time(0.0) == -np.inf
    pacer.begin(at_most=30.0)
    pacer.arrived(20.0, FRAME)
    assert pacer.start_time(0.0) == pytest.approx(20.0 - 0.5 * FRAME + CUSHION_SECONDS)


def test_a_reply_near_real_time_starts_late_enough_for_its_slowest_frames() -> None:
    """An engine that keeps up on average (rate 0.95) but makes some frames slower than
    others: a reply started at once ran dry; the pacer learns how much too early that was,
    and the next reply like it starts late enough to play through. An even engine's replies
    teach no room at all."""
    pacer = Pacer()
    times = [0.0]
    for index in range(1, 13):  # every fourth frame 40 ms slower than the rest
        times.append(times[-1] + FRAME * 0.95 + (0.04 if index % 4 == 1 else -0.04 / 3))
    arrivals = [(100.0 + t, FRAME) for t in times]
    pacer.begin(at_most=30.0, chunk=FRAME)
    for arrival in arrivals:
        pacer.arrived(*arrival)
    pacer.finished(started=100.0)  # at once, on the first frame
    least = least_start_delay(arrivals)
    assert least > 0.03 and pacer.lateness[-1] == pytest.approx(least)
    pacer.begin(at_most=30.0, chunk=FRAME)
    pacer.arrived(*arrivals[0])
    start = pacer.start_time(0.0)
    assert start - 100.0 >= least  # no break this time
    assert start - 100.0 == pytest.approx(least + FRAME * pacer.rtf() - FRAME + CUSHION_SECONDS)
    for arrival in arrivals[1:]:
        pacer.arrived(*arrival)
    pacer.finished(started=start)
    assert pacer.lateness[-1] < least  # it waited longer than it needed: less room
    assert pacer.start_time(0.0) == -np.inf  # (all in)
    even = Pacer()
    even.begin(at_most=30.0, chunk=FRAME)
    for index in range(13):
        even.arrived(100.0 + index * FRAME * 0.95, FRAME)
    even.finished(started=100.0)
    assert list(even.lateness) == [0.0]
    even.begin(at_most=30.0, chunk=FRAME)
    even.arrived(200.0, FRAME)
    assert even.start_time(0.0) < 200.0 + CUSHION_SECONDS  # all but at once


def test_the_expected_length_comes_from_the_text_then_the_last_replies_then_the_bound() -> None:
    pacer = Pacer()
    pacer.begin(at_most=30.0)
    assert pacer.expected() == 30.0
    pacer.text(40, complete=True)
    assert pacer.expected() == pytest.approx(40 * 0.075 * 1.15)
    for index in range(40):
        pacer.arrived(index * 0.1, 0.1)
    pacer.finished()
    assert pacer.seconds_per_char == pytest.approx(0.1)
    assert list(pacer.lengths) == pytest.approx([4.0])
    pacer.begin(at_most=30.0)
    assert pacer.expected() == pytest.approx(
        4.0
    )  # before its text is complete: the longest recent reply
    for index in range(45):
        pacer.arrived(index * 0.1, 0.1)
    assert pacer.expected() == 30.0  # passed: only the bound is certain until the text ends
    pacer.text(50, complete=True)
    assert pacer.expected() == pytest.approx(50 * 0.1 * 1.15)


def test_least_start_delay_of_known_arrivals() -> None:
    assert least_start_delay([]) == 0.0
    assert least_start_delay([(0.0, 0.08), (0.04, 0.08), (0.08, 0.08)]) == 0.0
    assert least_start_delay([(0.0, 0.08), (0.16, 0.08), (0.32, 0.08)]) == pytest.approx(0.16)
    assert least_start_delay([(0.0, 1.0), (1.5, 1.0)]) == pytest.approx(0.5)


def _speaker(realtime: bool = True) -> NullBackend:
    return NullBackend(AudioSettings(backend="null", output_rate=24_000), realtime=realtime)


async def test_the_simulated_speaker_counts_breaks_and_holds_apart() -> None:
    speaker = _speaker()
    tone = np.full(2400, 0.1, np.float32)  # 100 ms
    await speaker.play(tone, 24_000)
    await asyncio.sleep(0.2)
    await speaker.play(tone, 24_000)  # a 100 ms gap in a reply
    assert speaker.stats().underruns == 1
    speaker.hold_playback()
    await asyncio.sleep(0.2)
    await speaker.play(tone, 24_000)  # a gap that was meant
    assert (speaker.stats().underruns, speaker.stats().holds) == (1, 1)
    await speaker.play(tone, 24_000)  # no gap
    await speaker.drain()
    await asyncio.sleep(0.05)
    await speaker.play(tone, 24_000)  # a new reply after the drain: no gap counted
    await speaker.drain()
    assert (speaker.stats().underruns, speaker.stats().holds) == (1, 1)


def test_the_sound_card_buffer_counts_a_held_gap_once() -> None:
    buffer = JitterBuffer(48_000)
    block = np.zeros(480, np.float32)
    buffer.write(np.ones(600, np.float32))
    buffer.hold()
    for _ in range(4):
        buffer.pull(block)
    assert (buffer.underruns, buffer.holds) == (0, 1)
    buffer.write(np.ones(960, np.float32))  # resumes; the next gap is a break again
    for _ in range(4):
        buffer.pull(block)
    assert (buffer.underruns, buffer.holds) == (2, 1)


async def test_without_a_real_time_speaker_nothing_waits() -> None:
    speaker = _speaker(realtime=False)
    pacer = Pacer()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    player = ReplyPlayer(speaker, 24_000, pacer, at_most=30.0)
    task = asyncio.create_task(player.run(queue))
    queue.put_nowait(TextProgress(10))
    queue.put_nowait(Generated(np.zeros(1920, np.float32)))
    await asyncio.sleep(0.05)
    assert speaker.stats().played == 1920  # the rate is unknown, but nothing plays at a pace
    queue.put_nowait(None)
    report = await asyncio.wait_for(task, 5)
    assert report.start_delay is not None and report.start_delay < 0.05
    assert report.underruns == report.holds == 0


def test_the_demo_says_truly_how_the_reply_played() -> None:
    base = TurnReport("okay_nabu", 2.0, "silence", "hi", "end_of_turn", 2.0, 25, 0, 0.5, 0.2,
                      0.1, 3.0, 5.0)  # fmt: skip
    assert playback_summary(base) == "played at real time, without a break"
    assert base.played_at_real_time
    broken = TurnReport(**{**base.__dict__, "underruns": 7})
    assert "broke up 7 time(s)" in playback_summary(broken) and not broken.played_at_real_time
    held = TurnReport(**{**base.__dict__, "start_delay": 1.9, "generation_rtf": 1.95})
    said = playback_summary(held)
    assert said.startswith("played at real time") and "1900 ms" in said and "1.95x" in said


def test_the_health_report_carries_each_replys_playback() -> None:
    class Watched:
        started = time.monotonic()
        input_jitter = InterarrivalJitter(16_000)
        playback_jitter = InterarrivalJitter(24_000)

        def counters(self) -> dict[str, Any]:
            return {}

    monitor = HealthMonitor(HealthSettings(), Watched())
    base = TurnReport("okay_nabu", 2.0, "silence", "hi", "end_of_turn", 2.0, 25, 0, 0.5, 0.2,
                      0.1, 3.0, 5.0, start_delay=1.2, underruns=3, generation_rtf=1.6)  # fmt: skip
    monitor.observe(TurnFinished(base))
    monitor.observe(TurnFinished(TurnReport(**{**base.__dict__, "underruns": 0})))
    report = monitor.report()
    assert report["last_reply_underruns"] == 0 and report["replies_broken"] == 1
    assert report["reply_start_delay_ms"]["p50"] == pytest.approx(1200, abs=1)
    assert report["generation_rtf"]["p50"] == pytest.approx(1.6)


# -- a machine too slow for real time -------------------------------------------------------


def test_the_cost_model_counts_each_graphs_bytes_and_scales_with_bandwidth() -> None:
    directory = tiny_model()
    manifest = read_manifest(directory)

    def size(role: str) -> int:
        entry = manifest.graphs[role]
        return sum((directory / name).stat().st_size for name in [entry.file, *entry.data_files])

    codebooks = int(manifest.config["codebooks"])
    expected = (
        size("decoder") * 1.5 + size("depthformer") * codebooks + size("audio_detokenizer_cached")
    )
    per_frame = costmodel.frame_bytes(manifest, directory)
    assert per_frame == round(expected)
    # without the cached graph the windowed one re-runs 17 past frames a call: it counts more
    windowed = dataclasses.replace(manifest, graphs={
        role: entry for role, entry in manifest.graphs.items() if role != "audio_detokenizer_cached"
    })  # fmt: skip
    assert costmodel.frame_bytes(windowed, directory) == round(
        expected
        - size("audio_detokenizer_cached")
        + size("audio_detokenizer") * costmodel.WINDOWED_DETOKENIZER_READS
    )
    cal = costmodel.CALIBRATION
    assert costmodel.expected_rtf(cal.frame_bytes, cal.read_gbs) == pytest.approx(cal.measured_rtf)
    assert costmodel.expected_rtf(per_frame, 5.0) == pytest.approx(
        2 * costmodel.expected_rtf(per_frame, 10.0)
    )
    assert costmodel.read_bandwidth(megabytes=16, passes=2) > 0.1
    assert costmodel.advice(0.9) is None
    said = costmodel.advice(1.6, "fp16")
    assert said is not None and "1.60x real time" in said and "--variant q4" in said
    assert "--variant" not in (costmodel.advice(1.6, "q4") or "")


async def test_a_slow_machine_is_told_at_start_and_after_a_slow_reply(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, slowdown: Slowdown
) -> None:
    # the probe reads as a board would where this model runs at 2x real time (a stand-in for
    # a slow board's memory; the model, its graphs and the rest of the start are real)
    directory = tiny_model()
    per_frame = costmodel.frame_bytes(read_manifest(directory), directory)
    slow = costmodel.expected_rtf(per_frame, 1.0) / 2.0
    monkeypatch.setattr(costmodel, "read_bandwidth", lambda: slow)
    daemon = Daemon(_settings(backend="null", max_reply_seconds=1.0))
    with caplog.at_level("INFO", logger="satellite"):
        await daemon.start()
        try:
            assert daemon.expected_rtf == pytest.approx(2.0)
            assert daemon.counters()["expected_rtf"] == round(daemon.expected_rtf, 2)
            started = caplog.text
            assert "expected real-time factor" in started
            assert "each reply waits before it plays" in started
            # the first reply is held for the foreseen rate and decoded in batches
            assert daemon.pacer.last_rtf == pytest.approx(2.0)
            assert daemon.responder is not None and daemon.responder.batch == BATCH_FRAMES
            slowdown.rtf = 1.5
            turn = await daemon.answer(_question())
        finally:
            await daemon.close()
    assert "measured: this machine makes speech at 1." in caplog.text  # about 1.5
    assert turn.underruns == 0 and turn.holds == 0


def test_bench_boards_prints_every_board_class(tmp_path: Path) -> None:
    out = tmp_path / "boards.json"
    done = subprocess.run(
        [sys.executable, "-m", "satellite", "bench", "boards", "--model", str(tiny_model()),
         "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    names = [board["name"] for board in figures["boards"]]
    assert names[0] == "this machine" and len(names) == 1 + len(costmodel.BOARDS)
    for board in costmodel.BOARDS:
        assert board.name in done.stdout and board.memory in done.stdout
    rtfs = {board["name"]: board["expected_rtf"] for board in figures["boards"]}
    assert rtfs["Raspberry Pi 4"] > rtfs["Raspberry Pi 5"] > rtfs["Intel N100 mini PC"]
    assert figures["frame_bytes"] == costmodel.frame_bytes(
        read_manifest(tiny_model()), tiny_model()
    )
