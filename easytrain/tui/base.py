"""The base of the wizard's screens: a result is returned once.

Keys typed ahead (Enter pressed twice) can reach a screen that is already
on its way out; a second dismiss would pop the screen below it.
"""

from __future__ import annotations

from typing import TypeVar

from textual.screen import ModalScreen, Screen

ResultType = TypeVar("ResultType")


class _FinishOnce:
    """Mixed into a screen: ``finish`` dismisses with a result the first time only."""

    _finished = False

    def finish(self, result) -> None:
        if self._finished:
            return
        self._finished = True
        self.dismiss(result)


class WizardScreen(_FinishOnce, Screen[ResultType]):
    pass


class WizardModal(_FinishOnce, ModalScreen[ResultType]):
    pass
