"""The pieces every archlab HTML report is made of: one stylesheet, the page, its sections and
charts, matplotlib figures as inline SVG, and point labels that neither overlap nor leave the
frame. The comparison report and the search report are both built from these.

A page is one self-contained file: the CSS is inline, charts are inline SVG with their glyphs
drawn as paths, and there is no script, font or image to fetch.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Sequence

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Annotation

_esc = html.escape

# The rules both reports use; each adds its own (the comparison: the recommendation and the
# architecture diagram; the search: the best trials' rows).
STYLESHEET = """
body{margin:0;background:#f4f6f8;color:#1d2733;font:14px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif}
main{max-width:1240px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:24px;margin:0 0 10px}h2{font-size:18px;margin:0 0 12px}
header,section{background:#fff;border:1px solid #dde3ea;border-radius:10px;padding:18px 22px;margin-bottom:18px}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:3px 18px;margin:0}
dl.meta dt{color:#5b6776}dl.meta dd{margin:0}
code,pre{font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,monospace;font-size:12.5px}
code{background:#eef1f5;padding:1px 5px;border-radius:4px;word-break:break-all}
pre{background:#f6f8fa;padding:10px;border-radius:6px;overflow:auto}
table.results{border-collapse:collapse;width:100%;font-size:13px}
.results th,.results td{padding:7px 9px;border-bottom:1px solid #e3e8ee;text-align:right;white-space:nowrap}
.results th:first-child,.results td:first-child{text-align:left}
.results th{background:#f0f3f7;font-weight:600;white-space:normal;vertical-align:bottom}
.table-wrap{overflow-x:auto}
figure{margin:0}figure.chart svg{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:#5b6776;font-size:12.5px;text-align:center;margin-top:4px}
.note{color:#5b6776;font-style:italic}
"""


def html_page(title: str, body: str, css: str = "") -> str:
    """A whole HTML document: the shared stylesheet plus `css`, then `body` in <main>."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(title)}</title><style>{STYLESHEET}{css}</style></head>\n<body><main>\n"
            + body + "\n</main></body></html>\n")


def html_section(sid: str, heading: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{heading}</h2>{body}</section>'


def html_chart(cid: str, svg: str, caption: str) -> str:
    return f'<figure class="chart" id="{cid}">{svg}<figcaption>{_esc(caption)}</figcaption></figure>'


def new_figure(width: float, height: float) -> Figure:
    """A figure of its own (no pyplot: no global figure registry, no backend switch)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    fig.set_facecolor("white")
    return fig


def svg_of(fig: Figure, chart_id: str) -> str:
    """The figure as an inline <svg> whose ids cannot clash with other charts on the page."""
    buf = io.StringIO()
    # A fixed salt gives the same ids for the same figure (reproducible files); glyphs are
    # drawn as paths so no font is needed where the report is opened.
    with matplotlib.rc_context({"svg.hashsalt": chart_id, "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML prolog and DOCTYPE (an external DTD URL)
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    ids = set(re.findall(r'\bid="([^"]+)"', svg))

    # Ids are global in an HTML document, and matplotlib reuses glyph ids between figures.
    def scope(m: re.Match[str]) -> str:
        return f"{m[1]}{chart_id}-{m[2]}" if m[2] in ids else m[0]

    return re.sub(r'(\bid="|href="#|url\(#)([^")]+)', scope, svg)


# ------------------------------------------------------------------------- point labels

# Where a label may sit around its point, in points (x, y), most preferred first: the four
# diagonals, then the sides, then further out (drawn with a thin leader line).
_NEAR = ((7, 7), (7, -7), (-7, 7), (-7, -7), (0, 10), (0, -12), (10, 0), (-10, 0))
_FAR = tuple((dx * k, dy * k) for k in (2.5, 4.0) for dx, dy in _NEAR)


def place_labels(ax: Axes, points: Sequence[tuple[float, float]], labels: Sequence[str],
                 fontsize: float = 8, marker_pt: float = 9,
                 segments: Sequence[tuple[tuple[float, float], tuple[float, float]]] = ()) -> list[Annotation]:
    """Label each data point so that no two labels overlap, no label covers a marker (or one of
    the line `segments`, such as error bars, in data coordinates), and every label stays inside
    the axes frame, where the positions around the points allow it.

    Greedy, in the order given (put the labels that matter most first): each label takes the
    first position around its point, nearest first, that overlaps nothing placed before it;
    if every position collides, the one with the least overlap. The figure's layout is fixed
    first (drawn once, then the constrained layout is frozen) so the frame does not move after
    the labels are placed. `marker_pt`: the markers' size, in points.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = ax.figure
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()                      # settle the constrained layout once ...
    fig.set_layout_engine("none")      # ... and keep it: the labels are placed against this frame
    renderer = canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    scale = fig.dpi / 72               # points -> pixels
    centres = [ax.transData.transform(p) for p in points]
    half = marker_pt * scale / 2
    taken = [(x - half, y - half, x + half, y + half) for x, y in centres]   # the markers
    for a, b in segments:  # thin boxes around the lines: crossing one matters least
        (xa, ya), (xb, yb) = ax.transData.transform(a), ax.transData.transform(b)
        taken.append((min(xa, xb) - 2, min(ya, yb) - 2, max(xa, xb) + 2, max(ya, yb) + 2))
    weight = [3.0] * len(centres) + [0.3] * len(segments)
    legend = ax.get_legend()
    if legend is not None:
        b = legend.get_window_extent(renderer)
        taken.append((b.x0, b.y0, b.x1, b.y1))
        weight.append(3.0)
        # loc="best" would choose again when saved, with the labels there: keep it where it is.
        corner = ax.transAxes.inverted().transform((b.x0, b.y0))
        legend.set_loc((float(corner[0]), float(corner[1])))
    placed: list[Annotation] = []
    for i, (point, label) in enumerate(zip(points, labels, strict=True)):
        note = ax.annotate(label, point, xytext=_NEAR[0], textcoords="offset points", fontsize=fontsize, zorder=4)
        best: tuple[float, tuple[int, int], tuple[float, float, float, float]] | None = None
        for n, (dx, dy) in enumerate(_NEAR + _FAR):
            note.set_position((dx, dy))
            note.set_ha("left" if dx > 0 else "right" if dx < 0 else "center")
            note.set_va("bottom" if dy > 0 else "top" if dy < 0 else "center")
            b = note.get_window_extent(renderer)
            box = (b.x0, b.y0, b.x1, b.y1)
            outside = b.width * b.height - _overlap(box, (frame.x0, frame.y0, frame.x1, frame.y1))
            # Its own marker never counts: the label sits next to it by construction.
            hits = sum(w * _overlap(box, other) for k, (other, w) in enumerate(zip(taken, weight, strict=True))
                       if k != i)
            # Away from its point a label reads less clearly: each ring out costs as much as
            # covering a few lines would.
            cost = 30 * outside + hits + 1e-3 * n + 150.0 * (n // len(_NEAR))
            if best is None or cost < best[0]:
                best = (cost, (dx, dy), box)
            if outside == 0 and hits == 0:
                break
        assert best is not None
        (dx, dy), box = best[1], best[2]
        note.set_position((dx, dy))
        note.set_ha("left" if dx > 0 else "right" if dx < 0 else "center")
        note.set_va("bottom" if dy > 0 else "top" if dy < 0 else "center")
        if (dx, dy) not in _NEAR:  # far from its point: a leader line says whose label it is
            ax.annotate("", point, xytext=(dx, dy), textcoords="offset points",
                        arrowprops={"arrowstyle": "-", "color": "#9aa5b1", "lw": 0.6, "shrinkA": 0, "shrinkB": 3})
        taken.append(box)
        weight.append(3.0)
        placed.append(note)
    return placed


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0
