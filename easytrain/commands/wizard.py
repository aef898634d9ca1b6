"""`easytrain` with no command: the Textual wizard, only in an interactive terminal."""

from __future__ import annotations

import sys

from easytrain.errors import UserError
from easytrain.invocation import command

def no_tty_message() -> str:
    return ("the wizard needs an interactive terminal (stdin and stdout must be a TTY); "
            f"to train without one, use `{command('train', 'FILE')}`")


def interactive() -> bool:
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def run_wizard() -> int:
    if not interactive():
        raise UserError(no_tty_message())
    from easytrain.tui.app import run_app

    return run_app()
