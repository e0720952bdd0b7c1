"""A store that never trusts its own files: no reads or writes through links or outside the
store, only regular files, with a size limit (issue 16 #8, #9; issue 15 #13)."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from archlab.core import StoreError, TrainingError
from archlab.runs import (
    LOCK_FILE,
    TEST_REPORT,
    is_alive,
    open_store,
    read_json,
    read_text,
    run_lock,
    write_text,
)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the store that nothing may touch."""
    path = tmp_path / "outside.txt"
    path.write_text("precious\n")
    return path


def _run(store) -> str:
    return store.create_run(name="m", data="digits", spec={}, settings={}, env={}, params=None)


def test_a_lock_linked_outside_is_refused_and_the_target_untouched(tmp_path, outside):
    store = open_store(tmp_path / "store")
    rid = _run(store)
    folder = store.run_dir(rid)
    (folder / LOCK_FILE).symlink_to(outside)
    with pytest.raises(StoreError, match=r"\.lock: is a symbolic link; the run store never reads or writes through"):
        with run_lock(folder, rid):
            pass
    assert outside.read_text() == "precious\n"
    assert not is_alive(folder)  # a link is nobody's lock


def test_the_lock_is_exclusive_and_holds_the_pid(tmp_path):
    with run_lock(tmp_path, "r00000001"):
        assert (tmp_path / LOCK_FILE).read_text() == str(os.getpid())
        assert is_alive(tmp_path)
        with pytest.raises(TrainingError, match="being trained by another process"):
            with run_lock(tmp_path, "r00000001"):
                pass
    assert not is_alive(tmp_path)


def test_a_report_linked_outside_is_replaced_never_written_through(tmp_path, outside):
    report = tmp_path / TEST_REPORT
    report.symlink_to(outside)
    write_text(report, '{"confusion": [[1]]}')
    assert outside.read_text() == "precious\n"
    assert not report.is_symlink() and json.loads(report.read_text()) == {"confusion": [[1]]}


def test_reads_refuse_links_devices_fifos_and_oversized_files(tmp_path, outside):
    link = tmp_path / "link.json"
    link.symlink_to(outside)
    with pytest.raises(StoreError, match="is a symbolic link"):
        read_text(link)
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    with pytest.raises(StoreError, match="is a symbolic link"):
        read_json(zero)
    with pytest.raises(StoreError, match="is not a regular file \\(a character device\\)"):
        read_json("/dev/zero")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(StoreError, match="is not a regular file \\(a FIFO\\)"):
        read_json(fifo)  # refused at once, never blocks waiting for a writer
    big = tmp_path / "big.json"
    big.write_text("[" + "0," * 600 + "0]")
    with pytest.raises(StoreError, match="larger than the 1,000 bytes"):
        read_json(big, limit=1000, expect=list)
    assert read_json(big, expect=list)[:2] == [0, 0]
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")


@pytest.mark.parametrize("text, match", [
    ('{"confusion": [[1, 2], [3', "damaged JSON"),
    ("[1, 2, 3]", "expected a JSON object. Received: list"),
    (b"\xff\xfe{}", "not UTF-8 text"),
])
def test_a_damaged_json_file_is_one_line(tmp_path, text, match):
    path = tmp_path / "report.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(StoreError, match=match) as err:
        read_json(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def _main(monkeypatch, capsys, home: Path, *args: str) -> tuple[int, str, str]:
    """The real entry point in-process (errors become one line, exit 2)."""
    import archlab.cli._app as cli

    monkeypatch.setenv("ARCHLAB_HOME", str(home))
    monkeypatch.setattr(sys, "argv", ["archlab", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def test_show_of_an_escaping_id_stored_in_the_database_creates_nothing_outside(tmp_path, monkeypatch, capsys):
    """A row whose id is `../../outside/evil`: listing skips it with a warning, showing it is
    refused, and no folder appears outside the store."""
    home = tmp_path / "a" / "store"
    store = open_store(home)
    good, bad = _run(store), _run(store)
    with sqlite3.connect(store.db_path) as conn:
        conn.execute("UPDATE runs SET run_id = '../../outside/evil' WHERE run_id = ?", (bad,))
    conn.close()
    code, out, err = _main(monkeypatch, capsys, home, "runs")
    assert code == 0, err
    assert good in out and "evil" not in out
    assert "warning: run '../../outside/evil'" in err and "damaged record" in err
    code, out, err = _main(monkeypatch, capsys, home, "show", "../../outside/evil")
    assert code == 2 and "is not a run id" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "outside").exists() and not (tmp_path / "a" / "outside").exists()


def test_show_does_not_block_on_a_fifo_report(tmp_path, monkeypatch, capsys):
    """`test_report.json` as a FIFO: `show` says so (a warning) and prints the rest."""
    home = tmp_path / "store"
    store = open_store(home)
    rid = _run(store)
    store.set_status(rid, "finished", test_metrics={"acc": 0.5})
    os.mkfifo(store.run_dir(rid) / TEST_REPORT)
    code, out, err = _main(monkeypatch, capsys, home, "show", rid)
    assert code == 0, err
    assert "test      acc 0.5000" in out and "is not a regular file (a FIFO)" in err
