"""Leaf layers: a registry of functions, each of which checks its input type, builds an
`nn.Module` and returns the output type. Adding a layer is one decorated function:

    @register_layer("linear")
    def linear(x: TensorType, out: int, bias: bool = True) -> Built:
        "Dense layer on the last dimension."
        *rest, features = x.expect(min_rank=1)
        return nn.Linear(features, positive(out, "out"), bias=bias), x.derive((*rest, out))

The builder binds spec arguments to the function's signature (a scalar or list is the first
argument: `linear: 10`), checks them against the annotations, and prefixes every error with
the node's path. Shapes are per sample: the batch dimension is never written.
"""

from __future__ import annotations

import inspect as _inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

from torch import nn

from ..core import Registry, ShapeError, SpecError, brief, thaw
from ..spec import MAX_SIZE, MAX_VALUES_PER_SAMPLE

LAYOUTS = ("flat", "channels", "sequence", "tokens")


@dataclass(frozen=True)
class TensorType:
    """What flows between layers at build time: per-sample shape, dtype and layout.

    layout: "flat" (F,), "channels" (C, *spatial) as conv layers use, "sequence" (T, D),
    "tokens" (T,) integer ids. `source` is the path of the node that produced it, so an
    error can say where a wrong shape came from.
    """

    shape: tuple[int, ...]
    dtype: str = "float"
    layout: str = "flat"
    source: str = "input"

    @property
    def rank(self) -> int:
        return len(self.shape)

    def describe(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        text = f"({dims},)" if len(self.shape) == 1 else f"({dims})"
        return text if self.dtype == "float" else f"{text} {self.dtype}"

    def expect(self, *, rank: int | tuple[int, ...] | None = None, min_rank: int | None = None,
               dtype: str | None = "float", layout: str | tuple[str, ...] | None = None,
               what: str = "") -> tuple[int, ...]:
        """Check the input and return its shape; raise a ShapeError saying what was expected."""
        ranks = (rank,) if isinstance(rank, int) else rank
        ok = (ranks is None or self.rank in ranks) and (min_rank is None or self.rank >= min_rank)
        layouts = (layout,) if isinstance(layout, str) else layout
        ok_layout = layouts is None or self.layout in layouts
        if not ok or not ok_layout:
            if not what:
                what = (f"rank {' or '.join(map(str, ranks))}" if ranks else
                        f"rank >= {min_rank}" if min_rank else f"{'/'.join(layouts or ())} input")
            raise ShapeError(f"expects {what} input, got {self.describe()} ({self.layout}) "
                             f"produced by {self.source}")
        if dtype is not None and self.dtype != dtype:
            if self.dtype == "long":
                hint = " Token ids need an `embedding` first."
            elif self.source == "input":
                hint = (f" For token ids declare them: input: {{shape: {list(self.shape)}, dtype: long}}.")
            elif self.source.startswith("inputs."):
                hint = (f" For token ids declare them: {self.source}: {{shape: {list(self.shape)}, dtype: long}}.")
            else:
                hint = " Only the spec's input can carry integer token ids; put this layer first."
            got = self.describe() + (" float" if self.dtype == "float" else "")  # describe() names only long
            raise ShapeError(f"expects {dtype} input, got {got} produced by "
                             f"{self.source}.{hint}")
        return self.shape

    def derive(self, shape: tuple[int, ...], *, dtype: str = "float",
               layout: str | None = None) -> TensorType:
        """The output type: same layout unless told, always float unless told."""
        shape = tuple(int(d) for d in shape)
        if any(d <= 0 for d in shape):
            raise ShapeError(f"would produce an empty shape {shape} from {self.describe()} "
                             f"(input produced by {self.source}); the input is too small")
        if any(d > MAX_SIZE for d in shape):
            raise ShapeError(f"would produce a dimension larger than 2**48 from {self.describe()} "
                             f"(input produced by {self.source})")
        if math.prod(shape) > MAX_VALUES_PER_SAMPLE:
            raise ShapeError(f"would produce {math.prod(shape):.3g} values per sample {shape} from "
                             f"{self.describe()}, more than 2**40 (input produced by {self.source})")
        return TensorType(shape, dtype, layout or self.layout, self.source)


def default_layout(shape: tuple[int, ...], dtype: str) -> str:
    if dtype == "long":
        return "tokens"
    return "flat" if len(shape) == 1 else "channels"


Built = tuple[nn.Module, TensorType]


@dataclass
class BuildContext:
    """Handed to layer functions that declare a `ctx` parameter (e.g. weight tying)."""

    path: str
    built: list[tuple[str, str, nn.Module]] = field(default_factory=list)  # (path, kind, module)
    memory: TensorType | None = None   # the encoder's output type, inside a seq2seq decoder

    def latest(self, kind: str) -> tuple[str, nn.Module] | None:
        for path, k, module in reversed(self.built):
            if k == kind:
                return path, module
        return None


@dataclass(frozen=True)
class LayerDef:
    name: str
    fn: Callable[..., Built]
    params: tuple[_inspect.Parameter, ...]
    hints: Mapping[str, Any]
    wants_ctx: bool
    doc: str

    def bind(self, args: Any, where: str) -> dict[str, Any]:
        """Spec arguments -> checked keyword arguments for `fn`."""
        names = [p.name for p in self.params]
        if args is None:
            kwargs: dict[str, Any] = {}
        elif isinstance(args, Mapping):
            kwargs = dict(args)
        else:
            if not self.params:
                raise SpecError(f"{where}: takes no arguments. Received: {args!r}. "
                                f"Write it as `- {self.name}`.")
            kwargs = {self.params[0].name: args}
        for key in kwargs:
            if key not in names:
                import difflib

                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise SpecError(f"{where}: unknown argument {key!r}.{hint} "
                                f"{self.name} takes: {self.signature()}")
        bound = {}
        for p in self.params:
            if p.name in kwargs:
                bound[p.name] = _coerce(kwargs[p.name], self.hints.get(p.name, Any),
                                        f"{where}: argument {p.name!r}")
            elif p.default is _inspect.Parameter.empty:
                raise SpecError(f"{where}: missing required argument {p.name!r}. "
                                f"{self.name} takes: {self.signature()}")
        return bound

    def options(self) -> list[tuple[str, str, str]]:
        """(argument, the values it allows, its default or "required") for every argument,
        as `archlab layers NAME` prints them."""
        return [(p.name, _describe(self.hints.get(p.name, Any)),
                 "required" if p.default is _inspect.Parameter.empty else _show(p.default))
                for p in self.params]

    def signature(self) -> str:
        parts = []
        for p in self.params:
            parts.append(p.name if p.default is _inspect.Parameter.empty
                         else f"{p.name}={_show(p.default)}")
        return ", ".join(parts) or "(no arguments)"


LAYERS: Registry[LayerDef] = Registry("layer", SpecError)


def register_layer(name: str, *aliases: str) -> Callable[[Callable[..., Built]], Callable[..., Built]]:
    """Register a leaf layer function under `name` (and aliases)."""

    def decorator(fn: Callable[..., Built]) -> Callable[..., Built]:
        sig = _inspect.signature(fn)
        hints = typing.get_type_hints(fn)
        params = [p for p in sig.parameters.values() if p.name not in ("x", "ctx")]
        doc = (_inspect.getdoc(fn) or "").split("\n")[0]
        layer = LayerDef(name, fn, tuple(params), hints, "ctx" in sig.parameters, doc)
        LAYERS.register(name, *aliases)(layer)
        return fn

    return decorator


# ------------------------------------------------------------------ argument coercion


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return str(value)


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if origin is tuple:
        inner = get_args(tp)
        items = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}.get(
            inner[0], _describe(inner[0]))
        return f"a list of {len(inner)} {items}" if inner[-1] is not ... else f"a list of {items}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            type(None): "null"}.get(tp, "anything" if tp is Any else str(tp))


class _NoMatch(Exception):
    pass


def _coerce_one(value: Any, tp: Any) -> Any:
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise _NoMatch
    if origin in (Union, types.UnionType):
        for option in get_args(tp):
            try:
                return _coerce_one(value, option)
            except _NoMatch:
                continue
        raise _NoMatch
    if origin is tuple:
        inner = get_args(tp)
        if not isinstance(value, list | tuple):
            raise _NoMatch
        if inner[-1] is ...:
            return tuple(_coerce_one(v, inner[0]) for v in value)
        if len(value) != len(inner):
            raise _NoMatch
        return tuple(_coerce_one(v, t) for v, t in zip(value, inner, strict=True))
    if tp is type(None):
        if value is None:
            return None
        raise _NoMatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _NoMatch
    if tp is int:
        if isinstance(value, bool):
            raise _NoMatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise _NoMatch
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _NoMatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _NoMatch
    return value


def _coerce(value: Any, tp: Any, where: str) -> Any:
    try:
        out = _coerce_one(value, tp)
    except _NoMatch:
        raise SpecError(f"{where} expected {_describe(tp)}. Received: {_show_value(value)}") from None
    numbers = out if isinstance(out, tuple) else (out,)
    if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
        raise SpecError(f"{where} must be a finite number. Received: {_show_value(value)}")
    if any(isinstance(v, int | float) and not isinstance(v, bool) and abs(v) > MAX_SIZE for v in numbers):
        raise SpecError(f"{where} is too large (at most 2**48). Received: {_show_value(value)}")
    return out


def _show_value(value: Any) -> str:
    return brief(thaw(value))


# -------------------------------------------------------------------- small helpers


def positive(value: int, name: str) -> int:
    if value <= 0:
        raise SpecError(f"argument {name!r} must be a positive integer. Received: {value}")
    return value


def probability(value: float, name: str) -> float:
    if not 0.0 <= value < 1.0:
        raise SpecError(f"argument {name!r} must be in [0, 1). Received: {value}")
    return value


def pair(value: int | tuple[int, ...], n: int, name: str) -> tuple[int, ...]:
    """Expand an int to an n-tuple; check a tuple has n entries."""
    out = (value,) * n if isinstance(value, int) else tuple(value)
    if len(out) != n:
        raise SpecError(f"argument {name!r} needs {n} values for this layer. Received: {list(out)}")
    return out


IntOrList = int | tuple[int, ...]


