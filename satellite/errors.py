"""Errors that are the user's to fix: the CLI prints their message, never a traceback."""


class UserError(Exception):
    """A mistake in input the user gave (a file, a flag, a config value); the message says
    what is wrong and where, in a sentence a person can act on."""

    exit_code: int = 2
