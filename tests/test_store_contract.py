"""The storage contract (archlab.runs.RunStorage), run against every backend.

Optuna's ``tests/storages_tests`` style: each backend registers a factory in ``BACKENDS``
(a fresh, empty store under a folder, and a hook that damages one stored record the way a
crash, a bad disk or a hand edit would). PostgreSQL runs against a real server started for
the session (tests/pgserver.py: skipped locally without it, a failure under CI).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from archlab.core import StoreError
from archlab.runs import (
    STATUSES,
    PostgresRunStorage,
    RunRecord,
    RunStorage,
    SQLiteRunStorage,
    StoreWarning,
    current_status,
    find_runs,
    is_run_id,
    open_store,
    run_lock,
)

# ------------------------------------------------------------------------ backends


def _sqlite(root: Path) -> RunStorage:
    return SQLiteRunStorage(root)


def _sqlite_damage(store: RunStorage, run_id: str, how: str) -> None:
    assert isinstance(store, SQLiteRunStorage)
    sql = {
        "truncated_json": ("UPDATE runs SET spec = '{\"name\": \"mlp\", \"mod' WHERE run_id = ?", (run_id,)),
        "not_an_object": ("UPDATE runs SET settings = '[1, 2]' WHERE run_id = ?", (run_id,)),
        "bad_float_tag": ("UPDATE runs SET test_metrics = '{\"acc\": {\"$float\": \"abc\"}}' WHERE run_id = ?",
                          (run_id,)),
        "escaping_id": ("UPDATE runs SET run_id = '../../outside/evil' WHERE run_id = ?", (run_id,)),
        "bad_status": ("UPDATE runs SET status = 'exploded' WHERE run_id = ?", (run_id,)),
        "bad_epoch": ("UPDATE epochs SET metrics = '{\"val_acc\": ' WHERE run_id = ?", (run_id,)),
    }[how]
    with sqlite3.connect(store.db_path) as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute(*sql)
    conn.close()


_PG_DAMAGE = {
    "truncated_json": "UPDATE archlab_runs SET spec = '{\"name\": \"mlp\", \"mod' WHERE run_id = %s",
    "not_an_object": "UPDATE archlab_runs SET settings = '[1, 2]' WHERE run_id = %s",
    "bad_float_tag": "UPDATE archlab_runs SET test_metrics = '{\"acc\": {\"$float\": \"abc\"}}' WHERE run_id = %s",
    "escaping_id": "UPDATE archlab_runs SET run_id = '../../outside/evil' WHERE run_id = %s",
    "bad_status": "UPDATE archlab_runs SET status = 'exploded' WHERE run_id = %s",
    "bad_epoch": "UPDATE archlab_epochs SET metrics = '{\"val_acc\": ' WHERE run_id = %s",
}


def _postgres_damage(store: RunStorage, run_id: str, how: str) -> None:
    import psycopg

    assert isinstance(store, PostgresRunStorage)
    with psycopg.connect(store.url, autocommit=True) as conn:
        conn.execute(_PG_DAMAGE[how], (run_id,))


# name -> (a fresh store under a folder (and a URL, for a server), damage(store, run_id, how))
BACKENDS: dict[str, tuple[Callable[..., RunStorage], Callable[[RunStorage, str, str], None]]] = {
    "sqlite": (lambda root, url: _sqlite(root), _sqlite_damage),
    "postgres": (lambda root, url: PostgresRunStorage(url, root), _postgres_damage),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, tmp_path):
    make, damage = BACKENDS[request.param]
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    return make(tmp_path / "store", url), damage


@pytest.fixture
def store(backend) -> RunStorage:
    return backend[0]


def _new(store: RunStorage, name: str = "mlp", **tags: str) -> str:
    return store.create_run(name=name, data="digits", spec={"name": name, "model": ["relu"]},
                            settings={"epochs": 2, "lr": 1e-3}, env={"host": "test"}, params=12,
                            tags=tags or None)


# ------------------------------------------------------------------------ records


def test_create_returns_a_well_formed_unique_id(store):
    ids = {_new(store) for _ in range(20)}
    assert len(ids) == 20 and all(is_run_id(i) for i in ids)
    run = store.get_run(next(iter(ids)))
    assert run.status == "running" and run.history == () and run.params == 12


def test_round_trip_of_every_field(store):
    rid = _new(store, study="s1")
    store.log_epoch(rid, 1, {"val_acc": 0.5, "train_loss": float("nan")})
    store.log_epoch(rid, 2, {"val_acc": 0.75, "lr": float("inf")})
    store.log_epoch(rid, 2, {"val_acc": 0.8})  # idempotent per epoch: replaced
    store.set_status(rid, "finished", message="done", test_metrics={"acc": 0.7}, duration_s=3.5)
    run = store.get_run(rid)
    assert (run.name, run.status, run.message, run.duration_s, run.data) == ("mlp", "finished", "done", 3.5, "digits")
    assert dict(run.test_metrics) == {"acc": 0.7} and dict(run.tags) == {"study": "s1"}
    assert [e.epoch for e in run.history] == [1, 2] and dict(run.history[1].metrics) == {"val_acc": 0.8}
    assert math.isnan(run.history[0].metrics["train_loss"])
    assert run.spec["model"] == ("relu",) and run.settings["lr"] == 1e-3
    again = RunRecord.from_dict(run.to_dict())
    assert math.isnan(again.history[0].metrics["train_loss"]) and again.history[1:] == run.history[1:]
    assert pickle.loads(pickle.dumps(run)).spec == run.spec


def test_status_keeps_metrics_and_duration_unless_given(store):
    rid = _new(store)
    store.set_status(rid, "finished", test_metrics={"acc": 0.5}, duration_s=1.0)
    store.set_status(rid, "interrupted")
    run = store.get_run(rid)
    assert (run.status, dict(run.test_metrics), run.duration_s) == ("interrupted", {"acc": 0.5}, 1.0)
    with pytest.raises(StoreError, match="unknown status"):
        store.set_status(rid, "stopped")  # a person's word, never stored


def test_records_are_immutable_snapshots(store):
    rid = _new(store)
    run = store.get_run(rid)
    store.log_epoch(rid, 1, {"a": 1.0})
    assert run.history == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.status = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        run.tags["x"] = "y"  # type: ignore[index]


def test_list_newest_first_with_filters_and_limit(store):
    a, b, c = _new(store, study="s"), _new(store), _new(store, study="s")
    store.set_status(b, "finished")
    assert [r.run_id for r in store.list_runs()] == [c, b, a]
    assert [r.run_id for r in store.list_runs(limit=2)] == [c, b]
    assert [r.run_id for r in store.list_runs(status="finished")] == [b]
    assert [r.run_id for r in store.list_runs(status=["running"], tags={"study": "s"})] == [c, a]
    with pytest.raises(StoreError, match="unknown run status 'done'. Expected one of running"):
        store.list_runs(status="done")


def test_prefix_lookup_not_found_and_delete(store):
    rid = _new(store)
    assert store.get_run(rid[:4]).run_id == rid
    (store.run_dir(rid) / "spec.yaml").write_text("name: x\n")
    store.delete_run(rid[:6])
    assert store.list_runs() == [] and not store.run_dir(rid, create=False).exists()
    with pytest.raises(StoreError, match="not found"):
        store.get_run(rid)


def test_prefix_lookup_and_ambiguity(store, monkeypatch):
    ids = iter(["r1234aaaa", "r1234bbbb", "r9999cccc"])
    monkeypatch.setattr("archlab.runs._sql._new_run_id", lambda: next(ids))
    a, b, c = (_new(store) for _ in range(3))
    assert store.get_run("r9").run_id == c
    assert store.get_run("r1234b").run_id == b
    with pytest.raises(StoreError, match="ambiguous.*r1234aaaa, r1234bbbb"):
        store.get_run("r1234")
    store.delete_run("r1234a")
    assert [r.run_id for r in store.list_runs()] == [c, b]


def test_id_collision_is_retried(store, monkeypatch):
    # the retry is inside the one transaction: on PostgreSQL an error there would abort it
    ids = iter(["raaaaaaaa", "raaaaaaaa", "rbbbbbbbb"])
    monkeypatch.setattr("archlab.runs._sql._new_run_id", lambda: next(ids))
    assert (_new(store), _new(store)) == ("raaaaaaaa", "rbbbbbbbb")


def test_reading_an_empty_store_creates_nothing(store):
    assert store.list_runs() == [] and find_runs(store, status="stopped") == []
    with pytest.raises(StoreError, match="not found"):
        store.get_run("r0000dead")
    assert not store.root.exists()


@pytest.mark.parametrize("bad", ["../../outside/evil", "r1234567/../../x", "/etc", "", "R12345678", "r1234 "])
def test_ids_that_are_not_run_ids_are_refused_everywhere(store, bad, tmp_path):
    rid = _new(store)
    calls = [lambda: store.get_run(bad), lambda: store.delete_run(bad),
             lambda: store.log_epoch(bad, 1, {"a": 1.0}), lambda: store.set_status(bad, "finished"),
             lambda: store.run_dir(bad), lambda: store.artifact(bad, "spec.yaml")]
    for call in calls:
        with pytest.raises(StoreError, match="is not a run id: expected 'r' followed by 8 hex digits") as err:
            call()
        assert "\n" not in str(err.value)
    assert store.get_run(rid).run_id == rid
    assert not (tmp_path / "outside").exists()


# ------------------------------------------------------------------------ damage


@pytest.mark.parametrize("how", ["truncated_json", "not_an_object", "bad_float_tag", "escaping_id", "bad_status"])
def test_a_damaged_record_is_reported_and_skipped_never_hiding_the_others(backend, how, tmp_path):
    store, damage = backend
    keep_old, bad, keep_new = _new(store, name="old"), _new(store, name="bad"), _new(store, name="new")
    damage(store, bad, how)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = store.list_runs()
    assert [r.run_id for r in runs] == [keep_new, keep_old]
    reports = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
    assert len(reports) == 1 and "damaged record" in reports[0] and "skipped" in reports[0]
    assert "\n" not in reports[0]
    if how != "escaping_id":
        with pytest.raises(StoreError, match=f"run '{bad}' .*damaged record"):
            store.get_run(bad)
    assert not (tmp_path / "outside").exists()


def test_a_damaged_epoch_is_left_out_of_its_history(backend):
    store, damage = backend
    rid = _new(store)
    store.log_epoch(rid, 1, {"val_acc": 0.5})
    damage(store, rid, "bad_epoch")
    with pytest.warns(StoreWarning, match="epoch 1 .*damaged"):
        run = store.get_run(rid)
    assert run.history == () and run.name == "mlp"


# ------------------------------------------------------------------------ artifacts


def test_run_dir_lies_under_root_and_is_created_on_demand(store):
    rid = _new(store)
    folder = store.run_dir(rid, create=False)
    assert folder == store.root / "runs" / rid
    assert store.run_dir(rid).is_dir()
    assert store.artifact(rid, "test_report.json") == folder / "test_report.json"
    for name in ("../x", "a/b", "", ".."):
        with pytest.raises(StoreError, match="without folders"):
            store.artifact(rid, name)


def test_a_run_folder_that_is_a_link_out_of_the_store_is_refused(store, tmp_path):
    rid = _new(store)
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "runs").mkdir(parents=True, exist_ok=True)
    (store.root / "runs" / rid).symlink_to(outside)
    for call in (lambda: store.run_dir(rid), lambda: store.artifact(rid, "test_report.json")):
        with pytest.raises(StoreError, match="is a symbolic link; the run store never reads or writes outside"):
            call()
    assert current_status(store, store.get_run(rid)) == "stopped"  # listing goes on
    assert [r.run_id for r in find_runs(store, status="stopped")] == [rid]
    store.delete_run(rid)  # removes the link, not what it points at
    assert outside.is_dir() and not (store.root / "runs" / rid).is_symlink()


# ------------------------------------------------------------------------ liveness


def test_stopped_is_a_running_run_nobody_trains(store):
    alive, dead, done = _new(store), _new(store), _new(store)
    store.set_status(done, "finished")
    with run_lock(store.run_dir(alive), alive):
        assert current_status(store, store.get_run(alive)) == "running"
        assert current_status(store, store.get_run(dead)) == "stopped"
        assert [r.run_id for r in find_runs(store, status="stopped")] == [dead]
        assert [r.run_id for r in find_runs(store, status="running")] == [alive]
        assert [r.run_id for r in find_runs(store, status=["stopped", "finished"])] == [done, dead]
        assert [r.run_id for r in find_runs(store, status="stopped", limit=1)] == [dead]
    assert [r.run_id for r in find_runs(store, status="stopped")] == [dead, alive]
    with pytest.raises(StoreError) as err:
        find_runs(store, status="complete")
    assert str(err.value).startswith("unknown run status 'complete'. Expected one of running, stopped, finished")
    assert "list_runs" not in str(err.value)


# ------------------------------------------------------------------------ the factory


def test_open_store_takes_a_store_a_path_or_nothing(store, tmp_path, monkeypatch):
    assert open_store(store) is store
    assert open_store(tmp_path / "x").root == tmp_path / "x"
    assert open_store(str(tmp_path / "y")).root == tmp_path / "y"
    monkeypatch.setenv("ARCHLAB_HOME", str(tmp_path / "home"))
    assert open_store().root == tmp_path / "home"
    with pytest.raises(StoreError, match="expected a run store, a folder path or None"):
        open_store(42)  # type: ignore[arg-type]


def test_every_status_is_stored(store):
    rid = _new(store)
    for status in STATUSES:
        store.set_status(rid, status)
        assert store.get_run(rid).status == status


# ------------------------------------------------------------------------ claims


def test_a_claim_is_held_by_one_owner_until_done_or_stale(store):
    a, b = "host-a:1:x", "host-b:2:y"
    first = store.claim("fold-0", a, lease_s=60)
    assert (first.state, first.owner, first.mine, first.attempts) == ("claimed", a, True, 1)
    other = store.claim("fold-0", b, lease_s=60)
    assert (other.state, other.owner, other.mine) == ("claimed", a, False)
    assert store.heartbeat(a) == 1 and store.heartbeat(b) == 0
    taken = store.claim("fold-0", b, lease_s=0)  # a's heartbeat is older than a zero lease: stale
    assert (taken.owner, taken.mine, taken.attempts) == (b, True, 2)
    done = store.finish_claim("fold-0", b, {"val_metric": 0.9, "run_id": "r0123abcd"})
    assert (done.state, done.mine, dict(done.result)) == ("done", True, {"val_metric": 0.9, "run_id": "r0123abcd"})
    late = store.finish_claim("fold-0", a, {"val_metric": 0.1})  # the first result stands
    assert (late.mine, late.result["val_metric"]) == (False, 0.9)
    again = store.claim("fold-0", a, lease_s=0)  # done work is never claimed again
    assert (again.state, again.mine, again.result["val_metric"]) == ("done", False, 0.9)
    assert store.get_claim("fold-0").result["val_metric"] == 0.9 and store.get_claim("nothing") is None


def test_released_claims_go_to_the_next_owner_at_once(store):
    a, b = "a:1:x", "b:2:y"
    assert store.claim("k1", a, lease_s=60).mine and store.claim("k2", a, lease_s=60).mine
    store.finish_claim("k2", a, {"x": 1})
    store.release_claims(a, ["k1", "k2"])  # unfinished ones only
    assert store.claim("k1", b, lease_s=60).mine
    assert store.get_claim("k2").state == "done"


def test_reading_claims_of_an_empty_store_creates_nothing(store):
    assert store.get_claim("k") is None
    store.release_claims("a:1:x", ["k"])
    assert not store.root.exists()


# ------------------------------------------------------------------------ concurrency

WRITER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    from archlab.runs import open_store  # no torch: each process starts fast

    where, root, worker = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    store = open_store(where)
    store.list_runs()  # connected before the start line
    (root / f"ready-{worker}").touch()
    while not (root / "go").exists():  # start together, to collide as much as possible
        time.sleep(0.005)
    won = []
    for i in range(20):
        rid = store.create_run(name=f"w{worker}-{i}", data="digits", spec={"i": i},
                               settings={}, env={}, params=i, tags={"worker": str(worker)})
        for epoch in range(3):
            store.log_epoch(rid, epoch, {"loss": 1.0 / (epoch + 1)})
        store.set_status(rid, "finished", duration_s=0.1)
        owner = f"w{worker}"
        if store.claim(f"job-{i}", owner, lease_s=600).mine:
            store.finish_claim(f"job-{i}", owner, {"worker": worker})
            won.append(i)
    print(json.dumps(won))
    """
)


def test_four_writer_processes_lose_and_duplicate_nothing(backend, tmp_path):
    store = backend[0]
    where = store.url if isinstance(store, PostgresRunStorage) else str(store.root)
    sync = tmp_path / "sync"
    sync.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, where, str(sync), str(k)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for k in range(4)]
    try:
        deadline = time.time() + 120
        while not all((sync / f"ready-{k}").exists() for k in range(4)):
            assert time.time() < deadline, "writers did not start"
            assert all(p.poll() is None for p in procs), [p.communicate()[0] for p in procs]
            time.sleep(0.01)
        (sync / "go").touch()
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * 4, outputs
    runs = store.list_runs()
    assert len(runs) == 80 and len({r.run_id for r in runs}) == 80
    assert sorted(r.name for r in runs) == sorted(f"w{w}-{i}" for w in range(4) for i in range(20))
    assert all(r.status == "finished" and [e.epoch for e in r.history] == [0, 1, 2] for r in runs)
    won = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    assert sorted(i for w in won for i in w) == list(range(20))  # every job claimed exactly once
    for w, jobs in enumerate(won):
        assert all(store.get_claim(f"job-{i}").result["worker"] == w for i in jobs)
