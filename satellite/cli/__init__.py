"""The `lfm-satellite` command: subcommands, global options, and the one place where errors
become messages and exit codes (never a traceback for a user's mistake)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from satellite import __version__
from satellite.cli.loading import load_for_command
from satellite.config import ConfigError, redacted
from satellite.errors import UserError
from satellite.logs import setup_logging
from satellite.settings import Settings

_LOG = logging.getLogger("satellite.cli")

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lfm-satellite",
        description="Local voice satellite for Home Assistant running LFM2-Audio on ONNX Runtime.",
        epilog="Config file search order: --config, $LFM_SATELLITE_CONFIG, ./satellite.yaml, "
        "/etc/lfm-satellite/config.yaml. -c, -v, --log-level and --log-format go before or after "
        "COMMAND; given in both places, the one after it wins. "
        "Run `lfm-satellite COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"lfm-satellite {__version__}")
    add_global_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    commands.required = True

    check = commands.add_parser(
        "check-config",
        help="check a config file and print the effective settings",
        description="Check a config file. Prints the effective settings (secrets masked) and "
        "exits 0, or prints one line per problem (file:line:column: key: what is wrong) and exits 1.",
    )
    check.add_argument("file", nargs="?", help="config file; default: the search order")
    check.add_argument(
        "--example",
        action="store_true",
        help="print a complete example config with every key documented",
    )
    check.set_defaults(handler=cmd_check_config)

    run = commands.add_parser(
        "run",
        help="run the satellite daemon",
        description="Run the satellite with the config file's settings.",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="check the config and print what would run, then exit",
    )
    run.add_argument(
        "--model",
        metavar="DIR|NAME",
        help="model directory or catalog name (default: the config's `model` section)",
    )
    run.add_argument(
        "--fetch",
        action="store_true",
        help="fetch the catalog model first if it is not on this machine yet, as `model fetch` "
        "does (the container image starts with it)",
    )
    run.set_defaults(handler=cmd_run)

    from satellite.cli.model import add_model_commands

    add_model_commands(commands)

    from satellite.cli.engine import add_engine_commands

    add_engine_commands(commands)

    from satellite.cli.bench import add_bench_commands

    add_bench_commands(commands)

    from satellite.cli.audio import add_audio_commands

    add_audio_commands(commands)

    from satellite.cli.mqtt import add_mqtt_commands

    add_mqtt_commands(commands)

    from satellite.cli.safety import add_safety_commands

    add_safety_commands(commands)

    from satellite.cli.demo import add_demo_command

    add_demo_command(commands)
    for command in _subcommands(parser):
        add_global_options(
            command.add_argument_group(
                "global options",
                "also accepted before the command; given in both places, the one here wins",
            ),
            after_command=True,
        )
    return parser


def add_global_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, after_command: bool = False
) -> None:
    """The options every command takes, before or after its name. After it their default is
    SUPPRESS: a command's parser then sets only what was given there, which replaces what was
    given before the command, and the top-level defaults stay for the rest."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if after_command else value

    parser.add_argument(
        "-c", "--config", metavar="FILE", default=default(None), help="config file (YAML)"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default(0),
        help="more log output (-v: info, -vv: debug)",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=default(None),
        help="log level (overrides -v and the config)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=default(None),
        help="log lines as text or JSON (overrides the config)",
    )


def _subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every command's parser under `parser`, nested ones (`model fetch`) included."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                if all(command is not seen for seen in found):  # an alias names it twice
                    found += [command, *_subcommands(command)]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = args.log_level or {0: "warning", 1: "info"}.get(args.verbose, "debug")
    setup_logging(level, args.log_format or "text")
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return err.exit_code
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        where = f" writing {err.filename}" if err.filename else ""
        print(
            f"error: no space left on the device{where}: free some space and run the command "
            "again (the model commands keep no half-written file)",
            file=sys.stderr,
        )
        return 1


def cmd_check_config(args: argparse.Namespace) -> int:
    if args.example:
        from satellite.config_docs import example_yaml

        print(example_yaml(), end="")
        return 0
    loaded = load_for_command(args, args.file)
    origin = str(loaded.source) if loaded.source else "defaults (no config file found)"
    print(f"# effective settings from {origin}")
    print(yaml.safe_dump(redacted(loaded.settings), sort_keys=False, allow_unicode=True), end="")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    loaded = load_for_command(args)
    s = loaded.settings
    plan = [
        f"satellite   {s.satellite.name!r} in {s.satellite.mode} mode"
        + (f", area {s.satellite.area!r}" if s.satellite.area else ""),
        f"audio       {s.audio.backend} backend, capture {s.audio.input_rate} Hz x{s.audio.input_channels}, "
        f"playback {s.audio.output_rate} Hz",
        f"wake word   {s.wake.model} (sensitivity {s.wake.sensitivity})",
        f"model       {args.model or s.model.directory or s.model.name} [{s.model.variant}] on "
        f"{', '.join(s.model.providers)}",
        f"wyoming     satellite {s.wyoming.satellite_host}:{s.wyoming.satellite_port}"
        + (
            f", services {s.wyoming.services_host}:{s.wyoming.services_port}"
            if s.wyoming.services_enabled
            else ", services off"
        )
        + (", zeroconf on" if s.wyoming.zeroconf else ", zeroconf off"),
        "mqtt        "
        + (
            f"{s.mqtt.host}:{s.mqtt.port}{' (TLS)' if s.mqtt.tls else ''}"
            if s.mqtt.enabled
            else "off"
        ),
        f"health      every {s.health.interval_seconds:g} s",
    ]
    print("would run:" if args.dry_run else "running:")
    for line in plan:
        print(f"  {line}")
    if args.dry_run:
        return 0
    if args.fetch:
        from satellite.cli.model import fetch_if_missing

        fetch_if_missing(s.model, args.model)
    return asyncio.run(run_daemon(s, args.model))


async def run_daemon(settings: Settings, model: str | None = None) -> int:
    """The daemon until SIGTERM or SIGINT (or the end of a `file` audio source)."""
    from satellite.daemon.core import Daemon
    from satellite.sdnotify import attach

    daemon = Daemon(settings, model=model)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, daemon, signum)
    systemd = attach(daemon)  # READY/STATUS/WATCHDOG/STOPPING when started by systemd
    try:
        await daemon.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if systemd is not None:
            await systemd
    return 0


def _on_signal(daemon: Any, signum: int) -> None:
    _LOG.info("%s: shutting down", signal.Signals(signum).name)
    daemon.stop()


if __name__ == "__main__":
    sys.exit(main())
