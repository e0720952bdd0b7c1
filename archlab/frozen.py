"""FrozenDict: the read-only mapping that frozen specs, layer arguments and run records use.

`types.MappingProxyType` would do, except that it cannot be pickled, so neither could anything
holding one: `copy.deepcopy(model)`, `torch.save(model)` and process pools all failed on a
built network. This is the same read-only view over a private dict, plus `__reduce__`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


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
