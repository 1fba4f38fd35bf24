"""Every dependency of the satellite installs on an aarch64 board from a wheel: the add-on's
and the container's aarch64 images (Debian bookworm: glibc 2.36, Python 3.11) and a Raspberry
Pi OS bookworm board have no compiler in the install path. pip resolves the project from this
checkout against PyPI for `manylinux_2_36_aarch64` and older glibc tags, CPython 3.11, wheels
only (`--dry-run`: nothing is installed), as a fresh install would today; a dependency without
such a wheel fails here, by name."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import REPO

GLIBC_MINOR = 36
"""Debian bookworm's glibc (2.36), what Raspberry Pi OS bookworm and the images run."""
PLATFORMS = [f"manylinux_2_{minor}_aarch64" for minor in range(GLIBC_MINOR, 16, -1)] + [
    "manylinux2014_aarch64"
]
"""pip does not widen a `manylinux_2_36` platform to the older tags a board also takes."""
WHEEL = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<platform>[^-]+)\.whl$"
)


def resolve_aarch64(requirements: list[str], folder: Path) -> dict[str, str]:
    """Name -> file pip would install for the board (a path requirement -> its URL); an
    AssertionError with pip's words when something cannot be had as such a wheel."""
    report = folder / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--quiet",
               "--ignore-installed", "--only-binary=:all:", "--python-version", "3.11",
               "--implementation", "cp", "--abi", "cp311", "--target", str(folder / "target"),
               "--report", str(report)]  # fmt: skip
    for platform in PLATFORMS:
        command += ["--platform", platform]
    if os.environ.get("PIP_CERT"):  # --isolated drops pip's environment; this machine's CA stays
        command += ["--cert", os.environ["PIP_CERT"]]
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # PyPI only, as on a user's board
    done = subprocess.run([*command, *requirements], capture_output=True, text=True, env=env,
                          timeout=600, cwd=folder)  # fmt: skip
    assert done.returncode == 0, f"no aarch64 wheel set for {requirements}:\n{done.stderr[-3000:]}"
    installs = json.loads(report.read_text())["install"]
    return {
        re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower(): (
            item["download_info"]["url"].rsplit("/", 1)[-1]
        )
        for item in installs
    }


def board_takes(wheel: str) -> bool:
    """A wheel file name a CPython 3.11 aarch64 board with glibc 2.36 installs."""
    match = WHEEL.match(wheel)
    assert match, wheel
    platforms = match["platform"].split(".")
    if "any" in platforms:
        return True
    for platform in platforms:
        tag = re.fullmatch(r"manylinux_2_(\d+)_aarch64", platform)
        if (tag and int(tag.group(1)) <= GLIBC_MINOR) or platform == "manylinux2014_aarch64":
            return True
    return False


def test_every_dependency_has_an_aarch64_wheel(tmp_path: Path) -> None:
    resolved = resolve_aarch64([str(REPO)], tmp_path)
    project = resolved.pop("lfm-satellite")
    assert not project.endswith(".whl")  # the checkout itself, built by pip
    for name in ("onnxruntime", "numpy", "pymicro-wakeword", "livekit", "webrtc-noise-gain",
                 "tokenizers", "soxr"):  # fmt: skip
        assert name in resolved, sorted(resolved)
    not_for_the_board = {n: f for n, f in resolved.items() if not board_takes(f)}
    assert not not_for_the_board, not_for_the_board


def test_a_dependency_without_an_aarch64_wheel_fails(tmp_path: Path) -> None:
    """PyAudio publishes wheels for Windows and macOS only: the resolution must say so."""
    with pytest.raises(AssertionError, match=r"(?i)pyaudio"):
        resolve_aarch64(["pyaudio"], tmp_path)


def test_the_tag_check() -> None:
    assert board_takes("numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl")
    assert board_takes("wyoming-1.10.2-py3-none-any.whl")
    assert not board_takes("x-1.0-cp311-cp311-manylinux_2_39_aarch64.whl")  # too new a glibc
    assert not board_takes("x-1.0-cp311-cp311-manylinux_2_17_x86_64.whl")
    assert not board_takes("x-1.0-cp311-cp311-musllinux_1_2_aarch64.whl")
