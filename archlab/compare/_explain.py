"""The explanations section of a report (archlab.explain's results), and a page of its own.

One <section id="explanations">: the checks table first (numbers, each against its target),
then the per-class examples, the deletion curves and the attention maps. Like every archlab
page it is offline: pictures are matplotlib figures as inline SVG, the pixels of a heat map
an embedded PNG data URI; no script, font, image file or URL is fetched.

    >>> write_explanation(archlab.explain.explain(run_id), "explain.html")   # doctest: +SKIP
"""

from __future__ import annotations

import html
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..explain import (
    COMPLETENESS_TARGET,
    DELETION_TARGET,
    METHOD_TITLES,
    RANDOMISATION_TARGET,
    Explanation,
)
from ._html import html_chart, html_page, new_figure, svg_of

_esc = html.escape
_COLORS = {"saliency": "#4e79a7", "ig": "#e15759", "gradcam": "#59a14f", "random": "#7b8794"}
MAX_LAYERS, MAX_HEADS, MAX_FEATURES = 8, 8, 20


def write_explanation(expl: Explanation, path: str | Path) -> Path:
    """The explanation as one self-contained HTML page; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    title = f"archlab explanations: {expl.name} (run {expl.run_id})"
    head = (f'<header id="overview"><h1>{_esc(title)}</h1><dl class="meta"><dt>data set</dt><dd>{_esc(expl.data)}'
            f"</dd><dt>generated</dt><dd>{_esc(when)}</dd></dl></header>")
    text = html_page(title, head + "\n" + explanation_section(expl), EXPLAIN_CSS)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def explanation_section(expl: Explanation) -> str:
    """The <section id="explanations"> (its CSS is EXPLAIN_CSS)."""
    parts = [_meta(expl), _checks_table(expl), _checks_note(expl)]
    if expl.methods:
        parts.append("<h3>Per-class examples</h3>")
        if expl.kind == "table":
            parts.append(html_chart("explain-features", _features_figure(expl),
                                    "Mean |attribution| per input over the explained samples, largest first "
                                    f"(at most {MAX_FEATURES}); names from the table's header "
                                    "(a categorical column's inputs are column=value)."))
            parts.append(_class_table(expl))
        else:
            parts.append(html_chart("explain-examples", _examples_figure(expl),
                                    "One test sample per class, explained for the class the model predicts. "
                                    "Integrated gradients: red adds to the class score, blue takes from it; the "
                                    "last column is the same method on the weight-randomised copy."))
        if expl.random_auc is not None:
            parts.append("<h3>Deletion curves</h3>")
            parts.append(html_chart("explain-deletion", _deletion_figure(expl),
                                    "The target's probability as features are set to the baseline, most "
                                    "attributed first (mean over samples), against random orders; right: "
                                    "each sample's area under its integrated-gradients curve against random "
                                    "(below the diagonal: the attribution found what matters)."))
    if expl.attention:
        parts.append("<h3>Attention maps</h3>")
        parts.append(f'<p class="note">Read through the math path (softmax(q kᵀ/√d) v written out); the '
                     f"output of every layer through it differs from its fused kernel's on the same input "
                     f"by at most {expl.attention_error:.1e} of the output's largest value (float32 rounding; "
                     f"the table gives the absolute differences). Maps of the first sample; entropy in nats, mean over "
                     f"samples and queries (uniform: the entropy of equal weights).</p>")
        parts.append(html_chart("explain-attention", _attention_figure(expl),
                                "Rows: layers, columns: heads; row t of a map is how query t spreads over "
                                "the keys."))
        parts.append(_entropy_table(expl))
    return (f'<section id="explanations"><h2>Explanations of {_esc(expl.name)} '
            f'<span class="note">(run {_esc(expl.run_id)})</span></h2>' + "".join(parts) + "</section>")


# ------------------------------------------------------------------------ tables


def _meta(expl: Explanation) -> str:
    n = len(expl.indices)
    s = expl.settings
    rows = [("samples", f"{n} from the test split" + (", one class after another" if expl.task == "classify" else "")),
            ("methods", ", ".join(METHOD_TITLES.get(m, m) for m in expl.method_names) + " (on Captum)"),
            ("target", "each sample's predicted class" if expl.task == "classify" else "the model's output"),
            ("baseline", _esc(expl.baseline)),
            ("randomised copy", f"the same spec with freshly initialised weights (seed {s.get('randomised_seed')})"),
            ("time", f"{expl.seconds:.1f} s")]
    if "ig" in expl.method_names:
        rows.insert(4, ("integrated gradients", f"rule {_esc(str(s.get('ig_rule')))}; steps doubled per sample "
                        f"until the completeness error is at most {s.get('ig_tolerance'):g} "
                        f"(at most {s.get('ig_max_steps')})"))
    return '<dl class="meta">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _mark(ok: bool | None) -> str:
    if ok is None:
        return ""
    return ' <span class="pass">✓</span>' if ok else ' <span class="fail">✗</span>'


def _num(v: float | None, fmt: str = ".3f") -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _checks_table(expl: Explanation) -> str:
    if not expl.methods:
        return ""
    summary = expl.summary()
    head = ("method", f"completeness error max (mean) ≤ {COMPLETENESS_TARGET:g}", "IG steps max (mean)",
            f"ρ trained vs randomised, mean (max) ≤ {RANDOMISATION_TARGET:g}", "ρ of |attribution|",
            "deletion AUC (random)", f"beats random ≥ {DELETION_TARGET:.0%}")
    rows = []
    for m in expl.methods:
        d: dict[str, Any] = summary[m.name]
        comp = steps = "—"
        if m.completeness is not None:
            comp = f"{d['completeness_max']:.1e} ({d['completeness_mean']:.1e})" + _mark(d["completeness_pass"])
            steps = f"{d['steps_max']} ({d['steps_mean']:.0f})"
        rho = "—" if d["rank_corr_mean"] is None else (
            f"{d['rank_corr_mean']:.3f} ({d['rank_corr_max']:.3f})" + _mark(d["randomisation_pass"]))
        if d["rank_corr_undefined"]:
            rho += f' <span class="note">{d["rank_corr_undefined"]} constant</span>'
        dele = wins = "—"
        if "deletion_auc_mean" in d:
            dele = f"{d['deletion_auc_mean']:.3f} ({d['random_auc_mean']:.3f})"
            wins = f"{d['deletion_wins']:.0%}" + (_mark(d["deletion_pass"]) if m.name == "ig" else "")
        cells = (METHOD_TITLES.get(m.name, m.name), comp, steps, rho, _num(d["rank_corr_abs_mean"]), dele, wins)
        rows.append(f'<tr id="check-{m.name}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ('<h3>Checks</h3><div class="table-wrap"><table class="results" id="explain-checks"><tr>'
            + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table></div>")


def _checks_note(expl: Explanation) -> str:
    if not expl.methods:
        return ""
    return ('<p class="note">Completeness: integrated gradients add up to f(x) − f(baseline) (Sundararajan et '
            'al. 2017). Model randomisation (Adebayo et al. 2018): Spearman rank correlation per sample between '
            'the attributions of the trained model and of a weight-randomised copy; low means the explanation '
            'depends on what the model learned. Integrated gradients with a zero baseline multiply by the input, '
            'so the ranks of their absolute values follow the input itself (zero pixels stay zero) whatever the '
            'weights: that column is shown, not judged. Deletion: the area under the target probability as '
            'features go, most attributed first; smaller than random means the ranking found what the model '
            f'uses. ✓/✗: against the targets (completeness error ≤ {COMPLETENESS_TARGET:g} for every sample, mean ρ '
            f'≤ {RANDOMISATION_TARGET:g}, integrated gradients beat random deletion for ≥ {DELETION_TARGET:.0%} of '
            'the samples).</p>')


def _class_table(expl: Explanation) -> str:
    """Tables: per class, the inputs with the largest mean signed attribution (IG if present)."""
    m = next((r for r in expl.methods if r.name == "ig"), expl.methods[0])
    names = expl.feature_names or tuple(f"x{i}" for i in range(m.attributions.shape[1]))
    rows = []
    for k in sorted(set(expl.preds.tolist())):
        chosen = expl.preds == k
        mean = m.attributions[chosen].mean(0)
        top = np.argsort(-mean)[:3]
        rows.append(f"<tr><td>{_esc(expl.class_name(k))}</td><td>{int(chosen.sum())}</td><td>"
                    + ", ".join(f"{_esc(names[j])} ({mean[j]:+.3f})" for j in top) + "</td></tr>")
    return (f'<div class="table-wrap"><table class="results" id="explain-classes"><tr><th>predicted class</th>'
            f"<th>samples</th><th>inputs that raise it most ({_esc(METHOD_TITLES[m.name])}, mean)</th></tr>"
            + "".join(rows) + "</table></div>")


def _entropy_table(expl: Explanation) -> str:
    heads = max(a.heads for a in expl.attention)
    head = "".join(f"<th>head {h}</th>" for h in range(heads))
    rows = []
    for a in expl.attention:
        cells = "".join(f"<td>{a.entropy[h]:.3f}</td>" if h < a.heads else "<td></td>" for h in range(heads))
        rows.append(f"<tr><td><code>{_esc(a.layer)}</code></td>{cells}<td>{a.uniform:.3f}</td>"
                    f"<td>{a.difference:.1e}</td></tr>")
    return (f'<div class="table-wrap"><table class="results" id="explain-entropy"><tr><th>layer</th>{head}'
            f"<th>uniform</th><th>max |math − fused|</th></tr>" + "".join(rows) + "</table></div>")


# ------------------------------------------------------------------------ figures


def _image(x: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A sample (C, H, W) or (C, L) as something imshow draws: grey for one channel, RGB for
    three, the channel mean otherwise."""
    if x.ndim == 3 and x.shape[0] == 3:
        rgb = np.moveaxis(x, 0, -1)
        lo, hi = rgb.min(), rgb.max()
        return (rgb - lo) / (hi - lo if hi > lo else 1), None
    img = x.mean(0) if x.ndim == 3 else x
    return (img if img.ndim == 2 else img[None, :]), "gray_r"


def _examples_figure(expl: Explanation) -> str:
    rows = expl.per_class_examples()[:10]
    cols = [("input", None)] + [(m.name, m) for m in expl.methods]
    ig = next((m for m in expl.methods if m.name == "ig"), None)
    if ig is not None:
        cols.append(("ig-random", ig))
    fig = new_figure(1.35 * len(cols) + 0.4, 1.35 * len(rows) + 0.5)
    grid = fig.subplots(len(rows), len(cols), squeeze=False)
    for r, i in enumerate(rows):
        for c, (what, m) in enumerate(cols):
            ax = grid[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if m is None:
                img, cmap = _image(expl.inputs[i])
                ax.imshow(img, cmap=cmap, interpolation="nearest")
                ax.set_ylabel(f"{expl.class_name(int(expl.labels[i]))} → {expl.class_name(int(expl.preds[i]))}",
                              fontsize=8)
            else:
                a = (m.randomised if what == "ig-random" else m.attributions)[i]
                a = a.sum(0) if a.ndim == 3 else a
                a = a if a.ndim == 2 else a[None, :]
                if m.name == "ig":
                    lim = float(np.abs(a).max()) or 1.0
                    ax.imshow(a, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
                else:
                    ax.imshow(a, cmap="magma", interpolation="nearest")
            if r == 0:
                title = "input" if m is None else ("IG, randomised" if what == "ig-random"
                                                   else METHOD_TITLES[m.name].split(" |")[0])
                ax.set_title(title, fontsize=8)
    return svg_of(fig, "explain-examples")


def _features_figure(expl: Explanation) -> str:
    names = expl.feature_names or tuple(f"x{i}" for i in range(expl.input_shape[0]))
    first = expl.methods[0]
    order = np.argsort(-np.abs(first.attributions).mean(0))[:MAX_FEATURES]
    fig = new_figure(7.5, 0.28 * len(order) + 1.4)
    ax = fig.add_subplot()
    width = 0.8 / len(expl.methods)
    for j, m in enumerate(expl.methods):
        imp = np.abs(m.attributions).mean(0)[order]
        imp = imp / (imp.max() or 1.0)
        ax.barh(np.arange(len(order)) + j * width, imp, height=width, color=_COLORS.get(m.name, "#999"),
                label=METHOD_TITLES[m.name])
    ax.set_yticks(np.arange(len(order)) + 0.4 - width / 2, [names[k] for k in order], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mean |attribution| (each method scaled to its largest)")
    ax.legend(fontsize=8, loc="lower right")
    return svg_of(fig, "explain-features")


def _deletion_figure(expl: Explanation) -> str:
    fig = new_figure(9.5, 3.6)
    left, right = fig.subplots(1, 2)
    f = expl.fractions
    for m in expl.methods:
        left.plot(f, m.deletion.mean(0), color=_COLORS.get(m.name, "#999"),
                  label=f"{METHOD_TITLES[m.name]} (AUC {m.deletion_auc.mean():.3f})")
    left.plot(f, expl.random_deletion.mean(0), color=_COLORS["random"], linestyle="--",
              label=f"random order (AUC {expl.random_auc.mean():.3f})")
    left.set_xlabel("share of features deleted")
    left.set_ylabel("target probability" if expl.task == "classify" else "target output")
    left.legend(fontsize=7.5)
    ig = next((m for m in expl.methods if m.name == "ig"), expl.methods[0])
    right.scatter(expl.random_auc, ig.deletion_auc, s=14, color=_COLORS.get(ig.name, "#999"))
    hi = float(max(expl.random_auc.max(), ig.deletion_auc.max(), 1e-9)) * 1.05
    right.plot([0, hi], [0, hi], color="#9aa5b1", lw=0.8)
    right.set_xlim(0, hi)
    right.set_ylim(0, hi)
    right.set_xlabel("AUC, random order")
    right.set_ylabel(f"AUC, {METHOD_TITLES[ig.name]}")
    return svg_of(fig, "explain-deletion")


def _attention_figure(expl: Explanation) -> str:
    layers = expl.attention[:MAX_LAYERS]
    heads = min(max(a.heads for a in layers), MAX_HEADS)
    fig = new_figure(1.7 * heads + 1.6, 1.75 * len(layers) + 0.3)
    grid = fig.subplots(len(layers), heads, squeeze=False)
    for r, a in enumerate(layers):
        for h in range(heads):
            ax = grid[r][h]
            ax.set_xticks([])
            ax.set_yticks([])
            if h >= a.heads:
                ax.set_axis_off()
                continue
            w = a.weights[0, h]
            ax.imshow(w, cmap="viridis", vmin=0, vmax=max(float(w.max()), 1e-9), interpolation="nearest",
                      aspect="auto")
            ax.set_title(f"head {h}: H={a.entropy[h]:.2f}", fontsize=7.5)
            if r == len(layers) - 1:
                ax.set_xlabel("key", fontsize=7)
            if h == 0:
                ax.set_ylabel(f"{a.layer if len(a.layer) <= 34 else '…' + a.layer[-33:]}\nquery", fontsize=7)
    return svg_of(fig, "explain-attention")


EXPLAIN_CSS = """
#explanations h3{font-size:15px;margin:18px 0 8px}
#explanations .pass{color:#2f7d32;font-weight:700}#explanations .fail{color:#c62828;font-weight:700}
#explain-examples svg{max-width:760px}#explain-attention svg{max-width:1100px}
"""
