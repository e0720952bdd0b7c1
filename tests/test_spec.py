"""Specs: loading from every source, the frozen round trip, vars and expressions, search
spaces, variations (with_vars / with_defaults) and the wording of every error."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from archlab.core import FrozenDict, SpecError, freeze, thaw
from archlab.spec import (
    ChoiceSpace,
    FloatSpace,
    IntSpace,
    Spec,
    load_spec,
    parse_assignment,
    parse_shape,
    resolve_vars,
    substitute,
    zoo_names,
)

SIMPLE = {"name": "tiny", "input": {"shape": [4]}, "vars": {"width": 8},
          "model": [{"linear": "$width"}, "relu", {"linear": 2}]}

SEARCH = {
    "name": "searchable",
    "input": {"shape": [1, 8, 8]},
    "vars": {
        "width": {"int": [16, 128], "log": True, "default": 32},
        "depth": {"int": [1, 9], "step": 2, "default": 3},
        "lr": {"float": [1e-4, 1e-1], "log": True},
        "drop": {"float": [0, 0.5], "default": 0.1},
        "act": {"choice": ["relu", "gelu", "silu"], "default": "gelu"},
        "kind": {"choice": [[1, 2], {"a": 1}]},
        "plain": 7,
    },
    "blocks": {"unit": [{"linear": "$width"}, "$act"]},
    "model": ["flatten", {"repeat": "$depth", "block": "unit"}, {"linear": 10}],
    "train": {"epochs": 3, "lr": "$lr"},
    "description": "a search space",
}


# ------------------------------------------------------------------------- loading


def test_load_from_dict_yaml_string_file_and_zoo(tmp_path: Path) -> None:
    from_dict = load_spec(SIMPLE)
    from_yaml = load_spec(yaml.safe_dump(SIMPLE))
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(SIMPLE))
    from_file = load_spec(path)
    from_str_path = load_spec(str(path))
    assert from_dict == from_yaml == from_file == from_str_path
    assert isinstance(from_dict, Spec)
    assert load_spec(from_dict) is from_dict
    zoo = load_spec("zoo:mlp")
    assert zoo.name == "mlp" and zoo.input is not None and zoo.input.shape == (1, 8, 8)


def test_unnamed_specs_take_the_file_or_zoo_name(tmp_path: Path) -> None:
    path = tmp_path / "my-net.yaml"
    path.write_text("model: [relu]\n")
    assert load_spec(path).name == "my-net"
    assert load_spec({"model": ["relu"]}).name == "unnamed"


def test_a_json_style_one_line_yaml_string_loads() -> None:
    spec = load_spec('{"input": {"shape": [4]}, "model": [{"linear": 2}]}')
    assert spec.input is not None and spec.input.shape == (4,)


@pytest.mark.parametrize("name", zoo_names())
def test_every_zoo_spec_round_trips(name: str) -> None:
    spec = load_spec(f"zoo:{name}")
    again = Spec.from_dict(spec.to_dict())
    assert again == spec
    assert Spec.from_dict(yaml.safe_load(spec.to_yaml())) == spec


def test_search_spec_round_trips_with_its_markers() -> None:
    spec = load_spec(SEARCH)
    assert set(spec.spaces) == {"width", "depth", "lr", "drop", "act", "kind"}
    assert dict(spec.vars) == {"plain": 7}
    assert spec.spaces["width"] == IntSpace(16, 128, log=True, default=32)
    assert spec.spaces["depth"] == IntSpace(1, 9, step=2, default=3)
    assert spec.spaces["lr"] == FloatSpace(1e-4, 1e-1, log=True)
    assert spec.spaces["drop"] == FloatSpace(0.0, 0.5, default=0.1)
    assert isinstance(spec.spaces["act"], ChoiceSpace)
    assert Spec.from_dict(spec.to_dict()) == spec
    assert Spec.from_dict(yaml.safe_load(spec.to_yaml())) == spec
    assert spec.to_dict()["vars"]["width"] == {"int": [16, 128], "log": True, "default": 32}


def test_to_dict_is_plain_data() -> None:
    data = load_spec(SEARCH).to_dict()

    def plain(v: object) -> bool:
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return isinstance(v, str | int | float | bool | type(None))

    assert plain(data)


# -------------------------------------------------------------------------- frozen


def test_spec_is_frozen_all_the_way_down() -> None:
    spec = load_spec(SEARCH)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.vars["plain"] = 3  # type: ignore[index]
    with pytest.raises(TypeError):
        spec.train["epochs"] = 9  # type: ignore[index]
    with pytest.raises(TypeError):
        spec.blocks["unit"][0]["linear"] = 3  # type: ignore[index]
    with pytest.raises(AttributeError):
        spec.model.append("relu")  # type: ignore[attr-defined]
    assert isinstance(spec.model, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.spaces["width"].low = 1  # type: ignore[misc]


def test_changing_the_source_dict_does_not_change_the_spec() -> None:
    data = {"input": {"shape": [4]}, "vars": {"w": [1, 2]}, "model": [{"linear": 2}]}
    spec = load_spec(data)
    data["model"].append("relu")
    data["vars"]["w"].append(3)
    assert spec.model == freeze([{"linear": 2}])
    assert spec.vars["w"] == (1, 2)


def test_freeze_and_thaw_are_inverse() -> None:
    data = {"a": [1, {"b": (2, 3)}], "c": "x"}
    frozen = freeze(data)
    assert isinstance(frozen, FrozenDict) and isinstance(frozen["a"], tuple)
    assert thaw(frozen) == {"a": [1, {"b": [2, 3]}], "c": "x"}


# ---------------------------------------------------------------- vars, expressions


def test_vars_may_refer_to_vars_in_any_order() -> None:
    spec = load_spec({"vars": {"c": "${b * 2}", "a": 4, "b": "${a + 1}", "d": "$c", "e": "w${a}"},
                      "model": ["relu"]})
    assert spec.resolved_vars() == {"c": 10, "a": 4, "b": 5, "d": 10, "e": "w4"}


@pytest.mark.parametrize(
    "vars, cycle",
    [
        ({"a": "${b + 1}", "b": "${a}"}, "a -> b -> a"),
        ({"a": "$b", "b": "$a"}, "a -> b -> a"),
        ({"a": "${a}"}, "a -> a"),
        ({"x": 1, "a": "${b}", "b": "${c}", "c": "${a * x}"}, "a -> b -> c -> a"),
    ],
)
def test_var_cycles_are_named(vars: dict, cycle: str) -> None:
    spec = load_spec({"vars": vars, "model": ["relu"]})
    with pytest.raises(SpecError) as info:
        spec.resolved_vars()
    message = str(info.value)
    assert f"cycle: {cycle}" in message
    assert message.startswith("vars.")
    assert message.count("vars.") == 1, message  # named once, not once per hop


def test_an_error_inside_a_referenced_var_names_that_var() -> None:
    with pytest.raises(SpecError, match=r"^vars\.b: unknown var 'nope'"):
        resolve_vars({"a": "${b}", "b": "${nope + 1}"})


def test_substitute_whole_values_and_interpolated_text() -> None:
    names = {"w": 32, "act": "gelu", "sizes": (1, 2), "f": 0.5}
    assert substitute("$w", names, "x") == 32
    assert substitute("${w * 2}", names, "x") == 64
    assert substitute("  ${w // 3}  ", names, "x") == 10
    assert substitute("$act", names, "x") == "gelu"
    assert substitute("$sizes", names, "x") == (1, 2)
    assert substitute("conv${w}x${w // 2}", names, "x") == "conv32x16"
    assert substitute("${w / 2}-wide", names, "x") == "16-wide"  # 16.0 prints as 16
    assert substitute("${f}", names, "x") == 0.5
    assert substitute("plain text", names, "x") == "plain text"
    assert substitute("costs $5", names, "x") == "costs $5"  # not a reference: left alone
    nested = substitute({"a": ["$w", {"b": "${w + 1}"}]}, names, "x")
    assert thaw(nested) == {"a": [32, {"b": 33}]}


def test_substitute_errors_name_the_place() -> None:
    with pytest.raises(SpecError, match=r"^model\[2\]\.linear: unknown var 'widht' in '\$widht'"):
        substitute("$widht", {"width": 1}, "model[2].linear")
    with pytest.raises(SpecError, match=r"^model\[2\]\.linear: division by zero"):
        substitute("${width / 0}", {"width": 1}, "model[2].linear")
    with pytest.raises(SpecError, match=r"^here: unknown var 'q'"):
        substitute("a${q}b", {}, "here")


# ---------------------------------------------------------------- search spaces


@pytest.mark.parametrize(
    "marker, fragment",
    [
        ({"int": [8, 4]}, "low 8 is greater than high 4"),
        ({"int": [0, 4], "log": True}, "a log scale needs low > 0"),
        ({"float": [-1.0, 4.0], "log": True}, "a log scale needs low > 0"),
        ({"int": [1, 8], "step": 2, "log": True}, "'step' cannot be combined with 'log'"),
        ({"int": [1, 8], "step": 0}, "'step' must be a positive integer"),
        ({"int": [1, 8], "step": 1.5}, "'step' must be a positive integer"),
        ({"int": [1.5, 8]}, "int bounds must be integers"),
        ({"int": [1, 8], "scale": 2}, "unknown key 'scale' in a int search space"),
        ({"float": [0, 1], "step": 0.1}, "unknown key 'step'"),
        ({"choice": ["a"], "log": True}, "unknown key 'log'"),
        ({"int": [1]}, "expected [low, high] numbers"),
        ({"int": "1-8"}, "expected [low, high] numbers"),
        ({"float": [0, True]}, "expected [low, high] numbers"),
        ({"float": [0, float("inf")]}, "expected [low, high] numbers"),
        ({"float": [float("nan"), 1]}, "expected [low, high] numbers"),
        ({"choice": []}, "non-empty list of options"),
        ({"choice": "relu"}, "non-empty list of options"),
        ({"int": [1, 8], "log": "yes"}, "'log' must be true or false"),
        ({"int": [1, 8], "default": 9}, "default 9 is outside the space"),
        ({"int": [1, 8], "default": 2.5}, "default 2.5 is outside the space"),
        ({"float": [0, 1], "default": 2}, "default 2 is outside the space"),
        ({"float": [0, 1], "default": "abc"}, "default must be a number"),
        ({"float": [0, 1], "default": [1]}, "default must be a number"),
        ({"choice": ["relu", "gelu"], "default": "tanh"}, "default 'tanh' is outside the space"),
    ],
)
def test_bad_search_spaces_name_the_var(marker: dict, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec({"vars": {"width": marker}, "model": ["relu"]})
    message = str(info.value)
    assert message.startswith("vars.width: "), message
    assert fragment in message


def test_space_contains() -> None:
    assert IntSpace(1, 8).contains(8) and not IntSpace(1, 8).contains(9)
    assert not IntSpace(1, 8).contains(True) and not IntSpace(1, 8).contains(2.0)
    assert FloatSpace(0.0, 1.0).contains(1) and not FloatSpace(0.0, 1.0).contains(False)
    assert ChoiceSpace(("a", "b")).contains("a") and not ChoiceSpace(("a",)).contains("c")
    assert ChoiceSpace(freeze([[1, 2]])).contains([1, 2])


def test_with_vars_validates_against_spaces() -> None:
    spec = load_spec(SEARCH)
    fixed = spec.with_vars({"width": 64, "act": "silu", "plain": 9})
    assert "width" not in fixed.spaces and fixed.vars["width"] == 64
    assert fixed.vars["plain"] == 9
    assert spec.spaces["width"].contains(32)  # the original is untouched
    with pytest.raises(SpecError, match=r"^vars\.width: 500 is outside the search space"):
        spec.with_vars({"width": 500})
    with pytest.raises(SpecError, match=r"vars\.act: 'tanh' is outside"):
        spec.with_vars({"act": "tanh"})
    with pytest.raises(SpecError, match=r"--set widht: the spec has no var 'widht'\. Did you mean 'width'\?"):
        spec.with_vars({"widht": 3})
    # Data-derived vars are always accepted; strict=False accepts anything.
    assert spec.with_vars({"num_classes": 3}).vars["num_classes"] == 3
    assert spec.with_vars({"anything": 1}, strict=False).vars["anything"] == 1


def test_with_defaults_names_the_missing_var_and_suggests_set() -> None:
    spec = load_spec(SEARCH)
    with pytest.raises(SpecError) as info:
        spec.with_defaults()
    message = str(info.value)
    assert message.startswith("vars.lr: ")
    assert "no default" in message
    assert "--set lr=0.0001" in message and "--set kind=[1, 2]" in message
    done = spec.with_vars({"lr": 0.01, "kind": [1, 2]}).with_defaults()
    assert not done.spaces
    assert done.resolved_vars()["width"] == 32 and done.resolved_vars()["act"] == "gelu"


def test_resolved_vars_uses_defaults() -> None:
    spec = load_spec({"vars": {"w": {"int": [1, 8], "default": 4}, "h": "${w * 2}"}, "model": []})
    assert spec.resolved_vars() == {"w": 4, "h": 8}


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"modle": []}, "unknown section 'modle'. Did you mean 'model'?"),
        ({"model": [], "var": {}}, "unknown section 'var'. Did you mean 'vars'?"),
        ({"model": [], "inputs": [4]}, "for one unnamed input write input: [4]"),
        ({"name": "x"}, "missing 'model'"),
        ({"model": None}, "missing 'model'"),
        ({"model": [], "name": ""}, "name: expected a non-empty string"),
        ({"model": [], "vars": [1]}, "vars: expected a mapping"),
        ({"model": [], "vars": {"1x": 2}}, "'1x' is not a valid var name"),
        ({"model": [], "blocks": [1]}, "blocks: expected a mapping"),
        ({"model": [], "train": 3}, "train: expected a mapping"),
        ({"model": [], "input": "big"}, "input: expected {shape: [C, H, W]}"),
        ({"model": [], "input": {"shape": [1], "size": 2}}, "unknown key 'size'"),
        ({"model": [], "input": {"shape": [1], "dtype": "int8"}}, "dtype: expected one of float, long"),
        ({"model": [], "input": {"shape": "1x28"}}, "shape: expected a list of positive integers"),
    ],
)
def test_section_errors(data: object, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(data)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_a_spec_must_be_a_mapping() -> None:
    with pytest.raises(SpecError, match="a spec must be a mapping"):
        Spec.from_dict([1, 2])  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="a spec must be a mapping"):
        load_spec("- relu\n- relu\n")


def test_exponent_floats_are_numbers_in_yaml() -> None:
    # YAML 1.1 (PyYAML's default) reads 1e-3 as a string; specs read it as a float.
    spec = load_spec("vars: {lr: {float: [1e-4, 1e-1], log: true}}\ntrain: {lr: 1e-3}\nmodel: [relu]\n")
    assert spec.spaces["lr"] == FloatSpace(1e-4, 1e-1, log=True)
    assert spec.train["lr"] == 1e-3


def test_input_shorthands() -> None:
    assert load_spec({"input": [1, 8, 8], "model": []}).input.shape == (1, 8, 8)  # type: ignore[union-attr]
    assert load_spec({"input": {"shape": 16}, "model": []}).input.shape == (16,)  # type: ignore[union-attr]
    assert load_spec({"model": []}).input is None


def test_invalid_yaml_names_line_and_column() -> None:
    text = "name: x\nmodel:\n  - linear: {out: 3\n  - relu\n"
    with pytest.raises(SpecError, match=r"^spec: invalid YAML at line \d+, column \d+: "):
        load_spec(text)


def test_list_vars_are_indexed_in_expressions() -> None:
    from torch import nn

    from archlab import build

    text = ("vars: {stages: [1, 2, 3], w: 4}\nmodel:\n  - repeat: 3\n    var: s\n    block:\n"
            "      - repeat: '${stages[s]}'\n        block: [linear: '${w * stages[-1 - s]}']\n")
    widths = [m.weight.shape[0] for m in build(load_spec(text), input_shape=(2,)).modules()
              if isinstance(m, nn.Linear)]
    assert widths == [12, 8, 8, 4, 4, 4]  # stage s repeats stages[s] times, width w * stages[-1 - s]
    for expr, words in [("${stages[3]}", "index 3 is out of range for var 'stages', which has 3 items"),
                        ("${w[0]}", "var 'w' is 4, not a list, so it cannot be indexed"),
                        ("${stages[0.5]}", "an index into var 'stages' must be a whole number"),
                        ("${stages + 1}", "'+' needs numbers")]:
        with pytest.raises(SpecError, match=re.escape(words)):
            build(load_spec({"vars": {"stages": [1, 2, 3], "w": 4}, "model": [{"linear": expr}]}), input_shape=(2,))


def test_unquoted_expression_in_flow_mapping_gets_a_hint() -> None:
    text = "vars: {w: 4}\nmodel:\n  - linear: {out: ${w // 2}}\n"
    with pytest.raises(SpecError, match="must be quoted"):
        load_spec(text)


def test_self_referencing_yaml_alias_is_refused() -> None:
    with pytest.raises(SpecError, match=r"spec.model\[0\]: a YAML alias contains itself"):
        load_spec("model: &x [*x]\n")


def test_missing_file_and_unknown_zoo_name(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match=r"zoo:resnet81: no such zoo spec\. Did you mean zoo:resnet18"):
        load_spec("zoo:resnet81")


def test_with_input_and_with_train() -> None:
    spec = load_spec(SIMPLE)
    assert spec.with_input((8,)).input.shape == (8,)  # type: ignore[union-attr]
    assert spec.with_input(dtype="long").input.dtype == "long"  # type: ignore[union-attr]
    with pytest.raises(SpecError, match="input.dtype: expected one of float, long"):
        spec.with_input(dtype="fp32")
    trained = spec.with_train(epochs=3)
    assert trained.train["epochs"] == 3 and not spec.train
    assert Spec.from_dict(trained.to_dict()) == trained


# ---------------------------------------------------------------- CLI helpers


@pytest.mark.parametrize("text, shape", [("1,28,28", (1, 28, 28)), ("1x28x28", (1, 28, 28)),
                                         (" 3, 32 ,32 ", (3, 32, 32)), ("784", (784,)),
                                         ("3 224 224", (3, 224, 224))])
def test_parse_shape(text: str, shape: tuple) -> None:
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["", "a,b", "1,0", "1,-2", "1.5,2", ",,"])
def test_parse_shape_errors(text: str) -> None:
    with pytest.raises(SpecError, match="--input"):
        parse_shape(text)


@pytest.mark.parametrize(
    "text, expected",
    [("depth=3", ("depth", 3)), ("lr=1e-3", ("lr", 1e-3)), ("act=gelu", ("act", "gelu")),
     ("sizes=[1, 2]", ("sizes", [1, 2])), (" w = 0.5", ("w", 0.5)), ("x=a=b", ("x", "a=b")),
     ("flag=true", ("flag", True)), ("bad={", ("bad", "{"))],
)
def test_parse_assignment(text: str, expected: tuple) -> None:
    assert parse_assignment(text) == expected


def test_parse_assignment_needs_equals() -> None:
    with pytest.raises(SpecError, match="--set: expected NAME=VALUE"):
        parse_assignment("depth")


def test_built_networks_and_specs_copy_and_pickle() -> None:
    import copy
    import io
    import pickle

    import torch

    from archlab import build

    net = build(load_spec("zoo:cnn"), seed=0)
    twin = copy.deepcopy(net)  # failed while frozen specs were MappingProxyType views
    assert twin.spec == net.spec and twin.layers[1].args == net.layers[1].args
    x = torch.randn(2, *net.input_shape)
    net.eval(), twin.eval()
    assert torch.equal(net(x), twin(x))
    torch.save(net, io.BytesIO())
    frozen = freeze({"a": {"b": [1]}})
    assert pickle.loads(pickle.dumps(frozen)) == frozen
    with pytest.raises(TypeError):
        frozen["a"] = 1  # still read-only
    assert frozen | {"c": 2} == {"a": {"b": (1,)}, "c": 2} and {"c": 2} | frozen == frozen | {"c": 2}


# ------------------------------------------------------------- untrusted spec data


def test_a_5000_digit_integer_in_yaml_is_a_one_line_error() -> None:
    # PyYAML's int() raised "ValueError: Exceeds the limit (4300 digits)" with a traceback.
    for literal in ("9" * 5000, "0x" + "f" * 5000, "-" + "1" * 5000):
        with pytest.raises(SpecError, match=r"^spec: invalid YAML at line 2, column 17: an integer written "
                                            r"with \d+ digits is too large") as info:
            load_spec(f"input: [4]\nmodel: [linear: {literal}]\n")
        assert "\n" not in str(info.value)
    with pytest.raises(SpecError, match=r"the integer 18446744073709551616 is too large"):
        load_spec("input: [4]\nmodel: [linear: 18446744073709551616]\n")


def test_a_5000_digit_integer_in_an_expression_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"^vars\.w: the 5000-digit number"):
        Spec.from_dict({"vars": {"w": "${" + "9" * 5000 + "}"}, "model": ["relu"]}).resolved_vars()


def test_huge_values_through_the_dict_api_and_set_are_refused() -> None:
    with pytest.raises(SpecError, match=r"^spec\.vars\.w: the integer <a 5001-digit integer> is too large"):
        load_spec({"vars": {"w": 10**5000}, "model": ["relu"]})
    with pytest.raises(SpecError, match=r"^vars\.w: the integer <a 5001-digit integer> is too large"):
        load_spec(SIMPLE).with_vars({"w": 10**5000}, strict=False)
    with pytest.raises(SpecError, match=r"^--set w: an integer written with 5000 digits is too large"):
        parse_assignment("w=" + "9" * 5000)


def _alias_bomb(levels: int) -> str:
    lines = ["vars:", "  a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"  a{i}: &a{i} [{refs}]")
    return "\n".join([*lines, "model: [relu]", ""])


def test_yaml_alias_bombs_are_refused_before_they_expand() -> None:
    text = _alias_bomb(9)  # about 500 bytes; 10**9 values once expanded
    assert len(text) < 600
    with pytest.raises(SpecError, match=r"more than 200,000 values once its YAML aliases are expanded"):
        load_spec(text)
    assert load_spec(_alias_bomb(3)).vars["a2"][9][9] == ("x",) * 10  # small ones are fine


def test_a_spec_file_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("input: [4]\nmodel:\n" + "  - relu\n" * 200_000)  # 1.8 MB
    with pytest.raises(SpecError, match=r"huge.yaml: the spec file is 1,800,018 bytes, more than the "
                                        r"1,048,576 \(1 MiB\) a spec may have"):
        load_spec(path)
    with pytest.raises(SpecError, match=r"^spec: the spec text is more than the 1,048,576 bytes"):
        load_spec(path.read_text())


def test_the_layer_count_is_checked_while_parsing() -> None:
    with pytest.raises(SpecError, match=r"^spec\.model: has more than 20,000 layers"):
        load_spec({"input": [4], "model": ["relu"] * 20_001})
    with pytest.raises(SpecError, match=r"more than 20,000 layers"):  # through a shared list, as aliases do
        block = ["relu"] * 1000
        load_spec({"input": [4], "model": [block] * 21})
    assert len(load_spec({"input": [4], "model": ["relu"] * 20_000}).model) == 20_000


def test_deep_nesting_is_refused_at_parse_time() -> None:
    deep: list = ["relu"]
    for _ in range(150):
        deep = [deep]
    with pytest.raises(SpecError, match=r"nested more than 100 levels deep"):
        load_spec({"model": deep})


def test_a_shape_whose_product_overflows_is_refused() -> None:
    # Each dim is within 2**48, the product is not: PyTorch's storage size would overflow.
    from archlab.spec import check_shape

    with pytest.raises(SpecError, match=r"input.shape: a sample of shape \[1, 100000000000, 100000000000\] "
                                        r"holds 1e\+22 values, more than the 2\*\*40"):
        check_shape([1, 10**11, 10**11], "input.shape")


def test_limits_are_listed_in_one_table() -> None:
    from archlab.spec import LIMITS

    assert LIMITS["MAX_DEPTH"] == 100 and LIMITS["MAX_LAYERS"] == 20_000
    assert LIMITS["MAX_SPEC_BYTES"] == 1 << 20 and LIMITS["MAX_SPEC_VALUES"] == 200_000


def test_one_search_marker_test() -> None:
    from archlab.spec import is_search_marker

    assert is_search_marker({"int": [1, 4]}) and is_search_marker(FrozenDict({"choice": [1]}))
    assert not is_search_marker({"linear": 4}) and not is_search_marker([{"int": 1}]) and not is_search_marker("int")
