"""Text from files and documents made safe to print: it must not drive the terminal it lands on."""

from __future__ import annotations

# C0 controls (ESC starts the sequences that move the cursor, recolour, retitle the window or, on
# some terminals, write files), DEL, C1 controls, and the bidirectional overrides that make a line
# read differently from what it holds. Each is shown as its escape, so nothing is hidden either.
_HIDDEN = (*range(0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_ONE_LINE = {c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" for c in _HIDDEN}
_ONE_LINE.update({0x0A: "\\n", 0x09: "\\t", 0x0D: "\\r"})
#: A file name that is not valid UTF-8 is stored with each bad byte (0x80-0xFF) as the private-use
#: character U+F700 + byte (see sources.local); shown, it is that byte's escape again.
RAW_BYTE_BASE = 0xF700
_ONE_LINE.update({RAW_BYTE_BASE + b: f"\\x{b:02x}" for b in range(0x80, 0x100)})
_LINES = {c: v for c, v in _ONE_LINE.items() if c not in (0x0A, 0x09)}


def printable(text: str, *, one_line: bool = True) -> str:
    """``text`` with control characters shown as escapes (``\\x1b``); newlines kept unless ``one_line``."""
    return text.translate(_ONE_LINE if one_line else _LINES)
