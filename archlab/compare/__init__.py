"""Comparing architectures: k-fold folds, results, the HTML report."""

from ._compare import (
    OVERFIT_GAP,
    compare,
    comparison_from_runs,
    development_split,
    diagnose,
    fold_indices,
    latency_ms,
    make_candidates,
    parse_vary,
    recommend,
)
from ._report import architecture_html, write_report
from ._results import CandidateSummary, Comparison, FoldResult, pareto_front

__all__ = [
    "CandidateSummary",
    "Comparison",
    "FoldResult",
    "OVERFIT_GAP",
    "architecture_html",
    "compare",
    "comparison_from_runs",
    "development_split",
    "diagnose",
    "fold_indices",
    "latency_ms",
    "make_candidates",
    "pareto_front",
    "parse_vary",
    "recommend",
    "write_report",
]
