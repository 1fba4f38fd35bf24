"""`lfm-satellite model fetch` against a hub on 127.0.0.1 (tests/hubserver.py) that serves a
folder laid out like `LiquidAI/LFM2.5-Audio-1.5B-ONNX`, with the shipped catalog entry: only
the variant's files, checksums recorded, downloads resumed, and one clear sentence for each
way it can fail. No other network."""

from __future__ import annotations

import dataclasses
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import modeldir_graphs as g
import pytest
from hubserver import Hub, serve_hub, write_test_catalog

from satellite.cli import main
from satellite.modeldir.catalog import KnownFile, catalog_path, find_entry, load_catalog
from satellite.modeldir.fetch import FetchError, fetch
from satellite.modeldir.manifest import read_manifest, sha256_file
from satellite.modeldir.verify import verify
from tests.paths import REPO

NAME = "LiquidAI/LFM2.5-Audio-1.5B-ONNX"
CONFIG = {**g.CONFIG, "codebook_size": 2049}
"""The catalog entry fixes the full model's 2049 codes per codebook; the rest comes from the
repository's config.json."""
PADDING = 24 << 20
"""decoder_q4.onnx_data is made larger than two of huggingface_hub's 10 MiB write pieces, so
a download cut midway has written 10 MiB that a resumed one must not fetch again."""
Q4_FILES = {
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "onnx/mel_config.json",
    "onnx/embed_tokens.json",
    "onnx/embed_tokens.bin",
    "onnx/audio_embedding.json",
    "onnx/audio_embedding.bin",
    "onnx/decoder_q4.onnx",
    "onnx/decoder_q4.onnx_data",
    "onnx/decoder_q4.onnx_data_1",
    "onnx/audio_encoder_q4.onnx",
    "onnx/audio_embedding_q4.onnx",
    "onnx/vocoder_depthformer_q4.onnx",
    "onnx/audio_detokenizer_q4.onnx",
}
REPACKED_FILES = {
    "onnx/decoder_q4.repacked.onnx",
    "onnx/decoder_q4.head.onnx_data",
    "onnx/embed_tokens_q4.onnx",
}


SHIPPED = find_entry(load_catalog(catalog_path()), NAME)
PIN = SHIPPED.revision
"""The commit the shipped catalog pins (the test hub serves the test repository there)."""


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub") / "repo"
    g.write_hub_repo(root, CONFIG, ("fp32", "q4"), q4_padding=PADDING)
    return root


@pytest.fixture(scope="module")
def test_catalog(repo_dir: Path) -> Path:
    return write_test_catalog(NAME, repo_dir, repo_dir.parent / "catalog.yaml")


@pytest.fixture
def hub(repo_dir: Path, test_catalog: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    with serve_hub({NAME: repo_dir}, commit=PIN) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("LFM_SATELLITE_CATALOG", str(test_catalog))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield server


def entry(name: str = NAME):  # type: ignore[no-untyped-def]
    return find_entry(load_catalog(catalog_path()), name)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_fetch_only_the_variant(
    hub: Hub, repo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "q4"
    assert main(["model", "fetch", NAME, "--variant", "q4", "--dir", str(target)]) == 0
    out = capsys.readouterr().out
    assert f"fetching {NAME} q4 ({PIN[:12]}) into {target}: 15 files" in out
    assert "repacked onnx/decoder_q4.onnx: float32 lm-head" in out
    assert out.splitlines()[-1].startswith(f"OK: {target}: {NAME} q4, 18 files")
    fetched = {p for p, _ in hub.gets()}
    assert {p.split(f"/resolve/{PIN}/")[1] for p in fetched} == Q4_FILES
    assert not any("README" in p or "decoder.onnx" in p for p in fetched)
    manifest = read_manifest(target)
    assert set(manifest.files) == Q4_FILES | REPACKED_FILES
    for name in Q4_FILES:  # the downloaded files, as the hub has them
        recorded = manifest.files[name]
        assert recorded.sha256 == sha256_file(repo_dir / name), name
        assert recorded.size == (repo_dir / name).stat().st_size
    decoder = manifest.graphs["decoder"]
    assert decoder.file == "onnx/decoder_q4.repacked.onnx"
    assert decoder.options["repack"]["from"] == "onnx/decoder_q4.onnx"
    # the body's weights read in place; the float head (in `_data_1` here) no longer read
    assert set(decoder.data_files) == {
        "onnx/decoder_q4.onnx_data",
        "onnx/decoder_q4.head.onnx_data",
    }
    assert manifest.graphs["depthformer"].file == "onnx/vocoder_depthformer_q4.onnx"
    assert manifest.graphs["depthformer"].options == {"granularity": "codebook_step"}
    assert manifest.variant == "q4" and manifest.family == "lfm2.5-audio"
    assert manifest.config["hidden_size"] == 16  # from the repository's config.json
    assert manifest.config["layer_types"] == CONFIG["layer_types"]
    assert manifest.config["codebook_size"] == 2049  # from the catalog
    assert manifest.source["revision"] == PIN
    assert "embed_tokens" not in manifest.side_files  # read from the repacked head's table
    assert manifest.graphs["embed_tokens"].file == "onnx/embed_tokens_q4.onnx"
    assert verify(target).ok

    # a second fetch finds every file in place and downloads nothing
    hub.requests.clear()
    assert main(["model", "fetch", NAME, "--variant", "q4", "--dir", str(target)]) == 0
    assert hub.gets() == []


def test_interrupted_download_resumes(hub: Hub, repo_dir: Path, tmp_path: Path) -> None:
    hub.cut["onnx/decoder_q4.onnx_data"] = 1
    naps: list[float] = []
    result = fetch(entry(), variant="q4", directory=tmp_path / "d", sleep=naps.append)
    assert result.report.ok
    gets = hub.gets("decoder_q4.onnx_data")
    data_gets = [r for p, r in gets if p.endswith("decoder_q4.onnx_data")]
    assert data_gets == [None, f"bytes={10 << 20}-"]
    assert naps == [0.2]
    got = tmp_path / "d" / "onnx" / "decoder_q4.onnx_data"
    assert sha256_file(got) == sha256_file(repo_dir / "onnx" / "decoder_q4.onnx_data")


def test_resume_in_the_next_run(hub: Hub, repo_dir: Path, tmp_path: Path) -> None:
    hub.cut["onnx/decoder_q4.onnx_data"] = 1
    with pytest.raises(FetchError) as caught:
        fetch(entry(), variant="q4", directory=tmp_path / "d", attempts=1)
    assert str(caught.value) == (
        f"onnx/decoder_q4.onnx_data: the download from {hub.url} broke off (the connection "
        "closed in the middle of the file) after 1 try; run the same command again to resume "
        "where it stopped"
    )
    assert not (tmp_path / "d" / "manifest.json").exists()
    hub.requests.clear()
    result = fetch(entry(), variant="q4", directory=tmp_path / "d", attempts=1)
    assert result.report.ok
    assert next(r for _, r in hub.gets("decoder_q4.onnx_data")) == f"bytes={10 << 20}-"
    assert read_manifest(tmp_path / "d").files["onnx/decoder_q4.onnx_data"].sha256 == sha256_file(
        repo_dir / "onnx" / "decoder_q4.onnx_data"
    )


def test_variant_the_repo_lacks(
    hub: Hub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", "fetch", NAME, "--variant", "fp16", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"error: {NAME} at {PIN} has no fp16 variant of {NAME} (no onnx/decoder_fp16.onnx); "
        "it has q4, fp32\n"
    )
    assert hub.gets() == []


def test_only_variants_known_to_exist_are_offered(
    hub: Hub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """q8 files were never seen on the hub: the catalog does not offer them."""
    assert list(SHIPPED.variants) == ["q4", "fp16", "fp32"]
    assert main(["model", "fetch", NAME, "--variant", "q8", "--dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"error: {NAME} has no variant 'q8' in the catalog; its variants are q4, fp16, fp32\n"
    )
    assert hub.requests == []


def test_the_pin_is_fetched_and_revision_overrides_it(
    repo_dir: Path,
    test_catalog: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`main` has moved on to the newer onnxruntime-genai layout: the pinned commit is what a
    plain fetch gets; `--revision main` gets the newer layout, refused before any download."""
    assert PIN == "62318d95ddf42a65e742cdd6fd33df91874a801d"
    newer = tmp_path / "newer"
    shutil.copytree(repo_dir, newer)
    (newer / "genai_config.json").write_text('{"model": {"type": "lfm2_audio"}}')
    (newer / "onnx" / "embeddings_q8.onnx").write_bytes(b"\x08\x0a")
    later = "fedcba9876543210fedcba9876543210fedcba98"
    with serve_hub({NAME: repo_dir}, commit=PIN, main={NAME: (later, newer)}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("LFM_SATELLITE_CATALOG", str(test_catalog))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        target = tmp_path / "d"
        assert main(["model", "fetch", NAME, "--dir", str(target)]) == 0
        assert read_manifest(target).source["revision"] == PIN
        capsys.readouterr()
        server.requests.clear()
        args = ["model", "fetch", NAME, "--revision", "main", "--dir", str(tmp_path / "e")]
        assert main(args) == 1
        assert capsys.readouterr().err == (
            f"error: {NAME} at main has the newer onnxruntime-genai layout (genai_config.json; "
            "a decoder with a conv state of 2), which this version of lfm-satellite cannot "
            f"run: fetch the pinned revision {PIN} (leave out --revision)\n"
        )
        assert server.gets() == []


def test_the_hub_disagreeing_with_the_pinned_sizes_stops_before_download(
    repo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped catalog knows the real files' sizes; a hub serving other files at the pinned
    commit is refused before a byte is downloaded."""
    with serve_hub({NAME: repo_dir}, commit=PIN) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        with pytest.raises(FetchError) as caught:
            fetch(SHIPPED, variant="q4", directory=tmp_path / "d")
        size = (repo_dir / "onnx/embed_tokens.bin").stat().st_size
        assert str(caught.value) == (
            f"{NAME} at {PIN[:12]}: onnx/embed_tokens.bin: the hub lists {size} bytes, the "
            "catalog knows the pinned file as 536870912; nothing was downloaded (is HF_ENDPOINT "
            "a mirror of another repository?)"
        )
        assert server.gets() == []
        assert not (tmp_path / "d").exists()


def test_a_known_sha256_is_checked_after_download(hub: Hub, repo_dir: Path, tmp_path: Path) -> None:
    """Where the catalog knows a sha256 and the hub lists none (a small file), the download
    must match the catalog's."""
    known = dict(entry().known_files)
    known["config.json"] = KnownFile(sha256="0" * 64)
    with pytest.raises(FetchError, match=r"config.json: sha256 .* does not match"):
        fetch(dataclasses.replace(entry(), known_files=known), directory=tmp_path / "d")


def test_hub_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert main(["model", "fetch", NAME, "--dir", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"error: cannot reach the Hugging Face hub at {endpoint} (connection refused); check "
        "the network and HF_ENDPOINT, or, if the files are already in a directory, index them "
        f"without the network: HF_HUB_OFFLINE=1 lfm-satellite model fetch {NAME} --dir DIR\n"
    )


def test_hub_unreachable_in_a_subprocess(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_ENDPOINT": endpoint}
    result = subprocess.run(
        [sys.executable, "-m", "satellite", "model", "fetch", NAME, "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot reach the Hugging Face hub at {endpoint}")
    assert "Traceback" not in result.stderr


def test_repository_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve_hub({"someone/else": tmp_path}) as other:
        monkeypatch.setenv("HF_ENDPOINT", other.url)
        with pytest.raises(
            FetchError, match=re.escape(f"{NAME}: repository not found on {other.url}")
        ):
            fetch(entry(), directory=tmp_path / "d")


@pytest.mark.parametrize(
    "name, command",
    [
        (
            "LiquidAI/LFM2-Audio-1.5B",
            "huggingface-cli download LiquidAI/LFM2-Audio-1.5B --local-dir CKPT && "
            "lfm-satellite model build --from CKPT --variant q4 --out DIR",
        ),
        (
            "LiquidAI/LFM2.5-Audio-1.5B",
            "huggingface-cli download LiquidAI/LFM2.5-Audio-1.5B --local-dir CKPT && "
            "lfm-satellite model build --from CKPT --variant q4 --out DIR",
        ),
        ("tiny", "lfm-satellite model build --size tiny"),
    ],
)
def test_entries_that_are_built_not_fetched(
    name: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", "fetch", name]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {name} is ")
    assert f"not a published ONNX model: make it with `{command}`" in err


def test_unknown_name_and_catalog_variant(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "fetch", "LiquidAI/LFM2.5-Audio-1.5B-ONNNX"]) == 2
    assert "did you mean LiquidAI/LFM2.5-Audio-1.5B-ONNX?" in capsys.readouterr().err
    with pytest.raises(FetchError, match="no variant 'q3' in the catalog; its variants are q4"):
        fetch(entry(), variant="q3")


def test_checksum_mismatch_deletes_the_file(hub: Hub, tmp_path: Path) -> None:
    hub.corrupt["onnx/audio_encoder_q4.onnx"] = b"\x00" * 10
    target = tmp_path / "d"
    with pytest.raises(FetchError) as caught:
        fetch(entry(), variant="q4", directory=target)
    message = str(caught.value)
    assert message.startswith(f"{target}/onnx/audio_encoder_q4.onnx: ")
    assert message.endswith("the file was deleted, run the same command again to fetch it anew")
    assert not (target / "onnx" / "audio_encoder_q4.onnx").exists()


def test_offline_indexes_files_already_there(
    repo_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    target = tmp_path / "copied"
    shutil.copytree(repo_dir, target)
    assert main(["model", "fetch", NAME, "--variant", "fp32", "--dir", str(target)]) == 0
    assert f"offline: indexing 14 files in {target}" in capsys.readouterr().out
    manifest = read_manifest(target)
    assert manifest.graphs["decoder"].file == "onnx/decoder.onnx"
    assert manifest.source["indexed_offline"] is True
    assert "README.md" not in manifest.files
    assert verify(target).ok
    with pytest.raises(FetchError, match=r"HF_HUB_OFFLINE is set and .* does not exist"):
        fetch(entry(), directory=tmp_path / "empty")
    (target / "onnx" / "embed_tokens.bin").unlink()
    with pytest.raises(
        FetchError, match=re.escape("lacks onnx/embed_tokens.bin, which every variant")
    ):
        fetch(entry(), variant="fp32", directory=target)
