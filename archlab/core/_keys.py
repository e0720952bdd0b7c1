"""One content key: a short stable hash of plain data, naming what a run or study is made of.

`compare` tags each fold run with the key of everything that determines it (spec, data,
settings, fold), so a re-run finds and reuses the finished fold; `search` names a study by
the key of its spec, data, objectives and budget, so the same command joins the same study.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def content_key(payload: Mapping[str, Any], length: int = 16) -> str:
    """The first `length` hex digits of the SHA-1 of `payload` as canonical JSON (keys
    sorted; values JSON cannot hold are written with `str`). Equal data, equal key.

    >>> content_key({"b": 1, "a": [1, 2]}) == content_key({"a": [1, 2], "b": 1})
    True
    >>> len(content_key({"a": 1})), len(content_key({"a": 1}, 8))
    (16, 8)
    """
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:length]
