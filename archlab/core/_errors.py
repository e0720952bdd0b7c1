"""Every error archlab raises on purpose comes from here.

Messages follow one shape, borrowed from Keras: where (the spec path, file or run),
what was expected, what was received, and the fix. The CLI prints them as one line.
"""

from __future__ import annotations


class ArchlabError(Exception):
    """Base class: an error the user can fix, printed without a traceback by the CLI."""


class SpecError(ArchlabError):
    """A spec is malformed: unknown layer, bad argument, bad expression, bad var."""


class ShapeError(SpecError):
    """A layer received an input of a shape (or dtype) it cannot take."""


class DataError(ArchlabError):
    """A data set is missing, truncated, or in the wrong format."""


class StoreError(ArchlabError):
    """The run store cannot find or write a run, checkpoint or artifact."""


class TrainingError(ArchlabError):
    """Training cannot go on: a diverging loss, an incompatible checkpoint."""
