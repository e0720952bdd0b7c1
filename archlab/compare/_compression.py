"""The compression view: every compressed variant of one parent run (`archlab compress`), its
test accuracy against its measured CPU latency and its MACs, and a table of the measurements.

    write_compression_report(parent_run_id, "compression.html")
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..compress import read_compression
from ..runs import SQLiteRunStorage, open_store
from ._html import html_chart, html_page, html_section, new_figure, place_labels, svg_of

_esc = html.escape


def compression_variants(store: SQLiteRunStorage, parent_id: str) -> tuple[str, list[dict[str, Any]]]:
    """The parent's full id and the stored measurements of each of its compressed variants (oldest first)."""
    parent = store.get_run(parent_id)
    children = [r for r in store.list_runs(tags={"parent": parent.run_id})]
    out = []
    for r in reversed(children):
        found = read_compression(store, r.run_id)
        if found is not None:
            out.append({**found, "name": r.name, "compression": r.tags.get("compression", "")})
    return parent.run_id, out


def _si(v: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:g}{unit}"
    return f"{v:g}"


def _ms(m: dict[str, Any], batch: str) -> float | None:
    t = (m.get("latency") or {}).get(batch)
    return None if t is None else 1e3 * t["median"]


def _points(parent_id: str, variants: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    # The parent as measured alongside its newest variant (the same machine and moment).
    return [(f"parent {parent_id}", variants[-1]["before"])] + [(f"{v['run']} {v['compression']}", v["after"])
                                                                for v in variants]


def _chart(points: list[tuple[str, dict[str, Any]]], xkey: str, xlabel: str, cid: str) -> str:
    fig = new_figure(5.6, 3.9)
    ax = fig.add_subplot()
    xs, ys, labels = [], [], []
    for i, (label, m) in enumerate(points):
        x = m["macs"] if xkey == "macs" else _ms(m, xkey)
        if x is None or m.get("accuracy") is None:
            continue
        ax.plot([x], [100 * m["accuracy"]], "s" if i == 0 else "o", ms=9, color="#555" if i == 0 else "#4e79a7")
        xs.append(x)
        ys.append(100 * m["accuracy"])
        labels.append(label.split()[0] if i else "parent")
    ax.set_xscale("log")
    # Plain labels at the decades and 2, 5 between (matplotlib's minor labels collide on a narrow range).
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _si(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"{xlabel} (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.margins(x=0.25, y=0.2)
    place_labels(ax, list(zip(xs, ys, strict=True)), labels, fontsize=8)
    return html_chart(cid, svg_of(fig, cid), f"test accuracy against {xlabel}")


def compression_section(store: SQLiteRunStorage, parent_id: str) -> str:
    """An HTML section: accuracy against latency and MACs for the variants of one parent."""
    full_id, variants = compression_variants(store, parent_id)
    if not variants:
        return html_section("compression", f"Compressed variants of {full_id}",
                            '<p class="note">none yet: `archlab compress RUN_ID --prune 0.5` makes one</p>')
    points = _points(full_id, variants)
    charts = (_chart(points, "1", "CPU latency at batch 1, ms (1 thread, median)", "acc-vs-latency1")
              + _chart(points, "256", "CPU latency at batch 256, ms (1 thread, median)", "acc-vs-latency256")
              + _chart(points, "macs", "MACs per sample", "acc-vs-macs"))
    head = ("<tr><th>run</th><th>compression</th><th>params</th><th>MACs</th><th>size (bytes)</th>"
            "<th>latency b1 (ms)</th><th>latency b256 (ms)</th><th>test accuracy</th></tr>")
    rows = []
    for label, m in points:
        run, _, what = label.partition(" ")
        acc = "" if m.get("accuracy") is None else f"{100 * m['accuracy']:.2f}%"
        b1, b256 = _ms(m, "1"), _ms(m, "256")
        rows.append(f"<tr><td><code>{_esc(run)}</code></td><td>{_esc(what)}</td><td>{m['params']:,}</td>"
                    f"<td>{m['macs']:,}</td><td>{m['size_bytes']:,}</td>"
                    f"<td>{'' if b1 is None else f'{b1:.3g}'}</td><td>{'' if b256 is None else f'{b256:.3g}'}</td>"
                    f"<td>{acc}</td></tr>")
    table = f'<div class="table-wrap"><table class="results">{head}{"".join(rows)}</table></div>'
    note = ('<p class="note">Latency: CPU, one thread, median of repeated forward passes, measured when each '
            'variant was made (the parent beside its newest variant).</p>')
    return html_section("compression", f"Compressed variants of <code>{_esc(full_id)}</code>",
                        f'<div style="display:flex;flex-wrap:wrap;gap:12px">{charts}</div>{table}{note}')


def write_compression_report(parent_id: str, path: str | Path, *, store: SQLiteRunStorage | str | Path | None = None
                             ) -> Path:
    """Write the compression view of one parent run as a self-contained HTML file."""
    st = store if isinstance(store, SQLiteRunStorage) else open_store(store)
    body = compression_section(st, parent_id)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(html_page(f"archlab compression: {parent_id}", body), encoding="utf-8")
    os.replace(tmp, path)
    return path
