"""A run store written by archlab before the reorganisation into subpackages (commit
b0ebc7d; made by tests/fixtures/make_store_v0.py) still lists, shows, evaluates and resumes.

The fixture (tests/fixtures/store-v0/, ~0.5 MB) holds four runs of small models on digits:

    rde928f90  zoo:mlp, hidden=32, 2 epochs, finished (with a test report)
    r84af82dc  zoo:mlp, hidden=32, 30 epochs, batch 16: Ctrl-C in epoch 12 (step 43), "interrupted"
    r31ce1b7d  zoo:mlp, hidden=32, 30 epochs, batch 16: SIGKILL after epoch 8, left "running"
    r85b9cace  zoo:vae, hidden=32, latent=4, 2 epochs, finished
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archlab.cli import app
from archlab.core import StoreError
from archlab.runs import open_store
from archlab.train import evaluate, kept_epoch, resume, run_state

FIXTURE = Path(__file__).parent / "fixtures" / "store-v0"
FINISHED, INTERRUPTED, KILLED, VAE = "rde928f90", "r84af82dc", "r31ce1b7d", "r85b9cace"
runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A copy of the fixture (resuming writes to it), as the default store."""
    root = tmp_path / "store-v0"
    shutil.copytree(FIXTURE, root, symlinks=True)
    monkeypatch.setenv("ARCHLAB_HOME", str(root))
    return root


def _cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.stdout


def test_the_fixture_is_small_and_complete():
    size = sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file())
    assert size < 1_000_000
    assert {p.name for p in (FIXTURE / "runs").iterdir()} == {FINISHED, INTERRUPTED, KILLED, VAE}


def test_old_runs_list_with_their_status(home):
    store = open_store(home)
    runs = {r.run_id: r for r in store.list_runs()}
    assert set(runs) == {FINISHED, INTERRUPTED, KILLED, VAE}
    assert {rid: run_state(store, r).status for rid, r in runs.items()} == {
        FINISHED: "finished", INTERRUPTED: "interrupted", KILLED: "stopped", VAE: "finished"}
    assert run_state(store, runs[KILLED]).resumable and run_state(store, runs[INTERRUPTED]).resumable
    out = _cli("runs")
    line = next(x for x in out.splitlines() if KILLED in x)
    assert "stopped (resume with --resume)" in line and "acc 0.9222" in line
    assert "loss 35.3608" in next(x for x in out.splitlines() if VAE in x)
    stopped = _cli("runs", "--status", "stopped")
    assert KILLED in stopped and INTERRUPTED not in stopped and FINISHED not in stopped


def test_old_runs_show_history_kept_epoch_and_report(home):
    out = _cli("show", FINISHED)
    assert f"run {FINISHED}" in out and "status finished" in out and "test confusion matrix" in out
    assert "kept: the epoch of best val_acc" in out
    out = _cli("show", INTERRUPTED[:5])
    assert "status interrupted" in out
    assert kept_epoch(open_store(home).get_run(INTERRUPTED), home / "runs" / INTERRUPTED) == 8
    row = next(x for x in out.splitlines() if re.match(r"│\s+8 │", x))
    assert "│ *    │" in row
    assert "0.00167" in row  # lr with significant digits (0.0017 with four decimals)


def test_old_runs_evaluate_to_their_stored_test_metrics(home):
    store = open_store(home)
    record = store.get_run(FINISHED)
    result = evaluate(FINISHED)
    assert result["acc"] == pytest.approx(record.test_metrics["acc"], abs=1e-6)
    assert result["loss"] == pytest.approx(record.test_metrics["loss"], rel=1e-5)
    vae = evaluate(VAE)
    assert vae["loss"] == pytest.approx(store.get_run(VAE).test_metrics["loss"], rel=1e-4)


@pytest.mark.parametrize("run_id, done", [(INTERRUPTED, 11), (KILLED, 8)])
def test_old_runs_resume_to_completion(home, run_id, done, tmp_path):
    store = open_store(home)
    before = store.get_run(run_id)
    assert len(before.history) == done
    outside = tmp_path / "outside.json"
    outside.write_text("precious")
    (home / "runs" / run_id / "test_report.json").symlink_to(outside)  # planted: never written through
    run = resume(run_id, quiet=True)
    assert outside.read_text() == "precious"
    assert not (home / "runs" / run_id / "test_report.json").is_symlink()
    after = store.get_run(run_id)
    assert after.status == "finished" and [e.epoch for e in after.history] == list(range(1, 31))
    assert after.history[: done] == before.history[: done]  # the old epochs are kept as they were
    assert run.test_metrics["acc"] > 0.9 and after.test_metrics["acc"] == run.test_metrics["acc"]
    assert not run_state(store, after).resumable


def test_a_tampered_old_checkpoint_is_damaged_not_missing(home):
    path = home / "runs" / KILLED / "checkpoint.json"
    meta = json.loads(path.read_text())
    del meta["state"]["epoch"]
    path.write_text(json.dumps(meta))
    with pytest.raises(StoreError) as err:
        resume(KILLED, quiet=True)
    msg = str(err.value)
    assert "the checkpoint is damaged (state.epoch: missing)" in msg and "\n" not in msg
    path.write_text(path.read_text()[:1000])  # truncated
    with pytest.raises(StoreError, match=f"run {KILLED} cannot be resumed: .*the checkpoint is damaged") as err:
        resume(KILLED, quiet=True)
    assert "no checkpoint" not in str(err.value)
    line = next(x for x in _cli("runs").splitlines() if KILLED in x)
    assert "stopped (checkpoint damaged; see archlab show)" in line
    assert "the checkpoint is damaged" in _cli("show", KILLED)


def test_a_lock_linked_outside_stops_resume_before_any_work(home, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    lock = home / "runs" / KILLED / ".lock"
    lock.unlink()
    lock.symlink_to(outside)
    with pytest.raises(StoreError, match=f"run {KILLED} cannot be resumed: .*is a symbolic link") as err:
        resume(KILLED, quiet=True)
    assert "\n" not in str(err.value) and outside.read_text() == "precious"
    assert open_store(home).get_run(KILLED).message == ""  # nothing was recorded
    line = next(x for x in _cli("runs").splitlines() if KILLED in x)
    assert "stopped (cannot resume; see archlab show)" in line
