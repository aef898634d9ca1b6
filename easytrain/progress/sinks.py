"""Combining sinks: one event goes to several consumers, and a broken one never stops training."""

from __future__ import annotations

import logging

from easytrain.train.events import Event, Sink

log = logging.getLogger("easytrain")


def fan_out(*sinks: Sink) -> Sink:
    """A sink that hands each event to every sink in order.

    A sink that raises is logged once, with its traceback, and skipped from
    then on; the others keep receiving events.
    """
    live = list(sinks)

    def send(event: Event) -> None:
        for sink in tuple(live):
            try:
                sink(event)
            except Exception:
                live.remove(sink)
                log.exception("progress output %r failed on %s and is switched off for this run",
                              sink, type(event).__name__)

    return send
