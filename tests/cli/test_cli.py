"""The command line: help, version, logging formats, and messages instead of tracebacks."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from satellite import __version__
from satellite.cli import main
from tests.paths import REPO


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "satellite", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd or REPO,
        check=False,
    )


def test_help_lists_every_command_with_one_line() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("check-config", "run", "model"):
        lines = [line for line in result.stdout.splitlines() if line.strip().startswith(command)]
        assert lines and len(lines[0].split()) > 2, f"{command} has no help line"
    model = run_cli("model", "--help")
    for command in ("list", "fetch", "verify", "info"):
        assert f"    {command}" in model.stdout


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"lfm-satellite {__version__}"


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "lfm-satellite"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == f"lfm-satellite {__version__}"


def test_user_mistakes_are_messages_not_tracebacks(tmp_path: Path) -> None:
    cases = [
        (["--config", str(tmp_path / "missing.yaml"), "run", "--dry-run"], "config file not found"),
        (["run"], "lfm-satellite model fetch LiquidAI/LFM2.5-Audio-1.5B-ONNX"),
        (["check-config", str(tmp_path)], "is a directory"),
        (["model", "verify", str(tmp_path / "nowhere")], "nowhere"),
        (["model", "info", str(tmp_path)], "manifest"),
        (["bogus-command"], "invalid choice"),
    ]
    for args, words in cases:
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, result.stderr
        assert words in result.stderr, (args, result.stderr)


def test_run_dry_run_prints_the_plan(tmp_path: Path) -> None:
    config = tmp_path / "satellite.yaml"
    config.write_text("satellite: {name: Kitchen, mode: ha}\nmqtt: {enabled: false}\n")
    result = run_cli("run", "--dry-run", cwd=tmp_path)  # found as ./satellite.yaml
    assert result.returncode == 0, result.stderr
    assert "'Kitchen' in ha mode" in result.stdout
    assert "mqtt        off" in result.stdout
    assert "satellite 0.0.0.0:10700, services 0.0.0.0:10701" in result.stdout


def test_json_log_lines(tmp_path: Path) -> None:
    result = run_cli("--log-format", "json", "-v", "run", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert entries and all({"time", "level", "logger", "message"} <= e.keys() for e in entries)
    assert any("using the defaults" in e["message"] for e in entries)


def test_text_log_is_one_event_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    from satellite.logs import setup_logging

    setup_logging("info", "text")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("satellite.test").exception("first line\nsecond line")
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert " ERROR   satellite.test: first line" in lines[0]
    assert all(line.startswith("    ") for line in lines[1:]), err


def test_log_level_from_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("logging: {level: warning}\n")
    assert main(["--config", str(config), "run", "--dry-run"]) == 0
    assert "config:" not in capsys.readouterr().err
    config.write_text("logging: {level: debug}\n")
    assert main(["--config", str(config), "run", "--dry-run"]) == 0
    assert f"config: {config}" in capsys.readouterr().err


def test_model_build_cli_writes_a_verified_directory(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    result = run_cli("model", "build", "--size", "tiny", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"OK: {out} verified" in result.stdout
    assert run_cli("model", "verify", str(out)).returncode == 0
    again = run_cli("model", "build", "--size", "tiny", "--out", str(out))
    assert again.returncode != 0 and "--overwrite" in again.stderr


def test_model_build_without_toolchain_names_the_extra(tmp_path: Path) -> None:
    """With the toolchain unimportable (a broken install) the command says what is missing
    and how to reinstall."""
    code = (
        "import sys; sys.modules['onnxruntime.quantization'] = None; "
        "from satellite.cli import main; "
        f"sys.exit(main(['model', 'build', '--out', {str(tmp_path / 'x')!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "cannot import 'onnxruntime.quantization" in result.stderr
    assert "pip install --force-reinstall 'lfm-satellite[export]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_cli_starts_without_onnx() -> None:
    """`onnx` (and onnxruntime's quantizer) load only for the model commands that rewrite
    graphs: the daemon's `run` does not pay for them."""
    code = (
        "import sys; import satellite.cli, satellite.engine.model; "
        "print(sorted(m for m in ('onnx', 'onnxruntime.quantization') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
