"""script/test runs the suite in two tiers chosen by markers: together they run every test
once, and the first tier is not empty."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.paths import REPO


def _collected(*args: str) -> set[str]:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode in (0, 5), run.stdout[-2000:] + run.stderr[-2000:]
    return {line for line in run.stdout.splitlines() if "::" in line}


def test_the_two_tiers_run_every_test_once() -> None:
    script = (REPO / "script" / "test").read_text()
    tiers = dict(re.findall(r'^(FAST|REST)="([^"]+)"$', script, re.M))
    assert set(tiers) == {"FAST", "REST"}, tiers
    everything = _collected()
    fast, rest = _collected("-m", tiers["FAST"]), _collected("-m", tiers["REST"])
    assert fast and rest and not fast & rest
    assert fast | rest == everything, sorted(everything - fast - rest)[:5]
