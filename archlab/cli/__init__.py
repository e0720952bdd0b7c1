"""The command line: one module per command group, each registering its commands on the one
`app`. Holds no library logic; nothing in the library imports it."""

# Importing the command modules registers their commands (in the order `--help` lists them).
from . import _compare, _data, _inspect, _runs, _scratch, _search, _train  # noqa: F401, E402, I001
from . import _compress  # noqa: F401, E402, I001
from . import _distill  # noqa: F401, E402, I001
from . import _export  # noqa: F401, E402, I001  (after _runs: `runs export` joins its `runs`)
from . import _import  # noqa: F401, E402, I001
from . import _explain  # noqa: F401, E402, I001
from . import _deploy  # noqa: F401, E402, I001  (archlab export, archlab predict)
from ._app import app, main

__all__ = ["app", "main"]
