"""The inspector's own meta rules (archlab/model/_meta_rules.py) against PyTorch's kernels:
the same output layout (shape, strides, offset, dtype, storage size) for every input a rule
covers, PyTorch's kernel for every input it does not, and every zoo spec inspected alike with
and without the rules."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch._prims_common as utils

import archlab.model._meta_rules as rules
from archlab import inspect, zoo_names

aten = torch.ops.aten
META = "meta"


def layout(t: Any) -> Any:
    if isinstance(t, torch.Tensor):
        return (tuple(t.shape), t.stride(), t.storage_offset(), t.dtype, t.untyped_storage().nbytes())
    return tuple(layout(x) for x in t)


def views(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Iterator[torch.Tensor]:
    """Tensors of `shape` laid out every way a network makes them: contiguous, each dim order,
    a strided slice of a wider tensor, at an offset, channels-last."""
    ndim = len(shape)
    for order in itertools.permutations(range(ndim)):
        base = torch.empty([shape[d] for d in order], dtype=dtype, device=META)
        yield base.permute([order.index(d) for d in range(ndim)])
    if ndim:
        wide = torch.empty((*shape[:-1], 3 * shape[-1]), dtype=dtype, device=META)
        yield wide[..., :shape[-1]]
        yield wide[..., shape[-1]:2 * shape[-1]]  # at an offset, as q, k, v split from one product
        yield wide[..., ::3]
    if ndim == 4:
        yield torch.empty(shape, dtype=dtype, device=META).contiguous(memory_format=torch.channels_last)


SHAPES = [(), (5,), (1,), (3, 4), (1, 4), (3, 1), (2, 3, 4), (2, 1, 4), (1, 3, 1), (2, 3, 4, 5), (1, 3, 1, 1),
          (2, 1, 4, 1), (2, 3, 2, 2, 2)]


# ------------------------------------------------------------------- the stride order


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_the_output_order_is_pytorchs_for_every_layout(shape: tuple[int, ...]) -> None:
    tensors = list(views(shape))
    for a in tensors:
        assert rules._is_contiguous(a.shape, a.stride()) == utils.is_contiguous(a)
        assert rules._is_channels_last(a.shape, a.stride()) == utils.is_channels_last_contiguous_2d(a)
        assert rules._strides_like_channels_last(a.shape, a.stride()) == \
            utils.are_strides_like_channels_last_or_false(a.shape, a.stride())
        for b in [a, *tensors, a.expand(shape) if shape else a]:
            want = utils.compute_elementwise_output_logical_to_physical_perm(a, b)[0]
            assert rules._output_order(tuple(shape), [a.stride(), b.stride()]) == want, (a.stride(), b.stride())


def test_broadcast_dims_are_left_out_of_the_order() -> None:
    # A (T, D) rotary table against (B, H, T, D) slices of the fused q/k/v product.
    q = torch.empty((2, 8, 3, 4, 16), device=META)[:, :, 0].transpose(1, 2)  # (B, T, 3, H, D) -> (B, H, T, D)
    table = torch.empty((8, 16), device=META).expand(q.shape)
    assert rules._output_order(tuple(q.shape), [q.stride(), table.stride()]) == \
        utils.compute_elementwise_output_logical_to_physical_perm(q, table)[0]


# --------------------------------------------------------------------------- each rule


def covered_cases() -> Iterator[tuple[str, Any, tuple, dict]]:
    """(id, op, args, kwargs) that a rule answers."""
    for shape in [(3, 4), (2, 3, 4), (2, 3, 4, 5), (1, 3, 1), (2, 1, 4, 1)]:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            for i, a in enumerate(views(shape, dtype)):
                tag = f"{shape}-{str(dtype)[6:]}-{i}"
                yield f"rsqrt-{tag}", aten.rsqrt.default, (a,), {}
                yield f"silu-{tag}", aten.silu.default, (a,), {}
                yield f"gelu-{tag}", aten.gelu.default, (a,), {}
                yield f"gelu-tanh-{tag}", aten.gelu.default, (a,), {"approximate": "tanh"}
                if len(shape) != 4:  # (declined in 4 dims: see below)
                    w = torch.empty(shape[-1:], dtype=dtype, device=META)
                    yield f"layer_norm-{tag}", aten.native_layer_norm.default, (a, shape[-1:], w, w, 1e-5), {}
                    yield f"layer_norm-2-{tag}", aten.native_layer_norm.default, (a, shape[-2:], None, None, 1e-5), {}
                for exponent in (2, 2.0, 0.5, 3, -1.5):
                    yield f"pow{exponent}-{tag}", aten.pow.Tensor_Scalar, (a, exponent), {}
                yield f"add_-{tag}", aten.add_.Scalar, (a, 1.0), {}
                if len(shape) != 4:  # (a 4-d output is declined: see below)
                    yield f"mean-{tag}", aten.mean.dim, (a, [-1], True), {}
                yield f"mean-nokeep-{tag}", aten.mean.dim, (a, [0]), {}
                for op in (aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor):
                    name = op.overloadpacket.__name__
                    for j, b in enumerate(views(shape, dtype)):
                        yield f"{name}-{tag}-{j}", op, (a, b), {}
                    yield f"{name}-bcast-last-{tag}", op, (a, torch.empty(shape[-1:], dtype=dtype, device=META)), {}
                    yield f"{name}-bcast-row-{tag}", op, (a, torch.empty((*shape[:-1], 1), device=META)), {}
                    yield f"{name}-fp32-{tag}", op, (torch.empty(shape, device=META), a), {}
                yield f"cat-{tag}", aten.cat.default, ([a, torch.empty(shape, dtype=dtype, device=META)], -1), {}
                if not utils.are_strides_like_channels_last_or_false(a.shape, a.stride()):
                    yield f"cat0-{tag}", aten.cat.default, ([a, a],), {}  # (all channels-last: declined)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        d = str(dtype)[6:]
        for n, v in [(1, 10), (3, 7), (64, 1000)]:
            logits = torch.empty((n, v), dtype=dtype, device=META)
            target = torch.empty(n, dtype=torch.long, device=META)
            yield f"log_softmax-{n}x{v}-{d}", aten._log_softmax.default, (logits, 1, False), {}
            yield f"log_softmax-last-{n}x{v}-{d}", aten._log_softmax.default, (logits, -1, False), {}
            for reduction in (1, 2):
                yield f"nll-{reduction}-{n}x{v}-{d}", aten.nll_loss_forward.default, \
                    (logits, target, None, reduction, -100), {}
        for m, k, n in [(5, 3, 4), (1, 8, 2)]:
            for i, a in enumerate(views((m, k), dtype)):
                b = torch.empty((k, n), dtype=dtype, device=META)
                yield f"mm-{m}x{k}x{n}-{d}-{i}", aten.mm.default, (a, b), {}
                for bias in (torch.empty(n, dtype=dtype, device=META), torch.empty((m, n), dtype=dtype, device=META)):
                    yield f"addmm-{m}x{k}x{n}-{tuple(bias.shape)}-{d}-{i}", aten.addmm.default, (bias, a, b.t().contiguous().t()), {}
        weight = torch.empty((11, 6), dtype=dtype, device=META)
        for idx_shape in [(), (4,), (2, 5)]:
            for idx_dtype in (torch.long, torch.int32):
                indices = torch.empty(idx_shape, dtype=idx_dtype, device=META)
                yield f"embedding-{idx_shape}-{idx_dtype}-{d}", aten.embedding.default, (weight, indices), {}
        for i, q in enumerate(views((2, 3, 5, 4), dtype)):
            yield f"flash-cpu-{d}-{i}", aten._scaled_dot_product_flash_attention_for_cpu.default, \
                (q, q, q), {"is_causal": True}
        yield f"zeros-{d}", aten.zeros.default, ((2, 3),), {"dtype": dtype, "device": torch.device(META)}
    yield "zeros-default-dtype", aten.zeros.default, ((4,),), {"device": META}


CASES = list(covered_cases())


@pytest.mark.parametrize("op", sorted({str(op) for _, op, _, _ in CASES}))
def test_each_rule_gives_pytorchs_layout(op: str) -> None:
    for name, func, args, kwargs in (c for c in CASES if str(c[1]) == op):
        got = rules._RULES[func](*args, **kwargs)
        assert got is not None, f"{name}: the rule declined an input it is meant to cover"
        assert layout(got) == layout(func(*args, **kwargs)), name


def test_an_in_place_rule_hands_back_its_input() -> None:
    a = torch.empty((2, 3), device=META)
    assert rules._RULES[aten.add_.Scalar](a, 1.0) is a


def test_inputs_no_rule_models_go_to_pytorchs_kernel() -> None:
    a, b = torch.empty((2, 3), device=META), torch.empty((2, 3), device=META)
    declined = [
        (aten.add.Tensor, (a, b), {"alpha": 2}),                           # b is scaled first
        (aten.mul.Tensor, (a, torch.empty((), device=META)), {}),          # a 0-dim operand
        (aten.mul.Tensor, (a, torch.tensor(2.0)), {}),                     # a wrapped Python number
        (aten.add.Tensor, (a, torch.empty((2, 3), dtype=torch.long, device=META)), {}),
        (aten.pow.Tensor_Scalar, (a, 1), {}),                              # PyTorch clones a
        (aten.mean.dim, (torch.empty((2, 3, 4, 5), device=META), [2, 3], True), {}),  # 4-d output
        (aten.mean.dim, (a, [1]), {"dtype": torch.float64}),
        (aten.cat.default, ([torch.empty((2, 3, 4, 5), device=META).contiguous(memory_format=torch.channels_last)] * 2,), {}),
        (aten.cat.default, ([a, torch.empty((2, 3), dtype=torch.float16, device=META)],), {}),
        (aten._log_softmax.default, (torch.empty((2, 3, 4), device=META), 1, False), {}),
        (aten.nll_loss_forward.default, (a, torch.empty(2, dtype=torch.long, device=META), None, 0, -100), {}),
        (aten.mm.default, (a, torch.empty((3, 2), dtype=torch.float16, device=META)), {}),
        (aten.zeros.default, ((2,),), {"device": torch.device("cpu")}),
        (aten.addmm.default, (torch.empty(3, device=META), a, torch.empty((3, 3), device=META)), {"beta": 0.5}),
        (aten.native_layer_norm.default, (torch.empty((2, 3, 4, 5), device=META), [5], None, None, 1e-5), {}),
    ]
    assert rules._RULES[aten.gelu.default](a, approximate="erf") is None  # PyTorch's kernel raises its error
    for func, args, kwargs in declined:
        assert rules._RULES[func](*args, **kwargs) is None, func
        out = rules.meta_output(func, args, kwargs)  # PyTorch's kernel answers instead
        assert layout(out) == layout(func(*args, **kwargs))


def test_a_rule_that_differs_from_pytorch_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules, "_CHECK", True)
    monkeypatch.setitem(rules._RULES, aten.mm.default, lambda a, b: torch.empty((b.shape[1], a.shape[0]), device=META))
    with pytest.raises(AssertionError, match="meta rule for aten.mm.default: expected"):
        rules.meta_output(aten.mm.default, (torch.empty((2, 3), device=META), torch.empty((3, 4), device=META)), {})


# ------------------------------------------------------------------------- the whole zoo


@pytest.mark.parametrize("name", zoo_names())
def test_every_zoo_spec_inspects_alike_with_and_without_the_rules(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # In check mode every op a rule answers also runs PyTorch's kernel, and the two layouts
    # must agree; then every printed number is compared with a pass that has no rules.
    settings = [{}, {"dtype": "bf16", "device": "cuda", "batch": 4}]
    monkeypatch.setattr(rules, "_CHECK", True)
    with_rules = [inspect(f"zoo:{name}", **s).to_dict() for s in settings]
    monkeypatch.setattr(rules, "_ENABLED", False)
    assert [inspect(f"zoo:{name}", **s).to_dict() for s in settings] == with_rules


def test_inspecting_llama_and_gpt2_imports_neither_dynamo_nor_sympy() -> None:
    # What made the first inspection in a process slow (1.2-1.5 s of imports): a fresh process.
    code = ("import sys, archlab; [archlab.inspect(f'zoo:{n}', device='cpu') for n in ('llama-7b', 'gpt2')]; "
            "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
