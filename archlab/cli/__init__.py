"""The command line. Holds no library logic; nothing imports it."""

from ._app import app, main

__all__ = [
    "app",
    "main",
]
