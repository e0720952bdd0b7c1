"""Property tests: whatever a spec says, `build` either succeeds or raises a SpecError
(ShapeError included) -- never a TypeError, ValueError, RuntimeError or the like leaking
out of PyTorch or the builder. When it succeeds, its inferred output shape is what a
forward pass really produces."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archlab import LAYERS, build, load_spec, zoo_names
from archlab.core import SpecError

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

LAYER_NAMES = LAYERS.names()
PARAMS = {name: [p.name for p in LAYERS.get(name).params] for name in LAYER_NAMES}

GARBAGE = st.one_of(
    st.none(), st.booleans(),
    st.integers(-3, 3), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "same", "valid", "relu", "gelu", "learned", "last", "sequence", "$w", "${w * 2}",
                     "${1 / 0}", "$nope", "${", "swiglu", "rmsnorm", "x" * 3]),
    st.lists(st.integers(-2, 9), max_size=4),
    st.dictionaries(st.sampled_from(["a", "out", "block"]), st.integers(0, 3), max_size=2),
)
# Mostly plausible values, so builds get deep before something is wrong.
PLAUSIBLE = st.one_of(st.integers(1, 12), st.integers(1, 12), st.booleans(), st.sampled_from([0.0, 0.1, 0.5, 2.0]),
                      st.lists(st.integers(1, 4), min_size=1, max_size=3))
VALUE = st.one_of(PLAUSIBLE, PLAUSIBLE, GARBAGE)


@st.composite
def leaf(draw: st.DrawFn) -> Any:
    name = draw(st.one_of(st.sampled_from(LAYER_NAMES), st.sampled_from(["lineer", "blk", "conv3d"])))
    params = PARAMS.get(name, ["out"])
    form = draw(st.integers(0, 3))
    if form == 0 or not params:
        return name
    if form == 1:
        return {name: draw(VALUE)}
    keys = st.sampled_from([*params, "freeze", "bogus"]) if params else st.just("bogus")
    return {name: draw(st.dictionaries(keys, VALUE, max_size=4))}


def composite(children: st.SearchStrategy) -> st.SearchStrategy:
    merge = st.sampled_from(["concat", "add", "mean", "max", 3])
    projection = st.one_of(st.sampled_from(["auto", "none", False, "bogus"]), children)
    return st.one_of(
        st.lists(children, max_size=4),
        st.builds(lambda b, m: {"parallel": b, "merge": m}, st.lists(children, max_size=3), merge),
        st.builds(lambda b: {"parallel": {"branches": b}}, st.lists(children, min_size=2, max_size=3)),
        st.builds(lambda b: {"residual": b}, children),
        st.builds(lambda b, p: {"residual": b, "projection": p}, children, projection),
        st.builds(lambda n, b: {"repeat": n, "block": b}, st.one_of(st.integers(-1, 3), GARBAGE.filter(
            lambda v: not isinstance(v, int) or isinstance(v, bool) or abs(v) < 4)), children),
        st.builds(lambda n, b, v: {"repeat": n, "block": b, "var": v}, st.integers(0, 3), children,
                  st.sampled_from(["i", "j", "w", "2x", ""])),
        st.builds(lambda b: {"repeat": {"times": 2, "block": b}}, children),
    )


NODES = st.recursive(leaf(), composite, max_leaves=12)

INPUTS = st.one_of(
    st.builds(lambda s: {"shape": s}, st.lists(st.integers(1, 12), min_size=1, max_size=3)),
    st.builds(lambda s: {"shape": s, "dtype": "long"}, st.lists(st.integers(1, 12), min_size=1, max_size=2)),
    st.builds(lambda s, d: {"shape": s, "dtype": d}, st.lists(st.integers(-1, 3), max_size=4),
              st.sampled_from(["float", "long", "int8", 3])),
)


@st.composite
def specs(draw: st.DrawFn) -> dict:
    spec: dict[str, Any] = {"input": draw(INPUTS), "model": draw(st.lists(NODES, min_size=1, max_size=5))}
    if draw(st.booleans()):
        spec["model"].insert(0, {"embedding": {"vocab": 7, "dim": draw(st.integers(1, 8))}})
        spec["input"] = {"shape": [draw(st.integers(1, 10))], "dtype": "long"}
    spec["vars"] = {"w": draw(st.one_of(st.integers(1, 8), GARBAGE))}
    if draw(st.booleans()):
        spec["blocks"] = {"blk": draw(NODES)}
    return spec


def check(spec: Any, forward: bool = True) -> None:
    try:
        net = build(spec, device="meta")
    except SpecError:
        return
    if not forward:
        return
    x = net.example_input(2, device="meta")
    # A built model's inferred shapes are what PyTorch computes.
    with torch.no_grad():
        y = net(x)
    assert tuple(y.shape) == (2, *net.output_shape), (spec, y.shape, net.output_shape)


@SETTINGS
@given(specs())
def test_random_specs_build_or_raise_spec_errors(spec: dict) -> None:
    check(spec)


# --------------------------------------------------------- layout-aware random chains
# Layers are picked to suit the layout of what flows into them, so most of these build and
# the forward-shape check runs on deep, varied models (argument sizes may still clash).

SMALL = st.integers(1, 6)
ACTIVATIONS = st.sampled_from(["relu", "gelu", "silu", "sigmoid", "tanh", "identity", "leaky_relu",
                               {"gelu": "tanh"}, {"dropout": 0.2}])


def _image_layer() -> st.SearchStrategy:
    return st.one_of(
        ACTIVATIONS, st.just("batchnorm"),
        st.fixed_dictionaries({"out": SMALL, "kernel": st.integers(1, 3), "stride": st.integers(1, 2),
                               "padding": st.integers(0, 1), "dilation": st.integers(1, 2),
                               "bias": st.booleans()}).map(lambda a: {"conv2d": a}),
        st.fixed_dictionaries({"out": SMALL, "kernel": st.integers(1, 4)}).map(
            lambda a: {"conv2d": {**a, "padding": "same"}}),
        st.tuples(st.sampled_from(["maxpool", "avgpool"]),
                  st.fixed_dictionaries({"kernel": st.integers(1, 3), "stride": st.sampled_from([None, 1, 2]),
                                         "padding": st.integers(0, 1), "ceil": st.booleans()})).map(
            lambda t: {t[0]: t[1]}),
        st.fixed_dictionaries({"kernel": st.integers(1, 3), "ceil": st.booleans()}).map(
            lambda a: {"avgpool2d": a}),
    )


def _flat_layer() -> st.SearchStrategy:
    return st.one_of(ACTIVATIONS, st.sampled_from(["batchnorm", "layernorm", "rmsnorm"]),
                     SMALL.map(lambda n: {"linear": n}), st.integers(4, 12).map(lambda n: {"mlp": n}),
                     st.integers(4, 12).map(lambda n: {"swiglu": n}))


def _sequence_layer() -> st.SearchStrategy:
    block = st.fixed_dictionaries({"heads": st.sampled_from([1, 2]), "mlp": st.sampled_from(["gelu", "relu", "swiglu"]),
                                   "norm": st.sampled_from(["layernorm", "rmsnorm"]), "rope": st.booleans(),
                                   "mlp_ratio": st.sampled_from([1.0, 2.0])})
    return st.one_of(
        ACTIVATIONS, st.sampled_from(["layernorm", "rmsnorm", "pos_embedding", "sinusoidal"]),
        st.integers(1, 4).map(lambda n: {"linear": 2 * n}),
        st.fixed_dictionaries({"heads": st.sampled_from([1, 2]), "causal": st.booleans(), "rope": st.booleans()}).map(
            lambda a: {"attention": a}),
        st.tuples(st.sampled_from(["encoder_block", "decoder_block", "transformer_block"]), block).map(
            lambda kv: {kv[0]: kv[1]}),
        st.tuples(st.sampled_from(["rnn", "lstm", "gru"]), SMALL, st.booleans()).map(
            lambda t: {t[0]: {"hidden": 2 * t[1], "bidirectional": t[2], "returns": "sequence"}}),
    )


def _to_flat() -> st.SearchStrategy:  # image or sequence -> flat
    return st.sampled_from(["flatten", "global_avgpool", "global_maxpool"])


@st.composite
def _chain(draw: st.DrawFn, layout: str, depth: int = 0) -> tuple[list, str]:
    layers: list[Any] = []
    for _ in range(draw(st.integers(1, 4))):
        pick = draw(st.integers(0, 9))
        if depth < 2 and pick == 0 and layout in ("image", "flat", "sequence"):
            body, out = draw(_chain(layout, depth + 1))
            if out == layout:
                layers.append({"residual": body})
                continue
        if depth < 2 and pick == 1 and layout in ("image", "flat", "sequence"):
            a, out_a = draw(_chain(layout, depth + 1))
            b, out_b = draw(_chain(layout, depth + 1))
            if out_a == out_b == layout:
                layers.append({"parallel": [a, b], "merge": draw(st.sampled_from(["concat", "add", "mean"]))})
                continue
        if depth < 2 and pick == 2:
            body, out = draw(_chain(layout, depth + 1))
            if out == layout:
                layers.append({"repeat": draw(st.integers(0, 2)), "block": body})
                continue
        if layout == "image":
            if pick == 9:
                layers.append(draw(_to_flat()))
                layout = "flat"
            else:
                layers.append(draw(_image_layer()))
        elif layout == "sequence":
            if pick == 9:
                layers.append(draw(st.one_of(
                    st.sampled_from(["mean", "max", "first", "last"]).map(lambda m: {"seq_pool": m}),
                    st.just({"additive_attention": {"query": "mean"}}),
                    st.tuples(st.sampled_from(["rnn", "lstm", "gru"]), SMALL).map(lambda t: {t[0]: t[1]}))))
                layout = "flat"
            elif pick == 8:
                layers.append({"permute": [1, 0]})
                layers.append({"conv1d": {"out": draw(SMALL), "kernel": draw(st.integers(1, 3)), "padding": 1}})
                layers.append("global_maxpool")
                layout = "flat"
            else:
                layers.append(draw(_sequence_layer()))
        else:
            layers.append(draw(_flat_layer()))
    return layers, layout


@st.composite
def typed_specs(draw: st.DrawFn) -> dict:
    kind = draw(st.sampled_from(["image", "flat", "tokens"]))
    if kind == "image":
        shape = [draw(SMALL), draw(st.integers(4, 10)), draw(st.integers(4, 10))]
        prefix: list[Any] = []
        layout = "image"
    elif kind == "flat":
        shape, prefix, layout = [draw(st.integers(1, 10))], [], "flat"
    else:
        shape = [draw(st.integers(2, 9))]
        prefix = [{"embedding": {"vocab": 13, "dim": 2 * draw(st.integers(1, 4))}}]
        layout = "sequence"
    body, _ = draw(_chain(layout))
    return {"input": {"shape": shape, "dtype": "long" if kind == "tokens" else "float"}, "model": prefix + body}


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@SETTINGS
@given(typed_specs())
def test_layout_aware_specs_infer_the_shapes_pytorch_computes(spec: dict) -> None:
    check(spec)


# ------------------------------------------------------------------- mutated zoo


SMALL_ZOO = ["mlp", "cnn", "resnet-mini", "inception-mini", "cnn-cifar", "gpt-mini", "transformer-classifier",
             "lstm-classifier", "rnn-imdb"]
LARGE_ZOO = ["resnet18", "vgg11", "gpt2", "llama-7b"]
SMALL_ZOO += [name for name in zoo_names() if name.startswith("seq2seq")]
ZOO = {name: load_spec(f"zoo:{name}").to_dict() for name in SMALL_ZOO + LARGE_ZOO}


def _containers(node: Any, out: list) -> list:
    """Every list and dict inside a spec, so a mutation can pick any of them."""
    if isinstance(node, list | dict):
        out.append(node)
        for child in (node if isinstance(node, list) else node.values()):
            _containers(child, out)
    return out


@st.composite
def mutated_zoo(draw: st.DrawFn) -> tuple[str, dict]:
    name = draw(st.sampled_from(SMALL_ZOO + LARGE_ZOO))
    spec = copy.deepcopy(ZOO[name])
    if name == "rnn-imdb" or name == "lstm-classifier":
        spec["input"]["shape"] = [12]  # keep recurrent forwards short
    for _ in range(draw(st.integers(1, 3))):
        targets = [c for section in ("model", "encoder", "decoder", "blocks")
                   for c in _containers(spec.get(section), [])]
        target = draw(st.sampled_from(targets))
        action = draw(st.sampled_from(["drop", "duplicate", "replace", "perturb", "delete_key", "swap"]))
        if isinstance(target, list) and target:
            i = draw(st.integers(0, len(target) - 1))
            if action == "drop":
                del target[i]
            elif action == "duplicate":
                target.insert(i, copy.deepcopy(target[i]))
            elif action == "swap" and len(target) > 1:
                j = draw(st.integers(0, len(target) - 1))
                target[i], target[j] = target[j], target[i]
            else:
                target[i] = draw(st.one_of(leaf(), VALUE))
        elif isinstance(target, dict) and target:
            key = draw(st.sampled_from(sorted(target)))
            if action in ("drop", "delete_key"):
                del target[key]
            elif action == "perturb":
                target[key] = draw(GARBAGE)
            elif action == "duplicate":
                target[key + "_"] = copy.deepcopy(target[key])
            else:
                target[key] = draw(st.one_of(leaf(), VALUE))
    if draw(st.integers(0, 4)) == 0:
        spec["vars"] = {k: draw(st.one_of(st.just(v), GARBAGE)) for k, v in spec.get("vars", {}).items()}
    return name, spec


@SETTINGS
@given(mutated_zoo())
def test_mutated_zoo_specs_build_or_raise_spec_errors(case: tuple[str, dict]) -> None:
    name, spec = case
    check(spec, forward=name in SMALL_ZOO)


@SETTINGS
@given(st.data())
def test_arbitrary_top_level_data_is_refused_cleanly(data: st.DataObject) -> None:
    keys = st.sampled_from(["name", "input", "vars", "blocks", "model", "encoder", "decoder", "train",
                            "description", "modle"])
    spec = data.draw(st.dictionaries(keys, st.one_of(GARBAGE, NODES), max_size=6))
    check(spec, forward=False)
