"""The streaming detokenizer (`satellite.engine.detokenize`) on the tiny model built by
`lfm_toolchain.build.build_model`, both backends: `cached` (the project's `audio_detokenizer_cached`
graph, state fed back) and `windowed` (the stateless `audio_detokenizer` graph re-run over the
new frame and the 6 frames before it, the tiny trunk's reach).

Bounds reached (measured on this machine): streamed (frame by frame or in chunks) vs one-shot
about 5e-7 of full scale, one-shot vs liquid-audio's `LFM2AudioDetokenizer` waveform about 1e-6;
asserted <= 1e-3 (TOLERANCE). 60 and 100 frames (360 and 600 positions) run well past the
30-position attention window.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from lfm_toolchain.build import build_model
from lfm_toolchain.cache import cached_model
from lfm_toolchain.config import tiny
from lfm_toolchain.detokenizer import context_frames
from lfm_toolchain.weights import random_detokenizer_weights
from reference import TINY_SEED, liquid_audio, load_weights

from satellite.engine.detokenize import (
    CachedDecoder,
    CodeError,
    DetokenizerError,
    StreamingDetokenizer,
    WindowedDecoder,
    bind,
    choose_role,
)
from satellite.engine.detokenizers import from_model, open_detokenizer
from satellite.engine.sessions import plain_session_options
from satellite.modeldir.manifest import read_manifest

pytestmark = pytest.mark.parity

TOLERANCE = 1e-3
"""Of full scale (samples are floats in [-1, 1])."""
FRAMES = 60
CHOICES = ("cached", "windowed")


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return cached_model("tiny", seed=TINY_SEED)


@pytest.fixture(scope="module")
def detokenizers(model_dir: Path) -> dict[str, StreamingDetokenizer]:
    return {choice: open_detokenizer(model_dir, choice) for choice in CHOICES}


@pytest.fixture
def detok(
    request: pytest.FixtureRequest, detokenizers: dict[str, StreamingDetokenizer]
) -> StreamingDetokenizer:
    d = detokenizers[request.param]
    d.reset()
    return d


both = pytest.mark.parametrize("detok", CHOICES, indirect=True)


@pytest.fixture(scope="module")
def reference() -> Any:
    from transformers import Lfm2Config

    la = liquid_audio()
    torch.manual_seed(0)
    det = la.detokenizer.LFM2AudioDetokenizer(
        Lfm2Config(**tiny().detokenizer.backbone.reference_kwargs())
    )
    load_weights(det, dict(random_detokenizer_weights(tiny(), TINY_SEED)))
    det.lfm.set_attn_implementation("sdpa")  # eager ignores the boolean window mask
    return det.float().eval()


def codes_for(seed: int, frames: int = FRAMES) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2048, size=(8, frames))


def reference_audio(det: Any, codes: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.asarray(det(torch.from_numpy(codes[None]))[0].numpy())


def error(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, f"shapes {a.shape} and {b.shape}"
    return float(np.max(np.abs(a - b)))


@both
def test_oneshot_matches_reference(detok: StreamingDetokenizer, reference: Any) -> None:
    codes = codes_for(1)
    want = reference_audio(reference, codes)
    got = detok.decode(codes)
    assert got.dtype == np.float32 and got.shape == (1920 * FRAMES,)
    assert np.max(np.abs(want)) > 0.05, "the reference's audio is near silence: a weak test"
    err = error(got, want)
    assert err <= TOLERANCE, f"one-shot vs liquid-audio: max abs error {err:.3g} > {TOLERANCE}"


@both
def test_frame_by_frame_matches_oneshot(detok: StreamingDetokenizer, reference: Any) -> None:
    """Each frame's audio comes out at once: 1440 samples for the first (the ISTFT's "same"
    padding trims 480), 1920 (80 ms) for every later one, 480 at the end."""
    codes = codes_for(2)
    pieces = [detok.push(codes[:, f]) for f in range(FRAMES)]
    tail = detok.finish()
    assert [p.size for p in pieces] == [1440] + [1920] * (FRAMES - 1)
    assert tail.size == 480
    streamed = np.concatenate([*pieces, tail])
    err = error(streamed, detok.decode(codes))
    assert err <= TOLERANCE, f"streamed vs one-shot: max abs error {err:.3g} > {TOLERANCE}"
    err = error(streamed, reference_audio(reference, codes))
    assert err <= TOLERANCE, f"streamed vs liquid-audio: max abs error {err:.3g} > {TOLERANCE}"


@both
def test_irregular_chunks_match_oneshot(detok: StreamingDetokenizer) -> None:
    codes = codes_for(3)
    sizes = [1, 3, 7, 2, 13, 1, 20, 13]
    assert sum(sizes) == FRAMES
    bounds = np.cumsum([0, *sizes])
    pieces = [detok.push(codes[:, a:b]) for a, b in itertools.pairwise(bounds)]
    assert [p.size for p in pieces] == [1920 * n - (480 if i == 0 else 0) for i, n in
                                        enumerate(sizes)]  # fmt: skip
    streamed = np.concatenate([*pieces, detok.finish()])
    err = error(streamed, detok.decode(codes))
    assert err <= TOLERANCE, f"chunked vs one-shot: max abs error {err:.3g} > {TOLERANCE}"


@both
def test_state_stays_bounded(detok: StreamingDetokenizer) -> None:
    """After the window fills, 100 frames hold no more state than 20."""
    codes = codes_for(4, 100)
    sizes = []
    for f in range(100):
        detok.push(codes[:, f])
        sizes.append(detok.state_elements())
    assert sizes[19] == sizes[49] == sizes[99] > 0, f"state grew: {sizes[19]}, {sizes[99]}"
    decoder = detok.decoder
    if isinstance(decoder, CachedDecoder):
        cached = decoder.cached_positions
        assert cached == 29, f"{cached} positions cached; the 30-position window needs 29"
    else:
        assert isinstance(decoder, WindowedDecoder)
        assert decoder.history_frames == 6, f"{decoder.history_frames} frames of history, not 6"


def test_windowed_graph_input_stays_bounded(model_dir: Path) -> None:
    """The stateless graph sees at most the new frame and 6 before it, however long the
    stream; the result still matches one-shot decoding."""
    seen: list[int] = []

    class Recording:
        def __init__(self, session: Any) -> None:
            self.session = session

        def get_inputs(self) -> Any:
            return self.session.get_inputs()

        def get_outputs(self) -> Any:
            return self.session.get_outputs()

        def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
            seen.append(feeds["audio_codes"].shape[2])
            return self.session.run(outputs, feeds)

    detok = open_detokenizer(model_dir, "windowed")
    decoder = detok.decoder
    assert isinstance(decoder, WindowedDecoder)
    decoder.graph = dataclasses.replace(decoder.graph, session=Recording(decoder.graph.session))
    codes = codes_for(5)
    streamed = np.concatenate([*(detok.push(codes[:, f]) for f in range(FRAMES)), detok.finish()])
    assert seen == [min(f, 6) + 1 for f in range(FRAMES)]
    err = error(streamed, detok.decode(codes))
    assert err <= TOLERANCE, f"windowed vs one-shot: max abs error {err:.3g} > {TOLERANCE}"


def test_context_is_the_trunks_reach(model_dir: Path) -> None:
    """The manifest's context (6 frames: 2 + 29 + 2 positions of reach) is exact, and one
    frame less is not: the window really is as short as it can be."""
    assert read_manifest(model_dir).graphs["audio_detokenizer"].options["context_frames"] == 6
    assert context_frames(tiny()) == 6
    codes = codes_for(6, 30)
    exact = open_detokenizer(model_dir, "windowed")
    short = open_detokenizer(model_dir, "windowed", context_frames=5)
    want = exact.decode(codes)
    for detok, ok in ((exact, True), (short, False)):
        streamed = np.concatenate([*(detok.push(codes[:, f]) for f in range(30)), detok.finish()])
        err = error(streamed, want)
        assert (err <= TOLERANCE) == ok, f"context {detok.decoder}: max abs error {err:.3g}"


def test_reference_depends_on_relative_positions_only(reference: Any) -> None:
    """Why windows may restart RoPE positions at 0: shifting every position by 300 (50
    frames) changes the reference's STFT features by float32 rounding only (~5e-6)."""
    codes = torch.from_numpy(codes_for(7, 20)[None])

    def features(offset: int) -> np.ndarray:
        with torch.no_grad():
            x = reference.emb(codes)
            x = torch.nn.functional.interpolate(x.mT, 6 * x.shape[1], mode="nearest-exact").mT
            idx = torch.arange(x.shape[1])
            d_idx = idx - idx[:, None]
            mask = torch.logical_and(d_idx <= 0, d_idx > -30)[None, None]
            hidden = reference.lfm(
                inputs_embeds=x,
                attention_mask=mask,
                position_ids=(idx + offset)[None],
                use_cache=False,
            ).last_hidden_state
            return np.asarray(reference.lin(hidden).numpy())

    err = error(features(300), features(0))
    assert err <= 1e-4, f"positions shifted by 300: features differ by {err:.3g} > 1e-4"


@both
def test_end_of_audio_frames_are_dropped(detok: StreamingDetokenizer) -> None:
    codes = codes_for(8, 10)
    end = np.full((8, 1), 2048)
    end[1:] = np.random.default_rng(0).integers(0, 2048, size=(7, 1))
    with_end = np.concatenate([codes[:, :4], end, codes[:, 4:], end], axis=1)
    want = detok.decode(codes)
    assert error(detok.decode(with_end), want) == 0.0
    dropped = detok.dropped
    streamed = [detok.push(with_end[:, :3]), detok.push(with_end[:, 3:7])]
    streamed += [detok.push(with_end[:, f]) for f in range(7, with_end.shape[1])]
    assert streamed[-1].size == 0, "the end-of-audio frame gave audio"
    assert detok.dropped - dropped == 2
    err = error(np.concatenate([*streamed, detok.finish()]), want)
    assert err <= TOLERANCE, f"with end-of-audio frames: max abs error {err:.3g}"


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        ("book3", "audio code 2048 in codebook 3 of frame 1"),
        ("negative", "audio code -1 in codebook 0 of frame 0"),
        ("large", "audio code 4096 in codebook 7 of frame 0"),
        ("float", "must be integers"),
        ("shape", "must have shape [8] or [8, frames], got [7, 2]"),
    ],
)
def test_bad_codes_raise(
    detokenizers: dict[str, StreamingDetokenizer], codes: str, message: str
) -> None:
    """Codes outside 0..2047 are refused, never clamped (2048 only ends the audio, and only in
    codebook 0)."""
    bad = np.full((8, 2), 5)
    if codes == "book3":
        bad[3, 1] = 2048
    elif codes == "negative":
        bad[0, 0] = -1
    elif codes == "large":
        bad[7, 0] = 4096
    elif codes == "float":
        bad = bad.astype(np.float32)
    else:
        bad = bad[:7]
    detok = detokenizers["cached"]
    detok.reset()
    for call in (detok.push, detok.decode):
        with pytest.raises(CodeError) as caught:
            call(bad)
        assert message in str(caught.value)


@both
def test_reset_starts_a_new_stream(detok: StreamingDetokenizer) -> None:
    first, second = codes_for(9, 12), codes_for(10, 12)
    assert detok.finish().size == 0, "a stream without frames gave audio"
    for f in range(12):
        detok.push(first[:, f])
    detok.reset()
    streamed = np.concatenate(
        [detok.push(second[:, :5]), detok.push(second[:, 5:]), detok.finish()]
    )
    err = error(streamed, detok.decode(second))
    assert err <= TOLERANCE, f"after reset: max abs error {err:.3g}"
    # finish also ends the stream: the next push starts afresh
    again = np.concatenate([detok.push(second[:, :5]), detok.push(second[:, 5:]), detok.finish()])
    assert error(again, streamed) == 0.0


@pytest.mark.parametrize("kind", CHOICES)
def test_long_input_in_chunks(model_dir: Path, kind: str) -> None:
    """A graph that takes at most 8 frames per call (manifest max_frames) still decodes 60
    frames in one go, and streams 20 at a time, exactly."""
    manifest = read_manifest(model_dir)
    role = choose_role(manifest, kind)
    entry = manifest.graphs[role]
    session = ort.InferenceSession(
        str(model_dir / entry.file), plain_session_options(), providers=["CPUExecutionProvider"]
    )
    graph = bind(role, session, manifest.config, {**entry.options, "max_frames": 8}, entry.file)
    decoder = CachedDecoder(graph, 8) if kind == "cached" else WindowedDecoder(graph, 8)
    detok = StreamingDetokenizer(decoder)
    codes = codes_for(11)
    want = open_detokenizer(model_dir, kind).decode(codes)
    err = error(detok.decode(codes), want)
    assert err <= TOLERANCE, f"one-shot in 8-frame calls: max abs error {err:.3g}"
    streamed = np.concatenate([*(detok.push(codes[:, a : a + 20]) for a in (0, 20, 40)),
                               detok.finish()])  # fmt: skip
    err = error(streamed, want)
    assert err <= TOLERANCE, f"streamed in 8-frame calls: max abs error {err:.3g}"


def test_choice_of_backend(model_dir: Path) -> None:
    manifest = read_manifest(model_dir)
    assert isinstance(open_detokenizer(model_dir).decoder, CachedDecoder)
    assert choose_role(manifest) == "audio_detokenizer_cached"
    assert choose_role(manifest, "windowed") == "audio_detokenizer"
    official = dataclasses.replace(
        manifest,
        graphs={k: v for k, v in manifest.graphs.items() if k != "audio_detokenizer_cached"},
    )
    assert choose_role(official) == "audio_detokenizer"
    with pytest.raises(DetokenizerError, match="has no audio_detokenizer_cached graph"):
        choose_role(official, "cached")
    mimi = dataclasses.replace(manifest, family="lfm2-audio")
    with pytest.raises(DetokenizerError, match="Mimi"):
        choose_role(mimi)


def test_a_graph_that_does_not_fit_is_refused(model_dir: Path) -> None:
    """The stateless graph offered as the cached one: every missing state input is named."""
    manifest = read_manifest(model_dir)
    path = model_dir / manifest.graphs["audio_detokenizer"].file
    session = ort.InferenceSession(
        str(path), plain_session_options(), providers=["CPUExecutionProvider"]
    )
    with pytest.raises(DetokenizerError) as caught:
        bind("audio_detokenizer_cached", session, manifest.config, {}, str(path))
    text = str(caught.value)
    for name in ("past_conv", "past_keys", "past_values", "present_keys"):
        assert f"{name} is missing" in text, text


def test_official_graph_without_options(model_dir: Path) -> None:
    """A stateless graph whose manifest gives no context (the official export's) gets the
    full-size trunk's 17 frames: more than the tiny trunk needs, so still exact."""
    manifest = read_manifest(model_dir)
    path = model_dir / manifest.graphs["audio_detokenizer"].file
    session = ort.InferenceSession(
        str(path), plain_session_options(), providers=["CPUExecutionProvider"]
    )
    graph = bind("audio_detokenizer", session, manifest.config, {}, str(path))
    decoder = WindowedDecoder(graph, 8)
    assert decoder.context_frames == 17 and decoder.max_frames is None
    detok = StreamingDetokenizer(decoder)
    codes = codes_for(12, 25)
    streamed = np.concatenate([*(detok.push(codes[:, f]) for f in range(25)), detok.finish()])
    assert decoder.history_frames == 0, "finish kept the history"
    err = error(streamed, detok.decode(codes))
    assert err <= TOLERANCE, f"17-frame windows vs one-shot: max abs error {err:.3g}"


def test_from_a_loaded_model(model_dir: Path) -> None:
    """`from_model` takes the sessions a model loader already opened (`model.graph(role)`)."""
    opened: list[str] = []

    class Loaded:
        def __init__(self) -> None:
            self.directory = model_dir
            self.manifest = read_manifest(model_dir)

        def graph(self, role: str) -> Any:
            opened.append(role)
            path = model_dir / self.manifest.graphs[role].file
            session = ort.InferenceSession(
                str(path), plain_session_options(), providers=["CPUExecutionProvider"]
            )
            return type("Bound", (), {"session": session})()

    detok = from_model(Loaded())
    assert opened == ["audio_detokenizer_cached"]
    codes = codes_for(13, 4)
    assert detok.push(codes).size == 4 * 1920 - 480


def test_v1_models_stream_through_mimi(tmp_path: Path) -> None:
    """A `family: lfm2-audio` directory gets the Mimi backend from the same entry point, with
    the same frame sizes and end-of-audio handling."""
    build_model(tmp_path / "v1", size="tiny", family="lfm2-audio")
    stream = open_detokenizer(tmp_path / "v1")
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 2048, size=(8, 4))
    pieces = [stream.push(codes[:, i]) for i in range(4)]
    end = np.full(8, 2048)
    pieces.append(stream.push(end))
    pieces.append(stream.finish())
    total = np.concatenate(pieces)
    assert total.size == 4 * 1920
    assert np.isfinite(total).all() and np.abs(total).max() > 0
