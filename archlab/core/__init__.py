"""The bottom of archlab: errors, the one registry class, frozen records. Standard library only."""

from ._errors import ArchlabError, DataError, ShapeError, SpecError, StoreError, TrainingError
from ._frozen import FrozenDict, freeze, thaw
from ._keys import content_key
from ._metric import format_metric
from ._registry import Registry

__all__ = [
    "ArchlabError",
    "DataError",
    "FrozenDict",
    "Registry",
    "ShapeError",
    "SpecError",
    "StoreError",
    "TrainingError",
    "content_key",
    "format_metric",
    "freeze",
    "thaw",
]
