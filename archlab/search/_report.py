"""The search view of the HTML report: objective over trials, the Pareto front, and Optuna's
parameter importances, as inline-SVG sections (no script, font or image to fetch).

    >>> from archlab.search import write_search_report
    >>> write_search_report(result, "search.html")          # doctest: +SKIP

`search_sections_html(result)` gives the sections alone, for folding into another page.
"""

from __future__ import annotations

import html
import math
import os
from datetime import datetime
from pathlib import Path

from matplotlib.figure import Figure

from ..compare import html_chart, html_page, html_section, new_figure, place_labels, svg_of
from ..core import format_metric
from ..runs import masked_url as _masked
from ._search import SearchResult, TrialSummary

_esc = html.escape
_BLUE, _ORANGE, _GREY, _RED, _GREEN = "#4e79a7", "#f28e2b", "#9aa5b1", "#e15759", "#59a14f"
_COST_LABELS = {"params": "parameters", "flops": "forward FLOPs per sample", "memory": "training memory (bytes)",
                "latency": "latency at batch 1 (ms)", "latency_ms": "latency at batch 1 (ms)"}


def write_search_report(result: SearchResult, path: str | Path) -> Path:
    """Write the search as one self-contained HTML page; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(render_search_report(result), encoding="utf-8")
    os.replace(tmp, path)
    return path


def render_search_report(result: SearchResult) -> str:
    title = f"archlab search: {result.study}"
    return html_page(title, _overview(result, title) + "\n" + search_sections_html(result), _CSS)


def search_sections_html(result: SearchResult) -> str:
    """The search view: objective over trials, Pareto front, importances, the trials table."""
    trained = result.trained_objective
    sections = [
        html_section("search-history", f"{_esc(trained.key)} over trials", html_chart(
            "search-objective", _history_chart(result),
            "Each trial's best validation value (pruned trials: their best before they were stopped); "
            "the line is the best so far. Infeasible trials were never trained, and trials that repeat "
            "earlier choices reuse their result; neither counts toward --trials.")),
        html_section("search-front", "Pareto front", _front_section(result)),
        html_section("search-importance", "Parameter importances", _importance_section(result)),
        html_section("search-trials", "Trials", _trials_table(result)),
    ]
    return "\n".join(sections)


# ---------------------------------------------------------------------------- pieces


def _overview(r: SearchResult, title: str) -> str:
    when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    objectives = ", ".join(f"{o.key} ({'max' if o.direction == 'maximize' else 'min'})" for o in r.objectives)
    states = ", ".join(f"{r.count(s)} {s}" for s in ("complete", "pruned", "infeasible", "duplicate", "failed",
                                                      "interrupted") if r.count(s))
    budget = ", ".join(f"{k} {v:,g}" for k, v in r.budget.items() if v is not None) or "none"
    rows = [("spec", _esc(str(r.spec.get("name", "-")))), ("data", _esc(r.data)), ("objectives", _esc(objectives)),
            ("budget", _esc(budget)), ("trials", _esc(f"{len(r.trials)}: {states}; {r.epochs} epochs trained")),
            ("storage", f"<code>{_esc(_masked(r.storage))}</code>"), ("generated", _esc(when))]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<header id="overview"><h1>{_esc(title)}</h1><dl class="meta">{dl}</dl></header>'


def _trained_index(r: SearchResult) -> int:
    return next(i for i, o in enumerate(r.objectives) if o.trained)


def _trial_value(r: SearchResult, t: TrialSummary) -> float | None:
    """A trial's trained-objective value: its result, or the best of its curve if pruned."""
    if t.values is not None:
        return t.values[_trained_index(r)]
    finite = [v for v in t.curve if math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if r.trained_objective.direction == "maximize" else min(finite)


def _history_chart(r: SearchResult) -> str:
    fig = new_figure(7.5, 3.6)
    ax = fig.add_subplot()
    maximize = r.trained_objective.direction == "maximize"
    groups = {"complete": ([], [], _BLUE, "o"), "pruned": ([], [], _GREY, "x")}
    best_x, best_y, best = [], [], None
    for t in sorted(r.trials, key=lambda t: t.number):
        value = _trial_value(r, t)
        if value is None or t.state not in groups:
            continue
        xs, ys, _, _ = groups[t.state]
        xs.append(t.number)
        ys.append(value)
        if t.state == "complete" and (best is None or (value > best if maximize else value < best)):
            best = value
        if best is not None:
            best_x.append(t.number)
            best_y.append(best)
    for state, (xs, ys, color, marker) in groups.items():
        if xs:
            ax.scatter(xs, ys, color=color, marker=marker, s=28, label=state, zorder=3)
    if best_x:
        ax.step(best_x, best_y, where="post", color=_ORANGE, lw=2, label="best so far", zorder=2)
    infeasible = [t.number for t in r.trials if t.state == "infeasible"]
    if infeasible:
        for n in infeasible:
            ax.axvline(n, color=_RED, alpha=0.25, lw=1)
        ax.plot([], [], color=_RED, alpha=0.5, label="infeasible (not trained)")
    if not any(groups[s][0] for s in groups):
        ax.text(0.5, 0.5, "no trained trial yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("trial")
    ax.set_ylabel(r.trained_objective.key)
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    return svg_of(fig, "search-objective")


def _front_section(r: SearchResult) -> str:
    fig, note = _front_figure(r)
    return html_chart("search-pareto", svg_of(fig, "search-pareto"), note + "; numbers are trial numbers.")


def _front_figure(r: SearchResult) -> tuple[Figure, str]:
    """Multi-objective: the first cost objective against the trained one, the front joined.
    Single-objective: the same picture against parameters (known for every trial)."""
    costs = [o for o in r.objectives if not o.trained]
    if costs:
        cost, note = costs[0], f"Pareto front of the study's objectives {', '.join(o.key for o in r.objectives)}"
        key = {"latency": "latency_ms"}.get(cost.key, cost.key)
        if len(costs) > 1:
            note += f" (drawn against {cost.key}; the front is over all objectives)"
        front = {t.number for t in r.best}
    else:
        key, note = "params", "The search had one objective; this shows it against parameters"
        front = None
    points = [(t, float(t.costs[key]), _trial_value(r, t)) for t in r.trials
              if t.state == "complete" and key in t.costs and _trial_value(r, t) is not None]
    maximize = r.trained_objective.direction == "maximize"
    if front is None:  # the (min cost, best value) front of the completed trials
        front = set()
        best = None
        for t, _, v in sorted(points, key=lambda p: (p[1], -p[2] if maximize else p[2])):
            if best is None or (v > best if maximize else v < best):
                front.add(t.number)
                best = v
    fig = new_figure(6.5, 4.0)
    ax = fig.add_subplot()
    if points:
        others = [(x, y) for t, x, y in points if t.number not in front]
        on = sorted((x, y) for t, x, y in points if t.number in front)
        if others:
            ax.scatter(*zip(*others, strict=True), color=_GREY, s=24, label="other completed trials", zorder=2)
        if on:
            ax.step(*zip(*on, strict=True), where="post", color=_ORANGE, lw=1.5, ls="--", marker="o", ms=6,
                    label="Pareto front", zorder=3)
        if min(x for _, x, _ in points) > 0 and max(x for _, x, _ in points) / max(min(x for _, x, _ in points), 1e-12) > 20:
            ax.set_xscale("log")
        ax.margins(x=0.08, y=0.1)
        ax.legend(fontsize=8, loc="best")
        ax.set_xlabel(_COST_LABELS.get(key, key))
        ax.set_ylabel(r.trained_objective.key)
        ax.grid(alpha=0.3)
        labelled = sorted((p for p in points if p[0].number in front), key=lambda p: p[1])
        place_labels(ax, [(x, y) for _, x, y in labelled], [str(t.number) for t, _, _ in labelled], fontsize=7,
                     marker_pt=7)
    else:
        ax.text(0.5, 0.5, "no completed trial yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(_COST_LABELS.get(key, key))
        ax.set_ylabel(r.trained_objective.key)
        ax.grid(alpha=0.3)
    return fig, note


def _importance_section(r: SearchResult) -> str:
    if not r.importances:
        return '<p class="note">Needs at least two completed trials whose results differ.</p>'
    items = sorted(r.importances.items(), key=lambda kv: kv[1])
    fig = new_figure(6.5, 0.9 + 0.38 * len(items))
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color=_BLUE)
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    ax.set_xlabel(f"importance for {r.trained_objective.key} (fANOVA, sums to 1)")
    ax.set_xlim(0, max(v for _, v in items) * 1.18 or 1)
    ax.grid(alpha=0.3, axis="x")
    return html_chart("search-importances", svg_of(fig, "search-importances"),
                  "Optuna's parameter importances over the completed trials: how much of the variation "
                  "in the objective each searched value explains.")


def _trials_table(r: SearchResult) -> str:
    best = {t.number for t in r.best}
    head = "".join(f"<th>{_esc(o.key)}</th>" for o in r.objectives)
    rows = []
    for t in sorted(r.trials, key=lambda t: t.number):
        if t.values is not None:
            vals = "".join(f"<td>{format_metric(v)}</td>" for v in t.values)
        else:
            v = _trial_value(r, t)
            vals = f'<td colspan="{len(r.objectives)}" class="muted">' + (
                _esc(t.infeasible or "") if t.state == "infeasible" else
                (f"best {format_metric(v)} before it stopped" if v is not None else _esc(t.message[:80]))) + "</td>"
        chosen = ", ".join(f"{k}={_param(v) if isinstance(v, float) else v}" for k, v in t.params.items())
        state = f"duplicate of {t.duplicate_of}" if t.state == "duplicate" else t.state
        cls = ' class="best"' if t.number in best else ""
        rows.append(f"<tr{cls}><td>{t.number}</td><td>{_esc(state)}</td>{vals}<td>{_esc(chosen)}</td>"
                    f"<td>{t.epochs}</td><td><code>{_esc(', '.join(t.run_ids) or '-')}</code></td></tr>")
    return (f'<div class="table-wrap"><table class="results"><thead><tr><th>trial</th><th>state</th>{head}'
            f"<th>chosen</th><th>epochs</th><th>run</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def _param(v: float) -> str:
    """A chosen value (a learning rate, a dropout): four significant digits, as chosen."""
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}" if abs(v) < 1 else f"{v:.4f}".rstrip("0").rstrip(".")


_CSS = """
.results tr.best td{background:#fff5d6;font-weight:600}
.results td.muted{color:#5b6776;text-align:left;white-space:normal}
"""
