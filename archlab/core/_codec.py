"""One JSON codec: plain Python data <-> JSON values, with tags for what JSON cannot hold.

Both the run store (spec, settings, metrics) and the checkpoints (optimizer, RNG and loop
state) write through it, so the two agree on what a non-finite float or a tuple looks like.

Tags (a one-key object):
    {"$float": "nan" | "inf" | "-inf"}   non-finite floats (JSON has none)
    {"$tuple": [...]}                     a tuple, where `exact` (lists stay lists)
    {"$items": [[key, value], ...]}       a mapping that would read as a tag; where `exact`,
                                          also one with non-string keys
    {"$bytes": "<base64>"}                bytes

`exact=False` (the store) writes tuples as lists and keys as strings, as plain JSON readers
expect; `exact=True` (checkpoints) round-trips types exactly. A caller adds its own tags
(the checkpoint's `$tensor`) with `other=` when encoding and `tag=` when decoding.

    >>> text = dumps({"loss": float("inf"), "shape": (1, 2)}, exact=True)
    >>> text
    '{"loss":{"$float":"inf"},"shape":{"$tuple":[1,2]}}'
    >>> loads(text)
    {'loss': inf, 'shape': (1, 2)}
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

TAGS = frozenset({"$float", "$tuple", "$items", "$bytes"})
_NOT_FINITE = ("nan", "inf", "-inf")


class CodecError(ValueError):
    """A value that cannot be encoded, or JSON that cannot have come from `encode`; the
    caller turns it into its own one-line error (the message names the value's path)."""


def encode(obj: Any, where: str = "value", *, exact: bool = False,
           other: Callable[[Any, str], Any] | None = None, reserved: frozenset[str] = TAGS) -> Any:
    """`obj` as a JSON-ready value; `other(obj, where)` encodes types this codec does not know
    (return NotImplemented to refuse); `reserved` are the tags a plain mapping must not look like."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"$float": repr(obj)}
    if isinstance(obj, bytes):
        return {"$bytes": base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, tuple | list):
        if all(type(v) is int for v in obj):  # fast path: an RNG state is 1,250 ints
            items = list(obj)
        else:
            items = [encode(v, f"{where}[{i}]", exact=exact, other=other, reserved=reserved)
                     for i, v in enumerate(obj)]
        return {"$tuple": items} if exact and isinstance(obj, tuple) else items
    if isinstance(obj, Mapping):
        looks_like_a_tag = len(obj) == 1 and next(iter(obj)) in reserved
        if not looks_like_a_tag and (not exact or all(isinstance(k, str) for k in obj)):
            return {str(k): encode(v, f"{where}.{k}", exact=exact, other=other, reserved=reserved)
                    for k, v in obj.items()}
        return {"$items": [[encode(k, f"{where}.key{i}", exact=exact, other=other, reserved=reserved),
                            encode(v, f"{where}.{k}", exact=exact, other=other, reserved=reserved)]
                           for i, (k, v) in enumerate(obj.items())]}
    if other is not None:
        out = other(obj, where)
        if out is not NotImplemented:
            return out
    item = getattr(obj, "item", None)  # numpy scalars, 0-d tensors
    if callable(item) and getattr(obj, "ndim", None) == 0:
        return encode(item(), where, exact=exact, other=other, reserved=reserved)
    raise CodecError(f"{where}: cannot encode a value of type {type(obj).__name__}. Received: {obj!r:.80}")


def decode(obj: Any, where: str = "value", *, tag: Callable[[str, Any, str], Any] | None = None) -> Any:
    """Inverse of `encode`; `tag(name, value, where)` decodes a caller's own tags (return
    NotImplemented for one it does not know). JSON that `encode` cannot have written raises
    CodecError."""
    if isinstance(obj, list):
        return [decode(v, f"{where}[{i}]", tag=tag) for i, v in enumerate(obj)]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        [(name, value)] = obj.items()
        if name == "$float":
            if value not in _NOT_FINITE:
                raise CodecError(f"{where}: $float must be 'nan', 'inf' or '-inf'. Received: {value!r:.40}")
            return float(value)
        if name in ("$tuple", "$items") and not isinstance(value, list):
            raise CodecError(f"{where}: {name} must hold a list. Received: {type(value).__name__}")
        if name == "$tuple":
            return tuple(decode(v, f"{where}[{i}]", tag=tag) for i, v in enumerate(value))
        if name == "$items":
            out = {}
            for i, pair in enumerate(value):
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise CodecError(f"{where}: item {i} must be a [key, value] pair")
                key = decode(pair[0], f"{where}.key{i}", tag=tag)
                try:
                    out[key] = decode(pair[1], f"{where}.{key}", tag=tag)
                except TypeError:  # an unhashable key
                    raise CodecError(f"{where}: key {i} is not a valid key") from None
            return out
        if name == "$bytes":
            try:
                return base64.b64decode(value, validate=True)
            except (TypeError, ValueError):
                raise CodecError(f"{where}: $bytes is not base64") from None
        if tag is not None and name.startswith("$"):
            out = tag(name, value, where)
            if out is not NotImplemented:
                return out
    return {k: decode(v, f"{where}.{k}", tag=tag) for k, v in obj.items()}


def dumps(obj: Any, where: str = "value", **options: Any) -> str:
    """Compact JSON text of `encode(obj, where, **options)` (never NaN literals)."""
    return json.dumps(encode(obj, where, **options), allow_nan=False, separators=(",", ":"))


def loads(text: str, where: str = "value", **options: Any) -> Any:
    """`decode(json.loads(text))`; malformed JSON raises CodecError too."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CodecError(f"{where}: not valid JSON ({exc})") from None
    return decode(value, where, **options)
