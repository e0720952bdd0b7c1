"""Every registered layer: its inferred output type matches what its module really returns,
it trains (backward works), it inspects on the meta device with every op priced; then the
semantics of the layers where a wrong formula would still produce the right shape."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archlab import LAYERS, build, inspect
from archlab.core import ShapeError, SpecError

EMB = {"embedding": {"vocab": 11, "dim": 8}}

# name -> (per-sample input shape, input dtype, layers before it, the layer node).
# Every registered name (aliases included) must have a row: a new layer without one fails
# test_table_covers_the_registry.
CASES: dict[str, tuple[tuple[int, ...], str, list[Any], Any]] = {
    "adaptive_avgpool": ((3, 9, 9), "float", [], {"adaptive_avgpool": [2, 3]}),
    "additive_attention": ((7,), "long", [EMB], {"additive_attention": {"units": 5}}),
    "bahdanau": ((7,), "long", [EMB], {"bahdanau": {"query": "last"}}),
    "attention": ((7,), "long", [EMB], {"attention": {"heads": 2, "causal": True}}),
    "avgpool": ((3, 8, 8), "float", [], {"avgpool": 2}),
    "avgpool1d": ((3, 9), "float", [], {"avgpool1d": {"kernel": 3, "stride": 2}}),
    "avgpool2d": ((3, 8, 8), "float", [], {"avgpool2d": {"kernel": 3, "padding": 1, "ceil": True}}),
    "batchnorm": ((3, 8, 8), "float", [], "batchnorm"),
    "conv": ((3, 8, 8), "float", [], {"conv": 4}),
    "conv1d": ((3, 10), "float", [], {"conv1d": {"out": 4, "kernel": 3, "stride": 2, "padding": 1}}),
    "conv2d": ((4, 9, 9), "float", [],
               {"conv2d": {"out": 6, "kernel": [3, 1], "stride": 2, "dilation": 2, "groups": 2}}),
    "decoder_block": ((7,), "long", [EMB], {"decoder_block": {"heads": 2}}),
    "dense": ((5,), "float", [], {"dense": 3}),
    "dropout": ((5,), "float", [], {"dropout": 0.3}),
    "embedding": ((7,), "long", [], {"embedding": {"vocab": 11, "dim": 8, "padding_idx": 0}}),
    "encoder_block": ((7,), "long", [EMB],
                      {"encoder_block": {"heads": 2, "kv_heads": 1, "mlp": "swiglu", "norm": "rmsnorm",
                                         "rope": True, "bias": False}}),
    "flatten": ((3, 4, 4), "float", [], "flatten"),
    "gelu": ((5,), "float", [], {"gelu": "tanh"}),
    "global_avgpool": ((3, 4, 4), "float", [], "global_avgpool"),
    "global_maxpool": ((3, 6), "float", [], "global_maxpool"),
    "gru": ((6, 4), "float", [], {"gru": {"hidden": 5, "bidirectional": True, "returns": "sequence"}}),
    "identity": ((5,), "float", [], "identity"),
    "layernorm": ((4, 6), "float", [], "layernorm"),
    "leaky_relu": ((5,), "float", [], {"leaky_relu": 0.2}),
    "linear": ((4, 6), "float", [], {"linear": 3}),
    "lstm": ((6, 4), "float", [], {"lstm": {"hidden": 5, "layers": 2, "dropout": 0.1}}),
    "maxpool": ((3, 8), "float", [], {"maxpool": 2}),
    "maxpool1d": ((3, 8), "float", [], {"maxpool1d": {"kernel": 3, "stride": 1, "padding": 1}}),
    "maxpool2d": ((3, 7, 7), "float", [], {"maxpool2d": {"kernel": 3, "stride": 2, "padding": 1}}),
    "mlp": ((4, 6), "float", [], {"mlp": {"hidden": 12, "activation": "relu", "dropout": 0.1}}),
    "permute": ((3, 4, 5), "float", [], {"permute": [2, 0, 1]}),
    "pos_embedding": ((7,), "long", [EMB], {"pos_embedding": {"max_len": 16}}),
    "prepend": ((7,), "long", [EMB], {"prepend": {"tokens": 2}}),
    "relu": ((5,), "float", [], "relu"),
    "reshape": ((12,), "float", [], {"reshape": [3, -1]}),
    "rmsnorm": ((4, 6), "float", [], "rmsnorm"),
    "rnn": ((6, 4), "float", [], {"rnn": {"hidden": 5, "nonlinearity": "relu"}}),
    "seq_pool": ((6, 4), "float", [], {"seq_pool": "max"}),
    "sigmoid": ((5,), "float", [], "sigmoid"),
    "silu": ((5,), "float", [], "silu"),
    "sinusoidal": ((7,), "long", [EMB], "sinusoidal"),
    "softmax": ((3, 4), "float", [], {"softmax": 0}),
    "swiglu": ((4, 6), "float", [], {"swiglu": 10}),
    "tanh": ((5,), "float", [], "tanh"),
    "transformer_block": ((7,), "long", [EMB],
                          {"transformer_block": {"heads": 4, "causal": True, "mlp": "relu", "hidden": 20}}),
    "unembed": ((7,), "long", [EMB], {"unembed": {"bias": True}}),
}


# Layers that read an encoder's output: built as the last layer of a seq2seq decoder.
SEQ2SEQ: dict[str, Any] = {
    "cross_attention": {"cross_attention": {"heads": 2}},
    "cross_decoder_block": {"cross_decoder_block": {"heads": 2, "mlp_ratio": 2}},
    # hidden + encoder dim stays below the vocab: Seq2SeqNetwork.example_input draws source
    # ids below the output width.
    "additive_decoder": {"additive_decoder": {"hidden": 4, "units": 5}},
}


def one_layer_spec(name: str) -> dict:
    if name in SEQ2SEQ:
        return {"name": name, "input": {"shape": [7], "dtype": "long"}, "vars": {"target_len": 5},
                "encoder": [{"embedding": {"vocab": 11, "dim": 6}}], "decoder": [EMB, SEQ2SEQ[name]]}
    shape, dtype, prefix, node = CASES[name]
    return {"name": name, "input": {"shape": list(shape), "dtype": dtype}, "model": [*prefix, node]}


def test_table_covers_the_registry() -> None:
    missing = sorted(set(LAYERS.names()) - set(CASES) - set(SEQ2SEQ))
    assert not missing, f"add a row to CASES (or SEQ2SEQ) for: {missing}"
    assert not (set(CASES) | set(SEQ2SEQ)) - set(LAYERS.names()), "a row names a layer that is not registered"


@pytest.mark.parametrize("name", LAYERS.names())
def test_inferred_shape_matches_forward_and_backward_works(name: str) -> None:
    net = build(one_layer_spec(name), seed=0)
    assert net.layers[-1].kind == name
    x = net.example_input(2)
    if x.is_floating_point():
        x.requires_grad_(True)  # so parameter-free layers have something to differentiate
    y = net(x)
    assert tuple(y.shape) == (2, *net.output_shape), name
    assert y.dtype == torch.float32 and net.output_type.dtype == "float"
    assert torch.isfinite(y).all()
    (y.square().mean() + 1).backward()
    params = [p for p in net.parameters() if p.requires_grad]
    if params:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), name
    else:
        assert x.grad is not None and x.grad.shape == x.shape


@pytest.mark.parametrize("name", LAYERS.names())
def test_meta_build_and_inspect_agree_and_price_every_op(name: str) -> None:
    cpu = build(one_layer_spec(name))
    meta = build(one_layer_spec(name), device="meta")
    assert meta.output_shape == cpu.output_shape
    assert all(p.device.type == "meta" for p in meta.parameters())
    assert [k for k, _ in meta.state_dict().items()] == list(cpu.state_dict())
    report = inspect(one_layer_spec(name))
    assert report.output_shape == cpu.output_shape
    assert report.params == sum(p.numel() for p in cpu.parameters())
    assert report.uncounted == (), f"{name}: unpriced ops {report.uncounted}"
    assert report.flops_per_sample >= 0


# ---------------------------------------------------------------------- convolution


def conv_out(spec_args: dict, shape: tuple[int, ...] = (3, 10, 10)) -> tuple[int, ...]:
    return build({"input": {"shape": list(shape)}, "model": [{"conv2d": spec_args}]}, device="meta").output_shape


def test_conv_padding_and_stride_arithmetic() -> None:
    assert conv_out({"out": 4, "kernel": 3, "padding": "same"}) == (4, 10, 10)
    assert conv_out({"out": 4, "kernel": 4, "padding": "same"}) == (4, 10, 10)  # even kernel too
    assert conv_out({"out": 4, "kernel": 3, "padding": "valid"}) == (4, 8, 8)
    assert conv_out({"out": 4, "kernel": 3}) == (4, 8, 8)  # default padding 0
    # floor((10 + 2*1 - 3) / 2) + 1 = 5
    assert conv_out({"out": 4, "kernel": 3, "stride": 2, "padding": 1}) == (4, 5, 5)
    # dilation 2: the kernel spans 5 -> 10 - 5 + 1 = 6
    assert conv_out({"out": 4, "kernel": 3, "dilation": 2}) == (4, 6, 6)
    assert conv_out({"out": 4, "kernel": [1, 3], "stride": [1, 3], "padding": [0, 1]}) == (4, 10, 4)
    # And each agrees with PyTorch's own convolution.
    x = torch.randn(1, 3, 10, 10)
    for args in ({"kernel": 3, "stride": 2, "padding": 1}, {"kernel": 3, "dilation": 2},
                 {"kernel": 5, "stride": 3, "padding": 2, "dilation": 1}):
        real = F.conv2d(x, torch.randn(4, 3, args["kernel"], args["kernel"]), stride=args.get("stride", 1),
                        padding=args.get("padding", 0), dilation=args.get("dilation", 1))
        assert conv_out({"out": 4, **args}) == tuple(real.shape[1:])


@pytest.mark.parametrize(
    "args, fragment",
    [
        ({"out": 4, "kernel": 3, "stride": 2, "padding": "same"}, "padding 'same' needs stride 1"),
        ({"out": 4, "kernel": 0}, "argument 'kernel' must be positive"),
        ({"out": 4, "stride": 0}, "argument 'stride' must be positive"),
        ({"out": 4, "dilation": 0}, "argument 'dilation' must be positive"),
        ({"out": 4, "padding": -1}, "argument 'padding' must be non-negative"),
        ({"out": 4, "padding": "full"}, "argument 'padding' expected"),
        ({"out": 4, "kernel": 11}, "kernel [11, 11] does not fit the input (3, 10, 10)"),
        ({"out": 4, "kernel": [3, 3, 3]}, "argument 'kernel' needs 2 values"),
        ({"out": 4, "groups": 2}, "'groups'=2 must divide both in channels 3 and out 4"),
        ({"out": 0}, "argument 'out' must be a positive integer"),
    ],
)
def test_conv_argument_errors(args: dict, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        conv_out(args)
    assert fragment in str(info.value)
    assert str(info.value).startswith("model[0].conv2d: ")


def test_pool_stride_defaults_to_kernel() -> None:
    net = build({"input": {"shape": [1, 9, 9]}, "model": [{"maxpool": 3}]})
    assert net.output_shape == (1, 3, 3)
    assert net.model[0].stride in (3, (3, 3))
    assert build({"input": {"shape": [1, 9, 9]}, "model": [{"maxpool": {"kernel": 3, "stride": 1}}]},
                 device="meta").output_shape == (1, 7, 7)
    assert build({"input": {"shape": [2, 9]}, "model": [{"avgpool": 2}]}, device="meta").output_shape == (2, 4)
    assert build({"input": {"shape": [2, 9]}, "model": [{"avgpool": {"kernel": 2, "ceil": True}}]},
                 device="meta").output_shape == (2, 5)


@pytest.mark.parametrize("size", range(4, 12))
@pytest.mark.parametrize("kernel, stride, padding", [(2, None, 0), (3, None, 1), (3, 2, 1), (3, 3, 1),
                                                     (4, 3, 2), (5, 2, 2), (2, 1, 0)])
@pytest.mark.parametrize("ceil", [False, True])
@pytest.mark.parametrize("kind", ["maxpool", "avgpool"])
def test_pool_output_size_matches_pytorch(size: int, kernel: int, stride: int | None, padding: int,
                                          ceil: bool, kind: str) -> None:
    args = {"kernel": kernel, "stride": stride, "padding": padding, "ceil": ceil}
    try:
        net = build({"input": {"shape": [1, size, size]}, "model": [{kind: args}]})
    except ShapeError:
        return  # the window does not fit: refused at build, fine
    assert tuple(net(torch.randn(1, 1, size, size)).shape[1:]) == net.output_shape


@pytest.mark.parametrize(
    "node, fragment",
    [
        ({"maxpool": 0}, "argument 'kernel' must be positive"),
        ({"maxpool": {"kernel": 2, "stride": 0}}, "argument 'stride' must be positive"),
        ({"maxpool": {"kernel": 2, "padding": -1}}, "argument 'padding' must be non-negative"),
        ({"maxpool": {"kernel": 2, "padding": 2}}, "must be at most half the kernel"),
        ({"maxpool": 20}, "pool kernel [20, 20] is larger than the input"),
        ({"adaptive_avgpool": 0}, "argument 'size' must be positive"),
        ({"maxpool1d": 2}, "expects (C,L) input, got (1, 9, 9)"),
    ],
)
def test_pool_errors(node: Any, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        build({"input": {"shape": [1, 9, 9]}, "model": [node]}, device="meta")
    assert fragment in str(info.value)


# ------------------------------------------------------------------------ recurrent


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_last_vs_sequence(kind: str, bidirectional: bool) -> None:
    width = 5 * (2 if bidirectional else 1)
    args = {"hidden": 5, "bidirectional": bidirectional, "layers": 2}
    seq = build({"input": {"shape": [6, 4]}, "model": [{kind: {**args, "returns": "sequence"}}]}, seed=1)
    last = build({"input": {"shape": [6, 4]}, "model": [{kind: args}]}, seed=1)
    assert seq.output_shape == (6, width) and last.output_shape == (width,)
    assert seq.output_type.layout == "sequence" and last.output_type.layout == "flat"
    x = torch.randn(3, 6, 4)
    seq.eval(), last.eval()
    with torch.no_grad():
        out, final = seq(x), last(x)
    assert out.shape == (3, 6, width) and final.shape == (3, width)
    # Same seed, same weights: the last state is the forward direction's final step and,
    # when bidirectional, the backward direction's state after reading the whole sequence
    # (which sits at t = 0 of the output sequence).
    torch.testing.assert_close(final[:, :5], out[:, -1, :5])
    if bidirectional:
        torch.testing.assert_close(final[:, 5:], out[:, 0, 5:])


def test_recurrent_param_counts() -> None:
    # PyTorch's layout: per gate, W_ih (H x F), W_hh (H x H) and two biases.
    f, h = 4, 5
    for kind, gates in (("rnn", 1), ("lstm", 4), ("gru", 3)):
        report = inspect({"input": {"shape": [6, f]}, "model": [{kind: h}]})
        assert report.params == gates * (h * f + h * h + 2 * h)
        bi = inspect({"input": {"shape": [6, f]}, "model": [{kind: {"hidden": h, "bidirectional": True}}]})
        assert bi.params == 2 * report.params


# ------------------------------------------------------------------------ attention


def attention_net(seed: int = 0, t: int = 8, d: int = 16, **args: Any) -> nn.Module:
    net = build({"input": {"shape": [t, d]}, "model": [{"attention": {"heads": 4, **args}}]}, seed=seed)
    return net.eval()


@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_causal_attention_ignores_the_future(rope: bool, kv_heads: int) -> None:
    net = attention_net(causal=True, rope=rope, kv_heads=kv_heads)
    x = torch.randn(2, 8, 16)
    changed = x.clone()
    changed[:, 5] += 3.0  # perturb token 5
    with torch.no_grad():
        a, b = net(x), net(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])  # the past cannot see token 5
    assert not torch.allclose(a[:, 5:], b[:, 5:])  # token 5 and later do


def test_bidirectional_attention_sees_the_future() -> None:
    net = attention_net(causal=False)
    x = torch.randn(2, 8, 16)
    changed = x.clone()
    changed[:, 5] += 3.0
    with torch.no_grad():
        assert not torch.allclose(net(x)[:, :5], net(changed)[:, :5])


def test_attention_matches_a_hand_written_reference() -> None:
    net = attention_net(causal=True, rope=False)
    attn = net.model[0]
    x = torch.randn(2, 8, 16)
    q, k, v = attn.qkv(x).split(16, dim=-1)
    q, k, v = (z.view(2, 8, 4, 4).transpose(1, 2) for z in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(4)
    scores = scores.masked_fill(torch.ones(8, 8, dtype=torch.bool).triu(1), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 8, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x), attn.proj(y), rtol=1e-4, atol=1e-5)


def test_grouped_query_attention_param_count() -> None:
    d, heads, hd = 16, 4, 4
    for kv in (4, 2, 1):
        report = inspect({"input": {"shape": [8, d]}, "model": [{"attention": {"heads": heads, "kv_heads": kv}}]})
        qkv = d * (heads + 2 * kv) * hd + (heads + 2 * kv) * hd
        proj = heads * hd * d + d
        assert report.params == qkv + proj, kv
    no_bias = inspect({"input": {"shape": [8, d]},
                       "model": [{"attention": {"heads": 4, "kv_heads": 2, "bias": False, "head_dim": 8}}]})
    assert no_bias.params == d * (4 + 4) * 8 + 4 * 8 * d


def test_attention_argument_errors() -> None:
    def err(args: dict) -> str:
        with pytest.raises(SpecError) as info:
            build({"input": {"shape": [8, 16]}, "model": [{"attention": args}]}, device="meta")
        return str(info.value)

    assert "must be a multiple of kv_heads" in err({"heads": 4, "kv_heads": 3})
    assert "not divisible by heads=3" in err({"heads": 3})
    assert "rope needs an even head_dim" in err({"heads": 4, "head_dim": 3, "rope": True})
    assert "'rope_base' must be positive" in err({"heads": 4, "rope": True, "rope_base": 0})
    assert "missing required argument 'heads'" in err({})


def test_rope_changes_the_output_but_not_the_weights() -> None:
    plain, rotary = attention_net(seed=3, rope=False), attention_net(seed=3, rope=True)
    for p, r in zip(plain.parameters(), rotary.parameters(), strict=True):
        torch.testing.assert_close(p, r)
    assert not any("rope" in k for k in rotary.state_dict())  # tables are not saved
    x = torch.randn(2, 8, 16)
    with torch.no_grad():
        assert not torch.allclose(plain(x), rotary(x))


def test_additive_attention_is_bahdanau() -> None:
    net = build({"input": {"shape": [6, 4]}, "model": [{"additive_attention": {"units": 3, "query": "mean"}}]},
                seed=2).eval()
    att = net.model[0]
    h = torch.randn(2, 6, 4)
    s = h.mean(dim=1)
    a = att.score(s, h)
    torch.testing.assert_close(a.sum(dim=-1), torch.ones(2))
    # e_t = v^T tanh(W_h h_t + W_s s + b), by hand
    w_h, w_s, b, v = att.w_h.weight, att.w_s.weight, att.w_s.bias, att.v.weight[0]
    e = torch.tanh(h @ w_h.T + (s @ w_s.T + b)[:, None, :]) @ v
    torch.testing.assert_close(a, e.softmax(dim=-1))
    with torch.no_grad():
        torch.testing.assert_close(net(h), (a[:, :, None] * h).sum(dim=1))
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[:, 4:] = False
    masked = att.score(s, h, mask)
    assert torch.all(masked[:, 4:] == 0)
    torch.testing.assert_close(masked.sum(dim=-1), torch.ones(2))


# ------------------------------------------------------------------- dense and MLPs


def test_swiglu_param_count_and_formula() -> None:
    d, hidden = 6, 10
    net = build({"input": {"shape": [4, d]}, "model": [{"swiglu": hidden}]}, seed=0)
    assert sum(p.numel() for p in net.parameters()) == 3 * d * hidden
    m = net.model[0]
    x = torch.randn(2, 4, d)
    with torch.no_grad():
        expected = (F.silu(x @ m.gate.weight.T) * (x @ m.up.weight.T)) @ m.down.weight.T
        torch.testing.assert_close(net(x), expected)
    with_bias = inspect({"input": {"shape": [4, d]}, "model": [{"swiglu": {"hidden": hidden, "bias": True}}]})
    assert with_bias.params == 3 * d * hidden + 2 * hidden + d


def test_linear_works_on_the_last_dim() -> None:
    net = build({"input": {"shape": [4, 6]}, "model": [{"linear": {"out": 3, "bias": False}}]})
    assert net.output_shape == (4, 3)
    assert sum(p.numel() for p in net.parameters()) == 18


# ---------------------------------------------------------------------- embeddings


def test_unembed_ties_to_the_embedding() -> None:
    spec = {"input": {"shape": [5], "dtype": "long"},
            "model": [{"embedding": {"vocab": 11, "dim": 8}}, "layernorm", "unembed"]}
    net = build(spec, seed=0)
    emb, tied = net.model[0], net.model[2]
    assert tied._embedding[0] is emb and tied.tied_to == "model[0].embedding"
    assert sum(p.numel() for p in net.parameters()) == 11 * 8 + 2 * 8  # the table once
    assert [k for k in net.state_dict() if k.endswith("weight")] == ["model.0.weight", "model.1.weight"]
    x = net.example_input(2)
    logits = net(x)
    with torch.no_grad():
        torch.testing.assert_close(logits, net.model[1](emb(x)) @ emb.weight.T)
    logits.sum().backward()
    assert emb.weight.grad is not None
    report = inspect(spec)
    assert report.params == 11 * 8 + 16
    assert [r.params for r in report.layers] == [88, 16, 0]
    assert "tied to model[0].embedding" in report.layers[2].note


def test_unembed_errors() -> None:
    with pytest.raises(SpecError, match=r"model\[0\]\.unembed: unembed ties its weights to an earlier `embedding`"):
        build({"input": {"shape": [5, 8]}, "model": ["unembed"]}, device="meta")
    with pytest.raises(ShapeError, match="input has 4 features but model\\[0\\].embedding has dim 8"):
        build({"input": {"shape": [5], "dtype": "long"},
               "model": [EMB, {"linear": 4}, "unembed"]}, device="meta")


def test_sinusoidal_has_no_params_and_no_state() -> None:
    net = build({"input": {"shape": [6, 8]}, "model": [{"permute": {"dims": [0, 1], "layout": "sequence"}},
                                                        {"sinusoidal": {"max_len": 10}}]})
    assert list(net.parameters()) == [] and dict(net.state_dict()) == {}
    x = torch.zeros(1, 6, 8)
    pe = net(x)[0]
    pos = torch.arange(6.0)
    torch.testing.assert_close(pe[:, 0], torch.sin(pos))
    torch.testing.assert_close(pe[:, 1], torch.cos(pos))
    torch.testing.assert_close(pe[:, 2], torch.sin(pos / 10000 ** (2 / 8)))
    assert inspect({"input": {"shape": [6], "dtype": "long"}, "model": [EMB, "sinusoidal"]}).params == 88


def test_positions_need_a_long_enough_max_len() -> None:
    for layer in ("pos_embedding", "sinusoidal"):
        with pytest.raises(ShapeError, match="max_len 4 is shorter than the sequence length 7"):
            build({"input": {"shape": [7], "dtype": "long"}, "model": [EMB, {layer: {"max_len": 4}}]},
                  device="meta")


def test_embedding_errors() -> None:
    with pytest.raises(SpecError, match="'padding_idx' must be a token id below vocab 11"):
        build({"input": {"shape": [7], "dtype": "long"},
               "model": [{"embedding": {"vocab": 11, "dim": 8, "padding_idx": 11}}]}, device="meta")
    with pytest.raises(ShapeError, match=r"expects token ids \(T,\) input"):
        build({"input": {"shape": [7, 2], "dtype": "long"}, "model": [EMB]}, device="meta")
    with pytest.raises(ShapeError, match="expects long input"):
        build({"input": {"shape": [7]}, "model": [EMB]}, device="meta")


# ------------------------------------------------------------------- pooling, shape


@pytest.mark.parametrize("mode", ["mean", "max", "first", "last"])
def test_seq_pool_modes(mode: str) -> None:
    net = build({"input": {"shape": [5, 3]}, "model": [{"seq_pool": mode}]})
    x = torch.randn(2, 5, 3)
    expected = {"mean": x.mean(1), "max": x.amax(1), "first": x[:, 0], "last": x[:, -1]}[mode]
    torch.testing.assert_close(net(x), expected)
    assert net.output_shape == (3,)


def test_reshape_with_minus_one_and_its_errors() -> None:
    net = build({"input": {"shape": [24]}, "model": [{"reshape": [2, -1, 3]}]})
    assert net.output_shape == (2, 4, 3)
    x = torch.arange(48.0).view(2, 24)
    torch.testing.assert_close(net(x), x.view(2, 2, 4, 3))
    seq = build({"input": {"shape": [24]}, "model": [{"reshape": {"shape": [6, 4], "layout": "sequence"}}]},
                device="meta")
    assert seq.output_type.layout == "sequence"
    for shape, fragment in (([5, -1], "24 is not divisible by 5"), ([5, 5], "(25 values)"),
                            ([-1, -1], "at most one -1"), ([0, 24], "positive sizes"),
                            ([], "positive sizes")):
        with pytest.raises(SpecError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            build({"input": {"shape": [24]}, "model": [{"reshape": shape}]}, device="meta")


def test_permute_moves_dims_and_swaps_sequence_layout() -> None:
    net = build({"input": {"shape": [2, 3, 4]}, "model": [{"permute": [2, 0, 1]}]})
    assert net.output_shape == (4, 2, 3)
    x = torch.randn(5, 2, 3, 4)
    torch.testing.assert_close(net(x), x.permute(0, 3, 1, 2))
    seq = build({"input": {"shape": [6], "dtype": "long"}, "model": [EMB, {"permute": [1, 0]}, {"conv1d": 4}]},
                device="meta")
    assert seq.layers[1].output.layout == "channels" and seq.output_shape == (4, 4)
    with pytest.raises(SpecError, match="must be a permutation of 0..2"):
        build({"input": {"shape": [2, 3, 4]}, "model": [{"permute": [0, 1, 1]}]}, device="meta")


def test_softmax_normalises_the_chosen_dim() -> None:
    for dim in (0, 1, -1):
        net = build({"input": {"shape": [3, 4]}, "model": [{"softmax": dim}]})
        y = net(torch.randn(2, 3, 4))
        tensor_dim = dim + 1 if dim >= 0 else dim
        torch.testing.assert_close(y.sum(dim=tensor_dim), torch.ones(2, 4 if tensor_dim == 1 else 3))
    with pytest.raises(SpecError, match="dim 2 is out of range"):
        build({"input": {"shape": [3, 4]}, "model": [{"softmax": 2}]}, device="meta")


def test_batchnorm_picks_1d_or_2d_and_refuses_sequences() -> None:
    assert isinstance(build({"input": {"shape": [4]}, "model": ["batchnorm"]}).model[0], nn.BatchNorm1d)
    assert isinstance(build({"input": {"shape": [3, 5]}, "model": ["batchnorm"]}).model[0], nn.BatchNorm1d)
    assert isinstance(build({"input": {"shape": [3, 5, 5]}, "model": ["batchnorm"]}).model[0], nn.BatchNorm2d)
    with pytest.raises(ShapeError, match="use layernorm or rmsnorm on sequences"):
        build({"input": {"shape": [5], "dtype": "long"}, "model": [EMB, "batchnorm"]}, device="meta")


@pytest.mark.parametrize("layer", ["attention", "encoder_block", "decoder_block", "transformer_block"])
def test_rope_with_an_odd_head_dim_is_refused(layer: str) -> None:
    # dim 6 / 2 heads = head_dim 3: rotating halves of an odd vector is undefined
    with pytest.raises(SpecError, match="rope needs an even head_dim. Received: head_dim=3"):
        build({"input": {"shape": [5, 6]}, "model": [{layer: {"heads": 2, "rope": True}}]}, device="meta")


def test_transformer_block_hidden_size() -> None:
    def params(**args: Any) -> int:
        return inspect({"input": {"shape": [4, 8]}, "model": [{"encoder_block": {"heads": 2, **args}}]}).params

    attn = 8 * 24 + 24 + 8 * 8 + 8
    norms = 2 * 16
    assert params() == attn + norms + (8 * 32 + 32 + 32 * 8 + 8)  # mlp_ratio 4
    assert params(mlp_ratio=2) == attn + norms + (8 * 16 + 16 + 16 * 8 + 8)
    assert params(hidden=5, mlp="swiglu", norm="rmsnorm", bias=False) == 8 * 24 + 8 * 8 + 2 * 8 + 3 * 8 * 5
    for bad in (float("nan"), float("inf"), 0.0, -1.0):
        with pytest.raises(SpecError, match="'mlp_ratio' must be a (positive|finite) number"):
            params(mlp_ratio=bad)


def test_an_output_of_more_than_2_to_the_40_values_per_sample_is_refused() -> None:
    from archlab.core import ShapeError
    from archlab.layers import TensorType

    with pytest.raises(ShapeError, match=r"would produce 2\.2e\+12 values per sample"):
        TensorType((4,)).derive((2**21, 2**20))
    assert TensorType((4,)).derive((2**20, 2**20)).shape == (2**20, 2**20)
