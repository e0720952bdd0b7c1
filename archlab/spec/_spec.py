"""Specs: YAML or dict -> a frozen, validated `Spec`.

A spec is data. It is read with a safe YAML loader, checked section by section, and frozen
(mappings become read-only, lists become tuples) so `Spec.from_dict(s.to_dict()) == s`.
Layer-level checks (names, arguments, shapes) happen in `build`, where shapes are known;
this module owns the top-level sections, vars, expressions and search-space markers.

    name: my-net
    input: {shape: [1, 8, 8]}            # per-sample shape; dtype float (default) or long
    vars: {width: 32, depth: {int: [1, 4], default: 2}}
    blocks: {stage: [conv2d: {out: $width, kernel: 3, padding: same}, relu]}
    model: [stage, flatten, linear: $num_classes]
    train: {epochs: 10}
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..core import FrozenDict, SpecError, brief, freeze, thaw
from ._expr import evaluate
from ._limits import (
    MAX_DEPTH,
    MAX_INT,
    MAX_LAYERS,
    MAX_SIZE,
    MAX_SPEC_BYTES,
    MAX_SPEC_VALUES,
    MAX_VALUES_PER_SAMPLE,
)

SECTIONS = ("name", "description", "input", "inputs", "vars", "blocks", "model", "encoder", "decoder", "generator",
            "discriminator", "train")
INPUT_DTYPES = ("float", "long")
# Values a data set supplies at train time; a spec gives defaults for inspection.
DATA_VARS = ("num_classes", "vocab_size", "target_len")

_VAR_REF = re.compile(r"^\$([A-Za-z_]\w*)$")
_EXPR = re.compile(r"\$\{([^{}]*)\}")
_BARE_ARITHMETIC = re.compile(r"^\$[A-Za-z_]\w*\s*(?:[-+*/%]|//|\*\*)\s*[\w(.]")  # `$w*2`, `$depth - 1`


# libyaml's parser where PyYAML has it (about ten times faster); the constructor, which
# decides what each node becomes, is PyYAML's safe one either way.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):  # type: ignore[misc, valid-type]
    """yaml.safe_load's loader, but `1e-3` is a float (as in YAML 1.2 and JSON), not the
    string YAML 1.1 makes of an exponent without a dot; and an integer too large for a spec
    (or for Python to read: 4,300 digits) is an error at its line."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        digits = sum(c.isalnum() for c in str(node.value))
        if digits > 70:  # more than any 64-bit number needs, in any base; int() may refuse
            raise yaml.constructor.ConstructorError(
                None, None, f"an integer written with {digits} digits is too large (at most 2**64 in magnitude)",
                node.start_mark)
        value = super().construct_yaml_int(node)
        if abs(value) >= MAX_INT:
            raise yaml.constructor.ConstructorError(
                None, None, f"the integer {value} is too large (at most 2**64 in magnitude)",
                node.start_mark)
        return value


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # safe: _Loader is a SafeLoader


# ------------------------------------------------------------------ search-space markers


@dataclass(frozen=True)
class IntSpace:
    low: int
    high: int
    log: bool = False
    step: int = 1
    default: int | None = None

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"int": [self.low, self.high]}
        if self.log:
            d["log"] = True
        if self.step != 1:
            d["step"] = self.step
        if self.default is not None:
            d["default"] = self.default
        return d

    def contains(self, v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and self.low <= v <= self.high


@dataclass(frozen=True)
class FloatSpace:
    low: float
    high: float
    log: bool = False
    default: float | None = None

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"float": [self.low, self.high]}
        if self.log:
            d["log"] = True
        if self.default is not None:
            d["default"] = self.default
        return d

    def contains(self, v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and self.low <= v <= self.high


@dataclass(frozen=True)
class ChoiceSpace:
    options: tuple
    default: Any = None

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"choice": thaw(self.options)}
        if self.default is not None:
            d["default"] = thaw(self.default)
        return d

    def contains(self, v: Any) -> bool:
        return freeze(v) in self.options


SearchSpace = IntSpace | FloatSpace | ChoiceSpace
_MARKERS = ("int", "float", "choice")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def parse_space(name: str, value: Mapping) -> SearchSpace:
    """Parse a `{int: [lo, hi], log: true}`-style marker; errors name `vars.NAME`."""
    where = f"vars.{name}"
    kind = next(k for k in _MARKERS if k in value)
    allowed = {"int": {"int", "log", "step", "default"}, "float": {"float", "log", "default"},
               "choice": {"choice", "default"}}[kind]
    extra = set(value) - allowed
    if extra:
        raise SpecError(f"{where}: unknown key {sorted(extra)[0]!r} in a {kind} search space; "
                        f"allowed: {', '.join(sorted(allowed))}")
    default = value.get("default")
    if kind == "choice":
        options = value["choice"]
        if not isinstance(options, list | tuple) or not options:
            raise SpecError(f"{where}: expected a non-empty list of options, e.g. "
                            f"{{choice: [relu, gelu]}}. Received: {thaw(options)!r}")
        space: SearchSpace = ChoiceSpace(freeze(list(options)), freeze(default))
    else:
        bounds = value[kind]
        if (not isinstance(bounds, list | tuple) or len(bounds) != 2
                or not all(_is_number(b) and math.isfinite(b) for b in bounds)):
            raise SpecError(f"{where}: expected [low, high] numbers, e.g. {{{kind}: [1, 8]}}. "
                            f"Received: {thaw(bounds)!r}")
        low, high = bounds
        log = value.get("log", False)
        if not isinstance(log, bool):
            raise SpecError(f"{where}: 'log' must be true or false. Received: {log!r}")
        if low > high:
            raise SpecError(f"{where}: low {low} is greater than high {high}")
        if log and low <= 0:
            raise SpecError(f"{where}: a log scale needs low > 0. Received: low={low}")
        if kind == "int":
            if not all(isinstance(b, int) for b in bounds):
                raise SpecError(f"{where}: int bounds must be integers. Received: {list(bounds)}")
            step = value.get("step", 1)
            if not isinstance(step, int) or isinstance(step, bool) or step < 1:
                raise SpecError(f"{where}: 'step' must be a positive integer. Received: {step!r}")
            if log and step != 1:
                raise SpecError(f"{where}: 'step' cannot be combined with 'log' (Optuna's rule)")
            space = IntSpace(low, high, log, step, default)
        else:
            if default is not None and not _is_number(default):
                raise SpecError(f"{where}: default must be a number. Received: {thaw(default)!r}")
            space = FloatSpace(float(low), float(high), log,
                               None if default is None else float(default))
    if default is not None and not space.contains(default):
        raise SpecError(f"{where}: default {thaw(default)!r} is outside the space {space.to_dict()}")
    return space


def is_search_marker(value: Any) -> bool:
    """Whether a spec value is a search-space marker: a mapping with an `int`, `float` or
    `choice` key, as in `vars` and `train`.

    >>> is_search_marker({"int": [1, 4]}), is_search_marker({"linear": 4})
    (True, False)
    """
    return isinstance(value, Mapping) and any(k in value for k in _MARKERS)


# ------------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, ...]
    dtype: str = "float"
    vocab: int | None = None  # token ids are 0..vocab-1 (long inputs; example batches use it)
    layout: str | None = None  # what the dims mean, where the default guess is not it: (T, D) as a sequence

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"shape": list(self.shape), "dtype": self.dtype}
        if self.vocab is not None:
            d["vocab"] = self.vocab
        if self.layout is not None:
            d["layout"] = self.layout
        return d


# What a data set says it gives, per named input: name -> (per-sample shape, dtype).
DataInputs = Mapping[str, tuple[tuple[int, ...], str]]


@dataclass(frozen=True)
class Spec:
    """A parsed, frozen spec. `model` and `blocks` hold frozen node data, checked at build."""

    name: str
    input: InputSpec | None
    model: Any
    vars: Mapping[str, Any] = field(default_factory=lambda: FrozenDict({}))
    spaces: Mapping[str, SearchSpace] = field(default_factory=lambda: FrozenDict({}))
    blocks: Mapping[str, Any] = field(default_factory=lambda: FrozenDict({}))
    train: Mapping[str, Any] = field(default_factory=lambda: FrozenDict({}))
    description: str = ""
    encoder: Any = None    # seq2seq: the source encoder's layers (then `model` is absent)
    decoder: Any = None    # seq2seq: the target decoder's layers, reading the encoder's output
    generator: Any = None      # GAN: latent (latent,) -> image (see archlab.generative)
    discriminator: Any = None  # GAN: image -> one logit (1,)
    # Several named inputs (`inputs:`), in their declared order; None for one unnamed `input:`.
    inputs: Mapping[str, InputSpec] | None = None

    @property
    def input_specs(self) -> dict[str, InputSpec]:
        """Every input by name: the `inputs:` section, or {"input": ...} for one unnamed input."""
        if self.inputs is not None:
            return dict(self.inputs)
        return {"input": self.input} if self.input is not None else {}

    # -- round trip
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "spec") -> Spec:
        return _parse(data, where)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.input is not None:
            out["input"] = self.input.to_dict()
        if self.inputs is not None:
            out["inputs"] = {name: i.to_dict() for name, i in self.inputs.items()}
        if self.vars or self.spaces:
            merged = {k: thaw(v) for k, v in self.vars.items()}
            merged.update({k: s.to_dict() for k, s in self.spaces.items()})
            out["vars"] = merged
        if self.blocks:
            out["blocks"] = thaw(self.blocks)
        if self.model is not None:
            out["model"] = thaw(self.model)
        if self.encoder is not None:
            out["encoder"] = thaw(self.encoder)
            out["decoder"] = thaw(self.decoder)
        if self.generator is not None:
            out["generator"] = thaw(self.generator)
            out["discriminator"] = thaw(self.discriminator)
        if self.train:
            out["train"] = thaw(self.train)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    # -- variations
    def with_vars(self, values: Mapping[str, Any], *, strict: bool = True) -> Spec:
        """A copy with vars set; a search-space var becomes a plain value (validated).

        `strict` refuses names the spec does not declare (for user `--set`); data-derived
        vars (`num_classes`, `vocab_size`) are always accepted.
        """
        new_vars = dict(self.vars)
        spaces = dict(self.spaces)
        check_data({str(k): v for k, v in values.items()}, "vars")
        for name, value in values.items():
            if name in spaces:
                if not spaces[name].contains(value):
                    raise SpecError(f"vars.{name}: {thaw(value)!r} is outside the search space "
                                    f"{spaces[name].to_dict()}")
                del spaces[name]
            elif strict and name not in new_vars and name not in DATA_VARS:
                known = sorted({*self.vars, *self.spaces})
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise SpecError(f"--set {name}: the spec has no var {name!r}.{hint} "
                                f"Known vars: {', '.join(known) or 'none'}")
            new_vars[name] = freeze(value)
        return dataclasses.replace(self, vars=FrozenDict(new_vars),
                                   spaces=FrozenDict(spaces))

    def with_defaults(self) -> Spec:
        """Every search space at its default; an error names those without one."""
        missing = [n for n, s in self.spaces.items() if s.default is None]
        if missing:
            examples = " ".join(f"--set {n}={_example(self.spaces[n])}" for n in missing)
            raise SpecError(f"vars.{missing[0]}: is a search space {self.spaces[missing[0]].to_dict()} "
                            f"with no default; pick a value with {examples} or add 'default:'")
        return self.with_vars({n: s.default for n, s in self.spaces.items()})

    def with_input(self, shape: tuple[int, ...] | None = None, dtype: str | None = None, *,
                   named: DataInputs | None = None) -> Spec:
        """A copy with the input's shape (and dtype) set, as a data set or `--input` gives it.

        `named` is a data set's several named inputs (`DataInfo.inputs`): each input the spec
        declares under `inputs:` takes its shape and dtype from the one of that name (inputs the
        spec does not declare are not read). A spec with one input takes `shape` whatever its
        input is called."""
        if dtype is not None and dtype not in INPUT_DTYPES:
            raise SpecError(f"input.dtype: expected one of {', '.join(INPUT_DTYPES)}. Received: {dtype!r}")
        if named:
            return self._with_named_inputs(named)
        if self.inputs is not None:
            if len(self.inputs) > 1:
                raise SpecError(f"inputs: the spec reads {len(self.inputs)} inputs ({', '.join(self.inputs)}) and was "
                                f"given one unnamed input (a data set of one x, or --input); train it on data that has "
                                f"these inputs (npy: train_x_NAME.npy per input; csv: ?text=COLUMN; digits-qa), and "
                                f"inspect it with the shapes it declares (no --input)")
            (name, current), = self.inputs.items()
            new = InputSpec(tuple(shape) if shape is not None else current.shape, dtype or current.dtype,
                            current.vocab, current.layout)
            return dataclasses.replace(self, inputs=FrozenDict({name: new}))
        current = self.input or InputSpec(())
        return dataclasses.replace(self, input=InputSpec(
            tuple(shape) if shape is not None else current.shape, dtype or current.dtype, current.vocab,
            current.layout))

    def _with_named_inputs(self, named: DataInputs) -> Spec:
        given = ", ".join(named)
        if self.inputs is None:
            if len(named) == 1:
                (shape, dtype), = named.values()
                return self.with_input(shape, dtype)
            raise SpecError(f"input: the data has {len(named)} inputs ({given}) and the spec reads one unnamed "
                            f"input; declare the ones the model reads, e.g. inputs: {{{next(iter(named))}: "
                            f"{{shape: {list(next(iter(named.values()))[0])}}}}}, and read them with from:")
        missing = [name for name in self.inputs if name not in named]
        if missing:
            close = difflib.get_close_matches(missing[0], list(named), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise SpecError(f"inputs.{missing[0]}: the data has no input of that name.{hint} Its inputs: {given}")
        new = {}
        for name, current in self.inputs.items():
            shape, dtype = named[name]
            new[name] = InputSpec(tuple(shape), dtype, current.vocab, current.layout)
        return dataclasses.replace(self, inputs=FrozenDict(new))

    def with_train(self, **settings: Any) -> Spec:
        merged = {**thaw(self.train), **settings}
        return dataclasses.replace(self, train=freeze(merged))

    def resolved_vars(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Vars with every expression evaluated (vars may refer to other vars)."""
        if self.spaces:
            return self.with_defaults().resolved_vars(extra)
        return resolve_vars({**self.vars, **(extra or {})})


def _example(space: SearchSpace) -> str:
    if isinstance(space, ChoiceSpace):
        return str(thaw(space.options[0]))
    return str(space.low)


def resolve_vars(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate vars that refer to other vars, in dependency order, refusing cycles."""
    done: dict[str, Any] = {}
    active: list[str] = []

    class _Lazy(Mapping):
        def __getitem__(self, key: str) -> Any:
            return get(key)

        def __iter__(self):
            return iter(raw)

        def __len__(self) -> int:
            return len(raw)

        def __contains__(self, key: object) -> bool:
            return key in raw

    lazy = _Lazy()

    def get(name: str) -> Any:
        if name in done:
            return done[name]
        if name in active:
            cycle = " -> ".join([*active[active.index(name):], name])
            raise SpecError(f"vars.{name}: vars refer to each other in a cycle: {cycle}")
        if name not in raw:
            raise KeyError(name)
        active.append(name)
        done[name] = substitute(raw[name], lazy, f"vars.{name}")
        active.pop()
        return done[name]

    for name in raw:
        get(name)
    return done


def substitute(value: Any, names: Mapping[str, Any], where: str) -> Any:
    """Replace `$var` and `${expr}` in strings, recursively through lists and mappings.

    A string that is exactly `$name` or `${expr}` becomes the value itself (a number stays
    a number, a list stays a list); `${...}` inside longer text is interpolated as text.
    """
    if isinstance(value, str) and "$" in value:
        m = _VAR_REF.match(value)
        if m:
            if m.group(1) not in names:
                raise SpecError(f"{where}: unknown var {m.group(1)!r} in {value!r} "
                                f"(known: {', '.join(sorted(names)) or 'none'})")
            return names[m.group(1)]
        bare = value.strip()
        if _BARE_ARITHMETIC.match(bare):
            # `$w*2`: a var name followed by arithmetic, which only ${...} evaluates.
            raise SpecError(f"{where}: {value!r} is not a var reference; arithmetic goes inside ${{...}}: "
                            f"write '${{{bare[1:]}}}'")
        try:
            full = _EXPR.fullmatch(value.strip())
            if full:
                return evaluate(full.group(1), names)
            return _EXPR.sub(lambda mm: _format(evaluate(mm.group(1), names)), value)
        except SpecError as e:  # an error inside another var already names that var
            raise SpecError(str(e) if str(e).startswith("vars.") else f"{where}: {e}") from None
    if isinstance(value, Mapping):
        return FrozenDict({k: substitute(v, names, where) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(substitute(v, names, where) for v in value)
    return value


def _format(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


# --------------------------------------------------------------------------- parsing

# Sections whose lists are layers, counted against MAX_LAYERS while parsing.
_LAYER_SECTIONS = ("model", "encoder", "decoder", "generator", "discriminator", "blocks")


def check_data(data: Any, where: str) -> None:
    """Refuse spec data that no spec needs and that would cost without bound downstream:
    more than MAX_SPEC_VALUES values once YAML aliases are expanded (an alias bomb of a few
    hundred bytes expands to gigabytes), more than MAX_LAYERS list items in the layer
    sections, nesting deeper than MAX_DEPTH (or an alias that contains itself), and integers
    of MAX_INT or more. Shared values (aliases) are sized once, so this costs time in
    proportion to the data as written, not as expanded."""
    sizes: dict[int, tuple[int, int]] = {}
    active: set[int] = set()
    path: list[str] = []

    def fail(why: str) -> SpecError:
        here = where + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in path)
        return SpecError(f"{here}: {why}")

    def walk(value: Any) -> tuple[int, int]:  # (values, layers) of `value` expanded
        if isinstance(value, bool) or value is None or isinstance(value, float | str):
            return 1, 0
        if isinstance(value, int):
            if abs(value) >= MAX_INT:
                raise fail(f"the integer {brief(value)} is too large (at most 2**64 in magnitude)")
            return 1, 0
        if not isinstance(value, Mapping | list | tuple):
            return 1, 0
        key = id(value)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise fail("a YAML alias contains itself (an anchor used inside its own value)")
        if len(path) >= MAX_DEPTH:
            raise fail(f"spec data is nested more than {MAX_DEPTH} levels deep")
        active.add(key)
        values, layers = 1, 0
        items = value.items() if isinstance(value, Mapping) else enumerate(value)
        for k, v in items:
            path.append(str(k))
            n, m = walk(v)
            path.pop()
            values += n
            layers += m + (isinstance(value, list | tuple) and not isinstance(v, list | tuple))
            if values > MAX_SPEC_VALUES:
                raise fail(f"the spec holds more than {MAX_SPEC_VALUES:,} values once its YAML "
                           f"aliases are expanded (is it an alias bomb?); no spec needs that many")
        active.discard(key)
        sizes[key] = values, layers
        return values, layers

    if not isinstance(data, Mapping):
        return
    total = 1
    for section, value in data.items():
        path.append(str(section))
        values, layers = walk(value)
        path.pop()
        total += values
        if section in _LAYER_SECTIONS and layers > MAX_LAYERS:
            raise SpecError(f"{where}.{section}: has more than {MAX_LAYERS:,} layers, the most a spec "
                            f"may have ({layers:,} list items)")
        if total > MAX_SPEC_VALUES:
            raise SpecError(f"{where}: the spec holds more than {MAX_SPEC_VALUES:,} values once its "
                            f"YAML aliases are expanded (is it an alias bomb?); no spec needs that many")


def _parse(data: Any, where: str) -> Spec:
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: a spec must be a mapping with at least 'model'. "
                        f"Received: {type(data).__name__}")
    check_data(data, where)
    unknown = [k for k in data if k not in SECTIONS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), SECTIONS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise SpecError(f"{where}: unknown section {unknown[0]!r}.{hint} "
                        f"Sections: {', '.join(SECTIONS)}")
    has_pair = data.get("encoder") is not None or data.get("decoder") is not None
    if has_pair and (data.get("encoder") is None or data.get("decoder") is None or data.get("model") is not None):
        raise SpecError(f"{where}: an encoder-decoder spec (seq2seq, or a VAE with train: {{task: vae}}) has both "
                        f"'encoder' and 'decoder' sections and no 'model'")
    has_gan = data.get("generator") is not None or data.get("discriminator") is not None
    if has_gan and (data.get("generator") is None or data.get("discriminator") is None
                    or data.get("model") is not None or has_pair):
        raise SpecError(f"{where}: a GAN spec has both 'generator' and 'discriminator' sections and no 'model', "
                        f"'encoder' or 'decoder'")
    has_pair = has_pair or has_gan
    if not has_pair and data.get("model") is None:
        raise SpecError(f"{where}: missing 'model' (the layers). Example: model: [flatten, linear: 10]")

    name = data.get("name", "unnamed")
    if not isinstance(name, str) or not name:
        raise SpecError(f"{where}.name: expected a non-empty string. Received: {name!r}")

    raw_vars = data.get("vars") or {}
    if not isinstance(raw_vars, Mapping):
        raise SpecError(f"{where}.vars: expected a mapping of name: value. Received: {raw_vars!r}")
    plain, spaces = {}, {}
    for k, v in raw_vars.items():
        if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z_]\w*", k):
            raise SpecError(f"{where}.vars: {k!r} is not a valid var name (letters, digits, _)")
        if is_search_marker(v):
            spaces[k] = parse_space(k, v)
        else:
            plain[k] = freeze(v)

    blocks = data.get("blocks") or {}
    if not isinstance(blocks, Mapping):
        raise SpecError(f"{where}.blocks: expected a mapping of name: layers. Received: {blocks!r}")

    train = data.get("train") or {}
    if not isinstance(train, Mapping):
        raise SpecError(f"{where}.train: expected a mapping of settings. Received: {train!r}")

    description = data.get("description", "") or ""
    if data.get("input") is not None and data.get("inputs") is not None:
        raise SpecError(f"{where}: give either 'input' (one input) or 'inputs' (several, by name), not both")
    return Spec(
        name=name,
        input=_parse_input(data.get("input"), f"{where}.input"),
        inputs=_parse_inputs(data.get("inputs"), f"{where}.inputs"),
        model=freeze(data.get("model")),
        encoder=freeze(data.get("encoder")),
        decoder=freeze(data.get("decoder")),
        generator=freeze(data.get("generator")),
        discriminator=freeze(data.get("discriminator")),
        vars=FrozenDict(plain),
        spaces=FrozenDict(spaces),
        blocks=freeze(dict(blocks)),
        train=freeze(dict(train)),
        description=str(description),
    )


_INPUT_KEYS = ("shape", "dtype", "vocab", "layout")
INPUT_LAYOUTS = ("flat", "channels", "sequence")  # of float inputs; token ids are always (T,) tokens


def _parse_input(raw: Any, where: str) -> InputSpec | None:
    if raw is None:
        return None
    if isinstance(raw, list | tuple):
        raw = {"shape": raw}
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where}: expected {{shape: [C, H, W]}}. Received: {raw!r}")
    extra = set(raw) - set(_INPUT_KEYS)
    if extra:
        key = sorted(map(str, extra))[0]
        close = difflib.get_close_matches(key, _INPUT_KEYS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise SpecError(f"{where}: unknown key {key!r}.{hint} Allowed: {', '.join(_INPUT_KEYS)}")
    shape = raw.get("shape", [])
    if isinstance(shape, int):
        shape = [shape]
    if not isinstance(shape, list | tuple):
        raise SpecError(f"{where}.shape: expected a list of positive integers. Received: {shape!r}")
    dtype = raw.get("dtype", "float")
    if dtype not in INPUT_DTYPES:
        raise SpecError(f"{where}.dtype: expected one of {', '.join(INPUT_DTYPES)}. Received: {dtype!r}")
    layout = raw.get("layout")
    if layout is not None and (layout not in INPUT_LAYOUTS or dtype != "float"):
        raise SpecError(f"{where}.layout: a float input's layout is one of {', '.join(INPUT_LAYOUTS)} (a (T, D) "
                        f"input is channels (C, L) unless it says sequence); token ids have none. Received: "
                        f"{thaw(layout)!r} on a {dtype} input")
    vocab = raw.get("vocab")
    if isinstance(vocab, str) and "$" in vocab or any(isinstance(d, str) and "$" in d for d in shape):
        if dtype != "long" and vocab is not None:
            raise SpecError(f"{where}.vocab: only token ids have a vocabulary; add dtype: long or drop 'vocab'")
        return InputSpec(tuple(shape), dtype, vocab, layout)  # vars: resolved when built (`resolve_input`)
    if vocab is not None:
        if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
            raise SpecError(f"{where}.vocab: expected a positive number of token ids. Received: {thaw(vocab)!r}")
        if dtype != "long":
            raise SpecError(f"{where}.vocab: only token ids have a vocabulary; add dtype: long or drop 'vocab'")
    return InputSpec(tuple(shape), dtype, vocab, layout)


def _parse_inputs(raw: Any, where: str) -> Mapping[str, InputSpec] | None:
    """`inputs: {image: {shape: [1, 28, 28]}, tokens: {shape: [32], dtype: long, vocab: 1000}}`."""
    if raw is None:
        return None
    if isinstance(raw, list | tuple):
        if raw and all(isinstance(r, Mapping) for r in raw):
            raise SpecError(f"{where}: names each input: a mapping of name to its shape, e.g. inputs: {{image: "
                            f"{{shape: [1, 28, 28]}}, tokens: {{shape: [32], dtype: long}}}}. Received: a list")
        raise SpecError(f"{where}: names several inputs, each with its shape (inputs: {{image: {{shape: [1, 28, 28]}}, "
                        f"...}}); for one unnamed input write input: {brief(thaw(raw))}")
    if not isinstance(raw, Mapping) or not raw:
        raise SpecError(f"{where}: expected a mapping of input name to {{shape: [...], dtype: ...}}, e.g. "
                        f"inputs: {{image: {{shape: [1, 28, 28]}}, tokens: {{shape: [32], dtype: long}}}}. "
                        f"Received: {brief(thaw(raw))}")
    out = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise SpecError(f"{where}: {name!r} is not a valid input name (letters, digits, _)")
        if value is None:
            raise SpecError(f"{where}.{name}: expected {{shape: [...]}} (dtype float or long). Received: nothing")
        out[name] = _parse_input(value, f"{where}.{name}")
    return FrozenDict(out)


def resolve_input(declared: InputSpec, env: Mapping[str, Any], where: str) -> InputSpec:
    """An input with its `$var`s (in shape or vocab) replaced by their values, and checked."""
    shape = check_shape(substitute(tuple(declared.shape), env, f"{where}.shape"), f"{where}.shape")
    vocab = substitute(declared.vocab, env, f"{where}.vocab")
    if vocab is not None and (isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1):
        raise SpecError(f"{where}.vocab: expected a positive number of token ids. Received: {thaw(vocab)!r}")
    return InputSpec(shape, declared.dtype, vocab, declared.layout)


def check_shape(shape: Any, where: str) -> tuple[int, ...]:
    """A per-sample shape must be a non-empty tuple of positive integers, each at most
    MAX_SIZE, with at most MAX_VALUES_PER_SAMPLE values in all."""
    if (not isinstance(shape, list | tuple) or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_SIZE for d in shape)):
        raise SpecError(f"{where}: expected a per-sample shape of positive integers (each at most 2**48) "
                        f"such as [1, 28, 28]. Received: {brief(thaw(shape))}")
    if math.prod(shape) > MAX_VALUES_PER_SAMPLE:
        raise SpecError(f"{where}: a sample of shape {list(shape)} holds {math.prod(shape):.3g} values, "
                        f"more than the 2**40 a spec may have")
    return tuple(shape)


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse a CLI shape such as '1,28,28' or '1x28x28'."""
    parts = [p for p in re.split(r"[,x\s]+", text.strip()) if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise SpecError(f"--input: expected comma-separated integers such as 1,28,28. "
                        f"Received: {text!r}") from None
    return check_shape(shape, "--input")


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse `--set NAME=VALUE`; the value is read as a YAML scalar (3, 0.1, gelu, [1, 2])."""
    if "=" not in text:
        raise SpecError(f"--set: expected NAME=VALUE, e.g. --set depth=3. Received: {text!r}")
    name, raw = text.split("=", 1)
    try:
        value = _yaml_load(raw)
    except yaml.constructor.ConstructorError as e:  # a number too large
        raise SpecError(f"--set {name.strip()}: {e.problem}") from None
    except yaml.YAMLError:
        value = raw
    return name.strip(), value


# ---------------------------------------------------------------------------- loading


def zoo_names() -> list[str]:
    """Names of the built-in specs, addressed as `zoo:NAME`."""
    folder = resources.files("archlab.spec") / "zoo"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_text(source: str) -> tuple[str, str]:
    """Return (text, where) for a path or `zoo:NAME`."""
    if source.startswith("zoo:"):
        name = source[4:]
        path = resources.files("archlab.spec") / "zoo" / f"{name}.yaml"
        if not path.is_file():
            close = difflib.get_close_matches(name, zoo_names(), n=3)
            hint = f" Did you mean {', '.join('zoo:' + c for c in close)}?" if close else ""
            raise SpecError(f"{source}: no such zoo spec.{hint} List them with `archlab zoo`.")
        return path.read_text(), source
    path = Path(source)
    if not path.is_file():
        raise SpecError(f"{source}: spec file not found. Pass a YAML file path or zoo:NAME "
                        f"(see `archlab zoo`).")
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(f"{source}: the spec file is {size:,} bytes, more than the {MAX_SPEC_BYTES:,} "
                            f"(1 MiB) a spec may have; use repeat: and blocks: for repeated layers")
        with path.open(encoding="utf-8") as f:
            text = f.read(MAX_SPEC_BYTES + 1)  # the file may have grown since stat()
        if len(text.encode("utf-8")) > MAX_SPEC_BYTES:
            raise SpecError(f"{source}: the spec file is more than the {MAX_SPEC_BYTES:,} bytes "
                            f"(1 MiB) a spec may have; use repeat: and blocks: for repeated layers")
        return text, source
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{source}: cannot read spec file: {e}") from None


def load_spec(source: str | Path | Mapping[str, Any] | Spec) -> Spec:
    """Load a spec from a YAML file, `zoo:NAME`, a YAML string or a dict.

    >>> load_spec({"input": {"shape": [4]}, "model": [{"linear": 2}]}).name
    'unnamed'
    """
    if isinstance(source, Spec):
        return source
    if isinstance(source, Mapping):
        return _parse(source, "spec")
    text, where = (source, "spec") if _looks_like_yaml(source) else _read_text(str(source))
    if len(text) > MAX_SPEC_BYTES or len(text.encode("utf-8")) > MAX_SPEC_BYTES:
        raise SpecError(f"{where}: the spec text is more than the {MAX_SPEC_BYTES:,} bytes (1 MiB) a spec "
                        f"may have; use repeat: and blocks: for repeated layers")
    try:
        data = _yaml_load(text)
    except RecursionError:
        raise SpecError(f"{where}: invalid YAML: nested too deeply") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        hint = ""
        if "${" in text and ("{" in problem or "}" in problem):
            hint = ' (inside {...} an expression must be quoted: out: "${width // 2}")'
        raise SpecError(f"{where}: invalid YAML{at}: {problem}{hint}") from None
    spec = _parse(data, where)
    if spec.name == "unnamed" and where.startswith("zoo:"):
        spec = dataclasses.replace(spec, name=where[4:])
    elif spec.name == "unnamed" and where != "spec":
        spec = dataclasses.replace(spec, name=Path(where).stem)
    return spec


def _looks_like_yaml(source: str | Path) -> bool:
    return isinstance(source, str) and ("\n" in source or source.lstrip().startswith("{"))


def is_integer(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and math.isfinite(value) and value.is_integer())
