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
