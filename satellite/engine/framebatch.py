"""A turn's audio frames through the streaming detokenizer, a batch at a time when that pays.

A call of the windowed detokenizer (the published models' `audio_detokenizer`) re-runs its
context window (17 past frames) whatever number of new frames it is given, so it costs about
the same for one new frame as for several. Measured on the full-size published q4 model, AMD
EPYC, 2 threads (2026-12-06): 48 ms a call for 1 new frame, 51 for 2, 58 for 4, 59 for 8;
that is 48, 25, 15 and 7 ms a frame, against a frame's 80 ms of audio.

Batching delays a frame's audio until the last frame of its batch is generated, so it is for
replies generated more slowly than real time, whose playback is held at the start anyway
(`satellite.audio.pacing`, told the batch's length): there it shortens the hold. A reply that
keeps up decodes each frame alone. The first frame of a reply is always decoded alone, for
the earliest first audio, and batches then grow (1, 2, 4, ...) up to `most`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from satellite.engine.detokenize import StreamingDetokenizer
from satellite.engine.events import AudioFrame, TextToken

FloatArray = np.ndarray[Any, np.dtype[np.float32]]

Step = tuple[Any, "FloatArray | None"]
"""A generation event and, for an audio frame, the detokenizer's samples (None: the frame
cannot be decoded and is skipped; an empty array: its samples came with an earlier frame)."""

BATCH_FRAMES = 4
"""Most frames per detokenizer call for a reply slower than real time (4 frames: 320 ms of
audio; a larger batch saves little more and holds the start longer)."""


def decoded(
    events: Iterable[Any],
    detokenizer: StreamingDetokenizer,
    most: int = 1,
    limit: int | None = None,
) -> Iterator[Step]:
    """`events` of a turn, each audio frame with samples and every other event with None, in
    order. Frames go to the detokenizer in batches growing from 1 to `most`, never past the
    `limit`-th frame (the caller stops there); a batch's samples come with its first frame,
    its other frames with none (an empty array), so that the audio is handed on as the chunk
    it is. An end-of-audio frame, any event other than a text token and the end of the turn
    decode what is pending first; a frame the detokenizer cannot decode (`push_generated`
    would refuse it) comes out at once with None and is not counted."""
    if most < 1:
        raise ValueError(f"most must be at least 1, not {most}")
    pending: list[AudioFrame] = []
    size = 1
    taken = 0
    for event in events:
        if isinstance(event, AudioFrame) and not event.end_of_audio:
            if not detokenizer.decodable(event.codes):
                yield event, None
                continue
            pending.append(event)
            taken += 1
            if len(pending) >= size or taken == limit:
                yield from _flush(pending, detokenizer)
                size = min(size * 2, most)
                if limit is not None:
                    size = max(1, min(size, limit - taken))
            continue
        if pending and not isinstance(event, TextToken):  # a text token need not wait
            yield from _flush(pending, detokenizer)
        yield event, None
    if pending:
        yield from _flush(pending, detokenizer)


def _flush(pending: list[AudioFrame], detokenizer: StreamingDetokenizer) -> Iterator[Step]:
    codes = np.asarray([frame.codes for frame in pending], np.int64).T
    samples = detokenizer.push(codes)
    frames = list(pending)
    pending.clear()
    yield frames[0], samples
    for frame in frames[1:]:
        yield frame, samples[:0]
