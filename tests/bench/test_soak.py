"""`lfm-satellite bench soak` in the suite, small (issue 16): the daemon under a hostile peer
with 10 broker kills (SIGKILL, restarted on its port) and 50 clients dropping mid-request
(TTS, transcription and announcement connections reset), plus a round of fuzz and an MQTT
flood; each step ends with a well-formed request that succeeds. No crash, no wedge; recovery
times and RSS growth are printed (`-s`). The full-size fuzz and flood have their own tests
(tests/wyoming/test_wyoming_fuzz.py, tests/mqtt/test_mqtt.py)."""

from __future__ import annotations

import pytest

from satellite.bench.soak import run_soak
from satellite.cli import main
from tests.satellite_support import tiny_model

pytestmark = pytest.mark.slow


async def test_ten_broker_kills_and_fifty_client_drops() -> None:
    report = await run_soak(tiny_model(), rounds=1, frames=300, flood=500, kills=10, drops=50)
    print("\n" + report.summary())
    assert report.ok, report.summary()
    assert len(report.kill_recovery_seconds) == 10 and len(report.drop_recovery_seconds) == 50
    assert max(report.kill_recovery_seconds) < 15, report.kill_recovery_seconds
    assert max(report.drop_recovery_seconds) < 10, report.drop_recovery_seconds
    assert report.rss_end_mb - report.rss_start_mb < 100, report.summary()


def test_the_command_prints_the_report(capsys: object) -> None:
    code = main(["bench", "soak", "--frames", "50", "--flood", "50", "--kills", "1",
                 "--drops", "3"])  # fmt: skip
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert code == 0, out
    assert "broker kills, recovered: 1 (median" in out and "crashes: 0" in out and "RSS" in out
