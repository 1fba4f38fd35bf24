"""The Mimi decoder graphs (LFM2-Audio v1, `lfm_toolchain.mimi`) against the reference `MimiModel`
(the `moshi` copy inside liquid-audio), tiny Mimi, fp32, and its streaming runtime
(`satellite.engine.mimi`).

Bounds reached here (stated in each assertion): one-shot graph vs `MimiModel.decode` max abs
error <= 1e-4 (measured 5e-7 .. 2e-6 on outputs of peak 1..2); the stream (any chunking)
vs the one-shot graph <= 1e-3 of full scale (measured ~1e-6); the state stops growing once the
attention window is full.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from lfm_toolchain.build import build_model
from lfm_toolchain.mimi import (
    CACHED_ROLE,
    MimiConfig,
    build_mimi_decoder,
    build_mimi_decoder_cached,
    conv_state_size,
    random_mimi_weights,
    tiny_mimi,
)
from lfm_toolchain.onnx_graph import ExternalData, GraphBuilder, save
from reference import TINY_SEED, liquid_audio

from satellite.engine.detokenize import CodeError, DetokenizerError, bind
from satellite.engine.mimi import MimiDecoder, mimi_detokenizer
from satellite.engine.sessions import open_to_check, plain_session_options
from satellite.modeldir.manifest import read_manifest

pytestmark = pytest.mark.parity

PARITY = 1e-4
STREAM = 1e-3
"""Of full scale (1.0)."""


@pytest.fixture(scope="module")
def config() -> MimiConfig:
    return tiny_mimi()


@pytest.fixture(scope="module")
def weights(config: MimiConfig) -> dict[str, np.ndarray]:
    return dict(random_mimi_weights(config, TINY_SEED))


def _reference_name(name: str) -> str:
    """Checkpoint name -> the module's (its load hook splits `in_proj_weight` per step)."""
    for old, new in (
        ("self_attn.in_proj_weight", "self_attn.in_projs.0.weight"),
        ("self_attn.out_proj.weight", "self_attn.out_projs.0.weight"),
    ):
        name = name.replace(old, new)
    return name


@pytest.fixture(scope="module")
def reference(config: MimiConfig, weights: dict[str, np.ndarray]) -> Any:
    """`MimiModel` as `moshi.models.loaders.get_mimi` builds it, with the tiny numbers and the
    decoder side's weights; the encoder side keeps its own random init (decoding ignores it)."""
    os.environ.setdefault("NO_TORCH_COMPILE", "1")
    liquid_audio()  # unpacks the package and puts it on sys.path
    compression = importlib.import_module("liquid_audio.moshi.models.compression")
    modules = importlib.import_module("liquid_audio.moshi.modules")
    transformer = importlib.import_module("liquid_audio.moshi.modules.transformer")
    quantization = importlib.import_module("liquid_audio.moshi.quantization")
    torch.manual_seed(0)
    encoder = modules.SEANetEncoder(**config.seanet_kwargs())
    model = compression.MimiModel(
        encoder,
        modules.SEANetDecoder(**config.seanet_kwargs()),
        quantization.SplitResidualVectorQuantizer(**config.quantizer_kwargs()),
        channels=1,
        sample_rate=config.sample_rate,
        frame_rate=config.frame_rate,
        encoder_frame_rate=config.sample_rate / encoder.hop_length,
        causal=True,
        resample_method="conv",
        encoder_transformer=transformer.ProjectedTransformer(**config.transformer_kwargs()),
        decoder_transformer=transformer.ProjectedTransformer(**config.transformer_kwargs()),
    )
    state = model.state_dict()
    with torch.no_grad():
        for name, value in weights.items():
            target = state[_reference_name(name)]
            assert tuple(target.shape) == value.shape, name
            target.copy_(torch.from_numpy(np.asarray(value)))
    loaded = {_reference_name(n) for n in weights}
    decoding = [
        n
        for n, _ in model.named_parameters()
        if n.startswith(("decoder.", "decoder_transformer.", "upsample.", "quantizer."))
        and "input_proj" not in n
    ]
    assert set(decoding) <= loaded, sorted(set(decoding) - loaded)
    model.set_num_codebooks(config.codebooks)
    return model.float().eval()


def _session(out: Path, stem: str, build: Any, config: MimiConfig, weights: Any) -> Any:
    data = ExternalData(out / f"{stem}.onnx_data")
    model = build(GraphBuilder(stem, data), config, weights)
    data.close()
    save(model, out / f"{stem}.onnx")
    return ort.InferenceSession(
        str(out / f"{stem}.onnx"), plain_session_options(), providers=["CPUExecutionProvider"]
    )


@pytest.fixture(scope="module")
def oneshot(
    tmp_path_factory: pytest.TempPathFactory, config: MimiConfig, weights: dict[str, np.ndarray]
) -> Any:
    out = tmp_path_factory.mktemp("mimi")
    return _session(out, "mimi_decoder", build_mimi_decoder, config, weights)


@pytest.fixture(scope="module")
def cached(
    tmp_path_factory: pytest.TempPathFactory, config: MimiConfig, weights: dict[str, np.ndarray]
) -> Any:
    out = tmp_path_factory.mktemp("mimi_cached")
    return _session(out, CACHED_ROLE, build_mimi_decoder_cached, config, weights)


MANIFEST_CONFIG = {"codebooks": 8}


def _decoder(session: Any, role: str, config: MimiConfig) -> MimiDecoder:
    graph = bind(role, session, MANIFEST_CONFIG, config.manifest_options(), role)
    return MimiDecoder(graph, config.codebooks)


def _codes(seed: int, frames: int, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2048, size=(batch, 8, frames))


def _reference_decode(reference: Any, codes: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.asarray(reference.decode(torch.from_numpy(codes)).numpy())


@pytest.mark.parametrize("frames", [1, 4, 13])
def test_oneshot_matches_reference(
    oneshot: Any, reference: Any, config: MimiConfig, frames: int
) -> None:
    """13 frames = 26 transformer positions: well past the tiny 10-position context."""
    codes = _codes(frames, frames)
    (got,) = oneshot.run(None, {"audio_codes": codes})
    want = _reference_decode(reference, codes)
    assert got.shape == want.shape == (1, 1, config.frame_samples * frames)
    assert float(np.abs(want).max()) > 0.1, "the reference output is too quiet to compare"
    error = float(np.max(np.abs(got - want)))
    assert error <= PARITY, f"{frames} frames: max abs error {error:.3g} > {PARITY:g}"


def test_batch(oneshot: Any, reference: Any) -> None:
    codes = _codes(7, 6, batch=2)
    (got,) = oneshot.run(None, {"audio_codes": codes})
    error = float(np.max(np.abs(got - _reference_decode(reference, codes))))
    assert error <= PARITY, f"batch of 2: max abs error {error:.3g} > {PARITY:g}"


@pytest.mark.parametrize("chunks", [[1] * 12, [3, 1, 5, 2, 1]])
def test_stream_equals_oneshot(
    oneshot: Any, cached: Any, reference: Any, config: MimiConfig, chunks: list[int]
) -> None:
    """Frames pushed one by one or in uneven chunks: each push yields exactly its frames'
    1920 samples each, and the concatenation is the one-shot decoding."""
    codes = _codes(11, sum(chunks))
    (whole,) = oneshot.run(None, {"audio_codes": codes})
    decoder = _decoder(cached, CACHED_ROLE, config)
    pieces, start = [], 0
    for n in chunks:
        piece = decoder.push(codes[0, :, start : start + n])
        assert piece.shape == (config.frame_samples * n,), "a frame's samples came out late"
        pieces.append(piece)
        start += n
    assert decoder.finish().size == 0
    stream = np.concatenate(pieces)
    error = float(np.max(np.abs(stream - whole[0, 0])))
    assert error <= STREAM, f"stream vs one-shot: max abs error {error:.3g} > {STREAM:g}"
    to_reference = float(np.max(np.abs(stream - _reference_decode(reference, codes)[0, 0])))
    assert to_reference <= PARITY, f"stream vs reference: {to_reference:.3g} > {PARITY:g}"


def test_state_is_bounded(cached: Any, config: MimiConfig) -> None:
    """The state stops growing once the attention window (context - 1 positions) is full,
    and holds exactly the conv states plus that window's keys and values."""
    decoder = _decoder(cached, CACHED_ROLE, config)
    sizes = []
    codes = _codes(3, 30)
    for i in range(30):
        decoder.push(codes[0, :, i])
        sizes.append(decoder.state_elements())
    kept = config.context - 1
    window = 2 * config.transformer_layers * config.dimension * kept
    assert sizes[-1] == conv_state_size(config) + window
    full = next(i for i, s in enumerate(sizes) if s == sizes[-1])
    assert full <= kept // config.upsample + 1, sizes
    assert sizes[full:] == [sizes[-1]] * (30 - full)


def test_decode_and_reset(oneshot: Any, cached: Any, config: MimiConfig) -> None:
    """`decode` on either graph is the one-shot result and leaves a stream alone; after
    `reset` a stream starts afresh."""
    codes = _codes(5, 9)
    (whole,) = oneshot.run(None, {"audio_codes": codes})
    streaming = _decoder(cached, CACHED_ROLE, config)
    streaming.chunk_frames = 4  # several calls in one decode
    first = streaming.push(codes[0, :, :3])
    for decoder in (streaming, _decoder(oneshot, "mimi_decoder", config)):
        error = float(np.max(np.abs(decoder.decode(codes[0]) - whole[0, 0])))
        assert error <= STREAM, f"{decoder.graph.role} decode: {error:.3g} > {STREAM:g}"
    rest = streaming.push(codes[0, :, 3:])
    error = float(np.max(np.abs(np.concatenate([first, rest]) - whole[0, 0])))
    assert error <= STREAM, f"stream around a decode: {error:.3g} > {STREAM:g}"
    streaming.reset()
    again = streaming.push(codes[0, :, :3])
    assert np.array_equal(again, first)


def test_stateless_graph_cannot_stream(oneshot: Any, config: MimiConfig) -> None:
    decoder = _decoder(oneshot, "mimi_decoder", config)
    with pytest.raises(DetokenizerError, match="cannot stream"):
        decoder.push(_codes(1, 1)[0])


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (np.full((8, 2), 2048), r"code 2048 in codebook 0 of frame 0: codes must lie in 0\.\.2047"),
        (np.array([[5, -1]] * 8), r"code -1 in codebook 0 of frame 1"),
        (np.zeros((7, 2), np.int64), r"shape \[8\] or \[8, frames\], got \[7, 2\]"),
        (np.zeros((8, 2), np.float32), "must be integers"),
    ],
)
def test_bad_codes_refused(cached: Any, config: MimiConfig, codes: Any, message: str) -> None:
    decoder = _decoder(cached, CACHED_ROLE, config)
    for call in (decoder.push, decoder.decode):
        with pytest.raises(CodeError, match=message):
            call(codes)
    assert decoder.state_elements() == conv_state_size(config)  # nothing ran


def test_lfm2_audio_model_directory(tmp_path: Path, oneshot: Any) -> None:
    """`build_model(family="lfm2-audio")`: Mimi graphs instead of the detokenizer's, accepted
    by `model verify`, and streamed through `StreamingDetokenizer`, which drops end-of-audio
    frames and refuses code 2048 anywhere else."""
    from satellite.modeldir.verify import verify

    out = tmp_path / "v1"
    manifest = build_model(out, size="tiny", seed=TINY_SEED, family="lfm2-audio")
    assert manifest.family == "lfm2-audio"
    assert {"mimi_decoder", CACHED_ROLE} <= set(manifest.graphs)
    assert not {"audio_detokenizer", "audio_detokenizer_cached"} & set(manifest.graphs)
    assert manifest.graphs["mimi_decoder"].options["frame_samples"] == 1920
    report = verify(out, load=open_to_check)
    assert [str(f) for f in report.errors] == []

    def open_graph(role: str) -> tuple[Any, str]:
        path = out / read_manifest(out).graphs[role].file
        return ort.InferenceSession(
            str(path), plain_session_options(), providers=["CPUExecutionProvider"]
        ), str(path)

    detok = mimi_detokenizer(manifest, open_graph)
    codes = _codes(2, 4)[0]
    (whole,) = oneshot.run(None, {"audio_codes": codes[None]})  # same seed, same weights
    end = np.full((8, 1), 7)
    end[0, 0] = 2048
    audio = np.concatenate([detok.push(codes[:, :2]), detok.push(end), detok.push(codes[:, 2:])])
    assert detok.dropped == 1
    error = float(np.max(np.abs(audio - whole[0, 0])))
    assert error <= STREAM, f"built model, streamed: {error:.3g} > {STREAM:g}"
    bad = codes.copy()
    bad[3, 1] = 2048
    with pytest.raises(CodeError, match="code 2048 in codebook 3 of frame 1"):
        detok.push(bad)
