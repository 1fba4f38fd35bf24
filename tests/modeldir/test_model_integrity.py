"""Damaged model files are refused at load, naming the file and the repair (issue 16, point
10): flipped bytes in a data file were served (only `model verify` saw them), and a truncated
one was refused with onnxruntime's 800-character message naming another file. Sizes are
checked at every load, checksums once per change of the files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from satellite.engine.model import Model
from satellite.modeldir.integrity import VERIFIED_NAME, DamagedModelError, check_integrity
from satellite.modeldir.manifest import read_manifest
from tests.satellite_support import tiny_model


@pytest.fixture
def model(tmp_path: Path) -> Path:
    out = tmp_path / "tiny"
    shutil.copytree(tiny_model(), out)
    (out / VERIFIED_NAME).unlink(missing_ok=True)
    return out


def _data_file(directory: Path) -> Path:
    manifest = read_manifest(directory)
    name = next(n for n in manifest.files if n.endswith(".onnx_data") and "decoder" in n)
    return directory / name


def test_flipped_bytes_are_refused_naming_the_file(model: Path) -> None:
    path = _data_file(model)
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(DamagedModelError) as caught:
        Model.load(model)
    message = str(caught.value)
    assert str(path) in message and "damaged" in message
    assert f"lfm-satellite model verify {model}" in message


def test_a_truncated_file_is_refused_before_onnxruntime_sees_it(model: Path) -> None:
    path = _data_file(model)
    size = path.stat().st_size
    os.truncate(path, size - 1000)
    with pytest.raises(DamagedModelError) as caught:
        Model.load(model)
    message = str(caught.value)
    assert message.startswith(str(path)) and f"records {size} bytes" in message
    assert "truncated" in message and len(message) < 400


def test_checksums_are_computed_once_per_change(model: Path) -> None:
    manifest = read_manifest(model)
    first = check_integrity(model, manifest)
    assert first.hashed == first.files > 0 and first.remembered
    again = check_integrity(model, manifest)
    assert again.hashed == 0, "a normal start hashes nothing"
    path = _data_file(model)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    touched = check_integrity(model, manifest)
    assert touched.hashed == 1 and touched.hashed_bytes == path.stat().st_size


def test_a_directory_where_the_record_cannot_be_written_still_loads(model: Path) -> None:
    """Stand-in for a read-only directory (the tests run as root, whom permissions do not
    stop): the record's name is taken by a directory, so it cannot be written."""
    (model / VERIFIED_NAME).mkdir()
    manifest = read_manifest(model)
    for _ in range(2):
        result = check_integrity(model, manifest)
        assert result.hashed == result.files and not result.remembered
    Model.load(model)


def test_a_fetched_model_is_told_how_to_fetch_the_file_again(model: Path) -> None:
    manifest = read_manifest(model)
    manifest.source["repo"] = "LiquidAI/LFM2.5-Audio-1.5B-ONNX"
    manifest.write(model)
    os.truncate(_data_file(model), 10)
    with pytest.raises(DamagedModelError, match=r"model fetch LiquidAI/LFM2.5-Audio-1.5B-ONNX"):
        Model.load(model)
