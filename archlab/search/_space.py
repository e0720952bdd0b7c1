"""What a search chooses and what it is judged by: the spec's search-space markers as Optuna
suggestions, the objectives, and the budgets with the inspected costs they limit (plus the
parsing of `--timeout` and count flags). The rules are in archlab.search's docstring."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core import FrozenDict, SpecError, thaw
from ..spec import (
    ChoiceSpace,
    FloatSpace,
    IntSpace,
    SearchSpace,
    Spec,
    is_search_marker,
    parse_space,
)

# Cost objectives: name -> the key in a trial's `costs` attribute. All but latency come
# from the meta-device inspector; latency is a timed CPU forward pass at batch 1.
COSTS = {"params": "params", "flops": "flops", "memory": "memory", "latency": "latency_ms"}


# ----------------------------------------------------------------------------- parsing


def parse_duration(text: str | float | int | None) -> float | None:
    """Seconds from `90`, `90s`, `10m`, `1.5h`.

    >>> parse_duration("10m"), parse_duration("1.5h"), parse_duration(30)
    (600.0, 5400.0, 30.0)
    """
    if text is None:
        return None
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(text).lower())
        if not m:
            raise SpecError(f"--timeout: expected a duration such as 90s, 10m or 1.5h. Received: {text!r}")
        value = float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[m[2]]
    if not value > 0:
        raise SpecError(f"--timeout: must be positive. Received: {text!r}")
    return value


def parse_count(text: str | float | int | None, what: str = "--max-params") -> float | None:
    """A count with an optional k/M/G suffix (powers of 1000).

    >>> parse_count("100k"), parse_count("5M"), parse_count("1.5G"), parse_count(2000)
    (100000, 5000000, 1500000000, 2000)
    """
    if text is None:
        return None
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kKmMgGtT]?)\s*", str(text))
        if not m:
            raise SpecError(f"{what}: expected a number with an optional k, M or G suffix, e.g. 100k. "
                            f"Received: {text!r}")
        value = float(m[1]) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[m[2].lower()]
    if not value > 0:
        raise SpecError(f"{what}: must be positive. Received: {text!r}")
    return int(value) if float(value).is_integer() else value


# -------------------------------------------------------------------------- objectives


@dataclass(frozen=True)
class Objective:
    """One thing the search optimises: a validation metric (trained) or a cost (inspected)."""

    name: str             # as written, e.g. "val_acc" or "params:min"
    key: str              # "val_acc" (a history key) or a cost: "params", "flops", "memory", "latency"
    direction: str        # "maximize" | "minimize"

    @property
    def trained(self) -> bool:
        return self.key not in COSTS

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "key": self.key, "direction": self.direction}


def parse_objectives(items: str | Sequence[str]) -> tuple[Objective, ...]:
    """`["val_acc", "params:min"]` -> Objectives; exactly one must be a `val_*` metric.

    >>> [o.direction for o in parse_objectives(["val_acc", "params:min"])]
    ['maximize', 'minimize']
    """
    if isinstance(items, str):
        items = [items]
    out: list[Objective] = []
    for item in items:
        key, _, way = str(item).strip().partition(":")
        if key in COSTS:
            direction = {"": "minimize", "min": "minimize", "max": "maximize"}.get(way)
        elif key.startswith("val_") and len(key) > 4:
            default = "minimize" if key.endswith("loss") else "maximize"
            direction = {"": default, "min": "minimize", "max": "maximize"}.get(way)
        else:
            raise SpecError(f"--objective {item}: expected val_<metric> (e.g. val_acc) or a cost: "
                            f"{', '.join(c + ':min' for c in COSTS)}")
        if direction is None:
            raise SpecError(f"--objective {item}: the direction must be :min or :max. Received: {way!r}")
        if any(o.key == key for o in out):
            raise SpecError(f"--objective {item}: {key} is given twice")
        out.append(Objective(str(item), key, direction))
    trained = [o for o in out if o.trained]
    if len(trained) != 1:
        raise SpecError(f"--objective: give exactly one validation metric (e.g. val_acc) to train for, "
                        f"plus any costs ({', '.join(COSTS)}). Received: {', '.join(map(str, items)) or 'none'}")
    return tuple(out)


# ------------------------------------------------------------------------------ spaces


@dataclass(frozen=True)
class SearchSpaces:
    """What a trial chooses: search-space vars, and searchable training settings."""

    vars: Mapping[str, SearchSpace]
    train: Mapping[str, SearchSpace]

    def __len__(self) -> int:
        return len(self.vars) + len(self.train)


def search_spaces(spec: Spec, fixed: Mapping[str, Any] | None = None) -> SearchSpaces:
    """The spec's var spaces and the markers in its `train:` section (settings in `fixed`,
    e.g. given on the command line, are not searched).

    >>> from archlab.spec import load_spec
    >>> s = load_spec({"vars": {"w": {"int": [4, 8]}}, "model": ["relu"],
    ...                "train": {"lr": {"float": [1e-4, 1e-2], "log": True}}})
    >>> sorted(search_spaces(s).vars), sorted(search_spaces(s).train)
    (['w'], ['lr'])
    """
    fixed = fixed or {}
    train: dict[str, SearchSpace] = {}
    for name, value in spec.train.items():
        if not is_search_marker(value) or fixed.get(name) is not None:
            continue
        try:
            train[name] = parse_space(name, thaw(value))
        except SpecError as e:  # parse_space names vars.NAME; this one lives in train:
            raise SpecError(re.sub(rf"^vars\.{re.escape(name)}", f"train.{name}", str(e))) from None
    clash = sorted(set(train) & set(spec.spaces))
    if clash:
        raise SpecError(f"train.{clash[0]}: a var of the same name is searched too; rename one "
                        f"(Optuna needs one name per searched value)")
    return SearchSpaces(FrozenDict(dict(spec.spaces)), FrozenDict(train))


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, bool | int | float | str)


def choice_labels(space: ChoiceSpace) -> list[Any]:
    """What Optuna is offered for a choice: the options themselves when all are scalars,
    else one short, unique label per option (whole sub-blocks), mapped back by position.

    >>> from archlab.core import freeze
    >>> from archlab.spec import ChoiceSpace
    >>> choice_labels(ChoiceSpace(freeze([[{"linear": 8}], [{"residual": [{"linear": 8}]}]])))
    ['linear', 'residual']
    """
    options = list(space.options)
    if all(_is_scalar(o) for o in options):
        return options
    labels = [_short(o) for o in options]
    if len(set(labels)) != len(labels):
        labels = [f"{i}:{label}" for i, label in enumerate(labels)]
    return labels


def _short(option: Any, width: int = 40) -> str:
    if _is_scalar(option):
        return str(option)
    if isinstance(option, Mapping):
        text = "+".join(str(k) for k in option)
    else:
        parts = [next(iter(x)) if isinstance(x, Mapping) and x else str(x) for x in option]
        text = "+".join(str(p) for p in parts)
    return text if len(text) <= width else text[:width - 1] + "…"


def suggest(trial: Any, name: str, space: SearchSpace) -> Any:
    """Ask an Optuna trial for a value of one space; a sub-block choice comes back as the block."""
    if isinstance(space, IntSpace):
        return trial.suggest_int(name, space.low, space.high, step=space.step, log=space.log)
    if isinstance(space, FloatSpace):
        return trial.suggest_float(name, space.low, space.high, log=space.log)
    labels = choice_labels(space)
    picked = trial.suggest_categorical(name, labels)
    return thaw(space.options[labels.index(picked)])


def sample(trial: Any, spaces: SearchSpaces) -> tuple[dict[str, Any], dict[str, Any]]:
    """(var values, training settings) for one trial, as plain data."""
    return ({n: suggest(trial, n, s) for n, s in spaces.vars.items()},
            {n: suggest(trial, n, s) for n, s in spaces.train.items()})


def concrete_spec(spec: Spec, vars: Mapping[str, Any], train: Mapping[str, Any],
                  settings: Mapping[str, Any] | None = None) -> Spec:
    """The spec at one point: no search marker left, in `vars` or in `train:`.

    Remaining var spaces take their defaults; remaining train markers (not searched because
    `settings` fixes them) are replaced by those settings.
    """
    out = spec.with_vars(dict(vars))
    if out.spaces:
        out = out.with_defaults()
    fixed = {k: v for k, v in (settings or {}).items() if v is not None}
    merged = {**{k: v for k, v in thaw(spec.train).items() if not is_search_marker(v)}, **dict(train), **fixed}
    leftover = [k for k, v in spec.train.items() if is_search_marker(v) and k not in merged]
    if leftover:
        raise SpecError(f"train.{leftover[0]}: is a search space; search it or set it")
    return Spec.from_dict({**out.to_dict(), "train": merged})


# ------------------------------------------------------------------- costs and budgets


@dataclass(frozen=True)
class Budget:
    """Limits checked by the inspector before training; None means no limit."""

    max_params: float | None = None
    max_flops: float | None = None
    max_latency_ms: float | None = None

    def violation(self, costs: Mapping[str, float]) -> str | None:
        """Why `costs` break the budget, or None.

        >>> Budget(max_params=1000).violation({"params": 1500, "flops": 1})
        'params 1,500 > max 1,000'
        """
        for key, limit, what in (("params", self.max_params, "params"), ("flops", self.max_flops, "FLOPs"),
                                 ("latency_ms", self.max_latency_ms, "latency ms")):
            if limit is not None and costs.get(key) is not None and costs[key] > limit:
                fmt = (lambda v: f"{v:,.2f}") if key == "latency_ms" else (lambda v: f"{v:,.0f}")
                return f"{what} {fmt(costs[key])} > max {fmt(limit)}"
        return None

    def to_dict(self) -> dict[str, float | None]:
        return {"max_params": self.max_params, "max_flops": self.max_flops, "max_latency_ms": self.max_latency_ms}


def measure_costs(spec: Spec, *, batch_size: int = 1, optimizer: str = "adamw", precision: str = "fp32",
                  latency: bool = False, task: str | None = None, num_classes: int | None = None) -> dict[str, float]:
    """Params, forward FLOPs per sample and training memory (bytes) at `batch_size`, from the
    meta-device inspector; with `latency`, the median CPU forward time at batch 1 (ms).
    With `task`, the output must suit it (else SpecError, like any shape error).

    >>> from archlab.spec import load_spec
    >>> measure_costs(load_spec({"input": [4], "model": [{"linear": 2}]}))["params"]
    10
    """
    from ..model import inspect

    report = inspect(spec, batch=batch_size, optimizer=optimizer, dtype=precision)
    if task is not None:
        from ..train import make_task

        make_task(task, num_classes).check_output(report.output_shape)
    costs: dict[str, float] = {"params": report.params, "flops": report.flops_per_sample,
                               "memory": report.memory.total}
    if latency:
        from ..compare import latency_ms

        costs["latency_ms"] = latency_ms(spec, 1, 30)
    return costs
