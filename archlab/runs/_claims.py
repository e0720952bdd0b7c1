"""Sharing work between processes and machines through the run store: claims with a lease.

A process that wants to do one unit of shared work (one fold of a comparison) claims its
key in the store; the store says whether the claim is its own, someone else's, or done with
a result. While working, the owner's :class:`Heartbeat` thread renews its claims every
``lease_s / 4`` seconds; an owner that dies (SIGKILL, a lost machine) stops renewing, and
after ``lease_s`` seconds its claims go to the next process that asks. An owner that stops
normally (an error, Ctrl-C) releases its unfinished claims at once.

>>> import tempfile
>>> from archlab.runs import open_store
>>> store = open_store(tempfile.mkdtemp())
>>> a, b = new_owner(), new_owner()
>>> store.claim("fold-1", a, lease_s=60).mine, store.claim("fold-1", b, lease_s=60).mine
(True, False)
>>> store.finish_claim("fold-1", a, {"val": 0.9}).result["val"]
0.9
"""

from __future__ import annotations

import os
import socket
import threading

from ._base import RunStorage

__all__ = ["DEFAULT_LEASE_S", "Heartbeat", "lease_seconds", "new_owner"]

# How long a silent owner keeps its claims. Long enough that a loaded machine's heartbeat
# thread is never late by that much; short enough that a dead worker's folds restart soon.
DEFAULT_LEASE_S = 60.0


def lease_seconds() -> float:
    """The lease: ``$ARCHLAB_CLAIM_LEASE`` seconds if set (at least 1), else 60."""
    text = os.environ.get("ARCHLAB_CLAIM_LEASE")
    try:
        return max(1.0, float(text)) if text else DEFAULT_LEASE_S
    except ValueError:
        return DEFAULT_LEASE_S


def new_owner() -> str:
    """A name for this process's claims, unique across machines: host, pid and a random tag.

    >>> new_owner().count(":")
    2
    """
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


class Heartbeat:
    """A daemon thread renewing ``owner``'s claims in ``store`` every ``lease_s / 4`` seconds."""

    def __init__(self, store: RunStorage, owner: str, lease_s: float):
        self.store, self.owner, self.interval = store, owner, max(0.2, lease_s / 4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="archlab-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.store.heartbeat(self.owner)
            except Exception:  # a failed beat is retried at the next; the lease allows for several
                continue

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

