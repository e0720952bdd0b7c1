"""Number and shape formatting shared by the commands."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..spec import parse_assignment


def human(n: float, unit: str = "", base: int = 1000) -> str:
    """1234567 -> '1.23 M'; with base 1024 and unit 'B' -> '1.18 MiB'."""
    prefixes = ["", "K", "M", "G", "T", "P", "E"] if base == 1000 else ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
    value, i = float(n), 0
    while abs(value) >= base and i < len(prefixes) - 1:
        value /= base
        i += 1
    if i == 0:
        return f"{int(value) if value == int(value) else value:g} {unit}".rstrip()
    return f"{value:.3g} {prefixes[i]}{unit}"


def nbytes(n: float) -> str:
    return human(n, "B", 1024)


def shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def parse_vars(assignments: list[str] | None) -> dict:
    return dict(parse_assignment(a) for a in assignments or [])


def when(timestamp: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def inputs_text(inputs: Mapping[str, Any], shape: tuple[int, ...]) -> str:
    """"input (1, 8, 8)", or for several named inputs "inputs image (1, 8, 8) + question (6,) long"."""
    if not inputs:
        return f"input {shape_text(shape)}"
    parts = [f"{n} {shape_text(tuple(d['shape']))}{'' if d['dtype'] == 'float' else ' ' + d['dtype']}"
             for n, d in inputs.items()]
    return "inputs " + " + ".join(parts)
