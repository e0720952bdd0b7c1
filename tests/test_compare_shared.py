"""`archlab compare` on several processes (machines) sharing one run store joins one comparison:
each fold is claimed in the store and trains once; a fold whose process died is taken up again
after its lease. Against SQLite (a shared folder) and PostgreSQL (a real server)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from archlab.runs import PostgresRunStorage, open_store

TINY = {
    "name": "tiny",
    "input": {"shape": [1, 8, 8]},
    "vars": {"num_classes": 10, "width": 16},
    "model": ["flatten", {"linear": "$width"}, "relu", {"linear": "$num_classes"}],
    "train": {"epochs": 1, "batch_size": 128, "lr": 1e-2},
}


def _where(kind: str, tmp_path: Path, request) -> str:
    return str(tmp_path / "shared-store") if kind == "sqlite" else request.getfixturevalue("postgres_url")


def _compare(spec: Path, store: str, report: Path, *, epochs: int = 1, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "archlab", "compare", str(spec), "--cv", "3", "--epochs", str(epochs),
           "--store", store, "--report", str(report), "-q"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _claims(store) -> list[tuple[str, str, int]]:
    """(key, state, attempts) of every claim in the store, read behind its back."""
    if isinstance(store, PostgresRunStorage):
        import psycopg

        with psycopg.connect(store.url) as conn:
            return conn.execute("SELECT key, state, attempts FROM archlab_claims ORDER BY key").fetchall()
    with sqlite3.connect(store.db_path) as conn:
        rows = conn.execute("SELECT key, state, attempts FROM claims ORDER BY key").fetchall()
    conn.close()
    return rows


def _finish(procs: list[subprocess.Popen]) -> list[str]:
    try:
        return [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_processes_with_the_same_arguments_join_one_comparison(kind, tmp_path, request):
    where = _where(kind, tmp_path, request)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    procs = [_compare(spec, where, tmp_path / f"r{i}.html") for i in range(2)]
    outputs = _finish(procs)
    assert [p.returncode for p in procs] == [0, 0], outputs
    recommended = [next(line for line in out.splitlines() if line.startswith("recommended")) for out in outputs]
    assert recommended[0] == recommended[1]
    store = open_store(where)
    runs = store.list_runs()
    folds = [r for r in runs if "fold" in r.tags]
    assert sorted(r.tags["fold"] for r in folds) == ["0", "1", "2"]  # each fold trained once, by one of them
    assert all(r.status == "finished" for r in runs)
    assert len([r for r in runs if r.tags.get("role") == "final"]) == 1  # and the final retrain once
    assert [(state, attempts) for _, state, attempts in _claims(store)] == [("done", 1)] * 4


def test_a_fold_whose_process_was_killed_is_taken_up_again(tmp_path, request):
    where = request.getfixturevalue("postgres_url")
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    lease = {"ARCHLAB_CLAIM_LEASE": "2"}
    store = open_store(where)
    first = _compare(spec, where, tmp_path / "r1.html", epochs=3, env=lease)
    try:
        deadline = time.time() + 120
        while not store.list_runs(status="running"):  # its first fold is training: kill it there
            assert first.poll() is None and time.time() < deadline, first.communicate()[0]
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    [killed] = store.list_runs(status="running")
    second = _compare(spec, where, tmp_path / "r2.html", epochs=3, env=lease)
    [out] = _finish([second])
    assert second.returncode == 0, out
    runs = store.list_runs()
    folds = [r for r in runs if "fold" in r.tags and r.status == "finished"]
    assert sorted(r.tags["fold"] for r in folds) == ["0", "1", "2"] and killed.run_id not in {r.run_id for r in folds}
    attempts = {key: n for key, _, n in _claims(store)}
    assert sorted(attempts.values()) == [1, 1, 1, 2]  # the killed fold was claimed twice, the rest once
