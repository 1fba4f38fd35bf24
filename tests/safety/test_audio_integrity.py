"""The per-frame audio integrity check (`satellite.safety.integrity` through `AudioCheck`):
clean speech passes, each fault is found by its own detector, and the three actions."""

from __future__ import annotations

import numpy as np
import pytest

from satellite.bench.query import synthetic_speech
from satellite.safety.audio import DESCRIPTIONS, AudioAction, AudioCheck
from satellite.safety.integrity import DETECTORS, Detector

RATE = 24_000
FRAME = 1920
FADE = 120
"""5 ms at 24 kHz (`FADE_SECONDS`)."""


def speech(seconds: float = 6.0, seed: int = 0) -> np.ndarray:
    """Speech-like audio at 24 kHz: a gliding voice with harmonics, syllables, breath noise."""
    return synthetic_speech(seconds, RATE, seed)


def frames(audio: np.ndarray, size: int = FRAME) -> list[np.ndarray]:
    return [audio[i : i + size] for i in range(0, audio.size, size)]


def run(check: AudioCheck, blocks: list[np.ndarray]) -> list[np.ndarray]:
    check.start_reply()
    return [check.inspect(block) for block in blocks]


def loud_frame(audio: np.ndarray, after: int = 30) -> int:
    """The first frame from `after` on that is speech (a syllable, not the gap between)."""
    levels = [float(np.sqrt(np.mean(f.astype(np.float64) ** 2))) for f in frames(audio)]
    return next(i for i in range(after, len(levels)) if levels[i] > 0.1 and levels[i + 1] > 0.1)


def failed(check: AudioCheck) -> set[Detector]:
    return {d for d, n in check.reply.failures.items() if n}


@pytest.mark.parametrize("sizes", [(FRAME,), (1440, FRAME, 2 * FRAME, 4 * FRAME, 480)])
def test_clean_speech_passes_unchanged(sizes: tuple[int, ...]) -> None:
    """Blocks of a frame, and of the sizes the detokenizer hands over (the first shorter by
    its trim, batches of 2 and 4 frames, the tail)."""
    audio = speech(20.0)
    blocks, at = [], 0
    while at < audio.size:
        size = sizes[len(blocks) % len(sizes)]
        blocks.append(audio[at : at + size])
        at += size
    check = AudioCheck(RATE)
    out = run(check, blocks)
    assert failed(check) == set() and check.reply_problems() == []
    assert np.array_equal(np.concatenate(out), audio) and not check.muted


def inject(kind: str, audio: np.ndarray) -> tuple[list[np.ndarray], int]:
    """`audio` as frames with the fault `kind` at a frame of speech; the fault's frame."""
    audio = audio.copy()
    at = loud_frame(audio)
    start = at * FRAME
    if kind == "click":
        audio[start] += 0.3
    elif kind == "dc_offset":
        offset = np.full(audio.size - start, 0.08, np.float32)
        offset[:FADE] *= np.linspace(0, 1, FADE, dtype=np.float32)
        audio[start:] += offset
    elif kind == "loudness_jump":
        audio[start : start + 6 * FRAME] *= 10.0
    elif kind == "dropout":
        audio[start + 500 : start + 500 + 960] = 0.0
    elif kind == "loop":
        audio[start : start + 4 * FRAME] = np.tile(audio[start : start + FRAME], 4)
        at += 1
    elif kind == "loop pattern":
        pattern = audio[start : start + 2 * FRAME].copy()
        audio[start : start + 6 * FRAME] = np.tile(pattern, 3)
        at += 2
    return frames(audio), at


@pytest.mark.parametrize(
    ("kind", "detector", "may_also"),
    [
        ("click", "click", set()),
        ("dc_offset", "dc_offset", set()),
        ("loudness_jump", "loudness_jump", {"click"}),  # the jump is a step at its join
        ("dropout", "dropout", set()),
        ("loop", "loop", {"click"}),  # where a repeat meets itself
        ("loop pattern", "loop", {"click"}),
    ],
)
def test_each_fault_is_found_by_its_detector(kind: str, detector: Detector,
                                             may_also: set[Detector]) -> None:  # fmt: skip
    blocks, at = inject(kind, speech())
    check = AudioCheck(RATE, action="report")
    check.start_reply()
    for index, block in enumerate(blocks):
        check.inspect(block)
        if index < at:
            assert failed(check) == set(), (index, failed(check))
    assert detector in failed(check)
    assert failed(check) - {detector} <= may_also, failed(check)
    assert check.reply.failures[detector] == 1, "a run of failing frames counts once"
    assert f"{DESCRIPTIONS[detector]}: 1" in check.reply_problems()


def test_a_frame_of_nans_is_zeroed_and_is_a_dropout() -> None:
    blocks = frames(speech())
    at = loud_frame(speech())
    blocks[at] = np.full(FRAME, np.nan, np.float32)
    check = AudioCheck(RATE, action="report")
    run(check, blocks)
    assert check.reply.invalid == FRAME and failed(check) == {"dropout"}


def test_blocks_at_the_wrong_rate_or_channel_count() -> None:
    audio = speech()
    at = loud_frame(audio)
    frame = frames(audio)[at]
    for block, rate, length in ((np.stack([frame, frame], axis=1), None, FRAME),
                                (frame[:1280].copy(), 16_000, FRAME)):  # fmt: skip
        check = AudioCheck(RATE, action="drop")
        check.start_reply()
        for before in frames(audio)[:at]:
            check.inspect(before)
        out = check.inspect(block, rate)
        assert failed(check) == {"format"} and out.shape == (length,)
        assert not np.any(out[FADE:]), "dropped: silence as long as the block"
        after = check.inspect(frames(audio)[at + 1])
        assert failed(check) == {"format"}, "the next block is no join (no click)"
        assert np.array_equal(after[FADE:], frames(audio)[at + 1][FADE:])
    check = AudioCheck(RATE, action="report")
    assert check.inspect(np.stack([frame, frame], axis=1)).shape == (FRAME, 2)
    assert failed(check) == {"format"}
    assert AudioCheck(RATE, action="report").inspect(frame, RATE).shape == (FRAME,)


def _with_click() -> tuple[list[np.ndarray], int]:
    return inject("click", speech())


@pytest.mark.parametrize("action", ["mute", "drop", "report"])
def test_the_actions(action: AudioAction) -> None:
    blocks, at = _with_click()
    check = AudioCheck(RATE, action=action)
    out = run(check, blocks)
    played = np.concatenate(out)
    assert check.reply.failures["click"] == 1
    assert all(np.array_equal(o, b) for o, b in zip(out[:at], blocks[:at], strict=True))
    last = float(blocks[at - 1][-1])
    if action == "report":
        assert np.array_equal(played, np.clip(np.concatenate(blocks), -1, 1))
        assert check.reply.silenced == 0 and not check.muted
        return
    # the cut fades from the last sample played to 0 in 5 ms: no click of its own
    fade = out[at][:FADE]
    assert abs(float(fade[0]) - last) <= abs(last) / FADE + 1e-6
    assert not np.any(out[at][FADE:]) and np.max(np.abs(np.diff(fade))) <= abs(last) / 50
    if action == "mute":
        assert check.muted and not np.any(played[(at + 1) * FRAME :])
        assert check.reply.silenced == played.size - at * FRAME
        assert "the rest of the reply muted" in check.reply_problems()[-1]
    else:
        assert not check.muted and check.reply.silenced == FRAME
        nxt = blocks[at + 1]
        assert np.allclose(out[at + 1][:FADE], nxt[:FADE] * np.linspace(0, 1, FADE))
        assert np.array_equal(out[at + 1][FADE:], nxt[FADE:]), "the next frame plays"
        assert all(np.array_equal(o, b) for o, b in zip(out[at + 2 :], blocks[at + 2 :],
                                                        strict=True))  # fmt: skip


def test_counts_per_reply_and_since_start() -> None:
    check = AudioCheck(RATE)
    blocks, _ = _with_click()
    run(check, blocks)
    run(check, blocks)
    assert check.reply.failures["click"] == 1 and check.total.failures["click"] == 2
    assert check.counts() == {d: 2 if d == "click" else 0 for d in DETECTORS}
    run(check, frames(speech(seed=1)))
    assert check.reply_problems() == [] and not check.muted, "a new reply starts unmuted"
    assert check.counts()["click"] == 2
    off = AudioCheck(RATE, enabled=False)
    assert np.array_equal(np.concatenate(run(off, blocks)), np.concatenate(blocks))
    assert off.counts()["click"] == 0
