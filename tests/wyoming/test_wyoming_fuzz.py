"""A hostile peer on both Wyoming ports of a running daemon (issue 16): 5,000 malformed frames
on each (`satellite.bench.fuzz`, seeded), each followed by a ping that must be answered. Every
frame that must get an `error` gets exactly one; the satellite port closes only after a frame
that breaks the stream; nothing wedges; a `describe` at the end is answered; no traceback is
logged. The process's RSS growth is printed (`-s`) and bounded."""

from __future__ import annotations

import logging

import pytest

from satellite.bench.fuzz import fuzz_port, malformed_frames
from satellite.bench.system import current_rss_mb
from satellite.daemon.core import Daemon
from tests.satellite_support import daemon_settings, tiny_model, with_services

pytestmark = pytest.mark.realtime

FRAMES = 5000


async def test_five_thousand_malformed_frames_on_each_port(
    caplog: pytest.LogCaptureFixture,
) -> None:
    daemon = Daemon(with_services(daemon_settings(tiny_model(), backend="null")))
    await daemon.start()
    caplog.set_level(logging.WARNING)
    try:
        assert daemon.services is not None
        before = current_rss_mb()
        satellite = await fuzz_port("127.0.0.1", daemon.server.bound_port,
                                    malformed_frames(FRAMES, seed=1), satellite=True,
                                    allow_close=False)  # fmt: skip
        services = await fuzz_port("127.0.0.1", daemon.services.bound_port,
                                   malformed_frames(FRAMES, seed=2), satellite=False,
                                   allow_close=True)  # fmt: skip
        grown = current_rss_mb() - before
        print(f"\n{satellite.summary()}\n{services.summary()}\nRSS growth {grown:.1f} MB")
        for report in (satellite, services):
            assert report.frames == FRAMES
            assert report.ok, report.summary()
            assert report.errors >= FRAMES // 2, report.summary()
        assert not satellite.unexpected_closes, satellite.unexpected_closes[:5]
        assert grown < 64, f"RSS grew by {grown:.0f} MB"
        tracebacks = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
        assert not tracebacks, tracebacks[:3]
    finally:
        await daemon.close()
