"""One small registry class, in the spirit of timm's: register by decorator, look up by
name (with "did you mean" suggestions), list with glob filters."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from ._errors import ArchlabError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table. ``kind`` names what it holds, for error messages.

    >>> r = Registry("colour")
    >>> @r.register("red")
    ... def red(): return "#f00"
    >>> r.get("red")()
    '#f00'
    """

    def __init__(self, kind: str, error: type[ArchlabError] = ArchlabError):
        self.kind = kind
        self._error = error
        self._items: dict[str, T] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            for key in (name, *aliases):
                if key in self._items:
                    raise ValueError(f"{self.kind} {key!r} is already registered")
                self._items[key] = obj
            return obj

        return decorator

    def get(self, name: str, where: str = "") -> T:
        try:
            return self._items[name]
        except KeyError:
            raise self._error(f"{where + ': ' if where else ''}{self.unknown(name)}") from None

    def unknown(self, name: str) -> str:
        """The message for an unknown name, with the closest known names."""
        close = difflib.get_close_matches(str(name), list(self._items), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(self.names())}."

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
