"""Mimi (LFM2-Audio v1's detokenizer) on ONNX Runtime: audio code frames in, 24 kHz audio out.

`MimiDecoder` is a `satellite.engine.detokenize.FrameDecoder` backend (`push(codes) -> samples`,
`finish`, `reset`, `decode`, `state_elements`), so `StreamingDetokenizer` drives it like the
LFM2.5 ones; it also checks codes itself (0..2047, never clamped: code 2048 is end-of-audio,
which the caller drops), so it is safe to use on its own.

The Mimi decoder is causal throughout (causal convs, transposed convs whose overhang waits for
the next frame, causal attention over the last 250 positions at 25 Hz), so each code frame's
1920 samples (80 ms) are final as soon as the frame is decoded: `push` returns all of them and
`finish` has nothing left to give.

- Streaming runs the `mimi_decoder_cached` graph (`lfm_toolchain.mimi`): one call per push on the new
  frames only, the conv states and the keys/values of the last 249 positions fed back. The state
  is bounded (full size: 12,672 conv numbers and 8 x 2 x 249 x 512 cached keys and values,
  about 8.2 MB), and the work per frame is constant.
- One-shot decoding (`decode`) runs the same graph from a zero state, in chunks, or the
  stateless `mimi_decoder` graph when that is all the model has. A stateless graph cannot
  stream: re-running it over recent frames would need the transformer's whole reach (8 stacked
  windows of 249 positions: 996 frames, 80 s) for every new frame, so `push` refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from satellite.engine.detokenize import (
    BoundSession,
    CodeError,
    DetokenizerError,
    StreamingDetokenizer,
    bind,
    zero_state,
)
from satellite.modeldir.manifest import Manifest

FloatArray = npt.NDArray[np.float32]
CodeArray = npt.NDArray[np.int64]

ONESHOT_ROLE = "mimi_decoder"
CACHED_ROLE = "mimi_decoder_cached"
SAMPLE_RATE = 24_000
FRAME_SAMPLES = 1920
"""Samples per code frame (80 ms at 24 kHz) unless the graph's options say otherwise."""
CODEBOOK_SIZE = 2048
CHUNK_FRAMES = 64
"""Most frames per graph call: bounds the attention scores of a long one-shot decode."""
STATE_SLOTS = ("past_conv", "past_keys", "past_values")
_OUTPUTS = ["audio", "present_conv", "present_keys", "present_values"]
_BATCH_AXIS = {"past_conv": 0, "past_keys": 1, "past_values": 1}
_PAST_AXIS = {"past_conv": None, "past_keys": 3, "past_values": 3}
"""The axis of each state input that grows with the positions cached (length 0 to start)."""


def check_codes(
    codes: npt.ArrayLike, codebooks: int, codebook_size: int = CODEBOOK_SIZE
) -> CodeArray:
    """[codebooks] or [codebooks, n] integer codes -> [codebooks, n] int64; raises CodeError
    naming the first code outside 0..codebook_size-1 (Mimi has no end-of-audio code)."""
    array = np.asarray(codes)
    if array.dtype.kind not in "iu":
        raise CodeError(f"Mimi audio codes must be integers, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] != codebooks:
        raise CodeError(
            f"Mimi audio codes must have shape [{codebooks}] or [{codebooks}, frames], "
            f"got {list(np.shape(codes))}"
        )
    bad = (array < 0) | (array >= codebook_size)
    if bad.any():
        book, frame = (int(i[0]) for i in np.nonzero(bad))
        raise CodeError(
            f"Mimi audio code {int(array[book, frame])} in codebook {book} of frame {frame}: "
            f"codes must lie in 0..{codebook_size - 1} (drop end-of-audio frames, codebook 0 "
            f"== {codebook_size}, before decoding)"
        )
    return np.ascontiguousarray(array, dtype=np.int64)


class MimiDecoder:
    """A Mimi graph as a `FrameDecoder`: `mimi_decoder_cached` streams and decodes,
    `mimi_decoder` (stateless) only decodes. Batch 1; not thread-safe."""

    sample_rate = SAMPLE_RATE

    def __init__(self, graph: BoundSession, codebooks: int) -> None:
        self.graph = graph
        self.codebooks = codebooks
        self.cached = graph.role == CACHED_ROLE
        self.frame_samples: int = graph.int_option("frame_samples", FRAME_SAMPLES) or FRAME_SAMPLES
        self.codebook_size: int = graph.int_option("codebook_size", CODEBOOK_SIZE) or CODEBOOK_SIZE
        self.chunk_frames = CHUNK_FRAMES
        self._initial = self._zero_state() if self.cached else {}
        self._state = dict(self._initial)
        self.frames = 0
        """Frames decoded by `push` since the stream started."""

    def _zero_state(self) -> dict[str, npt.NDArray[Any]]:
        return zero_state(self.graph, _BATCH_AXIS, _PAST_AXIS, "the streaming Mimi decoder")

    def push(self, codes: npt.ArrayLike) -> FloatArray:
        """Decode the next frames of the stream ([codebooks] or [codebooks, n]); returns their
        samples, 1920 per frame, all final."""
        frames = check_codes(codes, self.codebooks, self.codebook_size)
        if not self.cached:
            raise DetokenizerError(
                f"{self.graph.where}: the stateless mimi_decoder graph cannot stream; build "
                "the model with `lfm-satellite model build` for a mimi_decoder_cached graph"
            )
        if not frames.shape[1]:
            return np.zeros(0, np.float32)
        audio, self._state = self._continue(frames, self._state)
        self.frames += frames.shape[1]
        return audio

    def finish(self) -> FloatArray:
        """Nothing is held back (every frame's samples came out with it); starts a new stream."""
        self.reset()
        return np.zeros(0, np.float32)

    def reset(self) -> None:
        self._state = dict(self._initial)
        self.frames = 0

    def decode(self, codes: npt.ArrayLike) -> FloatArray:
        """One-shot decoding of a whole stream; leaves the streaming state alone."""
        frames = check_codes(codes, self.codebooks, self.codebook_size)
        if not frames.shape[1]:
            return np.zeros(0, np.float32)
        if self.cached:
            audio, _ = self._continue(frames, dict(self._initial))
            return audio
        whole: FloatArray = self._run(frames, {}, ["audio"])[0]
        return whole

    def state_elements(self) -> int:
        """Numbers held between pushes: bounded (conv states plus at most context - 1
        positions of keys and values per layer)."""
        return sum(int(a.size) for a in self._state.values())

    def _continue(
        self, frames: CodeArray, state: dict[str, npt.NDArray[Any]]
    ) -> tuple[FloatArray, dict[str, npt.NDArray[Any]]]:
        parts = []
        for start in range(0, frames.shape[1], self.chunk_frames):
            new = frames[:, start : start + self.chunk_frames]
            audio, *present = self._run(new, state, _OUTPUTS)
            state = dict(zip(STATE_SLOTS, present, strict=True))
            parts.append(audio)
        return np.concatenate(parts), state

    def _run(
        self, frames: CodeArray, state: dict[str, npt.NDArray[Any]], outputs: list[str]
    ) -> list[Any]:
        """One graph call on [codebooks, n] frames; returns the audio [n * 1920] (float32)
        and the other outputs."""
        results = self.graph.run(outputs, {"audio_codes": frames[None, :, :], **state})
        audio = np.asarray(results[0])
        want = self.frame_samples * frames.shape[1]
        if audio.shape != (1, 1, want):
            raise DetokenizerError(
                f"{self.graph.where}: gave audio of shape {list(audio.shape)} for "
                f"{frames.shape[1]} frames; expected [1, 1, {want}]"
            )
        return [audio[0, 0].astype(np.float32, copy=False), *results[1:]]


def mimi_role(manifest: Manifest) -> str:
    """The Mimi graph a model of `manifest` streams with: `mimi_decoder_cached` when present,
    else `mimi_decoder` (decode only). Raises DetokenizerError when it has neither."""
    if manifest.family != "lfm2-audio":
        raise DetokenizerError(
            f"model {manifest.name}: family {manifest.family} has no Mimi decoder (LFM2-Audio "
            "v1 only)"
        )
    for role in (CACHED_ROLE, ONESHOT_ROLE):
        if role in manifest.graphs:
            return role
    raise DetokenizerError(f"model {manifest.name}: has no mimi_decoder graph")


def mimi_detokenizer(
    manifest: Manifest, open_graph: Callable[[str], tuple[Any, str]]
) -> StreamingDetokenizer:
    """A StreamingDetokenizer on the model's Mimi decoder; `open_graph(role)` returns that
    role's onnxruntime session and its file (for messages). End-of-audio frames (codebook 0
    == 2048) are dropped before Mimi sees them."""
    role = mimi_role(manifest)
    session, where = open_graph(role)
    entry = manifest.graphs[role]
    graph = bind(role, session, manifest.config, entry.options, where)
    decoder = MimiDecoder(graph, int(manifest.config["codebooks"]))
    return StreamingDetokenizer(
        decoder, end_of_audio=decoder.codebook_size, codebook_size=decoder.codebook_size
    )
