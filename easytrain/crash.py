"""What the user sees when easytrain itself fails: one line, and the details in a file.

A traceback on the screen reads as "the user did something wrong" and buries
the message that matters. Unexpected errors are written, with their traceback,
to a report file that the one line names; set EASYTRAIN_DEBUG=1 to get the
traceback on the screen instead (for developers).
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Optional

from easytrain.textsafe import safe_line


def debugging() -> bool:
    return os.environ.get("EASYTRAIN_DEBUG", "") not in ("", "0")


def write_report(exc: BaseException, what: str = "") -> Optional[Path]:
    """The traceback of ``exc`` in a new file under the temp folder; None when that cannot be written."""
    try:
        folder = Path(tempfile.gettempdir())
        path = folder / f"easytrain-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
        text = (f"easytrain failed unexpectedly{' (' + what + ')' if what else ''}\n\n"
                + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        path.write_text(text, encoding="utf-8", errors="backslashreplace")
        return path
    except Exception:  # noqa: BLE001 - reporting must never raise in its turn
        return None


def unexpected_line(exc: BaseException, what: str = "") -> str:
    """One line for an unexpected error: its type and message, and where the details are."""
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    report = write_report(exc, what)
    where = f"; details in {report}" if report else ""
    return safe_line(f"unexpected error {type(exc).__name__}{': ' + first if first else ''}{where} "
                     "(please report it with that file)")
