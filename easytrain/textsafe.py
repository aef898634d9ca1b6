"""Text from files (captions, file names, answers values) made safe to print in a terminal.

A caption holding ``ESC ] 0 ; title BEL`` retitles the terminal, ``ESC [ 2 J``
clears it; a file name with bytes that are not UTF-8 cannot even be encoded
for the screen. Everything that shows such text goes through ``safe_text``
(multi-line output) or ``safe_line`` (one line): control characters become
visible escapes such as ``\\x1b``, undecodable bytes ``\\xff``.
"""

from __future__ import annotations

import re

# C0 controls (keeping tab and newline), DEL, C1 controls, and lone surrogates (undecodable file-name bytes).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_UNSAFE_IN_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code == 0x0A:
        return "\\n"
    if code == 0x09:
        return "\\t"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: object) -> str:
    """``text`` with every control character escaped except newlines and tabs."""
    value = str(text)
    return _UNSAFE.sub(_escape, value) if _UNSAFE.search(value) else value


def safe_line(text: object) -> str:
    """``text`` on one line: newlines and tabs escaped too."""
    value = str(text)
    return _UNSAFE_IN_LINE.sub(_escape, value) if _UNSAFE_IN_LINE.search(value) else value


def escape_in_rendered_text() -> None:
    """Make Rich and Textual show control characters as escapes in every text they render (the wizard).

    Both already drop a few (bell, backspace, carriage return) through one translate table each, used
    for every Text and Content they build; ESC and the other controls are added to those tables here,
    so no caption, tag or file name in any widget can send an escape sequence to the terminal.
    """
    import importlib

    table = {code: _escape(re.match(".", chr(code), re.DOTALL))
             for code in [*range(0x00, 0x09), *range(0x0E, 0x20), *range(0x7F, 0xA0), *range(0xDC80, 0xDD00)]}
    for name in ("rich.control", "textual.content"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        shared = getattr(module, "_CONTROL_STRIP_TRANSLATE", None)
        if isinstance(shared, dict):
            shared.update(table)
