"""The bottom of archlab: errors, the one registry class, frozen records, one JSON codec, the size
grammar and error-message formatting. Standard library only."""

from ._codec import TAGS as JSON_TAGS
from ._codec import CodecError, decode, dumps, encode, loads
from ._errors import ArchlabError, DataError, ShapeError, SpecError, StoreError, TrainingError
from ._format import brief
from ._frozen import FrozenDict, freeze, thaw
from ._keys import content_key
from ._metric import format_metric
from ._registry import Registry
from ._sizes import format_size, parse_size

__all__ = [
    "ArchlabError",
    "CodecError",
    "DataError",
    "FrozenDict",
    "JSON_TAGS",
    "Registry",
    "ShapeError",
    "SpecError",
    "StoreError",
    "TrainingError",
    "brief",
    "content_key",
    "decode",
    "dumps",
    "encode",
    "format_metric",
    "format_size",
    "freeze",
    "loads",
    "parse_size",
    "thaw",
]
