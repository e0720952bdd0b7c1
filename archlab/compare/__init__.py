"""Comparing architectures: k-fold folds, results, the HTML report."""

from ._compare import (
    compare,
    comparison_from_runs,
    diagnose,
    latency_ms,
    make_candidates,
    parse_vary,
    recommend,
    sweep_hints,
)
from ._compression import compression_section, compression_variants, write_compression_report
from ._folds import cached_dataset, development_split, fold_datasets, fold_indices
from ._html import html_chart, html_page, html_section, new_figure, place_labels, svg_of
from ._report import architecture_html, write_report
from ._results import (
    OVERFIT_GAP,
    UNDERFIT_TOLERANCE,
    CandidateSummary,
    Comparison,
    FoldResult,
    pareto_front,
)

__all__ = [
    "compression_section",
    "compression_variants",
    "write_compression_report",
    "CandidateSummary",
    "Comparison",
    "FoldResult",
    "OVERFIT_GAP",
    "UNDERFIT_TOLERANCE",
    "architecture_html",
    "cached_dataset",
    "compare",
    "comparison_from_runs",
    "development_split",
    "diagnose",
    "fold_datasets",
    "fold_indices",
    "html_chart",
    "html_page",
    "html_section",
    "latency_ms",
    "make_candidates",
    "new_figure",
    "pareto_front",
    "parse_vary",
    "place_labels",
    "recommend",
    "svg_of",
    "sweep_hints",
    "write_report",
]
