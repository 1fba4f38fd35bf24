"""Blocked terms stop a reply in the daemon (the refusal is said instead, the event and the
report name the rule; the rules themselves: tests/safety/), and the audio integrity check."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from satellite.bench.query import spoken_query
from satellite.daemon.core import Daemon
from satellite.events import DaemonEvent, ReplyBlocked, Said, TurnFinished, TurnReport
from satellite.reply import Responder
from satellite.safety.audio import SILENCE_RUN_SECONDS, AudioCheck
from satellite.settings import HealthSettings, SafetySettings, Settings
from satellite.telemetry.health import HealthMonitor
from tests.satellite_support import daemon_settings, unshaped_model

pytestmark = pytest.mark.realtime


def test_audio_check_fixes_and_counts() -> None:
    check = AudioCheck(1000)
    check.start_reply()
    block = np.array([0.5, np.nan, np.inf, -3.0, 0.2], np.float32)
    fixed = check.inspect(block)
    assert np.array_equal(fixed, np.array([0.5, 0.0, 0.0, -1.0, 0.2], np.float32))
    assert (check.reply.invalid, check.reply.clipped) == (2, 1)
    quiet = np.zeros(int(SILENCE_RUN_SECONDS * 1000 * 0.6), np.float32)
    check.inspect(quiet)
    check.inspect(quiet)  # the run spans two blocks: counted once
    check.inspect(np.full(10, 0.3, np.float32))
    check.inspect(quiet)
    assert check.reply.silence_runs == 1
    problems = check.reply_problems()
    # 1 clipped sample in 3,615 is below the 1 % share; the step from 0.2 to the zeros is a
    # click at a block join (tests/safety/test_audio_integrity.py), which muted the rest
    assert len(problems) == 4, problems
    assert "2 invalid samples" in problems[0] and "1 silence runs" in problems[1]
    assert problems[2:] == ["clicks at frame joins: 1",
                            "the rest of the reply muted (1.21 s of audio silenced)"]  # fmt: skip
    check.start_reply()
    check.inspect(np.full(100, 1.5, np.float32))
    assert check.reply_problems() == ["100.0% of samples clipped"]
    check.start_reply()
    check.inspect(np.full(100, 0.1, np.float32))
    assert check.reply_problems() == [] and check.total.invalid == 2
    off = AudioCheck(1000, enabled=False)
    assert np.isnan(off.inspect(block)[1])


def test_the_audio_alert_follows_the_replies() -> None:
    class Watched:
        started = 0.0
        from satellite.telemetry.stats import InterarrivalJitter

        input_jitter = InterarrivalJitter(16000)
        playback_jitter = InterarrivalJitter(24000)

        def counters(self) -> dict[str, int]:
            return {}

    monitor = HealthMonitor(HealthSettings(), Watched())  # type: ignore[arg-type]
    changes: list[tuple[str, bool]] = []
    monitor.on_alert.append(lambda c: changes.append((c.name, c.raised)))
    report = TurnReport("x", 1.0, "silence", "", "end_of_turn", 1.0, 12, 0, 0.1, 0.1, 0.0, 0.5,
                        1.2, audio_problems=("3 invalid samples (NaN or infinite) set to 0",))  # fmt: skip
    monitor.observe(TurnFinished(report))
    assert monitor.alerts["audio"] and changes == [("audio", True)]
    monitor.observe(TurnFinished(dataclasses.replace(report, audio_problems=())))
    assert not monitor.alerts["audio"] and changes[-1] == ("audio", False)


async def _answer(settings: Settings, seen: list[DaemonEvent] | None = None) -> TurnReport:
    responder = Responder.load(settings)
    responder.seed = 0  # sampled audio feeds back into the text: seed it for a repeatable turn
    daemon = Daemon(settings, responder=responder)
    if seen is not None:
        daemon.observe(seen.append)
    await daemon.start()
    try:
        report = await daemon.answer(spoken_query(2.0).samples)
        if seen is not None:
            assert daemon.counters()["replies_blocked_by_rule"] == {"blocked_terms": 1}
        return report
    finally:
        await daemon.close()


async def test_a_blocked_term_stops_the_reply() -> None:
    """The tiny model's reply to a fixed query (greedy text, seeded audio) is the same each
    run: take a word from it, block it, and the same turn stops there."""
    # the model whose replies go on: a word from the middle of one, and more after it
    settings = daemon_settings(unshaped_model(), backend="null", max_reply_seconds=3.0)
    free = await _answer(settings)
    words = re.findall(r"(?<!\w)[a-zA-Z]{3,}(?!\w)", free.reply_text)
    assert words, f"no whole word in the reply {free.reply_text!r}"
    term = words[(len(words) - 1) // 2]  # not the last: the reply must go on after it
    blocked_settings = dataclasses.replace(settings, safety=SafetySettings(
        blocked_terms=[term], max_reply_seconds=3.0, refusal="I will not say that."))  # fmt: skip
    seen: list[DaemonEvent] = []
    stopped = await _answer(blocked_settings, seen)
    assert stopped.reply_reason == "blocked" and stopped.blocked_rule == "blocked_terms"
    assert stopped.blocked_excerpt is not None and term.lower() in stopped.blocked_excerpt.lower()
    assert [e for e in seen if isinstance(e, ReplyBlocked)] == [
        ReplyBlocked(rule="blocked_terms", excerpt=stopped.blocked_excerpt, what="reply")
    ]
    assert Said(text="I will not say that.") in seen, "the refusal is said after the block"
    assert free.safety_wait is not None and free.safety_wait < 0.005  # audio waited on nothing
    assert stopped.safety_wait is None or stopped.safety_wait < 0.005
    assert stopped.reply_audio_seconds < free.reply_audio_seconds
    cut = stopped.reply_text.lower()
    assert term.lower() in cut and len(cut) < len(free.reply_text)
