"""Streaming detokenizer: audio code frames in, 24 kHz audio out as soon as each frame allows.

`StreamingDetokenizer.push` takes code frames ([codebooks] or [codebooks, n]) and returns the
samples that are final now; `finish` returns the rest, `decode` is the one-shot path. It checks
the codes (0..2047; never clamped), drops end-of-audio frames (codebook 0 == 2048) and hands
the rest to a `FrameDecoder` backend:

- `CachedDecoder` (LFM2.5, chosen when the model has an `audio_detokenizer_cached` graph): one
  call per push on the new frames only, with the trunk's state fed back (conv states, keys and
  values of the last `sliding_window - 1` positions): constant work and memory per frame.
- `WindowedDecoder` (LFM2.5, any `audio_detokenizer` graph, the official export's included):
  the stateless graph re-run over the new frames plus the `context_frames` frames before them
  (the trunk's receptive field: 17 at full size), keeping the new frames' STFT frames. Exact,
  at up to `context_frames + 1` times the work of one frame (full size, fp32, one thread on
  this project's 2-vCPU EPYC: 79 ms per frame against the cached graph's 10 ms).
- A Mimi backend (LFM2-Audio v1) plugs in as another `FrameDecoder`.

Both LFM2.5 backends are exact: the trunk is causal with a bounded reach, so a frame's STFT
frames depend only on its bounded past. In a re-run window, RoPE positions restart at 0; the
reference's output depends on relative positions only (shifting every position by 100, 1000 or
6000 changes its STFT features by 3e-6, 1.2e-5 and 6e-5, float32 rounding of larger angles),
so bounded positions are, if anything, closer to exact arithmetic than one long pass.

The LFM2.5 backends turn STFT frames into audio with `StreamingIstft`: 6 STFT frames per code
frame, so the first frame yields 1440 samples (the ISTFT's "same" padding trims 480), every
later one 1920 (80 ms), and `finish` the last 480.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from satellite.engine.istft import HOP, StreamingIstft
from satellite.errors import UserError
from satellite.modeldir.contract import Binding, match_role, session_specs
from satellite.modeldir.manifest import Manifest

FloatArray = npt.NDArray[np.float32]
CodeArray = npt.NDArray[np.int64]

SAMPLE_RATE = 24_000
UPSAMPLE = 6
"""STFT frames (75 Hz) per code frame (12.5 Hz)."""
SAMPLES_PER_FRAME = UPSAMPLE * HOP
"""1920 samples: 80 ms at 24 kHz."""
DEFAULT_CONTEXT_FRAMES = 17
"""Receptive field of the LFM2.5-Audio detokenizer in code frames (5 convs reaching 2
positions back, 3 sliding-window attentions reaching 29: 97 positions, 16.2 frames), used
when the graph's manifest options give no `context_frames`."""
DEFAULT_CHUNK_FRAMES = 256
"""Most new frames per call of the stateless graph (its attention is windowed in the kernel)."""
CACHED_CHUNK_FRAMES = 64
"""Most new frames per call of the cached graph, whose attention scores are a full [new,
past + new] matrix per head: 64 frames = 384 positions, about 10 MB of scores at full size."""

Choice = Literal["auto", "cached", "windowed"]


class DetokenizerError(UserError):
    """The model directory's detokenizer cannot be used; the message names the file."""


class CodeError(ValueError):
    """Audio codes the detokenizer cannot decode (out of range, wrong shape or type)."""


class FrameDecoder(Protocol):
    """A detokenizer backend: checked code frames [codebooks, n] (n >= 1, no end-of-audio
    frame) in, audio out. LFM2.5's two backends below; LFM2-Audio v1's Mimi fits the same."""

    sample_rate: int
    codebooks: int

    def push(self, codes: CodeArray) -> FloatArray:
        """Decode the next frames of the stream; return the samples final now."""
        ...

    def finish(self) -> FloatArray:
        """The samples still held back at the end of the stream; then start a new stream."""
        ...

    def reset(self) -> None:
        """Drop the stream's state (the next push starts a new stream)."""
        ...

    def decode(self, codes: CodeArray) -> FloatArray:
        """One-shot decoding of a whole stream; leaves the streaming state alone."""
        ...

    def state_elements(self) -> int:
        """Numbers held between pushes (bounded: it stops growing after a few frames)."""
        ...


@dataclass(frozen=True)
class BoundSession:
    """An onnxruntime session and how its names map to its role's contract slots."""

    role: str
    session: Any
    """`onnxruntime.InferenceSession` (or anything with `run`, `get_inputs`, `get_outputs`)."""
    binding: Binding
    options: Mapping[str, Any]
    """The manifest's options for the graph (`max_frames`, `context_frames`)."""
    where: str = ""
    """The graph file, for messages."""

    def run(self, outputs: Sequence[str], feeds: Mapping[str, Any]) -> list[Any]:
        """Run with inputs and outputs named by contract slot."""
        names = [self.binding.output_name(key) for key in outputs]
        inputs = {self.binding.input_name(key): value for key, value in feeds.items()}
        return list(self.session.run(names, inputs))

    def int_option(self, key: str, default: int | None) -> int | None:
        value = self.options.get(key, default)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise DetokenizerError(
                f"{self.where}: options.{key}: {value!r} must be a positive whole number"
            )
        return value


def bind(
    role: str,
    session: Any,
    config: Mapping[str, Any],
    options: Mapping[str, Any] | None = None,
    where: str = "",
) -> BoundSession:
    """Check `session` against `role`'s contract and map its names; raises DetokenizerError
    naming `where` and every problem."""
    match = match_role(role, *session_specs(session), config, options)
    if match.problems:
        raise DetokenizerError(
            f"{where or role}: does not fit the {role} contract: " + "; ".join(match.problems)
        )
    return BoundSession(role, session, match.binding, dict(options or {}), where or role)


class _StftDecoder(ABC):
    """LFM2.5: codes -> STFT frames (a graph) -> `StreamingIstft`."""

    sample_rate = SAMPLE_RATE

    def __init__(self, graph: BoundSession, codebooks: int) -> None:
        self.graph = graph
        self.codebooks = codebooks
        self._istft = StreamingIstft()

    def push(self, codes: CodeArray) -> FloatArray:
        return self._istft.push(self._features(codes))

    def finish(self) -> FloatArray:
        tail = self._istft.finish()
        self.reset()
        return tail

    def reset(self) -> None:
        self._istft = StreamingIstft()
        self._reset_state()

    def decode(self, codes: CodeArray) -> FloatArray:
        stream = StreamingIstft()
        head = stream.push(self._oneshot_features(codes))
        return np.concatenate([head, stream.finish()])

    def state_elements(self) -> int:
        """The model's state (the ISTFT's overlap, n_fft - hop samples, comes on top)."""
        return self._state_elements()

    def _run(self, codes: CodeArray, feeds: Mapping[str, Any], outputs: Sequence[str]) -> list[Any]:
        """One graph call on [codebooks, n] codes (batch 1); checks the feature count."""
        results = self.graph.run(outputs, {"audio_codes": codes[None, :, :], **feeds})
        features = results[0]
        want = UPSAMPLE * codes.shape[1]
        if features.ndim != 3 or features.shape[1] != want:
            raise DetokenizerError(
                f"{self.graph.where}: gave STFT features of shape {features.shape} for "
                f"{codes.shape[1]} frames; expected [1, {want}, bins]"
            )
        return results

    @abstractmethod
    def _features(self, codes: CodeArray) -> npt.NDArray[Any]:
        """The next frames' STFT features [6n, bins], continuing the stream."""

    @abstractmethod
    def _oneshot_features(self, codes: CodeArray) -> npt.NDArray[Any]:
        """A whole stream's STFT features, without touching the streaming state."""

    @abstractmethod
    def _reset_state(self) -> None: ...

    @abstractmethod
    def _state_elements(self) -> int: ...


class WindowedDecoder(_StftDecoder):
    """The stateless `audio_detokenizer` graph re-run over a bounded window: the new frames and
    the `context_frames` before them; the new frames' STFT frames are kept."""

    def __init__(
        self, graph: BoundSession, codebooks: int, context_frames: int | None = None
    ) -> None:
        super().__init__(graph, codebooks)
        if context_frames is not None and context_frames < 1:
            raise ValueError(f"context_frames must be at least 1, not {context_frames}")
        context = context_frames or graph.int_option("context_frames", None)
        self.context_frames: int = context or DEFAULT_CONTEXT_FRAMES
        """Past frames run with the new ones: the trunk's reach (`lfm_toolchain.detokenizer.
        context_frames`), or more."""
        self.max_frames = graph.int_option("max_frames", None)
        """Longest input the graph takes (its RoPE tables), where the manifest says."""
        if self.max_frames is not None and self.max_frames <= self.context_frames:
            raise DetokenizerError(
                f"{graph.where}: options.max_frames {self.max_frames} leaves no room for new "
                f"frames after {self.context_frames} context frames"
            )
        self._history = np.zeros((codebooks, 0), np.int64)

    @property
    def chunk_frames(self) -> int:
        """Most new frames per graph call."""
        if self.max_frames is None:
            return DEFAULT_CHUNK_FRAMES
        return min(DEFAULT_CHUNK_FRAMES, self.max_frames - self.context_frames)

    def _features(self, codes: CodeArray) -> npt.NDArray[Any]:
        return self._continue(codes, self._history, keep=True)

    def _continue(self, codes: CodeArray, history: CodeArray, *, keep: bool) -> npt.NDArray[Any]:
        parts = []
        for start in range(0, codes.shape[1], self.chunk_frames):
            new = codes[:, start : start + self.chunk_frames]
            window = np.concatenate([history, new], axis=1)
            (features,) = self._run(window, {}, ["stft_features"])
            parts.append(features[0, -UPSAMPLE * new.shape[1] :])
            history = window[:, -self.context_frames :]
        if keep:
            self._history = history
        return np.concatenate(parts)

    def _oneshot_features(self, codes: CodeArray) -> npt.NDArray[Any]:
        if self.max_frames is None or codes.shape[1] <= self.max_frames:
            (features,) = self._run(codes, {}, ["stft_features"])
            return np.asarray(features[0])
        # Longer than the graph takes in one call: the same result through windows.
        return self._continue(codes, np.zeros((self.codebooks, 0), np.int64), keep=False)

    @property
    def history_frames(self) -> int:
        """Past frames held for the next window (at most `context_frames`)."""
        return int(self._history.shape[1])

    def _reset_state(self) -> None:
        self._history = np.zeros((self.codebooks, 0), np.int64)

    def _state_elements(self) -> int:
        return int(self._history.size)


CACHE_SLOTS = ("past_conv", "past_keys", "past_values")
_PAST_AXIS = {"past_conv": None, "past_keys": 3, "past_values": 3}


def zero_state(
    graph: BoundSession,
    batch_axis: Mapping[str, int],
    past_axis: Mapping[str, int | None],
    what: str,
) -> dict[str, npt.NDArray[Any]]:
    """Zero conv states and empty key/value caches for a streaming graph, shaped from its
    inputs: batch 1 on `batch_axis[slot]`, length 0 on `past_axis[slot]`, every other axis as
    the graph fixes it (a symbolic one there is an error naming the graph and input)."""
    declared = {i.name: i for i in graph.session.get_inputs()}
    state: dict[str, npt.NDArray[Any]] = {}
    for slot in batch_axis:
        spec = declared[graph.binding.input_name(slot)]
        shape = []
        for axis, dim in enumerate(spec.shape):
            if axis == batch_axis[slot]:
                shape.append(1)
            elif axis == past_axis[slot]:
                shape.append(0)
            elif isinstance(dim, int):
                shape.append(dim)
            else:
                raise DetokenizerError(
                    f"{graph.where}: input {spec.name} axis {axis} is {dim!r}; {what}'s state "
                    "sizes must be fixed in the graph"
                )
        dtype = np.float16 if spec.type == "tensor(float16)" else np.float32
        state[slot] = np.zeros(shape, dtype)
    return state


"""The axis of each state input that grows with the positions cached (starts at length 0)."""


class CachedDecoder(_StftDecoder):
    """The `audio_detokenizer_cached` graph: the new frames only, with the state it returned
    last time fed back."""

    def __init__(self, graph: BoundSession, codebooks: int) -> None:
        super().__init__(graph, codebooks)
        limit = graph.int_option("max_frames", None) or CACHED_CHUNK_FRAMES
        self.chunk_frames = min(limit, CACHED_CHUNK_FRAMES)
        """Most new frames per graph call (its RoPE tables cover the window plus `max_frames`)."""
        self._initial = self._zero_state()
        self._state = dict(self._initial)
        self._outputs = ["stft_features", "present_conv", "present_keys", "present_values"]

    def _zero_state(self) -> dict[str, npt.NDArray[Any]]:
        return zero_state(
            self.graph, dict.fromkeys(CACHE_SLOTS, 1), _PAST_AXIS, "the cached detokenizer"
        )

    def _features(self, codes: CodeArray) -> npt.NDArray[Any]:
        features, self._state = self._continue(codes, self._state)
        return features

    def _continue(
        self, codes: CodeArray, state: dict[str, npt.NDArray[Any]]
    ) -> tuple[npt.NDArray[Any], dict[str, npt.NDArray[Any]]]:
        parts = []
        for start in range(0, codes.shape[1], self.chunk_frames):
            new = codes[:, start : start + self.chunk_frames]
            features, *present = self._run(new, state, self._outputs)
            state = dict(zip(CACHE_SLOTS, present, strict=True))
            parts.append(features[0])
        return np.concatenate(parts), state

    def _oneshot_features(self, codes: CodeArray) -> npt.NDArray[Any]:
        features, _ = self._continue(codes, dict(self._initial))
        return features

    @property
    def cached_positions(self) -> int:
        """75 Hz positions whose keys and values are held (at most sliding_window - 1)."""
        return int(self._state["past_keys"].shape[3])

    def _reset_state(self) -> None:
        self._state = dict(self._initial)

    def _state_elements(self) -> int:
        return sum(int(a.size) for a in self._state.values())


class StreamingDetokenizer:
    """Code frames in, audio out, frame by frame (see the module docstring).

    Not thread-safe: one stream per instance."""

    def __init__(
        self, decoder: FrameDecoder, *, end_of_audio: int = 2048, codebook_size: int = 2048
    ) -> None:
        self.decoder = decoder
        self.codebooks = decoder.codebooks
        self.sample_rate = decoder.sample_rate
        self.end_of_audio = end_of_audio
        """The code that, in codebook 0, marks the end-of-audio frame."""
        self.codebook_size = codebook_size
        """Codes per codebook the detokenizer knows: valid codes are 0..codebook_size-1."""
        self.frames = 0
        """Frames pushed and decoded, over the instance's life."""
        self.dropped = 0
        """End-of-audio frames pushed and dropped, over the instance's life."""

    def push(self, codes: npt.ArrayLike) -> FloatArray:
        """Decode one frame ([codebooks]) or several ([codebooks, n]); returns the float32
        samples (24 kHz) that are final now, possibly none."""
        frames = self._check(codes)
        if not frames.shape[1]:
            return np.zeros(0, np.float32)
        self.frames += frames.shape[1]
        return self.decoder.push(frames)

    def push_generated(self, codes: Sequence[int]) -> FloatArray | None:
        """One frame as the model generated it: its samples, or None for a frame holding a
        code this detokenizer cannot decode (2048 outside codebook 0: random models make
        them, trained ones do not), which the caller skips and counts, never clamps."""
        if not self.decodable(codes):
            return None
        return self.push(np.asarray(codes, dtype=np.int64))

    def decodable(self, codes: Sequence[int]) -> bool:
        """Whether `push_generated` takes this frame (every code within the codebook)."""
        return all(0 <= c < self.codebook_size for c in codes)

    def finish(self) -> FloatArray:
        """The last samples of the stream; the next `push` starts a new stream."""
        return self.decoder.finish()

    def reset(self) -> None:
        """Abandon the current stream (e.g. on barge-in); nothing more comes out of it."""
        self.decoder.reset()

    def decode(self, codes: npt.ArrayLike) -> FloatArray:
        """One-shot: all frames [codebooks, T] -> their audio (T * 1920 samples at 24 kHz for
        LFM2.5). End-of-audio frames are dropped; the streaming state is left alone."""
        frames = self._check(codes, count=False)
        if not frames.shape[1]:
            return np.zeros(0, np.float32)
        return self.decoder.decode(frames)

    def state_elements(self) -> int:
        """Numbers the backend holds between pushes (bounded however long the stream)."""
        return self.decoder.state_elements()

    def _check(self, codes: npt.ArrayLike, *, count: bool = True) -> CodeArray:
        """[codebooks] or [codebooks, n] integer codes -> [codebooks, m] int64 without the
        end-of-audio frames; raises CodeError for anything else."""
        array = np.asarray(codes)
        if array.dtype.kind not in "iu":
            raise CodeError(f"audio codes must be integers, got dtype {array.dtype}")
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim != 2 or array.shape[0] != self.codebooks:
            raise CodeError(
                f"audio codes must have shape [{self.codebooks}] or [{self.codebooks}, frames], "
                f"got {list(np.shape(codes))}"
            )
        array = array.astype(np.int64)
        end = array[0] == self.end_of_audio
        if end.any():
            if count:
                self.dropped += int(end.sum())
            array = array[:, ~end]
        bad = (array < 0) | (array >= self.codebook_size)
        if bad.any():
            book, frame = (int(i[0]) for i in np.nonzero(bad))
            raise CodeError(
                f"audio code {int(array[book, frame])} in codebook {book} of frame {frame} "
                f"(after dropping end-of-audio frames): codes must lie in "
                f"0..{self.codebook_size - 1} ({self.end_of_audio} means end of audio only in "
                "codebook 0)"
            )
        return np.ascontiguousarray(array)


class GraphSource(Protocol):
    """What `from_model` needs of a loaded model: its manifest and a way to open a role's
    session (e.g. `satellite.engine.model.Model`)."""

    @property
    def directory(self) -> Path: ...

    @property
    def manifest(self) -> Manifest: ...

    def graph(self, role: str) -> Any:
        """An object with `session` (onnxruntime) for `role`."""
        ...


def choose_role(manifest: Manifest, choice: Choice = "auto") -> str:
    """The graph role a detokenizer of `manifest` runs: `audio_detokenizer_cached` when present
    (or asked for), else `audio_detokenizer`. Raises DetokenizerError when the choice is not
    possible."""
    if manifest.family != "lfm2.5-audio":
        raise DetokenizerError(
            f"model {manifest.name}: family {manifest.family} decodes audio with the Mimi "
            "decoder, not an LFM2 detokenizer graph (detokenizer_for picks it)"
        )
    cached = "audio_detokenizer_cached" in manifest.graphs
    if choice == "cached" and not cached:
        raise DetokenizerError(
            f"model {manifest.name}: has no audio_detokenizer_cached graph (official exports "
            "do not; `lfm-satellite model build` writes one); use auto or windowed"
        )
    if choice not in ("auto", "cached", "windowed"):
        raise DetokenizerError(f"detokenizer {choice!r}: choose auto, cached or windowed")
    if cached and choice != "windowed":
        return "audio_detokenizer_cached"
    if "audio_detokenizer" not in manifest.graphs:
        raise DetokenizerError(f"model {manifest.name}: has no audio_detokenizer graph")
    return "audio_detokenizer"
