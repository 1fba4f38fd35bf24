"""`models/lfm_toolchain/catalog.yaml` and `lfm-satellite model list`: the shipped entries, how the catalog
is found without importing `models`, and errors that name the file and key."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from satellite.cli import main
from satellite.modeldir.catalog import (
    CatalogError,
    catalog_path,
    find_entry,
    load_catalog,
)
from tests.paths import REPO


def test_shipped_catalog_entries() -> None:
    entries = {e.name: e for e in load_catalog(catalog_path())}
    assert list(entries) == [
        "LiquidAI/LFM2.5-Audio-1.5B-ONNX",
        "LiquidAI/LFM2.5-Audio-1.5B",
        "LiquidAI/LFM2-Audio-1.5B",
        "tiny",
    ]
    onnx = entries["LiquidAI/LFM2.5-Audio-1.5B-ONNX"]
    assert onnx.kind == "onnx" and onnx.default_variant == "q4"
    assert list(onnx.variants) == ["q4", "fp16", "fp32"], "q8 files were never seen on the hub"
    assert onnx.revision == "62318d95ddf42a65e742cdd6fd33df91874a801d"
    assert onnx.known_files["onnx/decoder_q4.onnx_data"].size == 1_217_650_688
    assert onnx.known_files["onnx/embed_tokens.bin"].size == 65536 * 2048 * 4
    assert onnx.variants["q4"]["depthformer"] == "onnx/vocoder_depthformer_q4.onnx"
    assert onnx.variants["fp32"]["decoder"] == "onnx/decoder.onnx"
    for variant, graphs in onnx.variants.items():
        suffix = "" if variant == "fp32" else f"_{variant}"
        assert all(f.endswith(f"{suffix}.onnx") for f in graphs.values())
        assert set(graphs) == {
            "decoder",
            "audio_encoder",
            "audio_embedding",
            "depthformer",
            "audio_detokenizer",
        }
    assert "onnx/embed_tokens.bin" in onnx.files and "config.json" in onnx.files
    assert entries["LiquidAI/LFM2-Audio-1.5B"].family == "lfm2-audio"
    assert entries["LiquidAI/LFM2-Audio-1.5B"].kind == "checkpoint"
    assert entries["tiny"].build == "lfm-satellite model build --size tiny"


def test_catalog_is_found_without_importing_the_toolchain() -> None:
    code = (
        "import sys\n"
        "from satellite.modeldir.catalog import catalog_path, load_catalog\n"
        "print(len(load_catalog(catalog_path())), catalog_path(), 'lfm_toolchain' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/"
    )
    count, path, imported = result.stdout.split()
    assert count == "4"
    assert Path(path) == REPO / "models" / "lfm_toolchain" / "catalog.yaml"
    assert imported == "False"


def test_list_prints_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "VARIANTS", "DESCRIPTION"]
    rows = {line.split()[0]: line for line in lines[1:5]}
    assert "onnx" in rows["LiquidAI/LFM2.5-Audio-1.5B-ONNX"]
    assert "q4* fp16 fp32" in rows["LiquidAI/LFM2.5-Audio-1.5B-ONNX"]
    assert "checkpoint" in rows["LiquidAI/LFM2-Audio-1.5B"]
    assert "build" in rows["tiny"] and "fp32*" in rows["tiny"]
    assert main(["model", "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["kind"] for d in data] == ["onnx", "checkpoint", "checkpoint", "build"]


def test_catalog_override_and_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "catalog.yaml"
    bad.write_text(
        "format_version: 1\nmodels:\n  - name: x\n    kind: wheel\n    family: lfm2-audio\n"
    )
    with pytest.raises(CatalogError, match=r"models\[0\] \(x\)\.kind: 'wheel' is not one of"):
        load_catalog(bad)
    assert main(["model", "list", "--catalog", str(bad)]) == 2
    assert f"{bad}: models[0] (x).kind" in capsys.readouterr().err
    bad.write_text("models: [\n")
    monkeypatch.setenv("LFM_SATELLITE_CATALOG", str(bad))
    assert catalog_path() == bad
    with pytest.raises(CatalogError, match=rf"{bad}:\d+:\d+: invalid YAML"):
        load_catalog(catalog_path())
    with pytest.raises(CatalogError, match="model catalog not found"):
        load_catalog(tmp_path / "none.yaml")


def test_find_entry_by_name() -> None:
    entries = load_catalog(catalog_path())
    assert find_entry(entries, "lfm2.5-audio-1.5b-onnx").name == "LiquidAI/LFM2.5-Audio-1.5B-ONNX"
    with pytest.raises(
        CatalogError, match=re.escape("did you mean LiquidAI/LFM2.5-Audio-1.5B-ONNX")
    ):
        find_entry(entries, "LiquidAI/LFM2.5-Audio-1.5B-ONX")


@pytest.mark.parametrize(
    "known, message",
    [
        ("[1]", r"known_files: must be a mapping"),
        ("{a.onnx: {size: -1}}", r"known_files\.a\.onnx\.size: -1 must be a whole number"),
        ("{a.onnx: {sha256: abc}}", r"known_files\.a\.onnx\.sha256: 'abc' must be 64 hex"),
        ("{a.onnx: {md5: x}}", r"known_files\.a\.onnx: must be a mapping with size and/or"),
    ],
)
def test_known_files_are_checked(tmp_path: Path, known: str, message: str) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "format_version: 1\nmodels:\n  - name: x\n    kind: onnx\n    family: lfm2-audio\n"
        "    description: d\n    repo: o/x\n    revision: abc\n"
        "    variants: {q4: {graphs: {decoder: a.onnx}}}\n"
        f"    known_files: {known}\n"
    )
    with pytest.raises(CatalogError, match=message):
        load_catalog(path)
