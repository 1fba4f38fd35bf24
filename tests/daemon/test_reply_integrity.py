"""A reply whose audio fails the per-frame integrity check, through the daemon: the rest of it
is muted at the speaker, the turn report names the failure, the audio alert is raised and the
health report counts it (`safety.audio_action: mute`, the default); what is said next plays."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from satellite.bench.query import spoken_query
from satellite.daemon.core import Daemon
from satellite.reply import Responder
from satellite.settings import HealthSettings
from satellite.telemetry.health import HealthMonitor
from tests.satellite_support import daemon_settings, tiny_model

pytestmark = pytest.mark.realtime

FAULTY_BLOCK = 7
"""The reply's block that loses 40 ms of its audio (a dropout)."""


async def test_a_dropout_mutes_the_rest_of_the_reply_and_raises_the_audio_alert() -> None:
    settings = daemon_settings(tiny_model(), backend="null", max_reply_seconds=2.0)
    responder = Responder.load(settings)
    daemon = Daemon(settings, responder=responder)
    monitor = HealthMonitor(HealthSettings(), daemon)
    daemon.observe(monitor.observe)
    played: list[np.ndarray] = []
    blocks: list[int] = []
    inspect = daemon.audio_check.inspect
    faulty = False

    def with_fault(block: Any, rate: int | None = None) -> np.ndarray:
        samples = np.array(block, np.float32)
        if faulty and len(blocks) == FAULTY_BLOCK:
            samples[480:1440] = 0.0
        blocks.append(samples.size)
        return inspect(samples, rate)

    daemon.audio_check.inspect = with_fault  # type: ignore[method-assign]
    await daemon.start()
    daemon.backend.on_played = lambda samples, at: played.append(np.array(samples))
    try:
        responder.seed = 0
        clean = await daemon.answer(spoken_query(2.0).samples)
        assert clean.audio_problems == () and not monitor.alerts["audio"]
        tail = np.concatenate(played)[-FAULTY_BLOCK * 1920 :]
        assert np.sqrt(np.mean(tail**2)) > 0.01, "the clean reply plays to its end"
        played.clear()
        blocks.clear()
        faulty = True
        responder.reset()  # the same turn again, from the start of the conversation
        responder.seed = 0
        report = await daemon.answer(spoken_query(2.0).samples)
        audio, sizes = np.concatenate(played), list(blocks)
        played.clear()
        faulty = False
        await daemon.local.say("The kitchen light is on.")  # after it, speech plays again
        said = np.concatenate(played)
    finally:
        await daemon.close()
    assert not daemon.audio_check.muted and np.sqrt(np.mean(said**2)) > 0.01
    assert "dropouts (digital silence inside speech): 1" in report.audio_problems
    assert any("the rest of the reply muted" in p for p in report.audio_problems)
    assert monitor.alerts["audio"]
    at = sum(sizes[:FAULTY_BLOCK])  # the player plays at the output's rate (24 kHz): no resampling
    assert audio.size >= sum(sizes) and np.sqrt(np.mean(audio[: at - 480] ** 2)) > 0.01
    assert not np.any(audio[at + 120 :]), "silent from the faulty block on (after a 5 ms fade)"
    health = monitor.report()
    fixed = health["audio_fixed"]
    assert fixed["integrity_failures"] == 1
    assert fixed["integrity_failures_by_detector"]["dropout"] == 1
    assert fixed["silenced_s"] > 0.5
