"""Shared test set-up: every test gets its own run store, so none writes ./archlab-runs."""

from __future__ import annotations

import pytest
import torch

# The suite's models are tiny: a second intra-op thread buys nothing, and on a busy 2-core
# machine two threads per process oversubscribe the CPU and slow everything down.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def archlab_home(tmp_path_factory, monkeypatch):
    """Point ARCHLAB_HOME (the default run store) at a fresh folder for each test."""
    home = tmp_path_factory.mktemp("archlab-home")
    monkeypatch.setenv("ARCHLAB_HOME", str(home))
    # `--store` sets ARCHLAB_STORE for the process: undone after each test (and a user's own
    # ARCHLAB_STORE never reaches the tests). setenv, not delenv: monkeypatch records nothing
    # when it deletes an absent variable, so a value a test sets later would leak into every
    # later test (a module fixture's runs once went to another test's store).
    monkeypatch.setenv("ARCHLAB_STORE", "")
    monkeypatch.delenv("ARCHLAB_STORE")
    return home


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the session (tests/pgserver.py): skips locally without
    the binaries, fails under CI."""
    from pgserver import start_server

    server, stop = start_server()
    try:
        yield server
    finally:
        stop()


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    from pgserver import new_database

    return new_database(postgres_server)
