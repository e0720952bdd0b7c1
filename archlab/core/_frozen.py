"""Read-only plain data: FrozenDict, and `freeze`/`thaw` between it and dicts and lists.

Frozen specs, layer arguments and run records are all made of these.

`types.MappingProxyType` would do, except that it cannot be pickled, so neither could anything
holding one: `copy.deepcopy(model)`, `torch.save(model)` and process pools all failed on a
built network. This is the same read-only view over a private dict, plus `__reduce__`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ._errors import SpecError

# Deeper data than this is refused: a spec is never that deep, and a YAML alias that refers
# to itself (`model: &x [*x]`) would otherwise recurse until Python gives up.
_MAX_DEPTH = 100


class FrozenDict(Mapping[str, Any]):
    __slots__ = ("_data",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_data", dict(*args, **kwargs))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        return f"FrozenDict({self._data!r})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FrozenDict is read-only")

    def __reduce__(self) -> tuple[Any, ...]:
        return FrozenDict, (self._data,)

    # `a | b` as for dicts and MappingProxyType: a new plain dict.
    def __or__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        return {**self._data, **other}

    def __ror__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        return {**other, **self._data}

    def copy(self) -> dict[str, Any]:
        return dict(self._data)


def freeze(value: Any, _depth: int = 0) -> Any:
    """Deep-freeze plain data: dict -> FrozenDict (string keys), list -> tuple."""
    if _depth > _MAX_DEPTH and isinstance(value, Mapping | list | tuple):
        raise SpecError(f"spec data is nested more than {_MAX_DEPTH} levels deep "
                        f"(a YAML alias that refers to itself?)")
    if isinstance(value, Mapping):
        return FrozenDict({str(k): freeze(v, _depth + 1) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v, _depth + 1) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of `freeze`: plain dicts and lists, ready for YAML or JSON.

    >>> thaw(FrozenDict({"a": (1, 2)}))
    {'a': [1, 2]}
    """
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value
