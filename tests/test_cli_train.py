"""The training commands: train, runs, show, evaluate, and their one-line errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import run_main as _main
from typer.testing import CliRunner

from archlab.cli import app
from archlab.runs import open_store

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.stdout


def _run_id(text: str) -> str:
    match = re.search(r"^run\s+(r[0-9a-f]{8})\b", text, re.MULTILINE)
    assert match, text
    return match.group(1)


@pytest.fixture
def trained(archlab_home) -> tuple[str, str]:
    out = _ok("train", "zoo:mlp", "--data", "digits", "--epochs", "2", "--batch-size", "128", "--quiet")
    return _run_id(out), out


def test_train_prints_test_metrics_and_the_run_id(trained, archlab_home):
    run_id, out = trained
    test_line = next(line for line in out.splitlines() if line.startswith("test"))
    assert re.search(r"loss \d\.\d{4}\s+acc \d\.\d{4}\s+top5 \d\.\d{4}", test_line)
    assert f"archlab show {run_id}" in out
    record = open_store(archlab_home).get_run(run_id)
    assert record.status == "finished" and len(record.history) == 2
    assert f"acc {record.test_metrics['acc']:.4f}" in test_line


def test_runs_lists_the_run(trained):
    run_id, _ = trained
    out = _ok("runs")
    line = next(line for line in out.splitlines() if run_id in line)
    assert "mlp" in line and "digits" in line and "finished" in line and "acc 0." in line
    assert run_id not in _ok("runs", "--status", "failed")


def test_show_prints_history_and_confusion_matrix(trained):
    run_id, _ = trained
    out = _ok("show", run_id[:6])
    assert f"run {run_id}" in out and "status finished" in out
    assert "epochs=2" in out and "batch_size=128" in out
    assert "history" in out and "train_loss" in out and "val_acc" in out
    assert re.search(r"│\s+1 │", out) and re.search(r"│\s+2 │", out)  # one row per epoch
    assert "test confusion matrix" in out
    assert re.search(r"^test\s+loss", out, re.MULTILINE)


def test_evaluate_prints_the_same_test_metrics(trained):
    run_id, train_out = trained
    out = _ok("evaluate", run_id)
    assert out.startswith(f"{run_id} on digits (test):")
    acc = re.search(r"acc (\d\.\d{4})", train_out).group(1)
    assert f"acc {acc}" in out
    assert "(val)" in _ok("evaluate", run_id, "--split", "val")


def test_train_settings_and_set_reach_the_run(archlab_home):
    out = _ok("train", "zoo:mlp", "--epochs", "1", "--set", "hidden=16", "--optimizer", "sgd",
              "--lr", "0.05", "--seed", "7", "--quiet")
    record = open_store(archlab_home).get_run(_run_id(out))
    assert record.settings["optimizer"] == "sgd" and record.settings["lr"] == 0.05
    assert record.settings["seed"] == 7 and record.settings["epochs"] == 1
    assert record.spec["vars"]["hidden"] == 16 and record.params < 10_000


def test_train_without_quiet_shows_epoch_lines(archlab_home):
    result = runner.invoke(app, ["train", "zoo:mlp", "--epochs", "2", "--batch-size", "256"])
    assert result.exit_code == 0, result.output
    assert "epoch 1/2" in result.output and "epoch 2/2" in result.output and "samples/s" in result.output


@pytest.mark.parametrize("args, words", [
    (["train", "no-such-spec.yaml"], "no-such-spec.yaml"),
    (["train", "zoo:nosuch"], "nosuch"),
    (["train", "zoo:mlp", "--optimizer", "adamx"], "optimizer must be one of sgd, adam, adamw"),
    (["train", "zoo:mlp", "--epochs", "0"], "epochs must be >= 1"),
    (["train", "zoo:mlp", "--precision", "fp8"], "precision must be one of"),
    (["train", "zoo:mlp", "--data", "digitz"], "digitz"),
    (["train", "zoo:mlp", "--set", "hiden=3"], "Did you mean 'hidden'"),
    (["train", "zoo:mlp", "--data", "digits", "--target", "y"], "target"),
    (["train"], "--resume"),
    (["train", "--resume", "rdeadbeef"], "rdeadbeef"),
    (["show", "rdeadbeef"], "rdeadbeef"),
    (["evaluate", "rdeadbeef"], "rdeadbeef"),
])
def test_errors_are_one_line_exit_2(monkeypatch, capsys, args, words):
    code, out, err = _main(monkeypatch, capsys, *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert words in err
    assert "Traceback" not in err


def test_missing_mnist_folder_names_the_path(monkeypatch, capsys, tmp_path):
    missing = tmp_path / "mnist-files"
    code, _, err = _main(monkeypatch, capsys, "train", "zoo:cnn", "--data", f"mnist:{missing}")
    assert code == 2 and err.count("\n") == 1
    assert str(missing) in err and "nothing is downloaded" in err


def test_divergence_is_one_line_with_the_fix(monkeypatch, capsys, archlab_home):
    code, _, err = _main(monkeypatch, capsys, "train", "zoo:mlp", "--lr", "1e6", "--epochs", "2", "--quiet")
    # The run id comes first, as soon as the run is recorded; then the error, on one line.
    started, error = err.splitlines()
    [record] = open_store(archlab_home).list_runs()
    assert started.startswith(f"run   {record.run_id}  recorded") and f"--resume {record.run_id}" in started
    assert code == 2 and err.count("\n") == 2
    assert "--lr" in error and "--grad-clip" in error and "epoch 1, step" in error
    assert record.status == "failed"


def test_resume_of_a_finished_run_is_refused(monkeypatch, capsys, trained):
    run_id, _ = trained
    code, _, err = _main(monkeypatch, capsys, "train", "--resume", run_id)
    assert code == 2 and "already finished" in err


def test_the_installed_command_reports_errors_in_one_line(tmp_path):
    """A real process: exit status 2, one line on stderr, nothing on stdout."""
    env = {**os.environ, "ARCHLAB_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    missing = tmp_path / "nowhere"
    proc = subprocess.run([sys.executable, "-m", "archlab", "train", "zoo:cnn", "--data", f"mnist:{missing}"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: mnist") and proc.stderr.count("\n") == 1
    assert str(missing) in proc.stderr
    assert not (tmp_path / "archlab-runs").exists()


def test_training_on_a_csv_says_which_column_is_the_target(tmp_path, archlab_home):
    # Issue "Nothing silent" #2: the default target (the last column) is stated, not silent.
    rows = ["a,b,color,label"] + [f"{i / 40:.3f},{(i * 7 % 40) / 40:.3f},{'red' if i % 2 else 'blue'},"
                                  f"{'x' if i % 2 else 'y'}" for i in range(40)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    result = runner.invoke(app, ["train", "zoo:mlp", "--data", f"csv:{tmp_path / 't.csv'}", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "target: column 'label'" in result.output and "the last column" in result.output
    assert "categorical (one-hot): color" in result.output
