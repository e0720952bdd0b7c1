"""Choosing the run store (ARCHLAB_STORE, --store, open_store) and what a bad PostgreSQL URL
does: one line naming the URL with its password masked, exit 2, nothing written anywhere, and
a bounded connect timeout. Against a real server (tests/pgserver.py)."""

from __future__ import annotations

import pytest
from clirun import run_main as _main

from archlab.core import StoreError
from archlab.runs import PostgresRunStorage, SQLiteRunStorage, masked_url, open_store

BAD_PASSWORD = "Wr0ngPassw0rd"


def _tables(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'archlab%'")]


def test_the_store_is_chosen_by_url_env_or_folder(monkeypatch, tmp_path, archlab_home):
    pg = open_store("postgresql://ann:secret@db.example/runs")
    assert isinstance(pg, PostgresRunStorage) and pg.root == archlab_home  # artifacts under ARCHLAB_HOME
    assert "secret" not in repr(pg) and "secret" not in pg.location
    monkeypatch.setenv("ARCHLAB_STORE", "postgresql://ann:secret@db.example/runs")
    assert isinstance(open_store(), PostgresRunStorage)
    monkeypatch.setenv("ARCHLAB_STORE", str(tmp_path / "elsewhere"))
    assert isinstance(open_store(), SQLiteRunStorage) and open_store().root == tmp_path / "elsewhere"
    with pytest.raises(StoreError, match=r"expected a postgresql:// URL or a folder"):
        open_store("mysql://ann:secret@db/runs")
    assert masked_url("postgresql://ann@db/runs") == "postgresql://ann@db/runs"


def test_a_store_pickles_as_its_location(postgres_url, tmp_path):
    import pickle

    store = PostgresRunStorage(postgres_url, tmp_path)
    rid = store.create_run(name="m", data="digits", spec={}, settings={}, env={}, params=1)
    again = pickle.loads(pickle.dumps(store))
    assert (again.url, again.root) == (postgres_url, tmp_path) and again.get_run(rid).name == "m"


def test_a_wrong_password_is_one_line_without_the_password_and_writes_nothing(postgres_server, postgres_url,
                                                                             archlab_home):
    url = postgres_url.replace(":pg-test-pw@", f":{BAD_PASSWORD}@")
    store = open_store(url)
    for call in (store.list_runs, lambda: store.create_run(name="m", data="d", spec={}, settings={}, env={},
                                                          params=None)):
        with pytest.raises(StoreError) as err:
            call()
        text = str(err.value)
        assert "password authentication failed" in text and "\n" not in text
        assert BAD_PASSWORD not in text and "postgresql://archlab:***@127.0.0.1" in text
    assert _tables(postgres_url) == [] and not any(archlab_home.iterdir())


def test_a_server_that_is_not_there_is_one_line(monkeypatch, capsys, archlab_home):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://archlab:{BAD_PASSWORD}@127.0.0.1:{port}/runs"
    code, out, err = _main(monkeypatch, capsys, "runs", "--store", url)
    assert code == 2 and out == ""
    assert err.startswith("error: postgresql://archlab:***@127.0.0.1") and "cannot connect" in err
    assert err.count("\n") == 1 and BAD_PASSWORD not in err
    assert not any(archlab_home.iterdir())


def test_the_connect_timeout_is_bounded(monkeypatch):
    import psycopg

    seen = {}

    def connect(url, **kwargs):
        seen.update(kwargs)
        raise psycopg.OperationalError("connection timeout expired")

    monkeypatch.setattr(psycopg, "connect", connect)
    with pytest.raises(StoreError, match="cannot connect to the run store .connection timeout expired"):
        open_store("postgresql://ann:pw@10.255.255.1/runs").list_runs()
    assert seen["connect_timeout"] == PostgresRunStorage.connect_timeout_s


def test_cli_train_with_a_bad_store_url_exits_2_and_writes_nothing(postgres_url, monkeypatch, capsys,
                                                                 archlab_home):
    url = postgres_url.replace(":pg-test-pw@", f":{BAD_PASSWORD}@")
    code, out, err = _main(monkeypatch, capsys, "train", "zoo:mlp", "--epochs", "1", "--store", url, "-q")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and BAD_PASSWORD not in err
    assert "password authentication failed" in err
    assert _tables(postgres_url) == [] and not (archlab_home / "runs").exists()


def test_cli_runs_and_show_read_a_postgres_store(postgres_url, monkeypatch, capsys):
    store = open_store(postgres_url)
    rid = store.create_run(name="mlp", data="digits", spec={"name": "mlp"}, settings={"epochs": 1}, env={},
                           params=10, tags={"task": "classify"})
    store.log_epoch(rid, 1, {"val_acc": 0.5, "val_loss": 1.0})
    store.set_status(rid, "finished", test_metrics={"acc": 0.5})
    code, out, err = _main(monkeypatch, capsys, "runs", "--store", postgres_url)
    assert code == 0 and rid in out and "pg-test-pw" not in out
    code, out, err = _main(monkeypatch, capsys, "show", rid[:5], "--store", postgres_url)
    assert code == 0 and f"run {rid}" in out
