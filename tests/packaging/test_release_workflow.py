"""The release workflow (.github/workflows/release.yml) and its local half, script/build-dist:
actionlint passes the workflow (and fails a broken copy), its jobs, triggers and matrices are
the ones the release needs, and script/build-dist builds an sdist and a wheel of this version
holding the satellite and the toolchain's catalog, or refuses when the versions differ."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

import satellite
from tests.paths import REPO

WORKFLOW = REPO / ".github" / "workflows" / "release.yml"
BUILD_DIST = REPO / "script" / "build-dist"
# the venv's actionlint (the test extra), beside the python running the tests
ACTIONLINT = Path(sys.executable).parent / "actionlint"


def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    if not ACTIONLINT.exists():
        pytest.fail(f"{ACTIONLINT} is missing: install the test extra (script/setup)")
    return subprocess.run(
        [str(ACTIONLINT), "-no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def load_workflow() -> dict[str, Any]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(workflow, dict)
    return workflow


def test_actionlint_passes_the_workflow() -> None:
    result = actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_fails_a_broken_copy(tmp_path: Path) -> None:
    text = WORKFLOW.read_text()
    assert "needs: [test, dist]" in text
    broken = tmp_path / "release.yml"
    broken.write_text(text.replace("needs: [test, dist]", "needs: [test, dist, no-such-job]"))
    result = actionlint(broken)
    assert result.returncode != 0
    assert "no-such-job" in result.stdout


def test_the_workflow_runs_on_v_tags_and_by_hand() -> None:
    workflow = load_workflow()
    # PyYAML reads the bare key `on` as True (YAML 1.1)
    triggers = workflow.get("on", workflow.get(True))
    assert triggers["push"]["tags"] == ["v*"]
    assert "workflow_dispatch" in triggers


def test_the_jobs_and_their_order() -> None:
    jobs = load_workflow()["jobs"]
    assert {"test", "dist", "publish", "addon", "container"} <= set(jobs)
    assert set(jobs["publish"]["needs"]) >= {"test", "dist"}
    assert jobs["publish"]["permissions"] == {"id-token": "write"}
    assert jobs["publish"]["environment"]["name"] == "pypi"
    assert "release" in jobs["addon"]["needs"]  # the tag archive it installs is released
    assert any("script/test" in step.get("run", "") for step in jobs["test"]["steps"])
    assert any("script/build-dist" in step.get("run", "") for step in jobs["dist"]["steps"])


def test_the_image_jobs_build_both_architectures() -> None:
    jobs = load_workflow()["jobs"]
    assert set(jobs["addon"]["strategy"]["matrix"]["arch"]) == {"amd64", "aarch64"}
    builder = next(
        s for s in jobs["addon"]["steps"] if "home-assistant/builder" in s.get("uses", "")
    )
    assert "--target /data/integration/lfm_satellite" in builder["with"]["args"]
    push = next(
        s for s in jobs["container"]["steps"] if "docker/build-push-action" in s.get("uses", "")
    )
    assert set(push["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert push["with"]["file"] == "integration/docker/Dockerfile"


def test_every_action_is_pinned() -> None:
    for name, job in load_workflow()["jobs"].items():
        for step in job["steps"]:
            if "uses" in step:
                action, _, ref = step["uses"].partition("@")
                assert ref, f"{name}: {action} is not pinned"
                assert ref not in ("main", "master"), f"{name}: {action}@{ref}"


# a full build (about 10 s, setuptools fetched into build's isolated environment): tier 2
@pytest.mark.slow
def test_build_dist_builds_this_version(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    result = subprocess.run(
        [str(BUILD_DIST), str(out)], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    version = satellite.__version__
    wheel = out / f"lfm_satellite-{version}-py3-none-any.whl"
    sdist = out / f"lfm_satellite-{version}.tar.gz"
    assert sorted(p.name for p in out.iterdir()) == sorted([wheel.name, sdist.name])
    assert f"lfm-satellite {version}" in result.stdout
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        metadata = whl.read(f"lfm_satellite-{version}.dist-info/METADATA").decode()
    assert {"satellite/__init__.py", "satellite/cli/__init__.py"} <= names
    assert "lfm_toolchain/catalog.yaml" in names
    assert f"\nVersion: {version}\n" in metadata
    with tarfile.open(sdist) as tar:
        member = tar.extractfile(f"lfm_satellite-{version}/PKG-INFO")
        assert member is not None
        assert f"\nVersion: {version}\n" in member.read().decode()


def test_build_dist_refuses_differing_versions(tmp_path: Path) -> None:
    # a copy of the script in a tree of its own: it refuses before it builds anything
    (tmp_path / "script").mkdir()
    shutil.copy2(BUILD_DIST, tmp_path / "script" / "build-dist")
    (tmp_path / "satellite").mkdir()
    (tmp_path / "satellite" / "__init__.py").write_text('__version__ = "9.9.9"\n')
    addon = tmp_path / "integration" / "lfm_satellite"
    addon.mkdir(parents=True)
    addon.joinpath("config.yaml").write_text('name: LFM Satellite\nversion: "9.9.8"\n')
    result = subprocess.run(
        [str(tmp_path / "script" / "build-dist")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "version mismatch" in result.stderr
    assert "9.9.9" in result.stderr and "9.9.8" in result.stderr
    assert not (tmp_path / "dist").exists()
