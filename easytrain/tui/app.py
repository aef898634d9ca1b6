"""The wizard app: `easytrain` with no command.

`create_app()` builds it (run_app and the tests use the same factory);
`run_app()` runs it and, only after Textual has fully exited, does what the
person chose: start training, run a queue, or print the command for later.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from textual import work
from textual.app import App
from textual.binding import Binding

from easytrain.tui.confirm_screen import ConfirmScreen
from easytrain.tui.flow import Outcome, Wizard


class WizardApp(App[Optional[Outcome]]):
    CSS_PATH = "wizard.tcss"
    TITLE = "easytrain"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def __init__(self, *, route: Optional[str] = None, path: Optional[str] = None,
                 base_dir: Optional[Path] = None) -> None:
        super().__init__()
        self.route = route
        self.start_path = path
        self.wizard = Wizard(self, Path(base_dir) if base_dir else Path.cwd())

    def on_mount(self) -> None:
        self.run_flow()

    @work(exclusive=True, group="wizard")
    async def run_flow(self) -> None:
        outcome = await self.wizard.run(self.route, self.start_path)
        self.exit(outcome)

    async def action_quit(self) -> None:
        if isinstance(self.screen, ConfirmScreen):
            return

        def decided(quit_now: Optional[bool]) -> None:
            if quit_now:
                self.exit(Outcome("quit"))

        self.push_screen(ConfirmScreen("Quit the wizard? Answers that are not saved are lost.",
                                       yes="Quit", no="Stay"), decided)


def create_app(*, route: Optional[str] = None, path: Optional[str] = None,
               base_dir: Optional[Path] = None) -> WizardApp:
    """The wizard; ``route`` ("new", "train", "edit", "queue") skips the start screen."""
    from easytrain.textsafe import escape_in_rendered_text

    escape_in_rendered_text()  # captions, tags and file names never reach the terminal raw
    return WizardApp(route=route, path=path, base_dir=base_dir)


def run_app() -> int:
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
