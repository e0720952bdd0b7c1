"""Runs open in the tools people already use: TensorBoard event files written by the trainer,
`archlab runs export --mlflow` into an MLflow tracking store, studies read by optuna-dashboard.
Every metric read back from those tools is compared with the run store: zero mismatches."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import archlab.train._progress as progress_module
import archlab.train._tensorboard as tensorboard_module
from archlab.cli import app
from archlab.core import StoreError
from archlab.runs import export_mlflow, open_store
from archlab.train import TensorBoardLog, fit, resume

runner = CliRunner()

TINY = {
    "name": "tiny",
    "input": {"shape": [1, 8, 8]},
    "vars": {"width": 8},
    "model": ["flatten", {"linear": "$width"}, "relu", {"linear": 10}],
}


@pytest.fixture
def store(tmp_path):
    return open_store(tmp_path / "store")


def _interrupt_at(monkeypatch, at: int) -> None:
    """Ctrl-C (SIGINT to ourselves) after the `at`-th optimizer step of this process."""
    count = [0]

    class Interrupting(progress_module.EpochProgress):
        def step(self, step, loss):
            super().step(step, loss)
            count[0] += 1
            if count[0] == at:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)

    monkeypatch.setattr(progress_module, "EpochProgress", Interrupting)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _stored(store, run_id) -> dict[str, dict[int, float]]:
    """tag -> {epoch: value}, from the run store."""
    out: dict[str, dict[int, float]] = {}
    for e in store.get_run(run_id).history:
        for key, value in e.metrics.items():
            if key != "epoch":
                out.setdefault(key, {})[e.epoch] = value
    return out


# -------------------------------------------------------------------------- TensorBoard

def _events(folder: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list[str]]]:
    """Scalars (tag -> [(step, value)]) and texts, read back as TensorBoard's server reads them."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    scalars, texts = {}, {}
    for tag in acc.Tags()["tensors"]:
        plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
        events = acc.Tensors(tag)
        if plugin == "scalars":
            scalars[tag] = [(e.step, tensor_util.make_ndarray(e.tensor_proto).item()) for e in events]
        elif plugin == "text":
            texts[tag] = [tensor_util.make_ndarray(e.tensor_proto).item().decode() for e in events]
    return scalars, texts


def _mismatches(scalars: dict[str, list[tuple[int, float]]], stored: dict[str, dict[int, float]]) -> list:
    """Every difference between the event files and the store (empty when they agree)."""
    bad = [("missing tag", tag) for tag in stored if tag not in scalars]
    bad += [("extra tag", tag) for tag in scalars if tag not in stored]
    for tag, points in scalars.items():
        steps = [s for s, _ in points]
        if len(steps) != len(set(steps)):
            bad.append(("duplicated steps", tag, steps))
        want = stored.get(tag, {})
        if sorted(set(steps)) != sorted(want):
            bad.append(("steps", tag, steps, sorted(want)))
        bad += [("value", tag, s, v, want[s]) for s, v in points if s in want and not _same(v, want[s])]
    return bad


def test_every_epoch_metric_is_a_scalar_and_the_spec_and_settings_are_text(store):
    run = fit(TINY, data="digits", epochs=3, lr=0.01, store=store, quiet=True)
    scalars, texts = _events(run.directory)
    stored = _stored(store, run.run_id)
    assert {"train_loss", "val_loss", "val_acc", "lr", "seconds"} <= set(stored)
    assert _mismatches(scalars, stored) == []  # float64 in the events: exactly the stored values
    assert all(len(points) == 3 for points in scalars.values())
    [spec], [settings] = texts["spec/text_summary"], texts["settings/text_summary"]
    assert "name: tiny" in spec and "width: 8" in spec
    assert "| lr | 0.01 |" in settings and "| epochs | 3 |" in settings


def test_a_resumed_run_appends_without_duplicating_epochs(store, monkeypatch):
    settings = dict(data="digits", epochs=3, batch_size=64, seed=3, store=store, quiet=True)
    _interrupt_at(monkeypatch, 27)  # mid-epoch 2 (20 steps per epoch): epoch 1 is logged
    with pytest.raises(KeyboardInterrupt):
        fit(TINY, **settings)
    [record] = store.list_runs(status="interrupted")
    folder = store.run_dir(record.run_id)
    scalars, _ = _events(folder)
    assert {tag: [s for s, _ in points] for tag, points in scalars.items()}["val_loss"] == [1]

    monkeypatch.undo()
    resume(record.run_id, store=store, quiet=True)
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2  # one per process
    scalars, texts = _events(folder)
    assert _mismatches(scalars, _stored(store, record.run_id)) == []
    assert [s for s, _ in scalars["val_loss"]] == [1, 2, 3]
    assert len(texts["spec/text_summary"]) == 1  # written once, by the first process


def test_epochs_logged_after_the_last_checkpoint_are_dropped_when_the_run_resumes(tmp_path):
    """A process killed after logging epoch 3 but before its checkpoint: the resumed process
    trains epoch 3 again, and TensorBoard shows only the new one."""
    with TensorBoardLog(tmp_path, first_epoch=1, spec="name: x", settings={}) as log:
        for epoch in (1, 2, 3):
            log.epoch({"epoch": epoch, "val_loss": 1.0 / epoch})
    time.sleep(1.01)  # event files are named by the second they were opened in
    with TensorBoardLog(tmp_path, first_epoch=3, spec="name: x", settings={}) as log:
        for epoch in (3, 4):
            log.epoch({"epoch": epoch, "val_loss": 10.0 + epoch})
    scalars, texts = _events(tmp_path)
    assert scalars["val_loss"] == [(1, 1.0), (2, 0.5), (3, 13.0), (4, 14.0)]
    assert len(texts["spec/text_summary"]) == 1


GAN = {
    "name": "tiny-gan",
    "input": {"shape": [1, 8, 8]},
    "vars": {"latent": 3, "hidden": 8},
    "generator": [{"linear": "$hidden"}, "relu", {"linear": 64}, "sigmoid", {"reshape": [1, 8, 8]}],
    "discriminator": ["flatten", {"linear": "$hidden"}, "relu", {"linear": 1}],
    "train": {"epochs": 2, "batch_size": 256},
}


def test_the_generative_loop_writes_the_same_event_files(store):
    run = fit(GAN, data="digits", store=store, quiet=True)
    scalars, texts = _events(run.directory)
    assert _mismatches(scalars, _stored(store, run.run_id)) == []
    assert len(scalars) > 2 and all(len(points) == 2 for points in scalars.values())
    assert "tiny-gan" in texts["spec/text_summary"][0]


def _absent():
    raise ImportError("TensorBoard logging requires TensorBoard version 1.15 or above")


def _broken():
    raise TypeError("Descriptors cannot be created directly.")


@pytest.mark.parametrize(("import_", "says"), [(_absent, "tensorboard is not installed"),
                                               (_broken, "tensorboard cannot be imported (TypeError")])
def test_without_tensorboard_a_run_trains_and_says_so_once(store, monkeypatch, capsys, import_, says):
    monkeypatch.setattr(tensorboard_module, "_writer_class", import_)
    monkeypatch.setattr(tensorboard_module, "_MISSING_NOTED", False)
    first = fit(TINY, data="digits", epochs=1, store=store)
    second = fit(TINY, data="digits", epochs=1, store=store)
    err = capsys.readouterr().err
    assert err.count(says) == 1 and err.count("no TensorBoard event files") == 1
    assert first.status == second.status == "finished"
    assert not list(first.directory.glob("events.out.tfevents.*"))


# ------------------------------------------------------------------------------- MLflow


def _mlflow_client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _mlflow_runs(uri: str) -> dict[str, object]:
    """archlab run id -> MLflow run, in the `archlab` experiment."""
    client = _mlflow_client(uri)
    experiment = client.get_experiment_by_name("archlab")
    return {r.data.tags["archlab.run_id"]: r for r in client.search_runs([experiment.experiment_id])}


def _mlflow_mismatches(uri: str, store, run_id: str) -> list:
    client = _mlflow_client(uri)
    mlflow_run = _mlflow_runs(uri)[run_id]
    record = store.get_run(run_id)
    exported = {key: [(m.step, m.value) for m in client.get_metric_history(mlflow_run.info.run_id, key)]
                for key in mlflow_run.data.metrics}
    last = max(e.epoch for e in record.history)
    stored = _stored(store, run_id) | {f"test_{k}": {last: v} for k, v in record.test_metrics.items()}
    return _mismatches(exported, stored)


def test_export_copies_params_metrics_and_test_metrics_with_zero_mismatches(store, tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHLAB_HOME", str(store.root))
    a = fit(TINY, data="digits", epochs=3, store=store, quiet=True)
    b = fit(TINY, data="digits", epochs=2, vars={"width": 12}, lr=0.02, store=store, quiet=True)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = runner.invoke(app, ["runs", "export", "--mlflow", uri])
    assert result.exit_code == 0, result.output
    assert "exported 2 runs" in result.output and "2 new" in result.output

    runs = _mlflow_runs(uri)
    assert set(runs) == {a.run_id, b.run_id}
    for run in (a, b):
        assert _mlflow_mismatches(uri, store, run.run_id) == []
    params, tags = runs[b.run_id].data.params, runs[b.run_id].data.tags
    assert params["lr"] == "0.02" and params["epochs"] == "2" and params["var.width"] == "12"
    assert params["num_params"] == str(store.get_run(b.run_id).params) and params["data"] == "digits"
    assert tags["archlab.task"] == "classify" and "name: tiny" in tags["mlflow.note.content"]
    assert runs[b.run_id].info.status == "FINISHED" and runs[b.run_id].info.run_name == "tiny"


def test_exporting_again_updates_the_same_runs_and_duplicates_nothing(store, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = fit(TINY, data="digits", epochs=2, store=store, quiet=True)
    _interrupt_at(monkeypatch, 27)
    with pytest.raises(KeyboardInterrupt):
        fit(TINY, data="digits", epochs=3, batch_size=64, store=store, quiet=True)
    monkeypatch.undo()
    [stopped] = store.list_runs(status="interrupted")
    first = {e.run_id: e for e in export_mlflow(store, uri)}
    assert all(e.created for e in first.values())
    assert _mlflow_runs(uri)[stopped.run_id].info.status == "KILLED"
    assert _mlflow_mismatches(uri, store, stopped.run_id) == []  # the one epoch it had

    resume(stopped.run_id, store=store, quiet=True)
    second = {e.run_id: e for e in export_mlflow(store, uri)}
    assert {r: e.mlflow_run_id for r, e in second.items()} == {r: e.mlflow_run_id for r, e in first.items()}
    assert not any(e.created for e in second.values())
    assert second[done.run_id].metrics_added == 0
    assert second[stopped.run_id].metrics_added > 0  # epochs 2 and 3, the test metrics
    runs = _mlflow_runs(uri)
    assert len(runs) == 2 and runs[stopped.run_id].info.status == "FINISHED"
    for run_id in (done.run_id, stopped.run_id):
        assert _mlflow_mismatches(uri, store, run_id) == []  # no step twice

    third = export_mlflow(store, uri, [stopped.run_id[:5]])  # a prefix names a run
    assert [e.metrics_added for e in third] == [0]


def test_export_errors_are_one_line(store, tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHLAB_HOME", str(store.root))
    fit(TINY, data="digits", epochs=1, store=store, quiet=True)
    missing = runner.invoke(app, ["runs", "export"])
    assert missing.exit_code == 2 and "--mlflow" in missing.output
    with pytest.raises(StoreError, match=r"--mlflow foo://x: not an MLflow tracking URI.*Received"):
        export_mlflow(store, "foo://x")
    with pytest.raises(StoreError, match="is not a run id"):
        export_mlflow(store, f"sqlite:///{tmp_path / 'm.db'}", ["nope"])
    with pytest.raises(StoreError, match="not found"):
        export_mlflow(store, f"sqlite:///{tmp_path / 'm.db'}", ["r0000dead"])
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    with pytest.raises(StoreError, match="pip install mlflow-skinny"):
        export_mlflow(store, f"sqlite:///{tmp_path / 'm.db'}")


def test_the_run_store_imports_neither_torch_nor_mlflow():
    code = "import sys, archlab.runs; print(json.dumps(['torch' in sys.modules, 'mlflow' in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert json.loads(out.stdout) == [False, False]


# ------------------------------------------------------------------------ optuna-dashboard


def _get(wsgi_app, path: str) -> dict:
    from wsgiref.util import setup_testing_defaults

    environ: dict = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(wsgi_app(environ, lambda s, headers, exc=None: status.append(s)))
    assert status[0].startswith("200"), (status, body[:200])
    return json.loads(body)


def test_optuna_dashboard_reads_the_search_journal_as_it_is(store):
    dashboard = pytest.importorskip("optuna_dashboard")
    from archlab.search import load_search, search

    spec = {**TINY, "vars": {"width": {"int": [4, 16]}}}
    result = search(spec, trials=2, epochs=1, store=store.root, quiet=True, sampler="random")
    journal = store.root / "studies.journal"
    assert journal.exists()
    # What `optuna-dashboard <path>` does with a path: it opens the journal file it names.
    wsgi_app = dashboard.wsgi(str(journal))
    [study] = _get(wsgi_app, "/api/studies")["study_summaries"]
    assert study["study_name"] == result.study
    detail = _get(wsgi_app, f"/api/studies/{study['study_id']}")
    kept = load_search(result.study, f"journal:{journal}")
    assert sorted(t["number"] for t in detail["trials"]) == sorted(t.number for t in kept.trials)
    by_number = {t["number"]: t for t in detail["trials"]}
    for trial in kept.trials:
        assert [p["param_internal_value"] for p in by_number[trial.number]["params"]] == [trial.params["width"]]
        if trial.values is not None:
            assert by_number[trial.number]["values"] == list(trial.values)

