"""Library noise goes to a log file beside the outputs, never onto the screen or into the user's log.

diffusers, transformers and torch speak through Python warnings (a FutureWarning
about a tiny model's sizes, a scheduler's whole config in a deprecation note)
and their own loggers. While a run trains, both are written to `NAME.log` in
the output folder, which the summary lists when anything was written to it.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LIBRARY_LOGGERS = ("py.warnings", "diffusers", "transformers", "accelerate", "torch", "bitsandbytes", "kernels", "PIL")


def library_log_path(output_dir: Path, output_name: str) -> Path:
    return Path(output_dir) / f"{output_name}.log"


@contextmanager
def library_log(path: Path) -> Iterator[Path]:
    """Route library warnings and log records (warning level and up) to ``path`` while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)  # no file unless something is said
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    saved = [(logger, logger.handlers[:], logger.propagate, logger.level) for logger in loggers]
    for logger in loggers:
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    try:
        yield path
    finally:
        logging.captureWarnings(False)
        for logger, handlers, propagate, level in saved:
            logger.handlers = handlers
            logger.propagate = propagate
            logger.setLevel(level)
        handler.close()
