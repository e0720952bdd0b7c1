"""Transfer learning: start a run from another run's (or a file's) weights, freeze some of them.

    fit("zoo:cnn", data="npy:new", init_from=old_run_id, map=["model.9.*="],   # a new head
        freeze=["model.0.*"], bn="frozen")

Weights match by name (the built network's state_dict names, which follow the spec's paths:
`model.3.weight` is `model[3]`) and shape. `map` renames the source's names first: `old=new`
renames a prefix (`backbone=model`), a glob renames what it matches in full, its `*`s carried
over in order (`'enc.*=model.*'`), and `old=` drops what it matches (a head to train anew).
The first entry that matches a name renames it. A converter's name (`hf-gpt2`,
archlab.train._hf) turns a peer's layout into archlab's.

Strict by default: a source tensor that matches nothing, or matches a tensor of another
shape, is an error before the run is recorded (one line; the table says the rest), unless
`partial` is set (then those are skipped). What the model has and the source lacks is new:
it keeps its initialisation. A source that matches nothing at all is always an error.

`freeze` globs select parameters (by full name or a module prefix: `model.0` freezes
`model.0.weight` and `model.0.bias`) that get requires_grad False and stay out of the
optimizer, so they are byte-identical after training. `bn="frozen"` keeps every batch-norm
layer in eval mode while training: it normalises with, and never updates, its running
statistics (its affine weights still train unless frozen too).
"""

from __future__ import annotations

import fnmatch
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core import SpecError, StoreError
from ..runs import BEST_WEIGHTS, CHECKPOINT_WEIGHTS, SQLiteRunStorage

__all__ = ["CONVERTERS", "Entry", "InitReport", "Source", "freeze_parameters", "frozen_names",
           "hold_batchnorm", "init_weights", "plan_init", "plan_run_init", "read_source", "register_converter"]

_GLOB = re.compile(r"[*?\[]")
_SHOWN = 40  # a longer table shows every row that did not load, and a count of those that did


# ----------------------------------------------------------------------- the source


@dataclass(frozen=True)
class Entry:
    """One source tensor as it will load: its name after --map, where it came from, its shape,
    and how to get its value from the source's tensors (a converter may transpose or cut it)."""

    name: str
    origin: str
    shape: tuple[int, ...]
    get: Callable[[Mapping[str, torch.Tensor]], torch.Tensor]
    note: str = ""


@dataclass(frozen=True)
class Source:
    """A weights file: where it is, what it holds (names and shapes), and what it was asked as."""

    path: Path
    shapes: Mapping[str, tuple[int, ...]]
    resolved: str          # what a run records: an absolute path, or a full run id
    description: str       # for the table's title

    def tensors(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        try:
            return load_file(str(self.path))
        except Exception as e:  # safetensors raises plain errors for damaged files
            raise StoreError(f"--init-from {self.path}: cannot read its tensors ({type(e).__name__}: {e}); "
                             f"the file is damaged") from None


def _read_shapes(path: Path, asked: str, flag: str) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as e:
        raise StoreError(f"{flag} {asked}: {path} is not a safetensors file ({type(e).__name__}: {e}). "
                         f"Give a .safetensors file or a run id") from None


def read_source(source: str | Path, store: SQLiteRunStorage | None = None, *, flag: str = "--init-from") -> Source:
    """A run id (its kept best weights, else its last checkpoint's), a `.safetensors` file, or a
    folder holding a `model.safetensors` (Hugging Face's layout). `flag` names it in errors."""
    asked = str(source)
    path = Path(asked).expanduser()
    if path.is_dir() and (path / "model.safetensors").is_file():
        path = path / "model.safetensors"
    if path.is_file():
        path = path.resolve()
        return Source(path, _read_shapes(path, asked, flag), str(path), str(path))
    if path.suffix == ".safetensors" or "/" in asked or path.is_dir():
        raise StoreError(f"{flag} {asked}: no such weights file"
                         + (" (a folder needs a model.safetensors)" if path.is_dir() else "")
                         + "; give a .safetensors file or a run id from `archlab runs`")
    if store is None:
        raise StoreError(f"{flag} {asked}: not a file, and no run store to look a run id up in")
    try:
        record = store.get_run(asked)
    except StoreError as e:
        raise StoreError(f"{flag} {asked}: not a file, and not a run: {e}") from None
    directory = store.run_dir(record.run_id)
    for name in (BEST_WEIGHTS, CHECKPOINT_WEIGHTS):
        if (directory / name).is_file():
            weights = directory / name
            return Source(weights, _read_shapes(weights, asked, flag), record.run_id,
                          f"run {record.run_id} ({record.name}, {name})")
    raise StoreError(f"{flag} {asked}: run {record.run_id} has no saved weights in {directory}; "
                     f"train it first (or resume it: `archlab train --resume {record.run_id}`)")


# --------------------------------------------------------------------------- --map


def _compile(rule: str) -> tuple[str, str, re.Pattern[str] | None]:
    old, sep, new = rule.partition("=")
    old, new = old.strip(), new.strip()
    if not sep or not old:
        raise SpecError(f"--map: expected OLD=NEW (a prefix or a glob; NEW empty drops), or a converter "
                        f"({', '.join(CONVERTERS)}). Received: {rule!r}")
    pattern = None
    if _GLOB.search(old):
        parts = re.split(r"(\*|\?)", old)
        pattern = re.compile("".join("(.*)" if p == "*" else "(.)" if p == "?" else
                                     re.escape(p).replace(r"\[", "[").replace(r"\]", "]") for p in parts))
        stars = new.count("*")
        if stars > pattern.groups:
            raise SpecError(f"--map {rule!r}: NEW has {stars} '*' but OLD captures {pattern.groups}; "
                            f"each '*' in NEW takes the next '*' or '?' of OLD")
    elif _GLOB.search(new):
        raise SpecError(f"--map {rule!r}: NEW has a glob but OLD does not; write OLD as a glob too "
                        f"(e.g. 'enc.*=model.*') or both as prefixes")
    return old, new, pattern


def _rename(name: str, rule: tuple[str, str, re.Pattern[str] | None]) -> str | None:
    """The new name ('' to drop), or None where the rule does not match."""
    old, new, pattern = rule
    if pattern is None:
        if name == old or name.startswith(old.rstrip(".") + "."):
            rest = name[len(old.rstrip(".")):]
            return "" if not new else new.rstrip(".") + rest
        return None
    match = pattern.fullmatch(name)
    if match is None:
        return None
    groups = iter(match.groups())
    return re.sub(r"\*", lambda _: next(groups), new) if new else ""


def _identity(name: str) -> Callable[[Mapping[str, torch.Tensor]], torch.Tensor]:
    return lambda tensors: tensors[name]


# Converters from a peer's layout: (entries, the target network, the source) -> (entries,
# notes for the table). They run before the renames, on every tensor at once.
Converter = Callable[[list[Entry], nn.Module, Source], tuple[list[Entry], list[str]]]
CONVERTERS: dict[str, Converter] = {}


def register_converter(name: str) -> Callable[[Converter], Converter]:
    def add(fn: Converter) -> Converter:
        CONVERTERS[name] = fn
        return fn

    return add


def _entries(source: Source, net: nn.Module, rules: Sequence[str]
             ) -> tuple[list[Entry], list[Entry], list[str]]:
    """(the entries that load, the ones --map dropped, the converters' notes)."""
    entries = [Entry(k, k, shape, _identity(k)) for k, shape in source.shapes.items()]
    compiled = [rule if rule in CONVERTERS else _compile(rule) for rule in rules]
    dropped: list[Entry] = []
    notes: list[str] = []
    for rule in compiled:
        if isinstance(rule, str):
            entries, more = CONVERTERS[rule](entries, net, source)
            notes += more
    kept = []
    for entry in entries:
        for rule in compiled:
            if isinstance(rule, str):
                continue
            new = _rename(entry.name, rule)
            if new is not None:
                entry = Entry(new, entry.origin, entry.shape, entry.get, entry.note)
                break
        (kept if entry.name else dropped).append(entry)
    return kept, dropped, notes


# ------------------------------------------------------------------------ matching


@dataclass(frozen=True)
class Row:
    status: str                         # loaded | new | shape | unused | dropped
    target: str | None = None           # the model's name
    shape: tuple[int, ...] | None = None
    origin: str | None = None           # the source's name
    source_shape: tuple[int, ...] | None = None
    note: str = ""


_WHY = {"loaded": "loaded", "new": "new (not in the source)", "shape": "skipped: shape differs (keeps its own initialisation)",
        "unused": "unused: matches nothing", "dropped": "dropped by --map"}


@dataclass(frozen=True)
class InitReport:
    """What loading a source into a model does, row by row (see `table`)."""

    source: Source
    rows: tuple[Row, ...]
    partial: bool = False
    notes: tuple[str, ...] = ()
    entries: Mapping[str, Entry] = field(default_factory=dict, repr=False)  # target name -> entry

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.rows)

    @property
    def problems(self) -> list[Row]:
        return [r for r in self.rows if r.status in ("shape", "unused")]

    def summary(self) -> str:
        parts = [f"{self.count(s)} {w}" for s, w in (("loaded", "loaded"), ("new", "new"),
                                                    ("shape", "shape mismatch(es)"), ("unused", "unused"),
                                                    ("dropped", "dropped")) if self.count(s)]
        return ", ".join(parts) or "nothing"

    def table(self) -> Any:
        """A rich Table: every row, or (for a long one) every row that did not load."""
        from rich.table import Table

        table = Table(title=f"init from {self.source.description}: {self.summary()}", title_justify="left")
        for column in ("this model", "shape", "from the source", "source shape", "status"):
            table.add_column(column)
        rows = self.rows
        if len(rows) > _SHOWN:
            rows = tuple(r for r in rows if r.status != "loaded")
        for r in rows:
            why = _WHY[r.status] + (f" ({r.note})" if r.note else "")
            style = {"loaded": "green", "new": "cyan", "dropped": "dim"}.get(r.status, "red")
            table.add_row(r.target or "-", _shape(r.shape), r.origin or "-", _shape(r.source_shape),
                          f"[{style}]{why}[/{style}]")
        if len(rows) < len(self.rows):
            table.add_row(f"... {self.count('loaded')} loaded", "", "", "", "[green]loaded[/green]")
        return table

    def print(self, file: Any = None) -> None:
        from rich.console import Console

        console = Console(file=file or sys.stderr, highlight=False, soft_wrap=True,
                          width=None if (file or sys.stderr).isatty() else 140)
        console.print(self.table())
        for note in self.notes:
            console.print(f"note: {note}")

    def load(self, net: nn.Module) -> None:
        """Copy the loaded rows' tensors into `net` (a real one, built like the planned one)."""
        tensors = self.source.tensors()
        state = net.state_dict()
        with torch.no_grad():
            for r in self.rows:
                if r.status == "loaded":
                    assert r.target is not None
                    value = self.entries[r.target].get(tensors)
                    state[r.target].copy_(value.reshape(state[r.target].shape))


def _shape(shape: tuple[int, ...] | None) -> str:
    return "-" if shape is None else "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def plan_init(net: nn.Module, source: Source, map: Sequence[str] = (), *, partial: bool = False) -> InitReport:
    """Match `source`'s tensors (after `map`) with `net`'s by name and shape. Raises SpecError
    (after which `report` is on the error as `.report`) on what strict loading refuses."""
    kept, dropped, notes = _entries(source, net, map)
    target = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    by_name: dict[str, Entry] = {}
    for e in kept:
        if e.name in by_name:
            raise SpecError(f"--map: {by_name[e.name].origin!r} and {e.origin!r} both become {e.name!r}; "
                            f"map them to different names (or drop one with 'OLD=')")
        by_name[e.name] = e
    rows: list[Row] = []
    loaded: dict[str, Entry] = {}
    stored = source.shapes  # the table shows the file's own shapes (a converter may transpose)
    for name, shape in target.items():
        e = by_name.get(name)
        if e is None:
            rows.append(Row("new", name, shape))
        elif e.shape != shape:
            rows.append(Row("shape", name, shape, e.origin, stored.get(e.origin, e.shape), e.note))
        else:
            rows.append(Row("loaded", name, shape, e.origin, stored.get(e.origin, e.shape), e.note))
            loaded[name] = e
    rows += [Row("unused", None, None, e.origin, stored.get(e.origin, e.shape), e.note)
             for e in kept if e.name not in target]
    rows += [Row("dropped", None, None, e.origin, stored.get(e.origin, e.shape)) for e in dropped]
    report = InitReport(source, tuple(rows), partial, tuple(notes), loaded)
    error = _refusal(report, map)
    if error is not None:
        err = SpecError(error)
        err.report = report  # type: ignore[attr-defined]
        raise err
    return report


def _refusal(report: InitReport, map: Sequence[str]) -> str | None:
    where = f"--init-from {report.source.resolved}"
    if not report.count("loaded"):
        example = next(iter(report.source.shapes), "?")
        return (f"{where}: none of its {len(report.source.shapes)} tensors matches this model by name and shape "
                f"(the table lists them); rename them with --map OLD=NEW (e.g. the source's {example!r} to "
                f"this model's name){'' if map else ', or a converter: --map ' + ', '.join(CONVERTERS)}")
    problems = report.problems
    if not problems or report.partial:
        return None
    shown = "; ".join(f"{r.origin} {_shape(r.source_shape)} vs {r.target} {_shape(r.shape)}" if r.status == "shape"
                      else f"{r.origin} matches nothing" for r in problems[:3])
    more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
    heads = sorted({r.origin.rpartition(".")[0] for r in problems if r.origin and r.status == "shape"})
    fix = (f"drop them so they train anew (--map '{heads[0]}.*=')" if heads else "rename them with --map OLD=NEW")
    return (f"{where}: {len(problems)} source tensor(s) do not fit this model. Received: {shown}{more}; "
            f"{fix}, or load the rest with --partial")


def init_weights(net: nn.Module, source: str | Path, map: Sequence[str] = (), *, partial: bool = False,
                 store: SQLiteRunStorage | None = None, quiet: bool = True) -> InitReport:
    """Load `source`'s weights into `net` (a run id or a .safetensors file; rules as in `fit`'s
    init_from) and return the report of what loaded.

    >>> import archlab
    >>> net = archlab.build("zoo:mlp")
    >>> from safetensors.torch import save_model; import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors"); save_model(net, path)
    >>> init_weights(archlab.build("zoo:mlp", seed=1), path).summary()
    '6 loaded'
    """
    report = plan_init(net, read_source(source, store), map, partial=partial)
    if not quiet:
        report.print()
    report.load(net)
    return report


def plan_run_init(net: nn.Module, s: Any, store: SQLiteRunStorage | None, *, quiet: bool = False) -> InitReport:
    """The plan for a run's settings `s` (init_from, map, partial) on its (meta) network; the
    table is printed unless `quiet`, a refused one too (then the error is raised after it)."""
    try:
        report = plan_init(net, read_source(s.init_from, store), s.map, partial=s.partial)
    except SpecError as e:
        if not quiet and getattr(e, "report", None) is not None:
            e.report.print()
        raise
    if not quiet:
        report.print()
    return report


# --------------------------------------------------------------------- freezing


def frozen_names(net: nn.Module, patterns: Iterable[str]) -> list[str]:
    """The parameters `patterns` select (a glob on the full name, or on a module prefix)."""
    names = [n for n, _ in net.named_parameters()]
    chosen: set[str] = set()
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(n, pattern.rstrip(".") + ".*")]
        if not hits:
            shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
            raise SpecError(f"--freeze {pattern!r}: matches no parameter of this model (names: {shown}); "
                            f"`archlab inspect SPEC` lists them by spec path (model[3] is model.3)")
        chosen.update(hits)
    if chosen and len(chosen) == len(names):
        raise SpecError(f"--freeze {' '.join(patterns)}: freezes every parameter; nothing would train")
    return [n for n in names if n in chosen]


def freeze_parameters(net: nn.Module, patterns: Iterable[str]) -> list[str]:
    """requires_grad False on the parameters `patterns` select (before the optimizer is made)."""
    names = set(frozen_names(net, patterns))
    for name, p in net.named_parameters():
        if name in names:
            p.requires_grad_(False)
    return sorted(names)


def batchnorm_layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def hold_batchnorm(net: nn.Module) -> None:
    """Every batch-norm layer to eval mode (call after `net.train()`): running statistics stay."""
    for m in batchnorm_layers(net):
        m.eval()


def check_bn(net: nn.Module, mode: str) -> None:
    if mode == "frozen" and not batchnorm_layers(net):
        raise SpecError("--bn frozen: this model has no batch-norm layer to freeze; drop --bn")
