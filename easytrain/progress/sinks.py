"""Combining sinks: one event goes to several consumers, and a broken one never stops training."""

from __future__ import annotations

import logging

from easytrain.train.events import Event, Sink

log = logging.getLogger("easytrain")


def fan_out(*sinks: Sink) -> Sink:
    """A sink that hands each event to every sink in order.

    A sink that raises is logged once in one line (its traceback goes to a
    report file) and skipped from then on; the others keep receiving events.
    """
    live = list(sinks)

    def send(event: Event) -> None:
        for sink in tuple(live):
            try:
                sink(event)
            except Exception as exc:
                from easytrain.crash import write_report

                live.remove(sink)
                report = write_report(exc, f"progress output on {type(event).__name__}")
                log.error("a progress output (%s) failed on %s and is switched off for this run: %s: %s%s",
                          type(sink).__name__, type(event).__name__, type(exc).__name__, str(exc)[:200],
                          f"; details in {report}" if report else "")

    return send
