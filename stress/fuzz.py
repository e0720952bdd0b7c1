"""Random and mutated specs, each run through parse, build on the meta device and inspect.

A case is `(kind, seed)`; its YAML text is made from that pair alone, so a case is
reproduced by `case_text(kind, seed)` and the worker builds deep or huge specs itself (they
would not survive pickling through a pipe). Kinds:

  mutated      a zoo spec with 1-4 mutations: sizes, depths, layer names, nesting, repeat
               counts, deleted or duplicated items, input shapes, vars, extra arguments
  random       a random list of 1-12 registered layers with random arguments
  huge-list    a list of 5,000-20,000 layers
  deep         nesting 100-900 deep (residual, parallel, repeat, plain lists, flow mappings)

Outcome of a case: `ok` (inspected), `archlab` (one of archlab's own errors), or a failure:
`foreign` (any other exception), `memory` (MemoryError under the worker's address-space
limit), `hang` (no answer in the time limit), `crash` (the worker died).
"""

from __future__ import annotations

import copy
import random
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ZOO = Path(__file__).resolve().parent.parent / "archlab" / "spec" / "zoo"

# Recurrent specs inspect in seconds each (a meta-device step per position): fewer of them.
BASE_WEIGHTS = {"lstm-classifier": 0.03, "rnn-imdb": 0.03, "seq2seq-additive": 0.03, "llama-7b": 0.2, "resnet18": 0.3,
                "gpt2": 0.3, "inception-mini": 0.4, "seq2seq-transformer": 0.5}

SIZE_CHOICES = (0, -1, 1, 2, 3, 7, 10**3, 10**5, 10**8, 100000000109, 10**11, 10**15, 2**31, 2**63, 0.5,
                1.0e30, 1.0e-30, "abc", None, True, [], {})


class _Loader(yaml.SafeLoader):
    """archlab's reading of YAML: `1e-3` is a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


@cache
def zoo_specs() -> dict[str, dict]:
    return {p.stem: yaml.load(p.read_text(), Loader=_Loader) for p in sorted(ZOO.glob("*.yaml"))}


@cache
def layer_names() -> tuple[str, ...]:
    from archlab.layers import LAYERS

    return tuple(sorted(LAYERS.names()))


@cache
def layer_args() -> dict[str, tuple[str, ...]]:
    from archlab.layers import LAYERS

    return {n: tuple(p.name for p in LAYERS.get(n).params) for n in layer_names()}


def dump(spec: Any) -> str:
    return yaml.safe_dump(spec, default_flow_style=None, sort_keys=False, width=120)


# ------------------------------------------------------------------ tree walking


def _nodes(tree: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """(path, value) of every node, the root first."""
    out = [(path, tree)]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _nodes(v, (*path, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _nodes(v, (*path, i))
    return out


def _get(tree: Any, path: tuple) -> Any:
    for p in path:
        tree = tree[p]
    return tree


def _set(tree: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    _get(tree, path[:-1])[path[-1]] = value
    return tree


def _layer_items(tree: Any) -> list[tuple[tuple, dict]]:
    """Single-key mappings inside lists: the leaf layers and composites of a spec."""
    return [(p, v) for p, v in _nodes(tree) if isinstance(v, dict) and len(v) == 1 and p
            and isinstance(p[-1], int)]


def _lists(tree: Any) -> list[tuple[tuple, list]]:
    return [(p, v) for p, v in _nodes(tree) if isinstance(v, list) and p and p[0] in
            ("model", "encoder", "decoder", "blocks", "generator", "discriminator")]


# ------------------------------------------------------------------ mutations


def _size(rng: random.Random, old: Any) -> Any:
    r = rng.random()
    if r < 0.35 and isinstance(old, int) and not isinstance(old, bool):
        return old * rng.choice((2, 3, 10, 100, 1000)) if rng.random() < 0.6 else max(old // rng.choice((2, 4, 8)), 0)
    if r < 0.45:
        return rng.randint(-3, 40)
    return copy.deepcopy(rng.choice(SIZE_CHOICES))


def m_size(rng, spec):
    ints = [(p, v) for p, v in _nodes(spec) if p and (isinstance(v, (int, float)) or
                                                     (isinstance(v, str) and v.startswith("$")))]
    if ints:
        p, v = rng.choice(ints)
        spec = _set(spec, p, _size(rng, v))
    return spec


def m_layer_name(rng, spec):
    items = _layer_items(spec)
    if items:
        p, v = rng.choice(items)
        (key, args), = v.items()
        r = rng.random()
        if r < 0.6:
            new = rng.choice(layer_names())
        elif r < 0.8 and len(key) > 2:
            i = rng.randrange(len(key))
            new = key[:i] + key[i + 1:]  # a typo
        else:
            new = rng.choice(("residual", "parallel", "repeat", "block", "lambda", "__class__", "import", ""))
        _set(spec, p, {new: args})
    return spec


def m_nest(rng, spec):
    lists = _lists(spec)
    if lists:
        p, lst = rng.choice(lists)
        if lst:
            i = rng.randrange(len(lst))
            item = lst[i]
            kind = rng.choice(("residual", "parallel", "repeat", "list"))
            if kind == "residual":
                lst[i] = {"residual": [item] if rng.random() < 0.7 else {"projection": rng.choice(("auto", "none")),
                                                                         "layers": [item]}}
            elif kind == "parallel":
                lst[i] = {"parallel": {"merge": rng.choice(("concat", "add", "mean", "max")),
                                       "branches": [[item], [copy.deepcopy(item)]]}}
            elif kind == "repeat":
                lst[i] = {"repeat": rng.choice((0, 1, 2, 3, 50)), "block": [item]}
            else:
                lst[i] = [item]
    return spec


def m_repeat(rng, spec):
    reps = [(p, v) for p, v in _nodes(spec) if isinstance(v, dict) and "repeat" in v]
    # Large counts are rarer: each may take the full time limit (10 s) today.
    if rng.random() < 0.95:
        count = rng.choice((0, -1, 1, 2, 5, 64, "two", 2.5, None))
    else:
        count = rng.choice((500, 3000, 10**6, 10**12, "${10**6}"))
    if reps and rng.random() < 0.7:
        p, v = rng.choice(reps)
        v["repeat"] = count
    else:
        lists = _lists(spec)
        if lists:
            p, lst = rng.choice(lists)
            if lst:
                i = rng.randrange(len(lst))
                lst[i] = {"repeat": count, "block": [lst[i]]}
    return spec


def m_delete(rng, spec):
    nodes = [(p, v) for p, v in _nodes(spec) if p]
    if nodes:
        p, _ = rng.choice(nodes)
        parent = _get(spec, p[:-1])
        del parent[p[-1]]
    return spec


def m_duplicate(rng, spec):
    lists = _lists(spec)
    if lists:
        p, lst = rng.choice(lists)
        if lst:
            i = rng.randrange(len(lst))
            lst[i:i] = [copy.deepcopy(lst[i]) for _ in range(rng.choice((1, 2, 5, 20)))]
    return spec


def m_input(rng, spec):
    shapes = ([1, 1, 1], [3, 1, 1], [1, 2, 2], [1], [0], [-1, 8, 8], [1, 8], [8], [1, 8, 8, 8],
              [1, 10**11, 10**11], [3, 224, 224], [1, 100000, 100000], [10**9], [2**62], [1.5, 8, 8], [],
              "1x28x28", [3, 32, 32], [64], [1, 5, 5], [10**6, 1, 1])
    spec["input"] = {"shape": copy.deepcopy(rng.choice(shapes))}
    if rng.random() < 0.3:
        spec["input"]["dtype"] = rng.choice(("long", "float", "int8", "bool"))
    return spec


def m_var(rng, spec):
    vars_ = spec.get("vars")
    if not isinstance(vars_, dict):
        vars_ = spec["vars"] = {}
    if vars_ and rng.random() < 0.7:
        k = rng.choice(list(vars_))
        vars_[k] = _size(rng, vars_[k]) if rng.random() < 0.7 else rng.choice(
            ("${2 ** 60}", "${num_classes * 10 ** 9}", "$self", {"int": [1, 10**12]}, {"choice": []},
             {"float": [1.0, 0.0]}, "${1 / 0}"))
    else:
        vars_[rng.choice(("num_classes", "width", "depth", "x"))] = _size(rng, 8)
    return spec


def m_arg(rng, spec):
    items = _layer_items(spec)
    if items:
        p, v = rng.choice(items)
        (key, args), = v.items()
        names = layer_args().get(key) or ("out", "kernel", "heads")
        if not isinstance(args, dict):
            args = {} if args is None else {names[0]: args} if names else {}
        args[rng.choice(names + ("bogus",))] = _size(rng, 8)
        _set(spec, p, {key: args})
    return spec


def m_graft(rng, spec):
    """Replace a layer by a layer (or list) from another zoo spec."""
    other = zoo_specs()[rng.choice(sorted(zoo_specs()))]
    theirs, mine = _layer_items(other), _layer_items(spec)
    if theirs and mine:
        p, _ = rng.choice(mine)
        _set(spec, p, copy.deepcopy(rng.choice(theirs)[1]))
    return spec


MUTATIONS = (m_size, m_size, m_layer_name, m_nest, m_repeat, m_delete, m_duplicate, m_input, m_var, m_arg,
             m_graft)


# ------------------------------------------------------------------ cases


def _random_value(rng: random.Random, name: str) -> Any:
    if name in ("merge", "returns", "layout", "norm", "mlp", "query", "padding") and rng.random() < 0.5:
        return rng.choice(("same", "last", "sequence", "concat", "flat", "rmsnorm", "swiglu", "valid"))
    return _size(rng, rng.choice((1, 2, 3, 4, 8, 16, 32, 64)))


def random_spec(rng: random.Random) -> dict:
    names = layer_names()
    model = []
    for _ in range(rng.randint(1, 12)):
        name = rng.choice(names)
        args = layer_args()[name]
        if not args or rng.random() < 0.2:
            model.append(name)
        elif rng.random() < 0.4:
            model.append({name: _random_value(rng, args[0])})
        else:
            model.append({name: {a: _random_value(rng, a) for a in rng.sample(args, rng.randint(1, len(args)))}})
    shape = rng.choice(([1, 8, 8], [3, 16, 16], [64], [16, 32], [20], [1, 1, 1], [2, 4, 4, 4]))
    spec = {"input": {"shape": shape}, "model": model}
    if rng.random() < 0.3:
        spec["input"]["dtype"] = "long"
    return spec


def _huge_list(rng: random.Random) -> str:
    n = rng.randint(5000, 20000)
    kind = rng.choice(("relu", "linear", "mixed"))
    lines = ["input: {shape: [16]}", "model:"]
    for i in range(n):
        if kind == "relu" or (kind == "mixed" and i % 3):
            lines.append("  - relu")
        else:
            lines.append("  - linear: 16")
    return "\n".join(lines) + "\n"


def _deep(rng: random.Random) -> str:
    d = rng.randint(100, 900)
    kind = rng.choice(("residual", "list", "repeat", "parallel", "flow-mapping", "blocks"))
    if kind == "residual":
        body = "{residual: [" * d + "relu" + "]}" * d
    elif kind == "list":
        body = "[" * d + "relu" + "]" * d
    elif kind == "repeat":
        body = "{repeat: 1, block: [" * d + "relu" + "]}" * d
    elif kind == "parallel":
        body = "{parallel: {merge: add, branches: [[" * d + "relu" + "]]}}" * d
    elif kind == "flow-mapping":
        return "input: {shape: [16]}\nvars: " + "{a: " * d + "1" + "}" * d + "\nmodel: [relu]\n"
    else:  # named blocks that each call the next one
        blocks = "".join(f"  b{i}: [b{i + 1}]\n" for i in range(d)) + f"  b{d}: [relu]\n"
        return f"input: {{shape: [16]}}\nblocks:\n{blocks}model: [b0]\n"
    return f"input: {{shape: [16]}}\nmodel: [{body}]\n"


def case_text(kind: str, seed: int) -> str:
    """The YAML text of a case (deterministic in kind and seed)."""
    rng = random.Random(f"{kind}:{seed}")
    if kind == "huge-list":
        return _huge_list(rng)
    if kind == "deep":
        return _deep(rng)
    if kind == "random":
        return dump(random_spec(rng))
    specs = zoo_specs()
    names = sorted(specs)
    base = rng.choices(names, weights=[BASE_WEIGHTS.get(n, 1.0) for n in names])[0]
    spec = copy.deepcopy(specs[base])
    for _ in range(rng.randint(1, 4)):
        spec = rng.choice(MUTATIONS)(rng, spec)
        if not isinstance(spec, dict):
            spec = {"model": spec}
    return dump(spec)


def plan(n: int, seed: int, huge: int) -> list[tuple[str, int]]:
    """n cases: `huge` huge lists, `huge` deep nestings, then 4 mutated for each random one."""
    rng = random.Random(seed)
    cases = [("huge-list", seed * 100003 + i) for i in range(huge)]
    cases += [("deep", seed * 100003 + i) for i in range(huge)]
    rest = max(n - len(cases), 0)
    cases += [("random" if i % 5 == 4 else "mutated", seed * 100003 + i) for i in range(rest)]
    rng.shuffle(cases)
    return cases


def run_case(task: tuple[str, str, int]) -> dict:
    """Worker side: parse, then inspect (which builds on the meta device)."""
    from archlab.core import ArchlabError
    from archlab.model import inspect
    from archlab.spec import load_spec

    _, kind, seed = task
    text = case_text(kind, seed)
    stage = "parse"
    try:
        spec = load_spec(text)
        stage = "inspect"
        inspect(spec)
        return {"outcome": "ok"}
    except ArchlabError as exc:
        message = str(exc)
        return {"outcome": "archlab", "stage": stage, "lines": message.count("\n") + 1,
                "error": f"{type(exc).__name__}: {message.splitlines()[0] if message else ''}"[:300]}
    except MemoryError:
        return {"outcome": "memory", "stage": stage, "error": "MemoryError"}
    except Exception as exc:  # noqa: BLE001 - what the campaign counts
        first = (str(exc).splitlines() or [""])[0]
        return {"outcome": "foreign", "stage": stage, "error": f"{type(exc).__name__}: {first}"[:300]}
