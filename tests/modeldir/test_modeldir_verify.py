"""`lfm-satellite model verify` and `model info`: a good directory passes; each kind of damage
fails with the file (and the input, key or value) named, through the API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import modeldir_graphs as g
import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from satellite.cli import main
from satellite.engine.sessions import open_to_check, plain_session_options
from satellite.modeldir.manifest import read_manifest, sha256_file
from satellite.modeldir.verify import Report, verify
from tests.paths import REPO


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    g.write_model_dir(root)
    return root


def errors(report: Report) -> list[str]:
    return [str(f) for f in report.errors]


def edit_manifest(root: Path, change: Any) -> None:
    path = root / "manifest.json"
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


def replace_graph(root: Path, role: str, model: Any) -> None:
    """Swap one role's graph and re-index, as a (wrong) export would have been indexed."""
    manifest = read_manifest(root)
    g.save(model, root / manifest.graphs[role].file)
    files = {r: e.file for r, e in manifest.graphs.items()}
    g.index(root, manifest.config, files).write(root)


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_good_directory_passes_and_binds_every_role(model_dir: Path) -> None:
    report = verify(model_dir, load=open_to_check)
    assert report.findings == ()
    assert set(report.bindings) == {
        "decoder",
        "audio_encoder",
        "audio_embedding",
        "depthformer",
        "audio_detokenizer",
    }
    assert report.hashed_bytes == sum(e.size for e in read_manifest(model_dir).files.values())
    assert report.bindings["audio_encoder"].output_name("audio_lengths") == "audio_lengths"


def test_verify_cli_ok(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "verify", str(model_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK: {model_dir}: test/tiny-official-layout (lfm2.5-audio, fp32)")
    assert "sizes and sha256 checked" in out


def test_corrupted_data_file_is_named(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = model_dir / "onnx" / "decoder.onnx_data"
    flip_byte(data, 100)
    report = verify(model_dir)
    assert errors(report) == [
        f"{data}: sha256 mismatch: the file is corrupted or replaced (is "
        f"{sha256_file(data)[:16]}…, manifest.json records "
        f"{read_manifest(model_dir).files['onnx/decoder.onnx_data'].sha256[:16]}…)"
    ]
    assert main(["model", "verify", str(model_dir)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"{data}: sha256 mismatch")
    # --quick compares sizes only, so the same-size corruption passes it
    assert main(["model", "verify", "--quick", str(model_dir)]) == 0
    assert "sizes checked" in capsys.readouterr().out


def test_corrupted_table_and_truncated_graph(model_dir: Path) -> None:
    flip_byte(model_dir / "onnx" / "embed_tokens.bin", 0)
    graph = model_dir / "onnx" / "audio_encoder.onnx"
    graph.write_bytes(graph.read_bytes()[:-3])
    found = errors(verify(model_dir))
    assert any(e.startswith(f"{model_dir}/onnx/embed_tokens.bin: sha256 mismatch") for e in found)
    assert any(e.startswith(f"{graph}: size is") and "truncated" in e for e in found)
    assert any(e.startswith(f"{graph}: not a valid ONNX graph (truncated") for e in found)


def test_missing_files_are_named(model_dir: Path) -> None:
    (model_dir / "onnx" / "audio_encoder.onnx").unlink()
    (model_dir / "onnx" / "decoder.onnx_data").unlink()
    found = errors(verify(model_dir))
    assert f"{model_dir}/onnx/audio_encoder.onnx: missing (listed in manifest.json)" in found
    assert f"{model_dir}/onnx/decoder.onnx_data: missing (listed in manifest.json)" in found
    assert len(found) == 2


def test_data_file_the_manifest_does_not_list(model_dir: Path) -> None:
    def drop(raw: dict[str, Any]) -> None:
        raw["graphs"]["decoder"]["data_files"] = []
        del raw["files"]["onnx/decoder.onnx_data"]

    edit_manifest(model_dir, drop)
    found = errors(verify(model_dir))
    assert found == [
        f"{model_dir}/onnx/decoder.onnx: keeps weights in onnx/decoder.onnx_data, which "
        "manifest.json does not list in its data_files"
    ]


def test_wrong_input_name_names_file_and_input(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    replace_graph(model_dir, "audio_embedding", g.audio_embedding(codes_name="codes"))
    found = errors(verify(model_dir))
    graph = f"{model_dir}/onnx/audio_embedding.onnx"
    assert found == [
        f"{graph}: input audio_codes is missing; the audio_embedding contract wants audio_codes "
        "int64 [batch, length] [audio_embedding]",
        f"{graph}: input codes is not part of the audio_embedding contract, so the runtime "
        "cannot feed it (known inputs: audio_codes) [audio_embedding]",
    ]
    assert main(["model", "verify", str(model_dir)]) == 1
    err = capsys.readouterr().err
    assert f"{graph}: input audio_codes is missing" in err
    assert "Traceback" not in err


def test_wrong_dtype_and_wrong_hidden_size(model_dir: Path) -> None:
    replace_graph(model_dir, "audio_embedding", g.audio_embedding(codes_type=g.INT32))
    replace_graph(model_dir, "audio_encoder", g.audio_encoder({**g.CONFIG, "hidden_size": 24}))
    found = errors(verify(model_dir))
    assert (
        f"{model_dir}/onnx/audio_embedding.onnx: input audio_codes has element type int32, "
        "expected int64 [audio_embedding]" in found
    )
    assert (
        f"{model_dir}/onnx/audio_encoder.onnx: output audio_embeddings axis 2 is 24, expected "
        "config hidden_size = 16 (shape [batch_size, reduced_time, 24]) [audio_encoder]" in found
    )


def test_cache_count_must_match_layer_types(model_dir: Path) -> None:
    four = {**g.CONFIG, "layer_types": ["conv", "full_attention", "conv", "conv"]}
    replace_graph(model_dir, "decoder", g.decoder(four))
    found = errors(verify(model_dir))
    assert any(
        "onnx/decoder.onnx: input past_conv.3 does not fit the config: config layer_types has "
        "3 layers" in e
        for e in found
    )


def test_missing_role(model_dir: Path) -> None:
    edit_manifest(model_dir, lambda raw: raw["graphs"].pop("depthformer"))
    assert errors(verify(model_dir)) == [
        f"{model_dir}/manifest.json: graphs: role depthformer is missing; a lfm2.5-audio model "
        "needs decoder, audio_encoder, audio_embedding, depthformer, audio_detokenizer"
    ]


def test_lfm2_audio_needs_a_mimi_decoder(model_dir: Path) -> None:
    edit_manifest(model_dir, lambda raw: raw.update(family="lfm2-audio"))
    found = errors(verify(model_dir))
    assert found == [
        f"{model_dir}/manifest.json: graphs: role mimi_decoder is missing; a lfm2-audio model "
        "needs decoder, audio_encoder, audio_embedding, depthformer, mimi_decoder"
    ]


def test_recorded_interface_must_equal_the_graph(model_dir: Path) -> None:
    def change(raw: dict[str, Any]) -> None:
        raw["graphs"]["audio_encoder"]["inputs"][0]["shape"] = ["batch", "frames", 80]
        raw["graphs"]["audio_encoder"]["outputs"].pop()

    edit_manifest(model_dir, change)
    found = errors(verify(model_dir))
    graph = f"{model_dir}/onnx/audio_encoder.onnx"
    assert found == [
        f"{graph}: input mel_spectrogram: manifest.json records mel_spectrogram float32 "
        "[batch, frames, 80], the graph has mel_spectrogram float32 [batch_size, time_steps, 8]",
        f"{graph}: output audio_lengths is in the graph but manifest.json does not record it",
    ]


def test_unlisted_file_and_unsafe_path(model_dir: Path) -> None:
    def change(raw: dict[str, Any]) -> None:
        del raw["files"]["tokenizer.json"]
        raw["files"]["../outside.bin"] = {"sha256": "0" * 64, "size": 1}

    edit_manifest(model_dir, change)
    found = errors(verify(model_dir))
    assert (
        f"{model_dir}/tokenizer.json: not listed in manifest.json files, so its checksum cannot "
        "be checked" in found
    )
    assert (
        f"{model_dir}/manifest.json: files: '../outside.bin' is not a relative path inside the "
        "directory" in found
    )


def test_graph_path_outside_the_directory(model_dir: Path) -> None:
    edit_manifest(model_dir, lambda raw: raw["graphs"]["audio_encoder"].update(file="../x.onnx"))
    assert errors(verify(model_dir)) == [
        f"{model_dir}/manifest.json: '../x.onnx' is not a relative path inside the directory"
    ]


def test_config_inconsistencies(model_dir: Path) -> None:
    def change(raw: dict[str, Any]) -> None:
        raw["config"]["num_hidden_layers"] = 4
        raw["config"]["num_key_value_heads"] = 3

    edit_manifest(model_dir, change)
    found = errors(verify(model_dir))
    manifest = f"{model_dir}/manifest.json"
    assert (
        f"{manifest}: config.layer_types lists 3 layers but config.num_hidden_layers is 4" in found
    )
    assert (
        f"{manifest}: config.num_attention_heads (4) must be a positive multiple of "
        "config.num_key_value_heads (3)" in found
    )


def test_table_size_and_mel_config_against_config(model_dir: Path) -> None:
    table = model_dir / "onnx" / "embed_tokens.bin"
    table.write_bytes(table.read_bytes()[:-64])
    mel = model_dir / "onnx" / "mel_config.json"
    mel.write_text(json.dumps({"sample_rate": 16000, "n_mels": 80}))
    manifest = read_manifest(model_dir)
    g.index(model_dir, manifest.config, {r: e.file for r, e in manifest.graphs.items()}).write(
        model_dir
    )
    found = errors(verify(model_dir))
    assert found == [
        f"{table}: 1984 bytes, but embed_tokens.json describes 32 x 16 float32 = 2048 bytes",
        f"{mel}: n_mels is 80, config n_mels is 8",
    ]


def test_decoder_on_embeddings_needs_a_text_embedding(model_dir: Path) -> None:
    edit_manifest(model_dir, lambda raw: raw["side_files"].pop("embed_tokens"))
    assert errors(verify(model_dir)) == [
        f"{model_dir}/manifest.json: the decoder takes inputs_embeds, so the model needs text "
        "embeddings: an embed_tokens graph (graphs.embed_tokens) or table (side_files.embed_tokens)"
    ]


def test_known_defect_rmsnorm_in_audio_embedding(model_dir: Path) -> None:
    replace_graph(model_dir, "audio_embedding", g.audio_embedding(with_norm=True))
    found = errors(verify(model_dir))
    assert len(found) == 1
    assert found[0].startswith(
        f"{model_dir}/onnx/audio_embedding.onnx: applies SimplifiedLayerNormalization after the "
        "code lookup: a known defect of early audio_embedding exports"
    )


def test_known_defect_depthformer_rope_is_refused_with_the_fix(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    replace_graph(model_dir, "depthformer", g.depthformer(gqa_without_rotary=True))
    report = verify(model_dir)
    assert [str(e) for e in report.errors] == [
        f"{model_dir}/onnx/vocoder_depthformer.onnx: 1 of 1 GroupQueryAttention nodes leave "
        "do_rotary unset, so attention runs without rotary embeddings: a known defect of the "
        "published vocoder_depthformer graphs (codebooks 1-7 come out wrong, the speech is "
        f"degraded); correct it with `lfm-satellite model fix {model_dir}`"
    ]
    assert main(["model", "verify", str(model_dir)]) == 1
    assert "model fix" in capsys.readouterr().err


def test_load_finds_graphs_onnxruntime_refuses(model_dir: Path) -> None:
    model = g.audio_detokenizer()
    model.graph.node.append(helper.make_node("NoSuchOperator", ["audio_codes"], ["unused"]))
    replace_graph(model_dir, "audio_detokenizer", model)
    assert verify(model_dir).ok  # the interface still fits
    found = errors(verify(model_dir, load=open_to_check))
    assert len(found) == 1
    assert found[0].startswith(
        f"{model_dir}/onnx/audio_detokenizer.onnx: onnxruntime cannot load it:"
    )
    assert "NoSuchOperator" in found[0]


def test_unreadable_manifest(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (model_dir / "manifest.json").write_text('{"format_version": 1,')
    report = verify(model_dir)
    assert errors(report) == [
        f"{model_dir}/manifest.json:1:22: invalid JSON: Expecting property name enclosed in "
        "double quotes"
    ]
    assert main(["model", "verify", str(model_dir / "nowhere")]) == 1
    assert f"{model_dir}/nowhere: model directory not found" in capsys.readouterr().err


def test_graphs_of_a_verified_directory_run(model_dir: Path) -> None:
    """What verify accepts, onnxruntime runs with feeds made from the recorded shapes."""
    report = verify(model_dir)
    manifest = report.manifest
    assert manifest is not None
    numpy = {"float32": np.float32, "int64": np.int64, "int32": np.int32}
    for entry in manifest.graphs.values():
        session = ort.InferenceSession(
            str(model_dir / entry.file), plain_session_options(), providers=["CPUExecutionProvider"]
        )
        feeds = {}
        for spec in entry.inputs:
            shape = [d if isinstance(d, int) else (0 if "past" in d else 1) for d in spec.shape]
            feeds[spec.name] = np.zeros(shape, numpy[spec.dtype])
        outputs = session.run(None, feeds)
        assert len(outputs) == len(entry.outputs)


def test_info_text_and_json(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "info", str(model_dir)]) == 0
    out = capsys.readouterr().out
    for expected in (
        "family     lfm2.5-audio",
        "variant    fp32",
        "name       test/tiny-official-layout",
        "layer_types            3 layers: 2 conv, 1 full_attention (attention at 1)",
        "  decoder            onnx/decoder.onnx + 1 data file,",
        "      in  past_conv.{i} x2 float32 [batch_size, 16, 3]",
        "  depthformer        onnx/vocoder_depthformer.onnx,",
        "      out stft_features float32 [batch_size, stft_time, 2]",
        "  embed_tokens       onnx/embed_tokens.json",
    ):
        assert expected in out, expected
    assert main(["model", "info", "--json", str(model_dir)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["variant"] == "fp32" and data["directory"] == str(model_dir)
    assert data["graphs"]["decoder"]["data_files"] == ["onnx/decoder.onnx_data"]
    assert data["total_size"] == sum(f["size"] for f in data["files"].values())
    assert main(["model", "info", str(model_dir.parent)]) == 2
    assert "no manifest; is this a model directory?" in capsys.readouterr().err


def test_cli_in_a_subprocess(model_dir: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "satellite", "model", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            check=False,
        )

    ok = run("verify", str(model_dir))
    assert ok.returncode == 0 and ok.stdout.startswith("OK: ")
    flip_byte(model_dir / "tokenizer.json", 3)
    bad = run("verify", str(model_dir))
    assert bad.returncode == 1
    assert bad.stderr.startswith(f"{model_dir}/tokenizer.json: sha256 mismatch")
    assert "Traceback" not in bad.stderr
