"""`lfm_toolchain.build.build_model`: the model directory, its manifest, and the embedding graphs'
parity with the reference (`lfm.embed_tokens`, `audio_embedding` + codebook offsets)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from lfm_toolchain.build import BuildError, build_model
from reference import TINY_SEED, tiny_reference

from satellite.engine.sessions import open_to_check, plain_session_options
from satellite.modeldir.manifest import REQUIRED_CONFIG, read_manifest, sha256_file

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "model"
    build_model(out, size="tiny", seed=TINY_SEED)
    return out


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(path), plain_session_options(), providers=["CPUExecutionProvider"]
    )


def test_manifest_describes_the_directory(model_dir: Path) -> None:
    manifest = read_manifest(model_dir)
    assert manifest.family == "lfm2.5-audio" and manifest.variant == "fp32"
    assert set(manifest.graphs) == {
        "decoder",
        "audio_encoder",
        "embed_tokens",
        "audio_embedding",
        "depthformer",
        "audio_detokenizer",
        "audio_detokenizer_cached",
    }
    assert manifest.graphs["depthformer"].options["granularity"] == "codebook_step"
    for key, kind in REQUIRED_CONFIG.items():
        assert isinstance(manifest.config[key], kind), key
    assert manifest.config["layer_types"][2] == "full_attention"
    on_disk = {p.name for p in model_dir.iterdir()} - {"manifest.json"}
    assert set(manifest.files) == on_disk
    for name, entry in manifest.files.items():
        assert entry.sha256 == sha256_file(model_dir / name)
        assert entry.size == (model_dir / name).stat().st_size
    for entry in manifest.graphs.values():
        sess = session(model_dir / entry.file)
        assert [t.name for t in entry.inputs] == [i.name for i in sess.get_inputs()]
        assert [t.name for t in entry.outputs] == [o.name for o in sess.get_outputs()]
        assert entry.data_files == [entry.file + "_data"]
    config = json.loads((model_dir / "config.json").read_text())
    assert config["lfm"]["layer_types"] == manifest.config["layer_types"]


def test_satellite_verify_accepts_the_graphs(model_dir: Path) -> None:
    """The daemon's own checker finds every role and binds each graph to its contract."""
    from satellite.modeldir.verify import verify

    report = verify(model_dir, load=open_to_check)
    assert [str(f) for f in report.errors] == []
    assert set(report.bindings) == set(read_manifest(model_dir).graphs)


def test_same_seed_same_files(model_dir: Path, tmp_path: Path) -> None:
    again = build_model(tmp_path / "again", size="tiny", seed=TINY_SEED)
    first = read_manifest(model_dir)
    assert {k: v.sha256 for k, v in again.files.items()} == {
        k: v.sha256 for k, v in first.files.items()
    }
    other = build_model(tmp_path / "other", size="tiny", seed=TINY_SEED + 1)
    assert other.files["decoder.onnx_data"].sha256 != first.files["decoder.onnx_data"].sha256


def test_refusals(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="already holds a model"):
        build_model(model_dir, size="tiny")
    with pytest.raises(BuildError, match="--variant fp16: not built yet"):
        build_model(tmp_path / "fp16", size="tiny", variant="fp16")
    with pytest.raises(BuildError, match="not one of"):
        build_model(tmp_path / "x", size="tiny", variant="int3")
    with pytest.raises(BuildError, match="--size huge: not one of tiny, full"):
        build_model(tmp_path / "z", size="huge")
    with pytest.raises(BuildError, match="--from"):
        build_model(tmp_path / "y", size="tiny", checkpoint=tmp_path)
    with pytest.raises(BuildError, match="--block-size 48: not one of 16, 32, 64, 128, 256"):
        build_model(tmp_path / "b", size="tiny", variant="q4", block_size=48)
    with pytest.raises(BuildError, match="--block-size 32: only the q4 and q8 variants"):
        build_model(tmp_path / "f", size="tiny", block_size=32)
    assert not (tmp_path / "b").exists() and not (tmp_path / "f").exists()
    with pytest.raises(BuildError, match="shaping scales random weights; leave out --shaped"):
        build_model(tmp_path / "s", checkpoint=tmp_path, shaped=True)


def test_model_build_makes_the_default_tiny_model_unless_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`model build --size tiny` is the demo's and the tests' tiny model (`cached_model`'s, the
    same files): the default seed, shaped; `--no-shaped` keeps the rows as drawn."""
    from lfm_toolchain.cache import cached_model
    from lfm_toolchain.weights import default_seed

    from satellite.cli import main

    assert main(["model", "build", "--size", "tiny", "--out", str(tmp_path / "a")]) == 0
    built = read_manifest(tmp_path / "a")
    assert built.source["seed"] == default_seed("tiny") and built.source["shaped"] is True
    assert built.files == read_manifest(cached_model("tiny")).files
    argv = ["model", "build", "--size", "tiny", "--seed", "0", "--no-shaped"]
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    plain = read_manifest(tmp_path / "b").source
    assert plain["seed"] == 0 and plain["shaped"] is False and plain["weights"] == "random"
    capsys.readouterr()


def test_embed_tokens_parity(model_dir: Path) -> None:
    _, _, model = tiny_reference()
    ids = np.array([[1, 6, 7, 128, 129, 130, 511, 0]], dtype=np.int64)
    (got,) = session(model_dir / "embed_tokens.onnx").run(None, {"input_ids": ids})
    with torch.no_grad():
        want = model.lfm.embed_tokens(torch.from_numpy(ids)).numpy()
    assert got.shape == want.shape
    error = float(np.max(np.abs(got - want)))
    assert error == 0.0, f"embed_tokens: max abs error {error:.3g}"


def test_audio_embedding_parity(model_dir: Path) -> None:
    """Frame embedding = sum over codebooks of rows code_c + 2049*c, end-of-audio included."""
    config, _, model = tiny_reference()
    rng = np.random.default_rng(8)
    frames = rng.integers(0, 2049, size=(config.codebooks, 5))
    frames[:, 2] = 2048  # an end-of-audio frame: all codebooks 2048, never clamped
    offsets = (np.arange(config.codebooks) * config.codebook_size)[:, None]
    flat = (frames + offsets).T.reshape(1, -1).astype(np.int64)  # frame-major, 8 per frame
    (rows,) = session(model_dir / "audio_embedding.onnx").run(None, {"audio_codes": flat})
    got = rows.reshape(5, config.codebooks, -1).sum(axis=1)
    with torch.no_grad():
        tokens = torch.from_numpy(frames) + model.codebook_offsets.unsqueeze(1)
        want = model.audio_embedding(tokens).sum(0).numpy()
    error = float(np.max(np.abs(got - want)))
    assert error <= 1e-5, f"audio_embedding: max abs error {error:.3g}"
