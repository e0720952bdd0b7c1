"""One study, many processes: the budget (`--trials`) is exact across separate `archlab search`
commands (slots in trial-number order, archlab.search._slots), killed workers' trials do not
count, and a PostgreSQL database works as the shared storage (`--storage postgresql://...`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from archlab.search import open_storage
from archlab.search._slots import ABANDONED, SLOT, decide, slots_taken, take_slot
from archlab.search._storage import _counted

TINY = {
    "name": "tiny",
    "input": {"shape": [1, 8, 8]},
    "vars": {"num_classes": 10, "width": {"int": [4, 64], "log": True},
             "act": {"choice": ["relu", "tanh", "gelu", "silu"]}},
    "model": ["flatten", {"linear": "$width"}, "$act", {"linear": "$num_classes"}],
    "train": {"epochs": 2, "batch_size": 128, "lr": {"float": [1e-4, 3e-2], "log": True}},
}


def _study_with(states: list[str]) -> optuna.Study:
    """An in-memory study whose trials are: "counted" (complete), "slot" (running, holds a slot),
    "open" (running, not yet at the gate), "surplus"/"infeasible" (ended, not counted)."""
    study = optuna.create_study()
    for state in states:
        t = study.ask()
        if state == "counted":
            study.tell(t, 0.5)
        elif state == "slot":
            t.set_user_attr(SLOT, True)
        elif state == "surplus":
            t.set_user_attr("surplus", True)
            study.tell(t, state=optuna.trial.TrialState.FAIL)
        elif state == "infeasible":
            t.set_user_attr("infeasible", "too big")
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
    return study


def test_a_trial_takes_a_slot_only_while_the_trials_below_it_leave_one():
    study = _study_with(["counted", "slot", "open", "infeasible", "surplus"])
    trials, now = study.get_trials(deepcopy=False), time.time()
    me = len(trials)  # the next trial's number
    # held: the complete one and the running slot holder; undecided: the open one
    assert [decide(trials, me, total, now, 120.0) for total in (4, 3, 2, 1)] == ["take", "wait", "surplus",
                                                                                 "surplus"]
    assert decide(trials, 1, 1, now, 120.0) == "surplus"  # trial 1 sees only trial 0: the one slot
    assert decide(trials, 0, 1, now, 120.0) == "take"     # trial 0 sees nothing below it
    assert slots_taken(trials, now, 120.0) == 2
    # The running ones fall silent (their worker was killed): they hold nothing, wait for nothing.
    later = now + 1000
    assert decide(trials, me, 2, later, 120.0) == "take" and slots_taken(trials, later, 120.0) == 1


def test_a_dead_workers_trials_are_ended_as_abandoned_and_not_counted(monkeypatch):
    monkeypatch.setenv("ARCHLAB_TRIAL_GRACE", "1")
    study = _study_with(["counted", "slot", "open"])
    time.sleep(1.2)  # no heartbeat for longer than the grace: their worker is gone
    me = study.ask()
    assert take_slot(me, 2) is True and me.user_attrs.get(SLOT) is True
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials[:3]] == ["COMPLETE", "FAIL", "FAIL"]
    assert [bool(t.user_attrs.get(ABANDONED)) for t in trials[:3]] == [False, True, True]
    assert [_counted(t) for t in trials[:3]] == [True, False, False]


def _search(spec: Path, storage: str, trials: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "archlab", "search", str(spec), "--trials", str(trials), "--storage", storage,
           "--epochs", "2", "--pruner", "none", "--sampler", "random", "-q"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("kind", ["journal", "postgres"])
def test_two_search_commands_on_one_study_train_exactly_the_budget(kind, tmp_path, request):
    storage = (f"journal:{tmp_path / 'studies.journal'}" if kind == "journal"
               else request.getfixturevalue("postgres_url"))
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    procs = [_search(spec, storage, 4) for _ in range(2)]  # the same command twice, at once
    try:
        outputs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs
    storage_obj, _ = open_storage(storage)
    [name] = optuna.get_all_study_names(storage_obj)
    trials = optuna.load_study(study_name=name, storage=storage_obj).get_trials(deepcopy=False)
    counted = [t for t in trials if _counted(t)]
    assert len(counted) == 4, [(t.number, t.state.name, dict(t.user_attrs)) for t in trials]
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
    # every trained trial is one run in the run store; a surplus trial trained nothing
    from archlab.runs import open_store

    runs = open_store().list_runs(tags={"study": name})
    assert len(runs) == len([t for t in trials if t.user_attrs.get("run_id")]) == 4


def test_a_postgres_storage_with_a_wrong_password_is_one_line_exit_2(postgres_url, tmp_path, monkeypatch, capsys):
    import archlab.cli._app as cli

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    url = postgres_url.replace(":pg-test-pw@", ":Wr0ngPassw0rd@")
    monkeypatch.setattr(sys, "argv", ["archlab", "search", str(spec), "--trials", "1", "--storage", url, "-q"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "Wr0ngPassw0rd" not in err
    assert err.startswith("error: --storage postgresql://archlab:***@") and "password authentication failed" in err


def test_a_postgres_run_store_holds_the_studies_too(postgres_url, tmp_path, monkeypatch, capsys):
    import archlab.cli._app as cli

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    monkeypatch.setattr(sys, "argv", ["archlab", "search", str(spec), "--trials", "1", "--epochs", "1",
                                      "--store", postgres_url, "-q"])
    cli.main()
    out = capsys.readouterr().out
    assert "postgresql://archlab:***@" in out and "pg-test-pw" not in out
    [name] = optuna.get_all_study_names(open_storage(postgres_url)[0])  # Optuna's tables, beside archlab's
    from archlab.runs import open_store

    [run] = open_store(postgres_url).list_runs(tags={"study": name})
    assert not (Path(os.environ["ARCHLAB_HOME"]) / "studies.journal").exists()
    monkeypatch.setattr(sys, "argv", ["archlab", "studies"])  # ARCHLAB_STORE (set by --store) is the default
    cli.main()
    assert name in capsys.readouterr().out
