"""Architecture search on Optuna: spaces, trials, workers, storage, progress, report."""

from ._report import search_sections_html, write_search_report
from ._search import SearchResult, TrialSummary, export_specs, load_search, search, studies
from ._space import (
    Budget,
    choice_labels,
    concrete_spec,
    parse_count,
    parse_duration,
    parse_objectives,
    sample,
    search_spaces,
)
from ._storage import open_storage
from ._trial import ParetoMedianPruner

__all__ = [
    "Budget",
    "ParetoMedianPruner",
    "SearchResult",
    "TrialSummary",
    "choice_labels",
    "concrete_spec",
    "export_specs",
    "load_search",
    "open_storage",
    "parse_count",
    "parse_duration",
    "parse_objectives",
    "sample",
    "search",
    "search_sections_html",
    "search_spaces",
    "studies",
    "write_search_report",
]
