"""The HTML report of a comparison: one self-contained file, readable offline.

Charts are matplotlib figures embedded as inline SVG, the CSS is inline and there is no
script, font or image to fetch, so the file can be mailed, archived or opened on a machine
with no network. Sections (each with a stable id): overview, comparison (the table and the
recommendation), curves, efficiency (metric vs params / FLOPs), gap, confusion, architecture.

    >>> from archlab.compare import write_report
    >>> write_report(comparison, "report.html")          # doctest: +SKIP
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..core import ArchlabError, format_metric, thaw
from ..explain import Explanation
from ..model import Node, build
from ..spec import Spec, load_spec
from ._explain import EXPLAIN_CSS, explanation_section
from ._html import html_chart, html_page, html_section, new_figure, place_labels, svg_of
from ._results import OVERFIT_GAP, UNDERFIT_TOLERANCE, CandidateSummary, Comparison, pareto_front

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac")
DIAGNOSIS_COLORS = {"fine": "#59a14f", "over-fitting": "#e15759", "under-fitting": "#4e79a7"}
_esc = html.escape
_TRADEOFF_NOTE = "Error bars: ±1 std over folds. Dashed: Pareto front (no other candidate is cheaper and better)."


def write_report(comparison: Comparison, path: str | Path, explanation: Explanation | None = None) -> Path:
    """Write the comparison as one self-contained HTML file and return its path; with an
    `explanation` (archlab.explain) of the recommended model, its section goes last.

    >>> write_report(archlab.compare(["zoo:mlp", "zoo:cnn"], data="digits"), "r.html")  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_report(comparison, explanation)
    # Write then rename, so a report being regenerated is never seen half written. (Not
    # mkstemp: its file is private, 0600, and a report is meant to be shared.)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def render_report(c: Comparison, explanation: Explanation | None = None) -> str:
    """The report as an HTML string (what `write_report` writes)."""
    rec = next((x for x in c.candidates if x.label == c.recommended), None)
    title = f"archlab comparison: {c.data}"
    sections = [
        _overview(c, title),
        html_section("comparison", "Comparison", _table(c) + _recommendation(c)),
        html_section("curves", f"Learning curves ({_esc(c.metric)})", html_chart(
            "learning-curves", _learning_curves(c),
            "Validation mean over folds with a ±1 std band. Train (dashed) is the running "
            "average during each epoch, in training mode (dropout on), so it can sit below "
            "validation; the gap chart uses the train metric re-measured in eval mode. Folds "
            "that stopped early leave the mean after their last epoch.")),
        html_section("efficiency", f"Validation {_esc(c.metric)} against cost", '<div class="pair">'
                     + html_chart("metric-vs-params", _tradeoff(c, "params", "parameters"), _TRADEOFF_NOTE)
                     + html_chart("metric-vs-flops", _tradeoff(c, "flops", "forward FLOPs per sample"),
                                  _TRADEOFF_NOTE)
                     + "</div>"),
        html_section("gap", "Train–validation gap", html_chart("gap-bars", _gap_bars(c), gap_caption(c))),
        html_section("confusion", "Test confusion matrix" + (f" ({_esc(rec.label)})" if rec else ""),
                     _confusion_section(c)),
        html_section("architecture", "Architecture" + (f" of {_esc(rec.label)}" if rec else ""),
                     _architecture_section(rec)),
    ]
    if explanation is not None:
        sections.append(explanation_section(explanation))
    return html_page(title, "\n".join(sections), _CSS + (EXPLAIN_CSS if explanation is not None else ""))


def gap_caption(c: Comparison) -> str:
    """The gap chart's colour rule in words. Over-fitting is judged on a candidate's own gap;
    under-fitting against the other candidates, so two equal gaps can differ in colour."""
    better = "below" if c.mode == "max" else "above"
    best = max if c.mode == "max" else min
    best_val = best((x.val_mean for x in c.candidates), default=float("nan"))
    return (f"Train metric minus validation metric, mean over folds (error bars: std over folds). Colour: "
            f"the diagnosis. Over-fitting: the candidate's own gap is above {OVERFIT_GAP:g} (the dotted "
            f"line). Under-fitting is relative: its train {c.metric} is more than {UNDERFIT_TOLERANCE:g} "
            f"{better} the best validation mean of any candidate here ({format_metric(best_val)}), so it "
            f"cannot fit its training data as well as another candidate generalises; two equal gaps can "
            f"therefore be coloured differently.")


# ------------------------------------------------------------------------- HTML pieces


def _overview(c: Comparison, title: str) -> str:
    when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    better = "higher is better" if c.mode == "max" else "lower is better"
    rows = [("data set", _esc(c.data)),
            ("validation", _esc(c.design)),
            ("metric", f"{_esc(c.metric)} ({better})"),
            ("candidates", str(len(c.candidates))),
            ("command", f"<code>{_esc(c.command)}</code>" if c.command else "—"),
            ("generated", _esc(when))]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<header id="overview"><h1>{_esc(title)}</h1><dl class="meta">{dl}</dl></header>'


def _si(n: float) -> str:
    """1234567 -> '1.23M': the table compares magnitudes; exact values are in the tooltip."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.3g}{prefix}"
    return f"{n:.3g}"


def _table(c: Comparison) -> str:
    m = _esc(c.metric)
    head = ("candidate", "params", "FLOPs / sample (fwd)", "train s / fold", "latency b=1 (ms)",
            "latency b=256 (ms)", f"val {m} (mean ± std)", "train − val gap", "diagnosis")
    rows = []
    for x in c.candidates:
        is_rec = x.label == c.recommended
        badge = ' <span class="star" title="recommended">★ recommended</span>' if is_rec else ""
        diag = (f'<span class="diag" style="background:{DIAGNOSIS_COLORS.get(x.diagnosis, "#999")}">'
                f"{_esc(x.diagnosis)}</span>")
        cells = (f"<td>{_esc(x.label)}{badge}</td>",
                 f'<td title="{x.params:,}">{_si(x.params)}</td>',
                 f'<td title="{x.flops:,} FLOPs (= {x.flops // 2:,} MACs)">{_si(x.flops)}</td>',
                 f"<td>{x.train_seconds:.1f}</td>", f"<td>{x.latency_ms_b1:.3g}</td>",
                 f"<td>{x.latency_ms_b256:.3g}</td>",
                 f"<td>{format_metric(x.val_mean)} ± {format_metric(x.val_std)}</td>",
                 f"<td>{format_metric(x.gap_mean, sign=True)}</td>",
                 f"<td>{diag}</td>")
        tr = '<tr class="recommended">' if is_rec else "<tr>"
        rows.append(f'{tr}{"".join(cells)}</tr>')
    ths = "".join(f"<th>{h}</th>" for h in head)
    return (f'<div class="table-wrap"><table class="results"><thead><tr>{ths}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _recommendation(c: Comparison) -> str:
    text = f"Recommended: <strong>{_esc(c.recommended)}</strong>"
    if c.rule:
        text += f" — {_esc(c.rule)}"
    text += "."
    if c.test_metrics:
        metrics = ", ".join(f"{_esc(k)} {format_metric(v)}" for k, v in c.test_metrics.items())
        run = f" (run <code>{_esc(c.final_run_id)}</code>)" if c.final_run_id else ""
        text += f" {_esc(c.test_note[:1].upper() + c.test_note[1:])}: {metrics}{run}."
    hints = "".join(f'<p class="hint">Hint: {_esc(h)}.</p>' for h in c.hints)
    return f'<p class="recommendation" id="recommendation">{text}</p>{hints}'


def _confusion_section(c: Comparison) -> str:
    confusion = c.test_report.get("confusion") if c.test_report else None
    if not confusion:
        return '<p class="note">No confusion matrix: the final model has no test report for a classification task.</p>'
    return html_chart("confusion-matrix", _confusion(confusion, c.class_names),
                  "Rows: true class, columns: predicted class. Colour: share of the true class.")


def _architecture_section(rec: CandidateSummary | None) -> str:
    if rec is None:
        return '<p class="note">The recommended candidate is not among the candidates.</p>'
    try:
        diagram = architecture_html(rec.spec)
    except ArchlabError as e:  # a report is still worth writing without its diagram
        return f'<p class="note">Cannot draw the architecture: {_esc(str(e))}</p>'
    yaml_text = load_spec(rec.spec).to_yaml()
    return (f'<figure class="diagram" id="architecture-diagram">{diagram}</figure>'
            f"<details><summary>spec (YAML)</summary><pre>{_esc(yaml_text)}</pre></details>")


# ------------------------------------------------------------------------------ charts


def _colors(c: Comparison) -> dict[str, str]:
    return {x.label: PALETTE[i % len(PALETTE)] for i, x in enumerate(c.candidates)}


def _epoch_stats(x: CandidateSummary, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epochs, mean and std over folds; early-stopped folds simply stop contributing."""
    per_epoch: dict[int, list[float]] = {}
    for fold in x.folds:
        for i, record in enumerate(fold.history):
            value = record.get(key)
            if value is not None and math.isfinite(value):
                per_epoch.setdefault(int(record.get("epoch", i + 1)), []).append(float(value))
    epochs = sorted(per_epoch)
    return (np.array(epochs), np.array([np.mean(per_epoch[e]) for e in epochs]),
            np.array([np.std(per_epoch[e]) for e in epochs]))


def panel_grid(n: int) -> tuple[int, int]:
    """(rows, columns) for n panels: up to three in a row, and never one panel alone in a last
    row under full ones (4 -> 2 x 2, 7 -> 4 + 3, 10 -> 4 + 4 + 2); as square as that allows.

    >>> [panel_grid(n) for n in (1, 3, 4, 5, 7, 10)]
    [(1, 1), (1, 3), (2, 2), (2, 3), (2, 4), (3, 4)]
    """
    if n <= 3:
        return 1, max(n, 1)

    def score(cols: int) -> tuple[bool, int, int, int]:
        rows = math.ceil(n / cols)
        return n % cols == 1, abs(rows - cols), rows * cols - n, -cols

    cols = min(range(2, 7), key=score)
    return math.ceil(n / cols), cols


def _learning_curves(c: Comparison) -> str:
    rows, cols = panel_grid(len(c.candidates))
    fig = new_figure(4.3 * cols, 3.1 * rows)
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False).ravel()
    colors = _colors(c)
    for ax, x in zip(axes, c.candidates, strict=False):
        color = colors[x.label]
        epochs, val, val_sd = _epoch_stats(x, f"val_{c.metric}")
        t_epochs, train, _ = _epoch_stats(x, f"train_{c.metric}")
        if len(epochs):
            # A one-epoch run is a single point: a line needs a marker to be seen at all.
            ax.plot(epochs, val, color=color, lw=2, label="validation (mean ± 1 std)",
                    marker="o" if len(epochs) == 1 else None)
            ax.fill_between(epochs, val - val_sd, val + val_sd, color=color, alpha=0.2, lw=0)
        if len(t_epochs):
            ax.plot(t_epochs, train, color=color, lw=1.5, ls="--", label="train (mean)",
                    marker="x" if len(t_epochs) == 1 else None)
        if not len(epochs) and not len(t_epochs):
            ax.text(0.5, 0.5, "no history", ha="center", va="center", transform=ax.transAxes)
        star = " ★" if x.label == c.recommended else ""
        ax.set_title(f"{x.label}{star}  ({len(x.folds)} folds)", fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].set_ylabel(c.metric)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8, loc="best")
    for ax in axes[len(c.candidates):]:
        ax.set_visible(False)
    return svg_of(fig, "learning-curves")


def _tradeoff(c: Comparison, attr: str, xlabel: str) -> str:
    return svg_of(_tradeoff_figure(c, attr, xlabel), f"metric-vs-{attr}")


def _tradeoff_figure(c: Comparison, attr: str, xlabel: str) -> Figure:
    fig = new_figure(6.0, 4.2)
    ax = fig.add_subplot()
    colors = _colors(c)
    # A log axis cannot show 0 (a parameter-free model); clamp to 1.
    xs = [max(float(getattr(x, attr)), 1.0) for x in c.candidates]
    ys = [x.val_mean for x in c.candidates]
    front = pareto_front(list(zip(xs, ys, strict=True)), c.mode)
    if front:
        # A staircase: each front point is the best metric available up to the next one's cost.
        ax.step([xs[i] for i in front], [ys[i] for i in front], where="post", color="#555",
                ls="--", lw=1.2, label="Pareto front", zorder=1)
    for x, px, py in zip(c.candidates, xs, ys, strict=True):
        is_rec = x.label == c.recommended
        ax.errorbar(px, py, yerr=x.val_std, fmt="*" if is_rec else "o", ms=15 if is_rec else 8,
                    color=colors[x.label], mec="black" if is_rec else colors[x.label], capsize=3,
                    zorder=3)
    ax.set_xscale("log")
    # Ticks at 1-2-5 steps (fewer over a wide range) with SI labels (50k, 2M): matplotlib's default labels every minor
    # tick when the candidates span less than a decade, and they collide.
    decades = math.log10(max(xs) / min(xs)) if xs else 0.0
    subs = (1.0, 2.0, 5.0) if decades < 1.5 else (1.0, 3.0) if decades < 3 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _si(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.2, y=0.15)
    ax.set_xlabel(f"{xlabel} (log scale)")
    ax.set_ylabel(f"validation {c.metric}")
    ax.grid(alpha=0.3, which="both")
    if any(x.label == c.recommended for x in c.candidates):
        ax.plot([], [], "*", ms=11, color="white", mec="black", label="recommended")
    ax.legend(fontsize=8, loc="lower right" if c.mode == "max" else "upper right")
    # Labels last, against the final frame: the recommended one first, so it keeps its place.
    order = sorted(range(len(xs)), key=lambda i: c.candidates[i].label != c.recommended)
    bars = [((px, py - x.val_std), (px, py + x.val_std)) for x, px, py in zip(c.candidates, xs, ys, strict=True)
            if x.val_std > 0]
    place_labels(ax, [(xs[i], ys[i]) for i in order], [c.candidates[i].label for i in order], fontsize=9,
                 marker_pt=12, segments=bars)
    return fig


def _gap_bars(c: Comparison) -> str:
    n = len(c.candidates)
    fig = new_figure(7.0, 1.2 + 0.45 * max(n, 1))
    ax = fig.add_subplot()
    labels = [x.label for x in c.candidates]
    gaps = [x.gap_mean for x in c.candidates]
    spread = [float(np.std([f.train_metric - f.val_metric for f in x.folds])) if x.folds else 0.0
              for x in c.candidates]
    colors = [DIAGNOSIS_COLORS.get(x.diagnosis, "#999999") for x in c.candidates]
    ys = np.arange(n)
    ax.barh(ys, gaps, xerr=spread, color=colors, capsize=3, height=0.6)
    for y, g, s in zip(ys, gaps, spread, strict=True):
        ax.annotate(format_metric(g, sign=True), (g + math.copysign(s, g or 1), y), xytext=(5 if g >= 0 else -5, 0),
                    textcoords="offset points", va="center", ha="left" if g >= 0 else "right", fontsize=9)
    ax.set_yticks(ys, labels)
    ax.invert_yaxis()  # first candidate on top, as in the table
    ax.axvline(0, color="#333", lw=0.8)
    # Over-fitting is a candidate's own gap beyond this line (under-fitting is relative: see the caption).
    ax.axvline(OVERFIT_GAP if c.mode == "max" else -OVERFIT_GAP, color=DIAGNOSIS_COLORS["over-fitting"],
               lw=1, ls=":", label=f"over-fitting beyond {OVERFIT_GAP:g}")
    ax.margins(x=0.25)
    ax.set_xlabel(f"train {c.metric} − validation {c.metric}")
    ax.grid(alpha=0.3, axis="x")
    seen = dict.fromkeys(x.diagnosis for x in c.candidates)
    line = ax.get_legend_handles_labels()[0]
    ax.legend(handles=[Patch(color=DIAGNOSIS_COLORS.get(d, "#999999"), label=d) for d in seen] + line,
              fontsize=8, loc="best")
    return svg_of(fig, "gap-bars")


def _confusion(confusion: Sequence[Sequence[float]], class_names: Sequence[str] | None) -> str:
    counts = np.asarray(confusion, dtype=float)
    k = counts.shape[0]
    names = list(class_names) if class_names and len(class_names) == k else [str(i) for i in range(k)]
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = min(max(3.5, 0.45 * k + 1.5), 10.0)
    fig = new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if k <= 25:  # beyond that the numbers would not fit in their cells
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.55 else "#222")
    rotate = 45 if max(map(len, names)) > 3 else 0
    ax.set_xticks(range(k), names, rotation=rotate, ha="right" if rotate else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    return svg_of(fig, "confusion-matrix")


# ------------------------------------------------------------------ architecture diagram


def architecture_html(spec: Spec | Mapping[str, Any] | str) -> str:
    """The model of `spec` as nested HTML boxes: serial stacks, parallel branches side by
    side with their merge, residual groups with their skip, repeats; each leaf with its
    kind, arguments and output shape. Drawn from the node tree the builder records (built
    on the meta device, so no weights); networks of two sections (seq2seq, VAE, GAN) show
    them side by side.

    >>> "conv2d" in architecture_html("zoo:cnn")
    True
    """
    net = build(spec, device="meta")
    io_box = '<div class="arch-io">{} <span class="shape">{}</span></div>'
    boxes = []
    for section in net.sections:
        title = f'<div class="arch-title">{_esc(section.name)}</div>' if len(net.sections) > 1 else ""
        if net.input_names:  # several named inputs: a box for each
            inputs = "".join(io_box.format(_esc(n), t.describe()) for n, t in net.input_types.items())
        else:
            inputs = io_box.format(_esc(section.input_label), section.input.describe())
        boxes.append(f'<div class="arch">{title}{inputs}'
                     f'{_node_html(section.tree)}'
                     f'{io_box.format(_esc(section.output_label), section.output.describe())}</div>')
    return boxes[0] if len(boxes) == 1 else f'<div class="arch-pair">{"".join(boxes)}</div>'


_KIND_CLASSES = (("conv", "conv"), ("linear", "dense"), ("mlp", "dense"), ("swiglu", "dense"),
                 ("norm", "norm"), ("pool", "pool"), ("attention", "attn"), ("block", "attn"),
                 ("rnn", "rnn"), ("lstm", "rnn"), ("gru", "rnn"), ("embed", "embed"),
                 ("dropout", "drop"))


def _leaf_class(kind: str) -> str:
    return next((cls for key, cls in _KIND_CLASSES if key in kind), "other")


def _args_text(args: Any) -> str:
    if isinstance(args, Mapping):
        parts = [f"{k}={_value(v)}" for k, v in args.items() if k != "ctx"]
        return " ".join(parts)
    return "" if args is None else _value(args)


def _value(v: Any) -> str:
    v = thaw(v)
    if isinstance(v, bool):
        return str(v).lower()
    return f"{v:g}" if isinstance(v, float) else str(v)


def _group(cls: str, label: str, inner: str) -> str:
    return f'<div class="arch-group arch-{cls}"><div class="arch-label">{label}</div>{inner}</div>'


def _node_html(node: Node) -> str:
    """One node of the builder's tree as HTML, with what it reads (from:) above it and the name it
    gives its output (name:) below."""
    if node.kind == "route":  # a node of only from: (and merge:) or name:
        what = f" · {_esc(node.name)}" if node.name else ""
        reads = " + ".join(map(_esc, node.reads)) or "previous"
        body = (f'<div class="arch-merge">from {reads}{what} '
                f'<span class="shape">→ {node.output.describe()}</span></div>')
    else:
        body = _node_body(node)
        if node.reads:
            body = f'<div class="arch-label">from {" + ".join(map(_esc, node.reads))}</div>{body}'
    if node.keeps:
        body += f'<div class="arch-label">as {_esc(node.keeps)}</div>'
    return body


def _node_body(node: Node) -> str:
    if node.kind == "serial":
        return f'<div class="arch-serial">{"".join(_node_html(c) for c in node.children)}</div>'
    if node.kind == "leaf":
        memory = f' <span class="args">attends to {_esc(node.memory)}</span>' if node.memory else ""
        return (f'<div class="arch-leaf k-{_leaf_class(node.name)}" title="{_esc(node.path)}">'
                f'<b>{_esc(node.name)}</b> <span class="args">{_esc(_args_text(node.args))}</span>{memory}'
                f'<div class="shape">→ {node.output.describe()}</div></div>')
    if node.kind == "block":  # a block reference: its body, under the block's name
        label = _esc(node.name) + (f" ({_esc(_args_text(node.args))})" if node.args else "")
        return _group("block", f"block {label}", "".join(_node_html(c) for c in node.children))
    if node.kind == "parallel":
        parts = [f'<div class="arch-branch"><div class="arch-label">branch {i + 1}</div>{_node_html(c)}</div>'
                 for i, c in enumerate(node.children)]
        merge_box = (f'<div class="arch-merge">{_esc(node.name)} '
                     f'<span class="shape">→ {node.output.describe()}</span></div>')
        inner = f'<div class="arch-branches">{"".join(parts)}</div>{merge_box}'
        return _group("parallel", f"parallel · {len(parts)} branches", inner)
    if node.kind == "residual":
        inner = "".join(_node_html(c) for c in node.children)
        if node.projection is None:
            skip, add = '<span class="arch-skip-label">skip: x</span>', "+ x"
        elif isinstance(node.projection, str):  # an auto projection the builder made
            skip = (f'<div class="arch-leaf k-conv">projection: {_esc(node.projection)}'
                    f'<div class="shape">→ {node.output.describe()}</div></div>')
            add = "+ projection(x)"
        else:
            skip = f'<div class="arch-label">projection</div>{_node_html(node.projection)}'
            add = "+ projection(x)"
        row = (f'<div class="arch-res-row"><div class="arch-res-body">{inner}</div>'
               f'<div class="arch-skip">{skip}</div></div>')
        add_box = f'<div class="arch-merge">⊕ add {add} <span class="shape">→ {node.output.describe()}</span></div>'
        return _group("residual", "residual", row + add_box)
    if node.kind == "repeat":
        return _repeat_html(node)
    raise ValueError(f"unknown node kind {node.kind!r}")


def _repeat_html(node: Node) -> str:
    var, times = node.name, len(node.children)
    runs: list[list[Any]] = []  # [html, first copy, count]: identical neighbours collapse
    for i, copy in enumerate(node.children):
        part = _node_html(copy)
        if runs and _untitled(runs[-1][0]) == _untitled(part):
            runs[-1][2] += 1
        else:
            runs.append([part, i, 1])
    copies = []
    for part, first, count in runs:
        if times == 1:  # a "copy 0" frame inside "repeat × 1" would only add nesting
            copies.append(part)
            break
        label = (f"{var} = {first}" if count == 1 else
                 f"{var} = {first}…{first + count - 1}: identical, × {count}")
        copies.append(_group("copy", label, part))
    label = f"repeat × {times}" + (f" ({_esc(var)} = 0…{times - 1})" if times > 1 else "")
    inner = f'<div class="arch-serial">{"".join(copies)}</div>' if copies else "(no copies)"
    return _group("repeat", label, inner)


def _untitled(part: str) -> str:
    """A copy's HTML without its tooltips (which hold the copy's own path)."""
    return re.sub(r' title="[^"]*"', "", part)


_CSS = """
.results tr.recommended td{background:#fff5d6;font-weight:600}
.results tr.recommended td:first-child{box-shadow:inset 4px 0 #e0a800}
.star{color:#a87b00;font-size:11px;margin-left:6px}
.diag{color:#fff;border-radius:10px;padding:1px 8px;font-size:12px;font-weight:500}
.recommendation{margin:14px 0 0;padding:10px 14px;background:#fff9e6;border-left:4px solid #e0a800;border-radius:4px}
#confusion-matrix svg{max-width:560px}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:16px}
details{margin-top:12px}summary{cursor:pointer;color:#3a6ea5}
#architecture-diagram{overflow-x:auto;padding:6px 0}
.arch{display:flex;flex-direction:column;align-items:center;font-size:12px;line-height:1.3;min-width:max-content}
.arch-pair{display:flex;gap:48px;justify-content:center;align-items:flex-start}
.arch-title{font-weight:600;font-size:13px;margin-bottom:6px}.arch>.arch-title+*::before{display:none}
.arch-serial{display:flex;flex-direction:column;align-items:center}
.arch>*+*,.arch-serial>*+*{margin-top:14px;position:relative}
.arch>*+*::before,.arch-serial>*+*::before{content:"";position:absolute;left:50%;top:-15px;height:14px;border-left:2px solid #9aa5b1}
.arch-leaf,.arch-io,.arch-merge{background:#fff;border:1px solid #c4ccd6;border-left-width:5px;border-radius:6px;padding:3px 10px;text-align:center;min-width:140px;max-width:320px}
.arch-io{background:#1d2733;color:#fff;border-color:#1d2733}.arch-io .shape{color:#cfd8e3}
.arch-merge{background:#f0f3f7;border-left-width:1px;font-weight:600}
.arch-leaf .args{color:#5b6776;overflow-wrap:anywhere}.shape{font-family:ui-monospace,Menlo,monospace;color:#2b5c8a}
.k-conv{border-left-color:#4e79a7}.k-dense{border-left-color:#f28e2b}.k-norm{border-left-color:#59a14f}
.k-pool{border-left-color:#76b7b2}.k-attn{border-left-color:#b07aa1}.k-rnn{border-left-color:#edc948}
.k-embed{border-left-color:#9c755f}.k-drop{border-left-color:#bab0ac}.k-other{border-left-color:#e15759}
.arch-group{display:flex;flex-direction:column;align-items:center;border:1px solid #c4ccd6;border-radius:8px;padding:22px 12px 10px;background:rgba(29,39,51,.02)}
.arch-group>.arch-label,.arch-branch>.arch-label,.arch-skip>.arch-label{position:absolute;top:3px;left:8px;font-size:11px;color:#5b6776;white-space:nowrap}
.arch-group,.arch-branch,.arch-skip{position:relative}
.arch-residual{border:2px solid #59a14f;background:#f5faf4}.arch-repeat{border:1.5px dashed #7b8794}.arch-parallel{border:2px solid #b07aa1;background:#fbf7fa}
.arch-block{border-style:dotted}.arch-copy{border-color:#dde3ea}
.arch-branches{display:flex;gap:12px;align-items:flex-start}
.arch-branch{border-top:2px solid #b07aa1;padding:20px 4px 0;display:flex;flex-direction:column;align-items:center}
.arch-res-row{display:flex;align-items:stretch;gap:14px}
.arch-branches+.arch-merge,.arch-res-row+.arch-merge{margin-top:10px}
.arch-skip{display:flex;align-items:center;border-left:2px dashed #59a14f;padding:20px 0 0 8px;color:#3d7a35;font-weight:600}
.arch-skip-label{writing-mode:vertical-rl}
"""
