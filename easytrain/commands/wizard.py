"""`easytrain` with no command: the Textual wizard, only in an interactive terminal, and what follows it.

The Textual app returns an Outcome; once it has fully exited, ``after_exit``
does what the person chose: start training, run a queue, or print the command
for later.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Optional

from easytrain.errors import UserError
from easytrain.invocation import command

if TYPE_CHECKING:
    from easytrain.tui.flow import Outcome


def no_tty_message() -> str:
    return ("the wizard needs an interactive terminal (stdin and stdout must be a TTY); "
            f"to train without one, use `{command('train', 'FILE')}`")


def interactive() -> bool:
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


MIN_COLUMNS, MIN_ROWS = 12, 6  # below 11 columns Textual's layout fails (range() arg 3 must not be zero)


def too_small_message() -> Optional[str]:
    """Why the terminal is too small for the wizard, or None."""
    import os

    try:  # the terminal itself, as Textual measures it (COLUMNS/LINES in the environment may be stale)
        columns, rows = os.get_terminal_size(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    if columns >= MIN_COLUMNS and rows >= MIN_ROWS:
        return None
    return (f"the terminal is too small for the wizard ({columns}x{rows}; it needs at least {MIN_COLUMNS} columns "
            f"and {MIN_ROWS} rows): make the window bigger, or train from an answers file with "
            f"`{command('train', 'FILE')}`")


def run_wizard() -> int:
    if not interactive():
        raise UserError(no_tty_message())
    small = too_small_message()
    if small:
        raise UserError(small)
    return run_app()


def run_app() -> int:
    """Run the wizard, then, with the terminal ours again, do what the person chose."""
    from easytrain.tui.app import create_app

    app = create_app()
    outcome = app.run()
    if app.return_code:  # Textual printed the error already
        return app.return_code
    return after_exit(outcome)


def after_exit(outcome: Optional[Outcome]) -> int:
    """What happens once the Textual app is gone: the terminal is ours again."""
    if outcome is None or outcome.action == "quit":
        print("easytrain: left the wizard; nothing was started.")
        return 0
    if outcome.action == "exit":
        print(f"Answers saved to {outcome.shown}. Start training later with:\n  {outcome.command}")
        return 0
    if outcome.action == "queue":
        from easytrain.commands.train import run_queue

        print(f"Running the queue in {outcome.shown}", flush=True)
        return run_queue(outcome.path)
    print(f"Answers saved to {outcome.shown}; starting training ({outcome.command})", flush=True)
    try:
        from easytrain.commands.train import run_train

        return run_train([outcome.path])
    except ImportError as exc:  # the trainer's parts are not installed (or not written yet)
        return _training_unavailable(outcome, exc)


def _training_unavailable(outcome: Outcome, exc: ImportError) -> int:
    from easytrain.commands.check import run_check

    print(f"Training is not available yet in this install ({exc}); checking the answers instead.",
          file=sys.stderr)
    return run_check(outcome.path)

