"""A command's config: found, loaded, its logging applied unless the command line said
otherwise, its warnings printed. Every command module of `satellite.cli` uses it."""

from __future__ import annotations

import argparse
import logging
import sys

from satellite.config import LoadedConfig, find_config_file, load_config
from satellite.logs import setup_logging

_LOG = logging.getLogger("satellite.cli")


def load_for_command(args: argparse.Namespace, explicit: str | None = None) -> LoadedConfig:
    """Find and load the config for a command; apply its logging settings unless the command
    line overrode them; print its warnings."""
    path = find_config_file(explicit or args.config)
    loaded = load_config(path)
    for warning in loaded.warnings:
        print(warning, file=sys.stderr)
    log = loaded.settings.logging
    if args.log_level is None and args.verbose == 0:
        setup_logging(log.level, args.log_format or log.format, log.file)
    elif args.log_format is None or log.file:
        level = args.log_level or {0: log.level, 1: "info"}.get(args.verbose, "debug")
        setup_logging(level, args.log_format or log.format, log.file)
    if path is None:
        _LOG.info("no config file found; using the defaults")
    else:
        _LOG.info("config: %s", path)
    return loaded
