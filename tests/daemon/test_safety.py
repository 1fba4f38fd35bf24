"""The text filter (blocked terms stop a reply) and the audio integrity check."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from satellite.bench.query import spoken_query
from satellite.daemon.core import Daemon
from satellite.events import TurnFinished, TurnReport
from satellite.reply import Responder
from satellite.safety.audio import SILENCE_RUN_SECONDS, AudioCheck
from satellite.safety.text import TextFilter
from satellite.settings import HealthSettings, SafetySettings, Settings
from satellite.telemetry.health import HealthMonitor
from tests.satellite_support import daemon_settings, tiny_model

pytestmark = pytest.mark.realtime


def test_text_filter_matches_whole_words_in_any_case() -> None:
    f = TextFilter(["darn", "pick  up line"])
    assert f.blocked("Well, DARN it.") == "DARN"
    assert f.blocked("a darned thing") is None, "whole words only"
    assert f.blocked("that is a pick\nup line") == "pick\nup line"
    assert f.blocked("pickup lines") is None
    assert TextFilter(["darn"], enabled=False).blocked("darn") is None
    assert TextFilter([]).blocked("anything") is None
    assert TextFilter(["a.b"]).blocked("axb a.b") == "a.b", "terms are not patterns"


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
    assert len(problems) == 2, problems  # 1 clipped sample in 3,615 is below the 1 % share
    assert "2 invalid samples" in problems[0] and "1 silence runs" in problems[1]
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


async def _answer(settings: Settings) -> TurnReport:
    responder = Responder.load(settings)
    responder.seed = 0  # sampled audio feeds back into the text: seed it for a repeatable turn
    daemon = Daemon(settings, responder=responder)
    await daemon.start()
    try:
        return await daemon.answer(spoken_query(2.0).samples)
    finally:
        await daemon.close()


async def test_a_blocked_term_stops_the_reply() -> None:
    """The tiny model's reply to a fixed query (greedy text, seeded audio) is the same each
    run: take a word from it, block it, and the same turn stops there."""
    settings = daemon_settings(tiny_model(), backend="null", max_reply_seconds=3.0)
    free = await _answer(settings)
    words = re.findall(r"(?<!\w)[a-zA-Z]{3,}(?!\w)", free.reply_text)
    assert words, f"no whole word in the reply {free.reply_text!r}"
    term = words[len(words) // 2]
    blocked_settings = dataclasses.replace(settings, safety=SafetySettings(
        blocked_terms=[term], max_reply_seconds=3.0))  # fmt: skip
    stopped = await _answer(blocked_settings)
    assert stopped.reply_reason == "blocked" and stopped.blocked_term is not None
    assert stopped.blocked_term.lower() == term.lower()
    assert stopped.reply_audio_seconds < free.reply_audio_seconds
    cut = stopped.reply_text.lower()
    assert term.lower() in cut and len(cut) < len(free.reply_text)
