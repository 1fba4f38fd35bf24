"""A turn's audio frames through the real streaming detokenizers of the tiny model (cached and
windowed float32 graphs, onnxruntime) in batches: the same audio as frame by frame, batches that grow
1, 2, 4 and stop at the limit, and every event in its place; and the reply's rule that
switches batching on for slow replies and off for fast ones."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from lfm_toolchain.cache import cached_model

from satellite.engine.detokenize import StreamingDetokenizer
from satellite.engine.detokenizers import open_detokenizer
from satellite.engine.events import AudioFrame, TextToken, TurnEnd
from satellite.engine.framebatch import decoded
from satellite.reply import ReplyDone, next_batch

CODEBOOKS = 8
TOLERANCE = 1e-5
"""Of full scale, on the float32 graphs. (On the q4 graphs onnxruntime's 4-bit kernels round
differently for one row than for several: batched and frame-by-frame audio then differ by up
to 5e-3, as frame-by-frame and one-shot do.)"""


@pytest.fixture(scope="module", params=["cached", "windowed"])
def detok(request: pytest.FixtureRequest) -> StreamingDetokenizer:
    return open_detokenizer(cached_model("tiny", "fp32"), request.param)


class Recorder:
    """The detokenizer, with the number of frames of each call recorded."""

    def __init__(self, inner: StreamingDetokenizer) -> None:
        self.inner = inner
        self.calls: list[int] = []

    def push(self, codes: Any) -> Any:
        self.calls.append(int(np.asarray(codes).shape[1]))
        return self.inner.push(codes)

    def decodable(self, codes: Any) -> bool:
        return self.inner.decodable(codes)


def _frames(count: int, seed: int = 0) -> list[AudioFrame]:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2048, size=(count, CODEBOOKS))
    return [AudioFrame(tuple(int(c) for c in row), float(i)) for i, row in enumerate(codes)]


def _run(events: list[Any], detok: Any, most: int, limit: int | None = None) -> list[Any]:
    steps: Iterator[Any] = decoded(events, detok, most, limit)
    return list(steps)


def test_batches_give_the_audio_of_frame_by_frame(detok: StreamingDetokenizer) -> None:
    frames = _frames(23)
    detok.reset()
    one = _run(frames, detok, 1)
    alone = np.concatenate([audio for _, audio in one])
    detok.reset()
    recorder = Recorder(detok)
    steps = _run(frames, recorder, 4)
    detok.reset()
    assert recorder.calls == [1, 2, 4, 4, 4, 4, 4]  # and the last 4 of 23 on the turn's end
    assert [event for event, _ in steps] == frames
    batched = np.concatenate([audio for _, audio in steps])
    assert batched.size == alone.size
    assert float(np.max(np.abs(batched - alone))) <= TOLERANCE
    # a batch's audio comes with its first frame, the rest of the batch with none
    sizes = [audio.size for _, audio in steps]
    assert sizes[0] > 0 and sizes[1] == 3840 and sizes[2] == 0 and sizes[3] == 4 * 1920
    assert sizes[4:7] == [0, 0, 0]


def test_no_batch_goes_past_the_limit(detok: StreamingDetokenizer) -> None:
    recorder = Recorder(detok)
    detok.reset()
    steps = []
    for step in decoded(_frames(40), recorder, 4, limit=9):
        steps.append(step)
        if len(steps) == 9:
            break
    detok.reset()
    assert recorder.calls == [1, 2, 4, 2]  # 9 frames decoded, not 11
    assert sum(audio.size for _, audio in steps) > 0


def test_events_keep_their_places(detok: StreamingDetokenizer) -> None:
    frames = _frames(6)
    bad = AudioFrame((5, 2048, 1, 1, 1, 1, 1, 1), 10.0)  # 2048 outside codebook 0
    end_of_audio = AudioFrame((2048,) * CODEBOOKS, 11.0, end_of_audio=True)
    text = TextToken(42, "hi", 12.0)
    end = TurnEnd("end_of_turn", 1, 8, 20, 30, 13.0)
    events = [frames[0], frames[1], text, bad, frames[2], end_of_audio, frames[3], frames[4],
              frames[5], end]  # fmt: skip
    recorder = Recorder(detok)
    detok.reset()
    steps = _run(events, recorder, 4)
    detok.reset()
    order = [event for event, _ in steps]
    # the text token and the undecodable frame pass the pending frame 1; the end-of-audio
    # frame and the turn's end wait for what is pending before them
    assert order == [frames[0], text, bad, frames[1], frames[2], end_of_audio, frames[3],
                     frames[4], frames[5], end]  # fmt: skip
    audio = dict(zip(map(id, order), (a for _, a in steps), strict=True))
    assert audio[id(bad)] is None and audio[id(text)] is None and audio[id(end)] is None
    assert audio[id(end_of_audio)] is None
    assert recorder.calls == [1, 2, 3]


def test_most_must_be_positive(detok: StreamingDetokenizer) -> None:
    with pytest.raises(ValueError, match="most must be at least 1, not 0"):
        _run(_frames(2), detok, 0)


def _done(
    engine_seconds: float, first: float | None, audio: float, reason: str = "end_of_turn"
) -> ReplyDone:
    return ReplyDone(reason, "", 0, 0, audio, 0.0, 0.0, first, engine_seconds)  # type: ignore[arg-type]


def test_slow_replies_switch_batching_on_and_fast_ones_off() -> None:
    slow = _done(engine_seconds=0.5 + 1.2 * 3.92, first=0.5, audio=4.0)  # rtf 1.2 after 1st
    middling = _done(engine_seconds=0.5 + 0.9 * 3.92, first=0.5, audio=4.0)
    fast = _done(engine_seconds=0.5 + 0.5 * 3.92, first=0.5, audio=4.0)
    assert next_batch(1, slow, 4) == 4
    assert next_batch(4, middling, 4) == 4 and next_batch(1, middling, 4) == 1  # hysteresis
    assert next_batch(4, fast, 4) == 1
    # nothing to judge by: the batch stays
    assert next_batch(4, _done(9.0, 0.5, 0.5), 4) == 4  # too short
    assert next_batch(1, _done(9.0, None, 0.0), 4) == 1  # no audio
    assert next_batch(1, _done(9.0, 0.5, 4.0, "cancelled"), 4) == 1
