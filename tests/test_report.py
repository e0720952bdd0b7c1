"""The HTML report: self-contained, every section and chart present, the architecture
diagram, the Pareto front; and a real headless-Chromium render (console errors, screenshot)."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

import archlab
from archlab.compare import (
    CandidateSummary,
    Comparison,
    FoldResult,
    architecture_html,
    pareto_front,
    write_report,
)

SECTIONS = ("overview", "comparison", "curves", "efficiency", "gap", "confusion", "architecture")
CHARTS = ("learning-curves", "metric-vs-params", "metric-vs-flops", "gap-bars", "confusion-matrix")


# ----------------------------------------------------------------------------- fixtures


def _history(epochs: int, start: float, end: float, gap: float) -> tuple[dict[str, float], ...]:
    out = []
    for e in range(1, epochs + 1):
        val = end - (end - start) * math.exp(-e / 2)
        out.append({"epoch": e, "train_acc": min(val + gap, 1.0), "val_acc": val,
                    "train_loss": 1 - val - gap, "val_loss": 1 - val, "seconds": 0.5})
    return tuple(out)


def _candidate(label: str, zoo: str, params: int, flops: int, val: float, gap: float, diagnosis: str,
               epochs: tuple[int, ...] = (6, 6, 6)) -> CandidateSummary:
    folds = tuple(FoldResult(label, k, 0, f"run-{label}-{k}",
                             _history(n, 0.3, val + 0.01 * (k - 1), gap),
                             val + 0.01 * (k - 1), val + 0.01 * (k - 1) + gap, 3.0 + k)
                  for k, n in enumerate(epochs))
    return CandidateSummary(label=label, spec=archlab.load_spec(zoo).to_dict(), params=params, flops=flops,
                            train_seconds=4.0, latency_ms_b1=0.21, latency_ms_b256=2.5, val_mean=val,
                            val_std=0.01, gap_mean=gap, diagnosis=diagnosis, folds=folds)


def make_comparison(recommended: str = "resnet-mini", confusion: bool = True) -> Comparison:
    candidates = (
        _candidate("mlp", "zoo:mlp", 50_000, 100_000, 0.95, 0.04, "over-fitting", epochs=(6, 4, 5)),
        _candidate("resnet-mini", "zoo:resnet-mini", 290_000, 8_500_000, 0.985, 0.005, "fine"),
        _candidate("inception-mini", "zoo:inception-mini", 45_000, 4_100_000, 0.97, -0.01, "under-fitting"),
    )
    matrix = [[30 if i == j else (2 if (i + j) % 7 == 0 else 0) for j in range(10)] for i in range(10)]
    return Comparison(
        data="digits", metric="acc", mode="max", cv=3, repeats=1, candidates=candidates,
        recommended=recommended, rule="the simplest candidate within one standard error of the best",
        test_metrics={"acc": 0.9811, "loss": 0.0712},
        test_report={"confusion": matrix} if confusion else {},
        final_run_id="final-123", class_names=tuple(f"digit {i}" for i in range(10)),
        command="archlab compare zoo:mlp zoo:resnet-mini zoo:inception-mini --data digits --cv 3")


@pytest.fixture(scope="module")
def report_file(tmp_path_factory) -> Path:
    return write_report(make_comparison(), tmp_path_factory.mktemp("report") / "sub" / "report.html")


@pytest.fixture(scope="module")
def page(report_file) -> str:
    return report_file.read_text(encoding="utf-8")


def _element(page: str, tag: str, element_id: str) -> str:
    """The text of <tag id=element_id>...</tag> (these elements do not nest in themselves)."""
    m = re.search(rf'<{tag}\b[^>]*\bid="{element_id}"[^>]*>(.*?)</{tag}>', page, re.S)
    assert m, f"no <{tag} id={element_id!r}>"
    return m.group(1)


# ------------------------------------------------------------------------- the HTML file


def test_report_is_self_contained(page):
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page, re.I)
    assert "<script" not in page.lower()
    assert "<link" not in page.lower() and "@import" not in page and "url(http" not in page
    assert "<iframe" not in page and "<img" not in page


def test_sections_and_one_svg_per_chart(page):
    for sid in SECTIONS:
        assert re.search(rf'<(section|header) id="{sid}"', page), sid
    for cid in CHARTS:
        figure = _element(page, "figure", cid)
        assert 'class="chart"' in re.search(rf'<figure[^>]*id="{cid}"', page).group(0)
        assert figure.count("<svg") == 1, cid
    assert page.count("<svg") == len(CHARTS)
    # Inline SVGs share one id space: every id in the page is unique.
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_header_and_table(page):
    header = _element(page, "header", "overview")
    assert "digits" in header and "3-fold cross-validation" in header
    assert "archlab compare zoo:mlp zoo:resnet-mini" in header and "generated" in header
    table = re.search(r"<table.*?</table>", page, re.S).group(0)
    assert table.count("<tr") == 4  # header + 3 candidates
    highlighted = re.findall(r'<tr class="recommended">(.*?)</tr>', table, re.S)
    assert len(highlighted) == 1 and "resnet-mini" in highlighted[0]
    assert "0.9850 ± 0.0100" in highlighted[0] and "over-fitting" in table
    for heading in ("params", "FLOPs", "latency b=1", "latency b=256", "gap", "diagnosis"):
        assert heading in table
    sentence = _element(page, "p", "recommendation")
    assert "resnet-mini" in sentence and "one standard error" in sentence
    assert "acc 0.9811" in sentence and "final-123" in sentence


def test_confusion_uses_class_names_and_is_skipped_without_matrix(page, tmp_path):
    # Text is drawn as glyph paths; matplotlib keeps each string in a comment next to it.
    assert "<!-- digit 7 -->" in _element(page, "figure", "confusion-matrix")
    text = write_report(make_comparison(confusion=False), tmp_path / "r.html").read_text()
    assert 'id="confusion-matrix"' not in text and 'id="confusion"' in text
    assert text.count("<svg") == len(CHARTS) - 1


def test_report_survives_odd_input(tmp_path):
    """One candidate, no history, a label that needs escaping, an unknown recommendation."""
    c = make_comparison()
    odd = replace(c.candidates[0], label="<mlp&co>", folds=())
    c = replace(c, candidates=(odd,), recommended="missing", test_metrics={}, command="")
    text = write_report(c, tmp_path / "odd.html").read_text()
    assert "&lt;mlp&amp;co&gt;" in text and "<mlp&co>" not in text
    assert 'class="recommended"' not in text


def test_write_report_leaves_no_temporary_files(report_file):
    assert [p.name for p in report_file.parent.iterdir()] == ["report.html"]
    assert report_file.stat().st_mode & 0o044  # readable by others, like any file written


def test_report_is_reproducible_but_for_its_timestamp(tmp_path):
    def strip(text: str) -> str:
        return re.sub(r"<dt>generated</dt><dd>[^<]*</dd>", "", text)
    a = write_report(make_comparison(), tmp_path / "a.html").read_text()
    b = write_report(make_comparison(), tmp_path / "b.html").read_text()
    assert strip(a) == strip(b)


def test_lower_is_better_metric_and_many_candidates(tmp_path):
    """A loss-like metric (mode min) and more candidates than one row of curves holds."""
    c = make_comparison()
    many = tuple(replace(x, label=f"{x.label}-{k}", val_mean=1 - x.val_mean + 0.01 * k)
                 for k in range(3) for x in c.candidates)
    c = replace(c, metric="loss", mode="min", candidates=many, recommended="mlp-0")
    text = write_report(c, tmp_path / "min.html").read_text()
    assert "loss (lower is better)" in text and text.count("<svg") == len(CHARTS)
    assert text.count('<tr class="recommended">') == 1


@pytest.mark.parametrize("name", archlab.zoo_names())
def test_every_zoo_spec_has_a_diagram(name):
    page = architecture_html(f"zoo:{name}")
    net = archlab.build(f"zoo:{name}", device="meta")
    assert f"output <span class=\"shape\">{net.output_type.describe()}</span>" in page
    if name.startswith("seq2seq"):
        assert ">encoder</div>" in page and ">decoder</div>" in page and "memory → decoder" in page
    # Every leaf appears (copies collapsed by "× N" are drawn once).
    for leaf in net.layers:
        if "repeat[" not in leaf.path:
            assert f'title="{leaf.path}"' in page, leaf.path


# ------------------------------------------------------------------ architecture diagram


def test_resnet_mini_diagram_shows_residual_skips_and_projection():
    page = architecture_html(archlab.load_spec("zoo:resnet-mini").to_dict())
    assert page.count('class="arch-group arch-residual"') == 4
    assert page.count("⊕ add + x") == 3           # three blocks keep the shape ...
    assert page.count("⊕ add + projection(x)") == 1   # ... the first of stage 1 halves it
    assert "projection: 1×1 conv, stride 2 + batchnorm" in page
    assert "arch-skip" in page and "skip: x" in page
    assert "block basic (out=64 stride=2)" in page
    assert "repeat × 2" in page
    # Every leaf drawn once (stem 3, 4 blocks of 6, head 2) plus the projection box.
    assert page.count('class="arch-leaf') == 3 + 4 * 6 + 2 + 1
    assert "→ (64, 4, 4)" in page and "→ (10,)" in page and "input <span" in page


def test_inception_mini_diagram_shows_four_branches_and_merge():
    page = architecture_html(archlab.load_spec("zoo:inception-mini").to_dict())
    assert page.count('class="arch-group arch-parallel"') == 2
    assert page.count("parallel · 4 branches") == 2
    assert page.count('class="arch-branch"') == 8
    assert page.count('<div class="arch-merge">concat <span class="shape">→ (80, 8, 8)') == 1
    assert page.count('<div class="arch-merge">concat <span class="shape">→ (80, 4, 4)') == 1
    assert "kernel=5 padding=same" in page


def test_diagram_collapses_identical_repeats_and_reads_long_forms():
    spec = {"input": {"shape": [16]}, "vars": {"w": 16, "n": 3},
            "blocks": {"mlp_block": [{"linear": "$w"}, "relu"]},
            "model": [{"repeat": {"times": "$n", "block": [{"residual": {"body": ["mlp_block"]}}]}},
                      {"parallel": {"branches": [[{"linear": 8}], [{"linear": 8}]], "merge": "add"}},
                      {"residual": [{"linear": 4}], "projection": [{"linear": 4}]}]}
    page = architecture_html(spec)
    assert "repeat × 3" in page and "i = 0…2: identical, × 3" in page
    assert page.count("<b>linear</b> <span class=\"args\">out=16</span>") == 1
    assert '<div class="arch-merge">add <span class="shape">→ (8,)' in page
    assert "⊕ add + projection(x)" in page and ">projection</div>" in page


def test_diagram_reports_a_spec_error_instead_of_failing(tmp_path):
    c = make_comparison()
    bad = replace(c.candidates[1], spec={"input": {"shape": [4]}, "model": ["conv2d"]})
    text = write_report(replace(c, candidates=(c.candidates[0], bad)), tmp_path / "r.html").read_text()
    assert "Cannot draw the architecture" in text


# ---------------------------------------------------------------------------- Pareto front


def test_pareto_front_max_and_min():
    pts = [(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.9), (5, 0.9)]
    assert pareto_front(pts, "max") == [0, 1, 3]
    assert pareto_front([(1, 0.5), (2, 0.3), (3, 0.4), (0.5, 0.9)], "min") == [3, 0, 1]


def test_pareto_front_ties():
    # Identical points do not dominate each other: both stay on the front.
    assert pareto_front([(1, 0.9), (1, 0.9)]) == [0, 1]
    # Same cost, worse metric: dominated.  Same metric, higher cost: dominated.
    assert pareto_front([(1, 0.9), (1, 0.8)]) == [0]
    assert pareto_front([(1, 0.9), (2, 0.9)]) == [0]
    assert pareto_front([(2, 0.1), (1, 0.1)], "min") == [1]
    assert pareto_front([]) == []
    assert pareto_front([(3, 0.2)]) == [0]


# ------------------------------------------------------------------- chart details


def _label_boxes(fig):
    """The text labels of a figure's first axes, drawn, with the axes frame."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    return ax.get_window_extent(renderer), [t.get_window_extent(renderer) for t in ax.texts if t.get_text()]


def _assert_labels_clear(fig, expected: int) -> None:
    frame, boxes = _label_boxes(fig)
    assert len(boxes) == expected
    for i, box in enumerate(boxes):
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, i
        assert not any(box.overlaps(other) for other in boxes[i + 1:]), i


@pytest.mark.parametrize("attr", ["params", "flops"])
def test_point_labels_neither_overlap_nor_leave_the_frame(attr):
    from archlab.compare._report import _tradeoff_figure

    c = make_comparison()
    base = c.candidates[0]
    # A --vary sweep: long labels on points close together, the last at the right edge;
    # and two candidates at the same cost and almost the same score (labels would stack).
    crowd = tuple(replace(base, label=f"mlp[depth={d},width={w}]", params=50_000 + 900 * i,
                          flops=100_000 + 2_000 * i, val_mean=0.95 + 0.002 * (i % 3))
                  for i, (d, w) in enumerate([(1, 32), (1, 64), (2, 32), (2, 64), (3, 32), (3, 64)]))
    twins = (replace(base, label="twin-a", params=80_000, flops=200_000, val_mean=0.96),
             replace(base, label="twin-b", params=80_000, flops=200_000, val_mean=0.9603))
    c = replace(c, candidates=crowd + twins, recommended="mlp[depth=2,width=32]")
    _assert_labels_clear(_tradeoff_figure(c, attr, attr), len(crowd) + len(twins))


def test_gap_chart_states_its_relative_colour_rule(page):
    from archlab.compare import OVERFIT_GAP, UNDERFIT_TOLERANCE

    caption = re.search(r"<figcaption>(.*?)</figcaption>", _element(page, "figure", "gap-bars"), re.S).group(1)
    assert "relative" in caption and "two equal gaps can therefore be coloured differently" in caption
    assert f"above {OVERFIT_GAP:g}" in caption and f"more than {UNDERFIT_TOLERANCE:g} below" in caption
    assert "the best validation mean of any candidate here (0.9850)" in caption


def test_a_winner_at_the_edge_of_a_sweep_gets_a_hint_in_the_report(tmp_path):
    hint = "depth=3 is the largest value the sweep tried and it was recommended: extend it"
    text = write_report(replace(make_comparison(), hints=(hint,)), tmp_path / "r.html").read_text()
    assert f'<p class="hint">Hint: {hint}.</p>' in text
    assert 'class="hint"' not in write_report(make_comparison(), tmp_path / "s.html").read_text()


def test_learning_curves_never_leave_one_panel_alone_in_a_row():
    from archlab.compare._report import panel_grid

    for n in range(1, 31):
        rows, cols = panel_grid(n)
        assert rows * cols >= n > (rows - 1) * cols, n          # no empty row
        assert rows == 1 or n - (rows - 1) * cols >= 2, n      # the last row has company
        assert cols <= 6
    assert panel_grid(4) == (2, 2) and panel_grid(3) == (1, 3)


# -------------------------------------------------------------------------- the browser


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package, also when not on PATH


def _chromium() -> str:
    found = shutil.which("chromium") or (str(CHROMIUM) if CHROMIUM.exists() else None)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed on CI; .ci/run must install it (apt-get install chromium)")
    pytest.skip("chromium not installed; .ci/run installs it")


def _run_chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *extra, url]
    # Own process group: on a hang, stop Chromium and its helpers (and only them).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within 90 s: {' '.join(cmd)}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# Installed first thing in <head>, so it sees errors from every later script and leaves
# them where --dump-dom shows them.
_RECORDER = ("<script>window.addEventListener('error',function(e){var d=document.documentElement;"
             "d.setAttribute('data-script-errors',(d.getAttribute('data-script-errors')||'')"
             "+(e.message||'resource failed: '+(e.target&&(e.target.src||e.target.href)))+'; ')},true);"
             "</script>")


def render_errors(html_file: Path, tmp: Path) -> tuple[list[str], str]:
    """Open the page in headless Chromium; return its script/console errors and the DOM."""
    harness = tmp / f"harness-{html_file.name}"
    harness.write_text(html_file.read_text(encoding="utf-8").replace("<head>", "<head>" + _RECORDER, 1),
                       encoding="utf-8")
    result = _run_chromium(harness.as_uri(), tmp, "--dump-dom")
    assert result.returncode == 0, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    recorded = re.search(r'data-script-errors="([^"]*)"', result.stdout)
    if recorded:
        errors.append("window error: " + recorded.group(1))
    return errors, result.stdout


def _ink(png: Path) -> tuple[int, int, float]:
    """Width, height and the share of pixels that differ from the page background."""
    pixels = imread(png)[..., :3]
    background = np.median(pixels.reshape(-1, 3), axis=0)
    return pixels.shape[1], pixels.shape[0], float((np.abs(pixels - background).sum(-1) > 0.05).mean())


def test_report_renders_in_chromium(report_file, tmp_path):
    errors, dom = render_errors(report_file, tmp_path)
    assert errors == []
    for cid in CHARTS:
        assert re.search(rf'<figure class="chart" id="{cid}">\s*<svg', dom), cid
    assert 'id="architecture-diagram"' in dom and "arch-residual" in dom

    shot = tmp_path / "report.png"
    result = _run_chromium(report_file.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1400,3000")
    assert result.returncode == 0 and shot.exists(), result.stderr[-3000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, ink = _ink(shot)
    assert (width, height) == (1400, 3000)
    assert shot.stat().st_size > 50_000 and ink > 0.05, (shot.stat().st_size, ink)
    if os.environ.get("ARCHLAB_KEEP_SCREENSHOT"):  # for looking at it by eye
        shutil.copy(shot, os.environ["ARCHLAB_KEEP_SCREENSHOT"])


def test_missing_chromium_skips_locally_but_fails_on_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"chromium not installed; \.ci/run installs it"):
        _chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must install it"):
        _chromium()


def test_render_check_catches_a_script_error(report_file, tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text(report_file.read_text().replace("</body>", "<script>notDefined();</script></body>"))
    errors, _ = render_errors(broken, tmp_path)
    assert any("Uncaught ReferenceError: notDefined is not defined" in e for e in errors), errors
    assert any(e.startswith("window error:") for e in errors)
