"""The search view of the HTML report: objective over trials, the Pareto front, and Optuna's
parameter importances, as inline-SVG sections (no script, font or image to fetch).

    >>> from archlab.search import write_search_report
    >>> write_search_report(result, "search.html")          # doctest: +SKIP

`search_sections_html(result)` gives the sections alone, for folding into another page.
"""

from __future__ import annotations

import html
import io
import math
import os
import re
from datetime import datetime
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from ..compare._report import _chart, _section  # the comparison report's HTML pieces
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
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head>\n<body><main>\n"
            + _overview(result, title) + "\n" + search_sections_html(result) + "\n</main></body></html>\n")


def search_sections_html(result: SearchResult) -> str:
    """The search view: objective over trials, Pareto front, importances, the trials table."""
    trained = result.trained_objective
    sections = [
        _section("search-history", f"{_esc(trained.key)} over trials",
                 _chart("search-objective", _history_chart(result),
                        "Each trial's best validation value (pruned trials: their best before they were "
                        "stopped); the line is the best so far. Infeasible trials were never trained.")),
        _section("search-front", "Pareto front", _front_section(result)),
        _section("search-importance", "Parameter importances", _importance_section(result)),
        _section("search-trials", "Trials", _trials_table(result)),
    ]
    return "\n".join(sections)


# ---------------------------------------------------------------------------- pieces


def _overview(r: SearchResult, title: str) -> str:
    when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    objectives = ", ".join(f"{o.key} ({'max' if o.direction == 'maximize' else 'min'})" for o in r.objectives)
    states = ", ".join(f"{r.count(s)} {s}" for s in ("complete", "pruned", "infeasible", "failed", "interrupted")
                       if r.count(s))
    budget = ", ".join(f"{k} {v:,g}" for k, v in r.budget.items() if v is not None) or "none"
    rows = [("spec", _esc(str(r.spec.get("name", "-")))), ("data", _esc(r.data)), ("objectives", _esc(objectives)),
            ("budget", _esc(budget)), ("trials", _esc(f"{len(r.trials)}: {states}; {r.epochs} epochs trained")),
            ("storage", f"<code>{_esc(r.storage)}</code>"), ("generated", _esc(when))]
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
    fig = _figure(7.5, 3.6)
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
    return _svg(fig, "search-objective")


def _front_section(r: SearchResult) -> str:
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
    fig = _figure(6.5, 4.0)
    ax = fig.add_subplot()
    if points:
        others = [(x, y) for t, x, y in points if t.number not in front]
        on = sorted((x, y) for t, x, y in points if t.number in front)
        if others:
            ax.scatter(*zip(*others, strict=True), color=_GREY, s=24, label="other completed trials", zorder=2)
        if on:
            ax.step(*zip(*on, strict=True), where="post", color=_ORANGE, lw=1.5, ls="--", marker="o", ms=6,
                    label="Pareto front", zorder=3)
            for t, x, y in points:
                if t.number in front:
                    ax.annotate(str(t.number), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if min(x for _, x, _ in points) > 0 and max(x for _, x, _ in points) / max(min(x for _, x, _ in points), 1e-12) > 20:
            ax.set_xscale("log")
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no completed trial yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(_COST_LABELS.get(key, key))
    ax.set_ylabel(r.trained_objective.key)
    ax.grid(alpha=0.3)
    return _chart("search-pareto", _svg(fig, "search-pareto"), note + "; numbers are trial numbers.")


def _importance_section(r: SearchResult) -> str:
    if not r.importances:
        return '<p class="note">Needs at least two completed trials whose results differ.</p>'
    items = sorted(r.importances.items(), key=lambda kv: kv[1])
    fig = _figure(6.5, 0.9 + 0.38 * len(items))
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color=_BLUE)
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    ax.set_xlabel(f"importance for {r.trained_objective.key} (fANOVA, sums to 1)")
    ax.set_xlim(0, max(v for _, v in items) * 1.18 or 1)
    ax.grid(alpha=0.3, axis="x")
    return _chart("search-importances", _svg(fig, "search-importances"),
                  "Optuna's parameter importances over the completed trials: how much of the variation "
                  "in the objective each searched value explains.")


def _trials_table(r: SearchResult) -> str:
    best = {t.number for t in r.best}
    head = "".join(f"<th>{_esc(o.key)}</th>" for o in r.objectives)
    rows = []
    for t in sorted(r.trials, key=lambda t: t.number):
        if t.values is not None:
            vals = "".join(f"<td>{_num(v)}</td>" for v in t.values)
        else:
            v = _trial_value(r, t)
            vals = f'<td colspan="{len(r.objectives)}" class="muted">' + (
                _esc(t.infeasible or "") if t.state == "infeasible" else
                (f"best {_num(v)} before it stopped" if v is not None else _esc(t.message[:80]))) + "</td>"
        chosen = ", ".join(f"{k}={_num(v) if isinstance(v, float) else v}" for k, v in t.params.items())
        cls = ' class="best"' if t.number in best else ""
        rows.append(f"<tr{cls}><td>{t.number}</td><td>{_esc(t.state)}</td>{vals}<td>{_esc(chosen)}</td>"
                    f"<td>{t.epochs}</td><td><code>{_esc(', '.join(t.run_ids) or '-')}</code></td></tr>")
    return (f'<div class="table-wrap"><table class="results"><thead><tr><th>trial</th><th>state</th>{head}'
            f"<th>chosen</th><th>epochs</th><th>run</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def _num(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}" if abs(v) < 1 else f"{v:.4f}".rstrip("0").rstrip(".")


# --------------------------------------------------------------------------- figures


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")  # no pyplot: no global state
    fig.set_facecolor("white")
    return fig


def _svg(fig: Figure, chart_id: str) -> str:
    """The figure as inline <svg>, its ids scoped to the chart so several can share a page."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": chart_id, "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    ids = set(re.findall(r'\bid="([^"]+)"', svg))

    def scope(m: re.Match[str]) -> str:
        return f"{m[1]}{chart_id}-{m[2]}" if m[2] in ids else m[0]

    return re.sub(r'(\bid="|href="#|url\(#)([^")]+)', scope, svg)


_CSS = """
body{margin:0;background:#f4f6f8;color:#1d2733;font:14px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif}
main{max-width:1240px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:24px;margin:0 0 10px}h2{font-size:18px;margin:0 0 12px}
header,section{background:#fff;border:1px solid #dde3ea;border-radius:10px;padding:18px 22px;margin-bottom:18px}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:3px 18px;margin:0}
dl.meta dt{color:#5b6776}dl.meta dd{margin:0}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;background:#eef1f5;padding:1px 5px;border-radius:4px}
table.results{border-collapse:collapse;width:100%;font-size:13px}
.results th,.results td{padding:6px 8px;border-bottom:1px solid #e3e8ee;text-align:right;white-space:nowrap}
.results th{background:#f0f3f7;font-weight:600}
.results tr.best td{background:#fff5d6;font-weight:600}
.results td.muted{color:#5b6776;text-align:left;white-space:normal}
.table-wrap{overflow-x:auto}
figure{margin:0}figure.chart svg{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:#5b6776;font-size:12.5px;text-align:center;margin-top:4px}
.note{color:#5b6776;font-style:italic}
"""
