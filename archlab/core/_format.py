"""Formatting user data for error messages: short, and never failing.

An error message quotes what it received. That value is untrusted: a 5,000-digit integer
cannot be turned into text at all (Python refuses beyond 4,300 digits), and a list of a
million items would make a message of megabytes. `brief` abridges both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MAX_ITEMS = 6
_MAX_TEXT = 60


def brief(value: Any, limit: int = 200) -> str:
    """A repr of plain data for an error message, at most about `limit` characters.

    >>> brief(10 ** 5000)
    '<a 5001-digit integer>'
    >>> brief(list(range(100)))
    '[0, 1, 2, 3, 4, 5, ... (100 items)]'
    """
    text = _brief(value, 0)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _brief(value: Any, depth: int) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        bits = value.bit_length()
        if bits > 100:  # ~30 digits: beyond that the digits say nothing, and may not print
            digits = int(bits * 0.30103) + 1
            return f"<a {'negative ' if value < 0 else ''}{digits}-digit integer>"
        return repr(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT] + "...")
    if depth >= 3:
        return "..."
    if isinstance(value, Mapping):
        items = [f"{_brief(k, depth + 1)}: {_brief(v, depth + 1)}"
                 for _, (k, v) in zip(range(_MAX_ITEMS), value.items(), strict=False)]
        more = f", ... ({len(value)} keys)" if len(value) > _MAX_ITEMS else ""
        return "{" + ", ".join(items) + more + "}"
    if isinstance(value, list | tuple):
        items = [_brief(v, depth + 1) for v in value[:_MAX_ITEMS]]
        more = f", ... ({len(value)} items)" if len(value) > _MAX_ITEMS else ""
        return "[" + ", ".join(items) + more + "]"
    try:
        return _brief(repr(value), depth)[1:-1]
    except Exception:  # noqa: BLE001 - a message must not fail on what it quotes
        return f"<{type(value).__name__}>"
