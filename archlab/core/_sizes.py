"""One grammar for sizes in bytes, used by every option and variable that takes one
(`inspect --device-memory`, `ARCHLAB_MEMORY_LIMIT`, ...).

    <number> [unit]          the number may have a fraction: 1.5GB, .5GiB
    K M G T  (or KB MB ...)  powers of 1000: 8G = 8GB = 8 * 10**9 bytes
    Ki Mi Gi Ti (KiB ...)    powers of 1024: 8Gi = 8GiB = 8 * 2**30 bytes
    B, or no unit            bytes

Letters may be upper or lower case; a space may separate number and unit. The letter alone
counts in powers of 1000, as it does with a B after it (the rule of SI and of Kubernetes
quantities), so `8G` and `8GB` are the same size; only an `i` makes a unit binary.
"""

from __future__ import annotations

import re

from ._errors import ArchlabError, SpecError

_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(i?)b?|(b?))", re.IGNORECASE)
_MAX_BYTES = 2**80  # a yottabyte and a bit: no memory is larger, and the number stays printable


def parse_size(text: str | int | float, where: str = "size", *, require_unit: bool = False,
               error: type[ArchlabError] = SpecError) -> int:
    """Bytes in `text`: '80GB' (80 * 10**9), '24GiB' (24 * 2**30), '8G' (= 8GB), '1000'.

    `require_unit` refuses a bare number (where a unit is easy to forget and bytes are
    surely not meant, as in `--device-memory 80`). Errors are one line, raised as `error`.

    >>> parse_size("8G"), parse_size("8GiB"), parse_size("512 MB"), parse_size(4096)
    (8000000000, 8589934592, 512000000, 4096)
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        if not 0 <= text < _MAX_BYTES:
            raise error(f"{where}: expected a size in bytes from 0 to 2**80. Received: {text!r}")
        return int(text)
    m = _SIZE.fullmatch(text.strip()) if isinstance(text, str) else None
    in_bytes = "1000000B" if require_unit else "1000000"
    if not m:
        raise error(f"{where}: expected a size such as 80GB (10**9 bytes), 24GiB (2**30 bytes) or "
                    f"{in_bytes} (bytes). Received: {str(text)[:40]!r}")
    number, letter, binary, b = m.groups()
    if require_unit and not letter and not b:
        raise error(f"{where}: {text.strip()!r} has no unit; write e.g. 80GB (10**9 bytes), "
                    f"80GiB (2**30 bytes) or {text.strip()}B (bytes)")
    power = " kmgt".index((letter or " ").lower())
    value = float(number) * (1024 if binary else 1000) ** power
    if value >= _MAX_BYTES:
        raise error(f"{where}: {text.strip()!r} is larger than any memory (at most 2**80 bytes)")
    return int(value)


def format_size(n: int | float) -> str:
    """Bytes in binary units, labelled as such: '1.5 GiB', '512 KiB', '12 B'.

    >>> format_size(3 << 29), format_size(12)
    ('1.5 GiB', '12 B')
    """
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"
