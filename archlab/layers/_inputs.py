"""Several named inputs of one batch, as one value the training loop can carry.

A spec with `inputs:` (an image and its caption, a query and a document) reads a batch as
named tensors aligned on dim 0: `Inputs(image=x, tokens=t)`. The loop slices, selects rows,
moves and counts a batch without knowing how many inputs it has, so `Inputs` answers those
few tensor calls (`len`, `[a:b]`, `index_select(0, idx)`, `to`, `contiguous`) for every
input at once, and nothing else: layers never see it, the network reads its tensors by name.

    >>> import torch
    >>> xb = Inputs(image=torch.zeros(8, 1, 4, 4), tokens=torch.zeros(8, 5, dtype=torch.long))
    >>> len(xb), xb[2:4]["tokens"].shape, xb.names
    (8, torch.Size([2, 5]), ('image', 'tokens'))
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor


class Inputs(Mapping[str, Tensor]):
    """Named tensors with one batch dimension in common (a read-only mapping)."""

    __slots__ = ("_tensors",)

    def __init__(self, tensors: Mapping[str, Tensor] | None = None, /, **named: Tensor):
        tensors = {**(tensors or {}), **named}
        if not tensors:
            raise ValueError("Inputs: expected at least one named tensor, e.g. Inputs(image=x)")
        rows = {name: t.shape[0] if t.ndim else None for name, t in tensors.items()}
        if len(set(rows.values())) != 1 or None in rows.values():
            shown = ", ".join(f"{n} {tuple(t.shape)}" for n, t in tensors.items())
            raise ValueError(f"Inputs: every input needs the same number of rows (dim 0). Received: {shown}")
        self._tensors = dict(tensors)

    # -- a mapping of name -> tensor
    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self._tensors[key]
        return Inputs({n: t[key] for n, t in self._tensors.items()})  # rows: a slice or an index tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        """The number of rows (samples), like len() of a tensor; `names` counts the inputs."""
        return next(iter(self._tensors.values())).shape[0]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._tensors)

    # -- the tensor calls the loop makes on a batch
    @property
    def shape(self) -> torch.Size:
        """(rows,): what the loop reads as `x.shape[0]`; each input's own shape is `x[name].shape`."""
        return torch.Size([len(self)])

    @property
    def device(self) -> torch.device:
        return next(iter(self._tensors.values())).device

    def to(self, device: Any = None, dtype: torch.dtype | None = None, *, non_blocking: bool = False) -> Inputs:
        """Every input on `device`; a dtype applies to float inputs only (token ids stay integers)."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        return Inputs({n: t.to(device=device, dtype=dtype if t.is_floating_point() else None,
                               non_blocking=non_blocking) for n, t in self._tensors.items()})

    def index_select(self, dim: int, index: Tensor) -> Inputs:
        return Inputs({n: t.index_select(dim, index) for n, t in self._tensors.items()})

    def contiguous(self) -> Inputs:
        return Inputs({n: t.contiguous() for n, t in self._tensors.items()})

    def pin_memory(self) -> Inputs:
        return Inputs({n: t.pin_memory() for n, t in self._tensors.items()})

    def cpu(self) -> Inputs:
        return Inputs({n: t.cpu() for n, t in self._tensors.items()})

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}" for n, t in self._tensors.items())
        return f"Inputs({shown})"


def cat_inputs(parts: list[Any]) -> Any:
    """torch.cat along rows for tensors or for Inputs (each input concatenated)."""
    if parts and isinstance(parts[0], Inputs):
        return Inputs({n: torch.cat([p[n] for p in parts]) for n in parts[0].names})
    return torch.cat(parts)
