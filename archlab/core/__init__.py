"""The bottom of archlab: errors, the one registry class, frozen records. Standard library only."""

from ._errors import ArchlabError, DataError, ShapeError, SpecError, StoreError, TrainingError
from ._frozen import FrozenDict, freeze, thaw
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
    "freeze",
    "thaw",
]
