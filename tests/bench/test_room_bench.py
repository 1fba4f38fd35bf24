"""`bench room`: the scripted rooms through the daemon's capture chain. The health report's
meters (`EchoMeter`, the endpointer's noise and voice levels) read each room as it was made
(its echo path's level, its fan's level, the user's voice), and the command saves the figures
and a picture that holds what it says it does."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from satellite.bench.echo import ROOMS
from satellite.bench.room import bench_room
from satellite.errors import UserError
from satellite.settings import AudioSettings

QUIET = dataclasses.replace(AudioSettings(), noise_suppression=0)
"""Without noise suppression the models hear the room's noise as it is."""


def test_the_meters_read_each_room_as_it_was_made() -> None:
    """Measured 2026-12-07 on the nine rooms (suppression off): ERL within 1.7 dB of the
    echo path's level, the noise 1.4-3.7 dB under the fan's RMS (the median frame of a noise
    is under its mean power; AEC3 takes a little of it off while the reply plays), the
    question's voice 0.1-3.7 dB under the user's. A room the microphone cannot hear the
    speaker in has no echo to read (None), whatever the user says over the reply: there
    AEC3 once took 17 dB off the user's words, which the linear canceller's test keeps out."""
    rooms = ((60, -12.0), (120, -20.0), (60, -120.0))
    report = bench_room(QUIET, rooms)
    for r in report["rooms"]:
        measured, made = r["measured"], r["truth"]
        if r["level_db"] > -100:
            erl = measured["echo_return_loss_db"]
            assert erl is not None and abs(erl - made["echo_return_loss_db"]) <= 2.5, r
            assert measured["echo_return_loss_enhancement_db"] >= 8.0, r
        else:
            assert measured["echo_return_loss_db"] is None, r
            assert measured["echo_return_loss_enhancement_db"] is None, r
        assert -5.0 <= measured["noise_dbfs"] - made["noise_dbfs"] <= 0.0, r
        assert -5.0 <= measured["speech_dbfs"] - made["speech_dbfs"] <= 1.0, r
        marks = r["marks_s"]
        assert marks["wake"] is not None and marks["utterance_ended"] is not None, r
        assert r["user_from_s"] < marks["wake"] < marks["utterance_ended"], r
        assert r["false_marks_s"] == [], r


def test_bench_room_saves_the_figures_and_draws_every_room(tmp_path: Path) -> None:
    figures, drawing = tmp_path / "room.json", tmp_path / "room.png"
    cmd = [sys.executable, "-m", "satellite", "bench", "room", "--barge-in-by-voice",
           "--false-minutes", "0.1", "--json", str(figures), "--png", str(drawing)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(figures.read_text())
    assert report["barge_in"] == "voice" and report["noise_suppression"] == 2
    assert len(report["rooms"]) == len(ROOMS)
    assert f"saved {drawing}" in done.stdout and "ERL dB (made)" in done.stdout
    # barge-in by voice fires on the user in every room, never before they speak
    assert all(r["marks_s"]["voice_barge_in"] is not None for r in report["rooms"])
    assert all(r["false_marks_s"] == [] for r in report["rooms"])
    # 6 s of the satellite talking alone in each room (the long run is the benchmark's):
    # nothing taken for the wake word, "stop" or the user
    false = report["false_triggers"]
    assert false["seconds"] == 54.0 and len(false["rooms"]) == len(ROOMS)
    assert false["total"] == {"wake": 0, "stop": 0, "voice_barge_in": 0}, false
    assert "the satellite talking alone, 6 s in each room (54 s)" in done.stdout
    pixels = image.imread(str(drawing))[:, :, :3]
    height = pixels.shape[0]
    assert pixels.shape[1] == 14 * 80 and height == round(2.2 * len(ROOMS) * 80), pixels.shape
    # each room's row holds the models' audio (matplotlib's blue) and the barge-in's mark
    # (its red)
    blue, red = _colour(pixels, (0x1F, 0x77, 0xB4)), _colour(pixels, (0xD6, 0x27, 0x28))
    rows = np.array_split(np.arange(height), len(ROOMS))
    for index, row in enumerate(rows):
        assert blue[row].sum() > 200 and red[row].sum() > 50, index


def test_bench_room_refuses_bad_options() -> None:
    for option, value in (("--noise-suppression", "5"), ("--auto-gain", "-1"),
                          ("--false-minutes", "-1")):  # fmt: skip
        cmd = [sys.executable, "-m", "satellite", "bench", "room", option, value]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode != 0 and option in done.stderr, done.stderr


def test_a_picture_without_matplotlib_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(UserError) as raised:
        bench_room(QUIET, ROOMS[:1], png=tmp_path / "room.png")
    assert "lfm-satellite[plots]" in str(raised.value)
    assert not (tmp_path / "room.png").exists()


def _colour(pixels: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    """Where `pixels` (floats 0-1) are within 6/255 of `rgb`."""
    target = np.array(rgb, np.float32) / 255
    return np.all(np.abs(pixels - target) < 6 / 255, axis=2)
