"""The run store: records, immutability, lookups, and many writers at once."""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import pickle
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from archlab.core import StoreError, thaw
from archlab.runs import (
    EpochRecord,
    RunRecord,
    RunStorage,
    SQLiteRunStorage,
    default_root,
    open_store,
)

ENV = {"torch": "2.x", "device": "cpu", "python": "3.11", "host": "test"}
SPEC = {"name": "mlp", "model": [{"linear": 16}, "relu", {"linear": 10}]}


def _new(store: RunStorage, name: str = "mlp", **tags: str) -> str:
    return store.create_run(
        name=name,
        data="digits",
        spec=SPEC,
        settings={"epochs": 3, "lr": 1e-3},
        env=ENV,
        params=1234,
        tags=tags or None,
    )


@pytest.fixture
def store(tmp_path: Path) -> SQLiteRunStorage:
    return open_store(tmp_path / "runs-root")


def test_default_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.delenv("ARCHLAB_HOME", raising=False)
    assert default_root() == Path("archlab-runs")
    monkeypatch.setenv("ARCHLAB_HOME", str(tmp_path))
    assert default_root() == tmp_path
    assert open_store().root == tmp_path


def test_create_log_finish_get(store):
    rid = _new(store, study="s1")
    assert rid.startswith("r") and len(rid) == 9
    run = store.get_run(rid)
    assert run.status == "running" and run.history == () and run.duration_s is None
    for epoch in range(3):
        store.log_epoch(rid, epoch, {"train_loss": 1.0 / (epoch + 1), "val_acc": 0.5 + epoch / 10})
    store.set_status(rid, "finished", test_metrics={"test_acc": 0.75}, duration_s=12.5)

    run = store.get_run(rid)
    assert isinstance(run, RunRecord)
    assert (run.name, run.status, run.data, run.params) == ("mlp", "finished", "digits", 1234)
    assert thaw(run.spec) == SPEC and dict(run.env) == ENV
    assert dict(run.settings) == {"epochs": 3, "lr": 1e-3}
    assert dict(run.tags) == {"study": "s1"}
    assert run.test_metrics["test_acc"] == 0.75 and run.duration_s == 12.5
    assert [e.epoch for e in run.history] == [0, 1, 2]
    assert run.best("val_acc") == pytest.approx(0.7)
    assert run.best("train_loss", "min") == pytest.approx(1 / 3)
    assert run.best("nope") is None
    assert run.created_at <= run.updated_at
    assert (store.root / "archlab.db").exists()


def test_set_status_keeps_metrics_unless_given(store):
    rid = _new(store)
    store.set_status(rid, "finished", test_metrics={"acc": 0.5}, duration_s=3.0)
    store.set_status(rid, "failed", message="loss is NaN at epoch 2")
    run = store.get_run(rid)
    assert run.status == "failed" and run.message == "loss is NaN at epoch 2"
    assert dict(run.test_metrics) == {"acc": 0.5} and run.duration_s == 3.0
    with pytest.raises(StoreError, match="unknown status"):
        store.set_status(rid, "done")


def test_list_newest_first_filter_and_limit(store):
    ids = []
    for i in range(5):
        ids.append(_new(store, name=f"m{i}", study="s1" if i % 2 else "s2", fold=str(i)))
    store.set_status(ids[0], "finished")
    assert [r.run_id for r in store.list_runs()] == ids[::-1]
    assert [r.run_id for r in store.list_runs(limit=2)] == ids[:2:-1][:2]
    assert [r.run_id for r in store.list_runs(tags={"study": "s1"})] == [ids[3], ids[1]]
    assert [r.run_id for r in store.list_runs(tags={"study": "s1", "fold": "3"})] == [ids[3]]
    assert store.list_runs(tags={"study": "s3"}) == []
    assert [r.run_id for r in store.list_runs(status="finished")] == [ids[0]]
    assert len(store.list_runs(status=["finished", "running"])) == 5
    with pytest.raises(StoreError, match="unknown run status"):
        store.list_runs(status="complete")


def test_tag_keys_with_dots_and_quotes(store):
    rid = _new(store, **{'a.b "c"': "x'y"})
    assert [r.run_id for r in store.list_runs(tags={'a.b "c"': "x'y"})] == [rid]


def test_records_are_immutable(store):
    rid = _new(store, study="s1")
    store.log_epoch(rid, 0, {"val_acc": 0.5})
    run = store.get_run(rid)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.status = "finished"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.history[0].epoch = 3  # type: ignore[misc]
    for mapping in (run.spec, run.settings, run.env, run.tags, run.test_metrics):
        with pytest.raises(TypeError):
            mapping["x"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        run.history[0].metrics["val_acc"] = 1.0  # type: ignore[index]
    with pytest.raises(TypeError):
        run.spec["model"][0]["linear"] = 3  # nested too  # type: ignore[index]
    assert isinstance(run.history, tuple) and isinstance(run.spec["model"], tuple)
    with pytest.raises(AttributeError):
        run.history.append(None)  # type: ignore[attr-defined]
    # a snapshot: later writes do not reach it
    store.log_epoch(rid, 1, {"val_acc": 0.9})
    assert len(run.history) == 1 and len(store.get_run(rid).history) == 2
    # plain copies on demand, and records survive pickling (to worker processes)
    d = run.to_dict()
    d["spec"]["model"].append("x")
    assert RunRecord.from_dict(run.to_dict()) == run
    assert pickle.loads(pickle.dumps(run)) == run
    assert pickle.loads(pickle.dumps(run.history[0])) == EpochRecord(0, {"val_acc": 0.5})


def test_nan_and_inf_round_trip(store):
    rid = store.create_run(
        name="x",
        data="digits",
        spec={"scale": float("inf")},
        settings={"clip": float("-inf")},
        env=ENV,
        params=None,
    )
    store.log_epoch(rid, 0, {"train_loss": float("nan"), "val_loss": float("inf"), "g": -math.inf})
    store.log_epoch(rid, 1, {"train_loss": 0.5})
    store.set_status(rid, "failed", test_metrics={"acc": float("nan")})
    run = store.get_run(rid)
    m = run.history[0].metrics
    assert math.isnan(m["train_loss"]) and m["val_loss"] == math.inf and m["g"] == -math.inf
    assert math.isnan(run.test_metrics["acc"])
    assert run.spec["scale"] == math.inf and run.settings["clip"] == -math.inf
    assert run.best("train_loss", "min") == 0.5  # NaN is skipped, not "best"
    assert run.params is None
    # the columns are strict JSON, so SQLite's own JSON functions can read them
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("SELECT json_valid(metrics) FROM epochs").fetchall() == [(1,), (1,)]


def test_numbers_are_coerced_and_bad_values_rejected(store):
    rid = _new(store)
    store.log_epoch(rid, 0, {"n": 3, "b": True})
    assert dict(store.get_run(rid).history[0].metrics) == {"n": 3.0, "b": 1.0}
    with pytest.raises(StoreError, match=r"metrics\['x'\]: expected a number"):
        store.log_epoch(rid, 1, {"x": "high"})
    with pytest.raises(StoreError, match="spec.f: cannot store a value of type object"):
        store.create_run(name="x", data="d", spec={"f": object()}, settings={}, env={}, params=1)


def test_log_epoch_is_idempotent(store):
    rid = _new(store)
    store.log_epoch(rid, 0, {"val_loss": 1.0})
    store.log_epoch(rid, 1, {"val_loss": 0.8})
    store.log_epoch(rid, 1, {"val_loss": 0.7, "val_acc": 0.6})  # resumed: epoch 1 again
    run = store.get_run(rid)
    assert [(e.epoch, dict(e.metrics)) for e in run.history] == [
        (0, {"val_loss": 1.0}),
        (1, {"val_loss": 0.7, "val_acc": 0.6}),
    ]


def test_unknown_run(store, tmp_path):
    msg = r"run 'r0000dead' not found in .*runs-root; list runs with `archlab runs`"
    with pytest.raises(StoreError, match=msg):
        store.get_run("r0000dead")  # before the database exists
    assert store.list_runs() == []
    assert not store.root.exists()  # reading does not create the store
    _new(store)
    for call in (
        lambda: store.get_run("r0000dead"),
        lambda: store.log_epoch("r0000dead", 0, {"a": 1.0}),
        lambda: store.set_status("r0000dead", "finished"),
        lambda: store.delete_run("r0000dead"),
    ):
        with pytest.raises(StoreError, match="not found"):
            call()


def test_delete_removes_record_epochs_and_artifacts(store):
    keep, gone = _new(store), _new(store)
    store.log_epoch(gone, 0, {"a": 1.0})
    folder = store.run_dir(gone)
    assert folder == store.root / "runs" / gone and folder.is_dir()
    (folder / "spec.yaml").write_text("name: x\n")
    store.delete_run(gone)
    assert not folder.exists()
    assert [r.run_id for r in store.list_runs()] == [keep]
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("SELECT count(*) FROM epochs").fetchone() == (0,)


@pytest.mark.parametrize(
    "content", [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 2000]
)
def test_corrupt_file_is_a_store_error(tmp_path, content):
    root = tmp_path / "root"
    root.mkdir()
    (root / "archlab.db").write_bytes(content)
    store = open_store(root)
    with pytest.raises(StoreError) as err:
        store.list_runs()
    message = str(err.value)
    assert str(root / "archlab.db") in message and "move the file aside" in message
    assert "\n" not in message


def test_foreign_sqlite_file_is_refused(tmp_path):
    tmp_path.joinpath("archlab.db")
    with sqlite3.connect(tmp_path / "archlab.db") as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    with pytest.raises(StoreError, match="not an archlab run store"):
        _new(open_store(tmp_path))


def test_schema_is_versioned(store):
    _new(store)
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer archlab"):
        open_store(store.root).list_runs()


def test_threads_share_a_store(store):
    def work(k: int) -> None:
        for _ in range(10):
            rid = _new(store, thread=str(k))
            store.log_epoch(rid, 0, {"k": float(k)})

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runs = store.list_runs()
    assert len(runs) == 40 and all(len(r.history) == 1 for r in runs)


def _forked_writer(root: str) -> None:
    store = _FORK_STORE  # the parent's object, with the parent's connection inside
    assert str(store.root) == root
    rid = _new(store, origin="child")
    store.log_epoch(rid, 0, {"a": 1.0})


_FORK_STORE: SQLiteRunStorage | None = None


@pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX only")
def test_forked_child_opens_its_own_connection(store):
    global _FORK_STORE
    _new(store, origin="parent")  # the parent now holds an open connection
    _FORK_STORE = store
    try:
        proc = multiprocessing.get_context("fork").Process(
            target=_forked_writer, args=(str(store.root),)
        )
        proc.start()
        proc.join(30)
    finally:
        _FORK_STORE = None
    assert proc.exitcode == 0
    _new(store, origin="parent")  # the parent's connection still works
    assert len(store.list_runs(tags={"origin": "child"})) == 1
    assert len(store.list_runs()) == 3


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    # archlab.runs imports no torch (~1.5 s per process): see test_runs_imports_no_torch.
    from archlab.runs import open_store

    root, worker = Path(sys.argv[1]), int(sys.argv[2])
    store = open_store(root)
    (root / f"ready-{worker}").touch()
    while not (root / "go").exists():  # start together, to collide as much as possible
        time.sleep(0.005)
    for i in range(25):
        rid = store.create_run(name=f"w{worker}-{i}", data="digits", spec={"i": i},
                               settings={}, env={}, params=i, tags={"worker": str(worker)})
        for epoch in range(5):
            store.log_epoch(rid, epoch, {"loss": 1.0 / (epoch + 1), "worker": worker})
        store.set_status(rid, "finished", duration_s=0.1)
    """
)


def test_concurrent_writer_processes(tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(k)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for k in range(4)
    ]
    try:
        deadline = time.time() + 60
        while not all((root / f"ready-{k}").exists() for k in range(4)):
            assert time.time() < deadline, "writers did not start"
            assert all(p.poll() is None for p in procs), [p.communicate()[0] for p in procs]
            time.sleep(0.01)
        (root / "go").touch()
        outputs = [p.communicate(timeout=60)[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * 4, outputs

    runs = open_store(root).list_runs()
    assert len(runs) == 100 and len({r.run_id for r in runs}) == 100
    assert sorted(r.name for r in runs) == sorted(f"w{w}-{i}" for w in range(4) for i in range(25))
    assert all(r.status == "finished" for r in runs)
    assert all([e.epoch for e in r.history] == list(range(5)) for r in runs)
    with sqlite3.connect(root / "archlab.db") as conn:
        assert conn.execute(
            "SELECT count(*), count(DISTINCT run_id || '/' || epoch) FROM epochs"
        ).fetchone() == (500, 500)
    for w in range(4):
        assert len(open_store(root).list_runs(tags={"worker": str(w)})) == 25


def test_locked_store_is_retried_then_reported(store, monkeypatch):
    rid = _new(store)
    monkeypatch.setattr(SQLiteRunStorage, "busy_timeout_s", 0.01)
    fast = open_store(store.root)  # a second handle whose lock waits are short
    blocker = sqlite3.connect(store.db_path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock...
    threading.Timer(0.3, lambda: blocker.execute("COMMIT")).start()
    fast.log_epoch(rid, 0, {"a": 1.0})  # ...and is waited out by retrying
    assert len(store.get_run(rid).history) == 1

    monkeypatch.setattr(SQLiteRunStorage, "retries", 2)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="locked"):
            fast.log_epoch(rid, 1, {"a": 1.0})
    finally:
        blocker.execute("COMMIT")
        blocker.close()


def test_store_pickles_to_a_fresh_connection(store):
    rid = _new(store)
    copy = pickle.loads(pickle.dumps(store))
    assert copy.root == store.root and copy.get_run(rid).run_id == rid


def test_records_are_hashable(store):
    rid = _new(store)
    store.log_epoch(rid, 0, {"a": 1.0})
    a, b = store.get_run(rid), store.get_run(rid)
    assert a == b and len({a, b}) == 1 and len({a.history[0], b.history[0]}) == 1


def test_runs_imports_no_torch():
    code = "import sys, archlab.runs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("module", ["_artifacts", "_base", "_factory", "_lock", "_records", "_sqlite"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    mod = importlib.import_module(f"archlab.runs.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
