"""`archlab runs` and `archlab show` on hand-made records: statuses a person can ask for,
resumable or not, the kept epoch, learning rates, damaged reports. The rules live in
archlab.runs / archlab.train (tested here through them); the commands only format."""

from __future__ import annotations

import json
import re

import pytest
from clirun import run_main as _main
from typer.testing import CliRunner

from archlab.cli import app
from archlab.core import TrainingError
from archlab.runs import TEST_REPORT, open_store, run_lock, write_text
from archlab.runs._records import _example_record
from archlab.train import check_resumable, kept_epoch, primary_metric, run_state

runner = CliRunner()


def _cli(*args: str) -> tuple[str, str]:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.stdout, result.stderr


def _run(store, history=(), status=None, task="classify", **kw):
    rid = store.create_run(name="mlp", data="digits", spec={"name": "mlp"}, settings={"epochs": 5},
                           env={}, params=10, tags={"task": task})
    for i, metrics in enumerate(history, start=1):
        store.log_epoch(rid, i, metrics)
    if status:
        store.set_status(rid, status, **kw)
    return rid


def test_a_killed_run_without_checkpoint_is_listed_as_starting_over(archlab_home):
    store = open_store(archlab_home)
    rid = _run(store, [{"val_acc": 0.5}])  # recorded, then killed before its first checkpoint
    state = run_state(store, store.get_run(rid))
    assert (state.status, state.resumable) == ("stopped", True)
    assert state.hint == "resume with --resume: starts over"
    out, _ = _cli("runs", "--status", "stopped")
    line = next(x for x in out.splitlines() if rid in x)
    assert "stopped (resume with --resume: starts over)" in line


def test_a_run_being_trained_is_running_and_not_resumable(archlab_home):
    store = open_store(archlab_home)
    rid = _run(store)
    with run_lock(store.run_dir(rid), rid):
        state = run_state(store, store.get_run(rid))
        assert (state.status, state.resumable, state.hint) == ("running", False, None)
        with pytest.raises(TrainingError, match="being trained by another process"):
            check_resumable(store.get_run(rid), store.run_dir(rid))
        out, _ = _cli("runs", "--status", "running")
        assert rid in out
        assert rid not in _cli("runs", "--status", "stopped")[0]


def test_an_unknown_status_is_one_line_in_the_users_words(monkeypatch, capsys):
    code, _, err = _main(monkeypatch, capsys, "runs", "--status", "done")
    assert code == 2 and err.count("\n") == 1
    assert "unknown run status 'done'. Expected one of running, stopped, finished, failed, interrupted, pruned" in err
    assert "list_runs" not in err


def test_show_marks_the_kept_epoch_and_prints_lr_with_significant_digits(archlab_home):
    store = open_store(archlab_home)
    rid = _run(store, [{"val_acc": 0.5, "lr": 2e-3}, {"val_acc": 0.9, "lr": 1.3e-4},
                       {"val_acc": 0.8, "lr": 7.7e-11}], status="finished")
    out, _ = _cli("show", rid)
    assert "kept: the epoch of best val_acc" in out
    rows = {int(m.group(1)): line for line in out.splitlines() if (m := re.match(r"│\s+(\d+) │", line))}
    assert "*" in rows[2] and "*" not in rows[1] + rows[3]
    assert "0.002" in rows[1] and "0.00013" in rows[2] and "7.7e-11" in rows[3]
    assert "0.0000" not in out


def test_kept_epoch_follows_the_trainer_rule_or_its_checkpoint(tmp_path):
    ties = _example_record([{"val_acc": 0.5}, {"val_acc": 0.9}, {"val_acc": 0.9}], tags={"task": "classify"})
    assert kept_epoch(ties) == 2  # a tie keeps the earlier epoch (the trainer's rule)
    losses = _example_record([{"val_loss": 0.9}, {"val_loss": float("nan")}, {"val_loss": 0.4}])
    assert primary_metric(losses) == ("loss", "min") and kept_epoch(losses) == 3
    (tmp_path / "checkpoint.json").write_text(json.dumps({"state": {"best_epoch": 3}}))
    assert kept_epoch(ties, tmp_path) == 3  # what the run itself recorded wins
    assert kept_epoch(_example_record([{"train_loss": 1.0}])) is None
    assert primary_metric(_example_record([], tags={"task": "regress"})) == ("r2", "max")


@pytest.mark.parametrize("content, problem", [
    ('{"confusion": [[1, 0], [0', "damaged JSON"),
    ("[[1, 0], [0, 1]]", "expected a JSON object"),
    ('{"confusion": "many"}', None),
    ('{"confusion": [[1, 0], [0]]}', None),
])
def test_a_damaged_test_report_does_not_break_show(archlab_home, content, problem):
    store = open_store(archlab_home)
    rid = _run(store, [{"val_acc": 0.5}], status="finished", test_metrics={"acc": 0.5})
    write_text(store.run_dir(rid) / TEST_REPORT, content)
    out, err = _cli("show", rid)
    assert "test      acc 0.5000" in out and "files" in out and "confusion matrix" not in out
    if problem:
        assert "warning: test report:" in err and problem in err
    else:
        assert err == ""


def test_docstring_examples_run():
    import doctest

    import archlab.train._runinfo as runinfo

    result = doctest.testmod(runinfo)
    assert result.failed == 0 and result.attempted > 0


def test_a_run_folder_linked_out_of_the_store_never_breaks_the_listing(archlab_home, tmp_path):
    store = open_store(archlab_home)
    good, bad = _run(store), _run(store)
    (archlab_home / "runs").mkdir(exist_ok=True)
    (tmp_path / "elsewhere").mkdir()
    (archlab_home / "runs" / bad).symlink_to(tmp_path / "elsewhere")
    state = run_state(store, store.get_run(bad))
    assert (state.status, state.resumable, state.reason) == ("stopped", False, "unsafe")
    out, _ = _cli("runs")
    assert good in out and "stopped (cannot resume; see archlab show)" in next(x for x in out.splitlines() if bad in x)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_runs_with_nothing_to_list_says_so(monkeypatch, capsys) -> None:
    code, out, _ = _main(monkeypatch, capsys, "runs")
    assert code == 0 and out.startswith("no runs in ") and "archlab train SPEC" in out
    code, out, _ = _main(monkeypatch, capsys, "runs", "--status", "stopped")
    assert code == 0 and "no runs with status 'stopped'" in out
