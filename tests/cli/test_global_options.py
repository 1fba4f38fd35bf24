"""The global options (-c/--config, -v, --log-level, --log-format) go before or after the
command, nested commands included; given in both places, the one after the command wins."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from satellite.cli import _subcommands, build_parser, main


def config(path: Path, name: str) -> Path:
    path.write_text(f"satellite: {{name: {name}, mode: ha}}\nmqtt: {{enabled: false}}\n")
    return path


def test_config_after_the_command_is_the_same_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./satellite.yaml to find instead
    monkeypatch.delenv("LFM_SATELLITE_CONFIG", raising=False)
    file = config(tmp_path / "kitchen.yaml", "Kitchen")
    assert main(["-c", str(file), "run", "--dry-run"]) == 0
    before = capsys.readouterr().out
    assert main(["run", "-c", str(file), "--dry-run"]) == 0
    after = capsys.readouterr().out
    assert main(["run", "--dry-run", "--config", str(file)]) == 0
    last = capsys.readouterr().out
    assert "'Kitchen' in ha mode" in before
    assert before == after == last


def test_after_the_command_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LFM_SATELLITE_CONFIG", raising=False)
    first = config(tmp_path / "first.yaml", "First")
    second = config(tmp_path / "second.yaml", "Second")
    assert main(["-c", str(first), "run", "-c", str(second), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "'Second'" in out and "'First'" not in out
    # given only before, the command's parser leaves it alone (no default of its own)
    args = build_parser().parse_args(["-c", "a.yaml", "--log-level", "info", "-vv", "run"])
    given = (args.config, args.log_level, args.verbose, args.log_format)
    assert given == ("a.yaml", "info", 2, None)
    args = build_parser().parse_args(
        ["--log-level", "info", "-vv", "run", "--log-level", "error", "-v", "--log-format", "json"]
    )
    assert (args.log_level, args.verbose, args.log_format) == ("error", 1, "json")
    # none given: the top-level defaults
    args = build_parser().parse_args(["run"])
    assert (args.config, args.verbose, args.log_level, args.log_format) == (None, 0, None, None)


def test_nested_commands_take_them_after_their_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.yaml"
    for argv in (
        ["model", "fetch", "NAME", "-c", str(missing)],
        ["model", "-c", str(missing), "fetch", "NAME"],
        ["bench", "echo", "--config", str(missing), "--log-level", "debug"],
    ):
        args = build_parser().parse_args(argv)
        assert args.config == str(missing), argv
    # and the command reads the file given after it
    assert main(["mqtt", "unregister", "-c", str(missing)]) != 0
    assert "config file not found" in capsys.readouterr().err


def test_every_command_help_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["run", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "-c FILE, --config FILE" in out and "global options" in out
    commands = _subcommands(build_parser())
    assert len(commands) > 20
    for command in commands:
        text = command.format_help()
        for option in ("--config FILE", "--verbose", "--log-level", "--log-format"):
            assert option in text, (command.prog, option)


def test_only_the_top_level_has_defaults() -> None:
    """A command's parser must not set what was not given after it (SUPPRESS), or it would
    overwrite a value given before the command."""
    for command in _subcommands(build_parser()):
        for action in command._actions:
            if action.dest in ("config", "verbose", "log_level", "log_format"):
                assert action.default is argparse.SUPPRESS, (command.prog, action.dest)
