"""Specs: YAML or dicts -> frozen `Spec` records; vars, `${...}` expressions, search markers, the zoo."""

from ._expr import evaluate
from ._spec import (
    ChoiceSpace,
    FloatSpace,
    InputSpec,
    IntSpace,
    SearchSpace,
    Spec,
    check_shape,
    load_spec,
    parse_assignment,
    parse_shape,
    parse_space,
    resolve_vars,
    substitute,
    zoo_names,
)

__all__ = [
    "ChoiceSpace",
    "FloatSpace",
    "InputSpec",
    "IntSpace",
    "SearchSpace",
    "Spec",
    "check_shape",
    "evaluate",
    "load_spec",
    "parse_assignment",
    "parse_shape",
    "parse_space",
    "resolve_vars",
    "substitute",
    "zoo_names",
]
