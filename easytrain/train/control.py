"""The only channel back into a running loop: flags polled at step boundaries."""

from __future__ import annotations

import threading


class TrainControl:
    """Set from signal handlers or a UI; read by the loop between steps."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._save_now = threading.Event()
        self.stop_reason = ""

    def request_stop(self, reason: str = "stop requested") -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
        self._stop.set()

    def request_save(self) -> None:
        self._save_now.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def take_save_request(self) -> bool:
        """True once per request to save now."""
        if self._save_now.is_set():
            self._save_now.clear()
            return True
        return False
