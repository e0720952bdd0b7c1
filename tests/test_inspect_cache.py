"""Leaves that a `repeat` (or a plain list) makes identical are priced once per inspection and
their cost reused (archlab/model/_inspect.py, `_CACHE_LEAVES`): every zoo spec must inspect to
the same numbers as a full pass that runs every leaf, row for row."""

from __future__ import annotations

from typing import Any

import pytest
from torch import nn

import archlab.model._inspect as inspect_module
from archlab import inspect, zoo_names


def figures(name: str) -> dict[str, Any]:
    r = inspect(f"zoo:{name}").to_dict()
    # Everything the CLI prints comes from these: the per-layer rows (path, kind, output
    # shape, params, FLOPs), totals, MACs, unpriced ops and the memory split.
    assert {"layers", "params", "flops_per_sample", "macs_per_sample", "uncounted", "memory"} <= r.keys()
    return r


@pytest.mark.parametrize("name", zoo_names())
def test_pricing_each_distinct_leaf_once_matches_the_full_pass(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The full passes cost 18 s for the whole zoo on a 2-core machine (lstm-classifier 6.6 s,
    # its recurrent leaf run step by step): small enough to run every spec as shipped.
    cached = figures(name)
    monkeypatch.setattr(inspect_module, "_CACHE_LEAVES", False)
    assert figures(name) == cached


def test_the_cache_is_what_makes_the_difference(monkeypatch: pytest.MonkeyPatch) -> None:
    # The comparison above is between two different computations: with the cache, llama-7b's
    # 32 identical decoder blocks run once or twice per pass, not 32 times.
    calls: list[int] = []
    forward = nn.Linear.forward
    monkeypatch.setattr(nn.Linear, "forward", lambda self, x: calls.append(1) or forward(self, x))
    inspect("zoo:llama-7b")
    cached = len(calls)
    calls.clear()
    monkeypatch.setattr(inspect_module, "_CACHE_LEAVES", False)
    inspect("zoo:llama-7b")
    # 4 passes (FLOPs at batch 1; saved bytes at batches 2, 3 and the batch asked for, 1), each
    # with 5 linears per decoder block (fused q/k/v, output, SwiGLU's three) and the head.
    assert len(calls) == 4 * (32 * 5 + 1)
    assert cached < len(calls) / 10
