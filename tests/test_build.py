"""The builder: composition (serial, parallel, residual, repeat, named blocks), module names
that follow spec paths, deterministic initialisation, the meta device, and error messages."""

from __future__ import annotations

import re
import sys
from typing import Any

import pytest
import torch
from torch import nn

from archlab import build
from archlab.core import ShapeError, SpecError
from archlab.model import Network, Parallel, Repeat, Residual, Serial

F8 = {"shape": [8]}
IMG = {"shape": [3, 8, 8]}


def spec(model: Any, input: dict = F8, **extra: Any) -> dict:
    return {"input": input, "model": model, **extra}


def error(s: dict, cls: type[Exception] = SpecError) -> str:
    with pytest.raises(cls) as info:
        build(s, device="meta")
    return str(info.value)


# ------------------------------------------------------------------------- serial


def test_build_returns_a_plain_module_with_types() -> None:
    net = build(spec([{"linear": 16}, "relu", {"linear": 3}]))
    assert isinstance(net, Network) and isinstance(net, nn.Module)
    assert isinstance(net.model, Serial)
    assert net.input_shape == (8,) and net.output_shape == (3,)
    assert [leaf.path for leaf in net.layers] == ["model[0].linear", "model[1].relu", "model[2].linear"]
    assert net(torch.randn(5, 8)).shape == (5, 3)
    assert "spec" not in dict(net.named_children())  # metadata is not a submodule


def test_a_single_node_model_is_serial_too() -> None:
    net = build(spec({"linear": 3}))
    assert net.layers[0].path == "model[0].linear" and list(net.state_dict()) == ["model.0.weight", "model.0.bias"]


def test_input_shape_override_and_vars() -> None:
    s = spec([{"linear": "$w"}], vars={"w": 4})
    assert build(s, input_shape=(5,)).input_shape == (5,)
    assert build(s, vars={"w": 7}).output_shape == (7,)
    with pytest.raises(SpecError, match="expected one of float, long"):
        build(s, dtype="fp32")


# ----------------------------------------------------------------------- parallel


@pytest.mark.parametrize("merge, shape", [("concat", (12, 8, 8)), ("add", None), ("mean", None)])
def test_parallel_merges(merge: str, shape: tuple | None) -> None:
    out = 6 if merge != "concat" else None
    branches = [[{"conv2d": {"out": 6 if out else 4, "kernel": 1}}],
                [{"conv2d": {"out": 6 if out else 8, "kernel": 3, "padding": "same"}}]]
    net = build(spec([{"parallel": branches, "merge": merge}], IMG), seed=0)
    assert net.output_shape == (shape or (6, 8, 8))
    par = net.model[0]
    assert isinstance(par, Parallel)
    x = torch.randn(2, 3, 8, 8)
    a, b = par.parallel[0](x), par.parallel[1](x)
    expected = torch.cat([a, b], 1) if merge == "concat" else (a + b) / (2 if merge == "mean" else 1)
    torch.testing.assert_close(net(x), expected)


def test_parallel_concat_on_flat_and_sequence() -> None:
    flat = build(spec([{"parallel": [[{"linear": 3}], [{"linear": 5}], []]}]))
    assert flat.output_shape == (16,)
    assert flat(torch.randn(2, 8)).shape == (2, 16)
    seq = build(spec([{"embedding": {"vocab": 5, "dim": 4}},
                      {"parallel": {"branches": [[{"linear": 3}], [{"linear": 2}]], "merge": "concat"}}],
                     {"shape": [6], "dtype": "long"}))
    assert seq.output_shape == (6, 5)  # features concatenated, time kept
    assert seq(seq.example_input(2)).shape == (2, 6, 5)


def test_parallel_mismatch_names_the_branches() -> None:
    msg = error(spec([{"parallel": [[{"linear": 3}], [{"linear": 4}]], "merge": "add"}]), ShapeError)
    assert msg.startswith("model[0].parallel: merge 'add' needs branch outputs of one shape")
    assert "(3,) from model[0].parallel[0][0].linear" in msg
    assert "(4,) from model[0].parallel[1][0].linear" in msg
    msg = error(spec([{"parallel": [[{"conv2d": 4}], [{"conv2d": {"out": 4, "padding": 1}}]]}], IMG), ShapeError)
    assert "concat needs branch outputs equal in all dims but dim 0" in msg
    assert "(4, 6, 6) from model[0].parallel[0][0].conv2d" in msg


def test_parallel_option_errors() -> None:
    assert "merge must be one of concat, add, mean" in error(spec([{"parallel": [[], []], "merge": "max"}]))
    assert "at least 2 branches" in error(spec([{"parallel": [["relu"]]}]))
    assert "unknown option 'merg'. Did you mean 'merge'?" in error(spec([{"parallel": [[], []], "merg": "add"}]))


def test_parallel_refuses_mixed_dtypes() -> None:
    s = spec([{"parallel": [[], [{"embedding": {"vocab": 5, "dim": 1}}, {"reshape": [4]}]], "merge": "add"}],
             {"shape": [4], "dtype": "long"})
    assert "different dtypes" in error(s, ShapeError)


# ----------------------------------------------------------------------- residual


def test_identity_residual() -> None:
    net = build(spec([{"residual": [{"linear": 8}, "relu"]}]), seed=0)
    res = net.model[0]
    assert isinstance(res, Residual) and res.proj is None
    x = torch.randn(2, 8)
    torch.testing.assert_close(net(x), x + res.residual(x))


def test_auto_projection_conv_with_batchnorm() -> None:
    body = [{"conv2d": {"out": 16, "kernel": 3, "stride": 2, "padding": 1, "bias": False}}, "batchnorm"]
    net = build(spec([{"residual": body}], IMG))
    proj = net.model[0].proj
    conv, bn = proj[0], proj[1]
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (2, 2)
    assert conv.bias is None and isinstance(bn, nn.BatchNorm2d) and bn.num_features == 16
    assert list(net.state_dict())[:2] == ["model.0.residual.0.weight", "model.0.residual.1.weight"]
    assert "model.0.proj.0.weight" in net.state_dict() and "model.0.proj.1.running_mean" in net.state_dict()
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 16, 4, 4)


def test_auto_projection_conv_without_batchnorm_has_bias() -> None:
    net = build(spec([{"residual": [{"conv2d": {"out": 5, "kernel": 3, "padding": 1}}]}], IMG))
    proj = net.model[0].proj
    assert len(proj) == 1 and proj[0].bias is not None and proj[0].stride == (1, 1)


def test_auto_projection_for_odd_sizes() -> None:
    # 7 -> 4 with a stride-2 conv (padding 1): the 1x1 projection uses stride 2 as well.
    net = build(spec([{"residual": [{"conv2d": {"out": 4, "kernel": 3, "stride": 2, "padding": 1}}]}],
                     {"shape": [3, 7, 7]}))
    assert net(torch.randn(1, 3, 7, 7)).shape == (1, 4, 4, 4)


def test_linear_projection_for_flat_and_sequence() -> None:
    net = build(spec([{"residual": [{"linear": 5}]}]), seed=0)
    res = net.model[0]
    assert isinstance(res.proj, nn.Linear) and (res.proj.in_features, res.proj.out_features) == (8, 5)
    x = torch.randn(2, 8)
    torch.testing.assert_close(net(x), res.proj(x) + res.residual(x))
    seq = build(spec([{"embedding": {"vocab": 5, "dim": 4}}, {"residual": [{"linear": 3}]}],
                     {"shape": [6], "dtype": "long"}))
    assert isinstance(seq.model[1].proj, nn.Linear)
    assert seq(seq.example_input(2)).shape == (2, 6, 3)


def test_projection_none_and_explicit() -> None:
    msg = error(spec([{"residual": [{"linear": 5}], "projection": "none"}]), ShapeError)
    assert msg.startswith("model[0].residual: the branch maps (8,) to (5,) but projection is 'none'")
    net = build(spec([{"residual": [{"linear": 5}], "projection": [{"linear": {"out": 5, "bias": False}}]}]))
    assert net.model[0].proj[0].bias is None
    assert "model.0.proj.0.weight" in net.state_dict()
    assert "but the branch gives (5,)" in error(spec([{"residual": [{"linear": 5}], "projection": [{"linear": 6}]}]))
    assert "remove 'projection'" in error(spec([{"residual": ["relu"], "projection": [{"linear": 8}]}]))
    long_form = build(spec([{"residual": {"body": [{"linear": 5}], "projection": "auto"}}]))
    assert long_form.output_shape == (5,)


def test_residual_errors() -> None:
    assert "expected the layers of the residual branch" in error(spec([{"residual": None}]))
    msg = error(spec([{"residual": [{"conv2d": {"out": 4, "kernel": 3}}, "flatten"]}], IMG), ShapeError)
    assert "cannot project (3, 8, 8) onto (144,) automatically" in msg
    s = spec([{"residual": [{"embedding": {"vocab": 5, "dim": 2}}]}], {"shape": [4], "dtype": "long"})
    assert "put the embedding before the residual" in error(s, ShapeError)


# ------------------------------------------------------------------------- repeat


def test_repeat_copies_with_index_var() -> None:
    net = build(spec([{"repeat": 3, "block": [{"linear": "${8 + i}"}]}]))
    assert net.output_shape == (10,)
    assert isinstance(net.model[0], Repeat)
    shapes = [tuple(net.get_submodule(f"model.0.repeat.{i}.0").weight.shape) for i in range(3)]
    assert shapes == [(8, 8), (9, 8), (10, 9)]
    assert [leaf.path for leaf in net.layers] == [f"model[0].repeat[{i}][0].linear" for i in range(3)]


def test_repeat_var_name_long_form_and_zero_copies() -> None:
    net = build(spec([{"repeat": {"times": 2, "block": {"linear": "${(k + 1) * 4}"}, "var": "k"}}]))
    assert net.output_shape == (8,) and net.layers[0].output.shape == (4,)
    empty = build(spec([{"repeat": 0, "block": [{"linear": 3}]}, "relu"]))
    assert empty.output_shape == (8,) and list(empty.parameters()) == []
    assert empty(torch.ones(1, 8)).shape == (1, 8)


def test_nested_repeats_with_different_vars() -> None:
    s = spec([{"repeat": 2, "var": "i", "block": [{"repeat": 3, "var": "j", "block": [{"linear": "${10 * i + j + 1}"}]}]}])
    net = build(s)
    outs = [leaf.output.shape[0] for leaf in net.layers]
    assert outs == [1, 2, 3, 11, 12, 13]
    assert net.layers[4].path == "model[0].repeat[1][0].repeat[1][0].linear"
    assert net.layers[4].module_name == "model.0.repeat.1.0.repeat.1.0"


@pytest.mark.parametrize(
    "node, fragment",
    [
        ({"repeat": -1, "block": "relu"}, "expected a non-negative integer count. Received: -1"),
        ({"repeat": "many", "block": "relu"}, "expected a non-negative integer count"),
        ({"repeat": True, "block": "relu"}, "expected a non-negative integer count"),
        ({"repeat": 2}, "missing 'block'"),
        ({"repeat": 2, "block": "relu", "var": "2x"}, "'var' must be a name"),
        ({"repeat": 2, "block": "relu", "times": 3}, "unknown option 'times'"),
        ({"repeat": 2**62, "block": "relu"}, "is more than the 10,000 a spec may repeat"),
    ],
)
def test_repeat_errors(node: dict, fragment: str) -> None:
    msg = error(spec([node]))
    assert msg.startswith("model[0].repeat: ") and fragment in msg


# ------------------------------------------------------------------- named blocks


def test_named_blocks_with_var_overrides() -> None:
    s = spec(["stage", {"stage": {"w": 4}}, {"stage": {"w": "${w * 3}"}}],
             vars={"w": 2}, blocks={"stage": [{"linear": "$w"}, "relu"]})
    net = build(s)
    assert [leaf.output.shape for leaf in net.layers if leaf.kind == "linear"] == [(2,), (4,), (6,)]
    assert net.layers[0].path == "model[0].stage[0].linear"
    assert list(net.state_dict())[0] == "model.0.0.weight"


def test_blocks_may_use_blocks_and_shadow_nothing_else() -> None:
    s = spec(["outer"], vars={"w": 3}, blocks={"inner": {"linear": "$w"}, "outer": ["inner", {"inner": {"w": 5}}]})
    assert build(s).output_shape == (5,)
    assert "a block takes a mapping of var overrides" in error(spec([{"b": 3}], blocks={"b": ["relu"]}))


def test_recursive_block_is_caught_with_a_spec_error() -> None:
    for blocks in ({"a": ["a"]}, {"a": {"residual": ["a"]}}, {"a": {"repeat": 1, "block": "a"}},
                   {"a": {"parallel": [["a"], []]}}):
        assert "nesting is deeper than" in error(spec(["a"], blocks=blocks))


def test_too_many_layers_fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules["archlab.model._builder"], "_MAX_LAYERS", 50)
    s = spec([{"repeat": 10_000, "block": {"repeat": 10_000, "block": "relu"}}])
    assert "model[0].repeat[0].repeat[50].relu: the model has more than 50 layers" in error(s)


def test_recursion_that_terminates_through_vars_is_fine() -> None:
    s = spec([{"tree": {"n": 3}}], blocks={"tree": [{"linear": 4}, {"repeat": "${min(n, 1)}",
                                                                       "block": [{"tree": {"n": "${n - 1}"}}]}]})
    assert sum(1 for leaf in build(s, device="meta").layers) == 4


# ------------------------------------------------------------------ module naming


def test_state_dict_keys_follow_spec_paths() -> None:
    s = spec([{"linear": 8}, "relu", "relu",
              {"repeat": 2, "block": {"residual": [{"linear": 8}, "relu"]}}])
    assert list(build(s).state_dict()) == [
        "model.0.weight", "model.0.bias",
        "model.3.repeat.0.residual.0.weight", "model.3.repeat.0.residual.0.bias",
        "model.3.repeat.1.residual.0.weight", "model.3.repeat.1.residual.0.bias",
    ]


@pytest.mark.parametrize("name", ["resnet-mini", "inception-mini", "gpt-mini", "lstm-classifier"])
def test_every_leaf_module_name_is_its_path(name: str) -> None:
    net = build(f"zoo:{name}", device="meta")
    blocks = set(net.spec.blocks)
    for leaf in net.layers:
        module = net.get_submodule(leaf.module_name)
        assert module is not None
        # model[3].repeat[0][0].basic[0].residual[0].conv2d -> model.3.repeat.0.0.0.residual.0
        parts = leaf.path.split(".")[:-1]  # drop the layer kind
        parts = [p for p in parts if re.sub(r"\[.*", "", p) not in blocks or "[" in p]
        text = ".".join(parts)
        for b in blocks:
            text = text.replace(f"{b}[", "[")
        expected = re.sub(r"\[(\d+)\]", r".\1", text).replace("..", ".")
        assert leaf.module_name == expected, (leaf.path, leaf.module_name)


# ------------------------------------------------------------------- init, devices


def test_initialisation_is_deterministic_given_the_seed() -> None:
    a, b, c = (build("zoo:resnet-mini", seed=s) for s in (7, 7, 8))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert not all(torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values(),
                                                          strict=True))


def test_build_does_not_touch_the_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build("zoo:mlp", seed=5)
    torch.testing.assert_close(torch.rand(3), expected)


def test_meta_build_allocates_nothing() -> None:
    net = build("zoo:gpt2", device="meta")
    tensors = [*net.parameters(), *net.buffers()]
    assert tensors and all(t.device.type == "meta" for t in tensors)
    assert sum(p.numel() for p in net.parameters()) == 124_439_808
    assert net.example_input(2, device="meta").device.type == "meta"


def test_example_input_for_tokens_is_in_vocab() -> None:
    net = build("zoo:gpt-mini")
    x = net.example_input(3)
    assert x.dtype == torch.long and x.shape == (3, 128) and int(x.max()) < 96


def test_frozen_leaf() -> None:
    net = build(spec([{"linear": {"out": 4, "freeze": True}}, {"linear": 2}]))
    assert [p.requires_grad for p in net.parameters()] == [False, False, True, True]
    assert "'freeze' must be true or false" in error(spec([{"linear": {"out": 4, "freeze": 1}}]))


# ---------------------------------------------------------------- error messages


def test_shape_error_names_the_node_and_its_producer() -> None:
    msg = error(spec(["flatten", {"linear": 4}, {"conv2d": 4}], IMG), ShapeError)
    assert msg == "model[2].conv2d: expects (C,H,W) input, got (4,) (flat) produced by model[1].linear"


def test_shape_error_inside_composites_names_full_paths() -> None:
    s = spec([{"repeat": 2, "block": {"residual": ["flatten", {"conv2d": 4}]}}], IMG)
    msg = error(s, ShapeError)
    assert msg.startswith("model[0].repeat[0].residual[1].conv2d: expects (C,H,W) input, got (192,)")
    assert msg.endswith("produced by model[0].repeat[0].residual[0].flatten")


def test_unknown_layer_suggests_the_closest() -> None:
    msg = error(spec([{"lineer": 4}]))
    assert msg.startswith("model[0]: unknown layer 'lineer'. Did you mean 'linear'?")
    assert "Did you mean 'stage'" in error(spec(["stag"], blocks={"stage": ["relu"]}))


def test_unknown_argument_suggests_the_closest() -> None:
    assert error(spec([{"linear": {"outt": 4}}])) == (
        "model[0].linear: unknown argument 'outt'. Did you mean 'out'? linear takes: out, bias=true")


def test_missing_required_argument() -> None:
    assert error(spec([{"linear": {"bias": False}}])) == (
        "model[0].linear: missing required argument 'out'. linear takes: out, bias=true")
    assert "missing required argument 'out'" in error(spec(["linear"]))


@pytest.mark.parametrize(
    "args, fragment",
    [
        ("x", "argument 'out' expected an integer. Received: 'x'"),
        (2.5, "argument 'out' expected an integer. Received: 2.5"),
        (True, "argument 'out' expected an integer. Received: True"),
        ([3], "argument 'out' expected an integer. Received: [3]"),
        ({"out": 3, "bias": "no"}, "argument 'bias' expected true or false. Received: 'no'"),
        (2**60, "argument 'out' is too large"),
    ],
)
def test_wrong_argument_types(args: Any, fragment: str) -> None:
    msg = error(spec([{"linear": args}]))
    assert msg.startswith("model[0].linear: ") and fragment in msg


def test_integral_float_is_accepted_for_an_int() -> None:
    assert build(spec([{"linear": "${8 / 2}"}])).output_shape == (4,)


def test_literal_and_tuple_arguments() -> None:
    assert "expected one of 'none', 'tanh'" in error(spec([{"gelu": "fast"}]))
    assert error(spec([{"conv2d": {"out": 4, "padding": "full"}}], IMG)) == (
        "model[0].conv2d: argument 'padding' expected an integer or a list of integers or "
        "one of 'same', 'valid'. Received: 'full'")
    assert "argument 'kernel' expected an integer or a list of integers. Received: [3, 'a']" in error(
        spec([{"conv2d": {"out": 4, "kernel": [3, "a"]}}], IMG))


def test_token_input_to_linear_says_embedding_needed() -> None:
    msg = error(spec([{"linear": 4}], {"shape": [10], "dtype": "long"}), ShapeError)
    assert msg == ("model[0].linear: expects float input, got (10,) long produced by input. "
                   "Token ids need an `embedding` first.")


def test_float_input_to_embedding_says_how_to_declare_token_ids() -> None:
    msg = error(spec([{"embedding": {"vocab": 10, "dim": 4}}], {"shape": [16]}), ShapeError)
    assert msg == ("model[0].embedding: expects long input, got (16,) float produced by input. "
                   "For token ids declare them: input: {shape: [16], dtype: long}.")


def test_bare_var_arithmetic_points_to_braces() -> None:
    msg = error({"input": {"shape": [4]}, "vars": {"w": 2}, "model": [{"linear": "$w*2"}]})
    assert msg == "model[0].linear: '$w*2' is not a var reference; arithmetic goes inside ${...}: write '${w*2}'"
    assert "Did you mean 'shape'?" in error({"input": {"shap": [4]}, "model": ["relu"]})


def test_other_node_errors() -> None:
    assert "takes no arguments. Received: 3" in error(spec([{"relu": 3}]))
    assert "a layer is written as a one-key mapping" in error(spec([{"linear": 3, "relu": None}]))
    assert "expected a layer name, a {layer: args} mapping or a list. Received: 42" in error(spec([42]))
    assert "the spec has no input shape" in error({"model": ["relu"]})
    assert "input.shape: expected a per-sample shape" in error(spec(["relu"], {"shape": [0, 3]}))
    assert "unknown var 'w' in '$w'" in error(spec([{"linear": "$w"}]))


def test_weights_too_large_for_pytorch_are_a_spec_error() -> None:
    msg = error(spec(["flatten", {"linear": 2**40}, {"linear": 2**40}]))
    assert msg.startswith("model[1].linear: its weights would need a tensor of shape (1099511627776, 8)")


# ------------------------------------------------------- sizes checked before allocating


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_huge_weight_is_refused_before_anything_is_allocated(device: str) -> None:
    # It used to end in a 72-line allocator traceback (25.6 TB asked for on cpu).
    with pytest.raises(SpecError, match=r"^model\[0\]\.linear: its weights would need a tensor of shape "
                                        r"\(100000000000, 64\), 6\.4e\+12 values, more than the 2\*\*36"):
        build(spec([{"linear": 100_000_000_000}], input={"shape": [64]}), device=device)


def test_float_arguments_are_bounded_before_they_become_sizes() -> None:
    # int(16 * 1e30) reached torch.empty: "Overflow when unpacking long long".
    s = spec([{"encoder_block": {"heads": 2, "mlp_ratio": 1.0e30}}], input={"shape": [4, 16]})
    assert "model[0].encoder_block: argument 'mlp_ratio' is too large (at most 2**48)" in error(s)
    s = spec([{"encoder_block": {"heads": 2, "mlp_ratio": 1.0e10}}], input={"shape": [4, 16]})
    assert "more than the 2**36 one tensor may hold" in error(s)


def test_an_input_whose_size_overflows_is_refused() -> None:
    s = spec([{"conv2d": {"out": 4, "kernel": 3}}], input={"shape": [1, 10**11, 10**11]})
    assert "input.shape: a sample of shape [1, 100000000000, 100000000000] holds 1e+22 values" in error(s)


def test_the_residual_error_says_where_the_branch_goes() -> None:
    message = error(spec([{"residual": {"projection": "none", "layers": [{"linear": 8}]}}]))
    assert message.startswith("model[0].residual: unknown option 'layers'.")
    assert "go under 'body' (residual: {body: [...], projection: none})" in message
    # the two documented placements both work
    for node in ({"residual": {"body": [{"linear": 4}], "projection": [{"linear": 4}]}},
                 {"residual": [{"linear": 4}], "projection": [{"linear": 4}]}):
        assert build(spec([node]), device="meta").output_shape == (4,)


# ------------------------------------------------- network kinds, the protocol, the tree


def test_network_kinds_are_looked_up_in_a_registry() -> None:
    from archlab.model import KINDS, BuiltNetwork, network_kind
    from archlab.spec import load_spec

    assert KINDS.names() == ["gan", "plain", "seq2seq", "vae"]
    for name, kind in (("mlp", "plain"), ("seq2seq-additive", "seq2seq"), ("vae", "vae"), ("gan", "gan")):
        spec = load_spec(f"zoo:{name}")
        assert network_kind(spec) == kind
        net = build(spec, device="meta")
        assert isinstance(net, BuiltNetwork) and isinstance(net, KINDS.get(kind).network) and net.kind == kind
        assert net.example_input(3, device="meta").shape[0] == 3
        assert [leaf.path for s in net.sections for leaf in s.tree.leaves()] == [leaf.path for leaf in net.layers]
    gan = build("zoo:gan", device="meta")
    assert gan.data_shape == gan.image_shape != gan.input_shape  # it learns images, takes a latent
    assert build("zoo:mlp", device="meta").data_shape == (1, 8, 8)


def test_the_builder_imports_no_network_kind() -> None:
    # _builder <-> _seq2seq <-> _generative was an import cycle held by lazy imports.
    import ast
    from pathlib import Path

    import archlab.model._builder as builder_module

    tree = ast.parse(Path(builder_module.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"_seq2seq", "_generative", "_kinds"}


def test_the_builder_records_the_tree_it_built() -> None:
    s = spec([{"stage": {"w": 4}},
              {"parallel": [[{"linear": 3}], [{"linear": 5}]]},
              {"residual": [{"linear": 6}]},
              {"residual": [{"linear": 2}], "projection": [{"linear": 2}]},
              {"residual": [{"linear": 2}]},
              {"repeat": 2, "block": ["relu"], "var": "k"}],
             blocks={"stage": [{"linear": "$w"}]})
    tree = build(s, device="meta").tree
    assert tree.kind == "serial" and [c.kind for c in tree.children] == [
        "block", "parallel", "residual", "residual", "residual", "repeat"]
    block, par, auto, explicit, same, rep = tree.children
    assert (block.name, dict(block.args), block.output.shape) == ("stage", {"w": 4}, (4,))
    assert block.children[0].children[0].path == "model[0].stage[0].linear"
    assert par.name == "concat" and par.output.shape == (8,) and len(par.children) == 2
    assert auto.projection == "linear" and auto.input.shape == (8,) and auto.output.shape == (6,)
    assert explicit.projection.kind == "serial" and explicit.projection.path == "model[3].residual.projection"
    assert same.projection is None  # the branch keeps the shape: the skip is x
    assert rep.name == "k" and [c.path for c in rep.children] == ["model[5].repeat[0]", "model[5].repeat[1]"]


def test_conv_residuals_record_their_auto_projection() -> None:
    s = spec([{"residual": [{"conv2d": {"out": 8, "kernel": 3, "stride": 2, "padding": 1}}, "batchnorm"]}],
             input=IMG)
    assert build(s, device="meta").tree.children[0].projection == "1×1 conv, stride 2 + batchnorm"
