"""The base of the wizard's screens: a result is returned once.

Keys typed ahead (Enter pressed twice) can reach a screen that is already
on its way out; a second dismiss would pop the screen below it.
"""

from __future__ import annotations

from typing import TypeVar

from textual.screen import ModalScreen, Screen

ResultType = TypeVar("ResultType")


class WizardScreen(Screen[ResultType]):
    _finished = False

    def finish(self, result: ResultType) -> None:
        if self._finished:
            return
        self._finished = True
        self.dismiss(result)


class WizardModal(ModalScreen[ResultType]):
    _finished = False

    def finish(self, result: ResultType) -> None:
        if self._finished:
            return
        self._finished = True
        self.dismiss(result)
