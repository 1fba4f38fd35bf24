"""`lfm-satellite run --fetch` (the container image's command): the configured catalog model is
fetched through huggingface_hub from a hub on 127.0.0.1 when it is not on this machine, and
left alone when it is; a model directory is never fetched."""

from __future__ import annotations

from pathlib import Path

import modeldir_graphs as g
import pytest
from hubserver import serve_hub, write_test_catalog

from satellite.cli.model import fetch_if_missing
from satellite.modeldir.catalog import catalog_path, find_entry, load_catalog
from satellite.settings import ModelSettings

NAME = "LiquidAI/LFM2.5-Audio-1.5B-ONNX"


def test_fetches_once_then_leaves_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "hub" / "repo"
    g.write_hub_repo(repo, {**g.CONFIG, "codebook_size": 2049}, ("q4",))
    pin = find_entry(load_catalog(catalog_path()), NAME).revision
    settings = ModelSettings(name=NAME, variant="q4", models_dir=str(tmp_path / "models"))
    with serve_hub({NAME: repo}, commit=pin) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv(
            "LFM_SATELLITE_CATALOG", str(write_test_catalog(NAME, repo, tmp_path / "c.yaml"))
        )
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        fetch_if_missing(settings, None)
        assert (tmp_path / "models" / NAME / "q4" / "manifest.json").is_file()
        asked = len(hub.gets())
        assert asked > 0
        fetch_if_missing(settings, None)  # there now: the hub is not asked again
        fetch_if_missing(settings, NAME)
        assert len(hub.gets()) == asked
        # a model directory, configured or given, is what runs: nothing to fetch
        fetch_if_missing(ModelSettings(directory=str(tmp_path)), None)
        fetch_if_missing(settings, str(tmp_path))
        assert len(hub.gets()) == asked
