"""Architecture search: spaces -> Optuna, budgets, pruning (Optuna's and the Pareto-aware
rule), storage (resume, two worker processes), export, the CLI, the report."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

import archlab.cli._app as cli
from archlab.cli import app
from archlab.core import SpecError
from archlab.runs import open_store
from archlab.search import (
    Budget,
    ParetoMedianPruner,
    choice_labels,
    concrete_spec,
    load_search,
    open_storage,
    parse_count,
    parse_duration,
    parse_objectives,
    sample,
    search,
    search_spaces,
    studies,
)
from archlab.spec import load_spec

runner = CliRunner()

# A tiny searchable MLP: every trial trains in well under a second.
TINY = {
    "name": "tiny",
    "input": {"shape": [1, 8, 8]},
    "vars": {"num_classes": 10, "width": {"int": [4, 32], "log": True, "default": 8},
             "act": {"choice": ["relu", "tanh"]}},
    "model": ["flatten", {"linear": "$width"}, "$act", {"linear": "$num_classes"}],
    "train": {"epochs": 2, "batch_size": 128, "lr": {"float": [1e-7, 3e-2], "log": True, "default": 1e-2}},
}


def _journal(tmp_path: Path) -> str:
    return f"journal:{tmp_path / 'studies.journal'}"


def _ask(spec, params=None):
    """One trial of an in-memory study: what `sample` suggests (or the values in `params`)."""
    spaces = search_spaces(load_spec(spec))
    if params is not None:
        return sample(optuna.trial.FixedTrial(params), spaces), None
    study = optuna.create_study()
    trial = study.ask()
    return sample(trial, spaces), trial


# -------------------------------------------------------------------------- spaces


def test_spaces_map_to_optuna_distributions_and_sub_blocks_map_back():
    spec = {
        "input": {"shape": [4]},
        "vars": {"depth": {"int": [1, 4], "step": 1}, "width": {"int": [8, 64], "log": True},
                 "drop": {"float": [0.0, 0.5]}, "lr_scale": {"float": [1e-3, 1.0], "log": True},
                 "act": {"choice": ["relu", "gelu"]},
                 "body": {"choice": [[{"linear": 8}, "relu"], [{"residual": [{"linear": 4}]}]]}},
        "model": ["$body", {"linear": 2}],
    }
    (vars_, train), trial = _ask(spec)
    d = trial.distributions
    assert isinstance(d["depth"], optuna.distributions.IntDistribution) and not d["depth"].log
    assert d["width"].log and (d["width"].low, d["width"].high) == (8, 64)
    assert isinstance(d["drop"], optuna.distributions.FloatDistribution) and not d["drop"].log
    assert d["lr_scale"].log
    assert d["act"].choices == ("relu", "gelu")
    # Whole sub-blocks are offered by label, and the chosen block comes back as spec data.
    assert d["body"].choices == ("linear+relu", "residual")
    assert vars_["body"] in ([{"linear": 8}, "relu"], [{"residual": [{"linear": 4}]}])
    assert train == {}
    (vars_, _), _ = _ask(spec, {"depth": 2, "width": 16, "drop": 0.1, "lr_scale": 0.1, "act": "gelu",
                                "body": "residual"})
    assert vars_["body"] == [{"residual": [{"linear": 4}]}]
    net_spec = concrete_spec(load_spec(spec), vars_, {})
    assert not net_spec.spaces
    # Labels stay unique when two blocks would share one.
    from archlab.core import freeze
    from archlab.spec import ChoiceSpace

    assert choice_labels(ChoiceSpace(freeze([[{"linear": 2}], [{"linear": 4}]]))) == ["0:linear", "1:linear"]


def test_a_var_naming_a_block_selects_that_block(tmp_path):
    spec = load_spec("zoo:search-digits")
    plain = concrete_spec(spec, {"block": "plain", "depth": 1}, {"lr": 1e-3})
    residual = concrete_spec(spec, {"block": "residual", "depth": 1}, {"lr": 1e-3})
    from archlab import build

    kinds = lambda s: [leaf.kind for leaf in build(s, device="meta").layers]  # noqa: E731
    assert kinds(residual).count("conv2d") == kinds(plain).count("conv2d") + 1


def test_train_section_markers_are_searched_and_stripped():
    spec = load_spec(TINY)
    spaces = search_spaces(spec)
    assert set(spaces.vars) == {"width", "act"} and set(spaces.train) == {"lr"}
    assert spaces.train["lr"].log
    (vars_, train), trial = _ask(TINY)
    assert set(train) == {"lr"} and 1e-7 <= train["lr"] <= 3e-2
    assert trial.distributions["lr"].log
    concrete = concrete_spec(spec, vars_, train, {"epochs": 3})
    assert concrete.train["lr"] == train["lr"] and concrete.train["epochs"] == 3
    assert "float:" not in yaml.safe_dump(concrete.to_dict())
    from archlab.train import resolve_settings

    assert resolve_settings(concrete, {}).lr == train["lr"]
    # A setting fixed by the caller is not searched.
    assert set(search_spaces(spec, {"lr": 1e-3}).train) == set()
    assert concrete_spec(spec, vars_, {}, {"lr": 1e-3}).train["lr"] == 1e-3
    with pytest.raises(SpecError, match=r"^train\.lr: "):
        search_spaces(load_spec({**TINY, "train": {"lr": {"float": [1e-2, 1e-4]}}}))
    with pytest.raises(SpecError, match="same name"):
        search_spaces(load_spec({**TINY, "train": {"width": {"int": [1, 2]}}}))


def test_parsers_and_objectives():
    assert parse_duration("10m") == 600 and parse_duration("2h") == 7200 and parse_duration("45") == 45
    assert parse_count("100k") == 100_000 and parse_count("5M") == 5_000_000 and parse_count("2.5k") == 2500
    with pytest.raises(SpecError, match="--timeout"):
        parse_duration("10 minutes")
    with pytest.raises(SpecError, match="--max-params"):
        parse_count("lots")
    objs = parse_objectives(["val_acc", "params:min", "val_loss:min"][:2])
    assert [(o.key, o.direction, o.trained) for o in objs] == [("val_acc", "maximize", True),
                                                              ("params", "minimize", False)]
    assert parse_objectives("val_loss")[0].direction == "minimize"
    for bad in (["params:min"], ["val_acc", "val_loss"], ["accuracy"], ["val_acc", "params:up"]):
        with pytest.raises(SpecError, match="--objective"):
            parse_objectives(bad)
    assert Budget(max_flops=10).violation({"params": 5, "flops": 11}) == "FLOPs 11 > max 10"
    assert Budget(max_params=10).violation({"params": 10}) is None


# ----------------------------------------------------------------------- budgets


def test_over_budget_candidates_are_infeasible_and_never_trained(tmp_path):
    result = search(TINY, trials=3, max_params="100", epochs=1, storage=_journal(tmp_path), quiet=True,
                    max_skipped=5)
    # Nothing under the budget: infeasible proposals do not spend --trials, and after five in a
    # row the search stops and says why, instead of proposing forever.
    assert [t.state for t in result.trials] == ["infeasible"] * 5
    assert "5 proposals in a row that were infeasible" in result.stopped and "raise the budget" in result.stopped
    assert all("params" in t.infeasible and "> max 100" in t.infeasible for t in result.trials)
    assert all(t.epochs == 0 and not t.run_ids and t.costs["params"] > 100 for t in result.trials)
    assert open_store().list_runs() == []          # no run was even created
    assert result.best == () and result.best_specs == ()


def _enqueue(storage: str, name: str, params: list[dict], directions=("maximize",)) -> None:
    st, _ = open_storage(storage)
    study = optuna.create_study(study_name=name, storage=st, directions=list(directions))
    for p in params:
        study.enqueue_trial(p)


def test_infeasible_candidates_do_not_count_against_trials(tmp_path):
    # params = 75 * width + 10: width 16 is the largest under 1,210.
    storage = _journal(tmp_path)
    _enqueue(storage, "budget", [{"width": 32, "act": "relu", "lr": 1e-2}, {"width": 8, "act": "relu", "lr": 1e-2},
                                 {"width": 30, "act": "tanh", "lr": 1e-2}, {"width": 30, "act": "relu", "lr": 1e-2},
                                 {"width": 10, "act": "tanh", "lr": 1e-2}])
    result = search(TINY, trials=3, max_params=1210, epochs=1, study="budget", storage=storage, quiet=True,
                    pruner="none")
    trained = [t for t in result.trials if t.counted]
    assert [t.number for t in result.trials if t.state == "infeasible"][:3] == [0, 2, 3]
    assert len(trained) == 3 and all(t.state == "complete" and t.epochs == 1 for t in trained)
    assert all(t.costs["params"] <= 1210 for t in trained)
    assert len(open_store().list_runs(tags={"study": "budget"})) == 3
    assert result.stopped == ""
    assert [s.trials for s in studies(storage) if s.name == "budget"] == [3]


def test_repeated_choices_are_not_trained_again_and_not_exported_twice(tmp_path):
    storage = _journal(tmp_path)
    same = {"width": 8, "act": "relu", "lr": 1e-2}
    _enqueue(storage, "again", [same, same, {"width": 5, "act": "tanh", "lr": 1e-2}, same],
             directions=("maximize", "minimize"))
    out = tmp_path / "front.yaml"
    result = search(TINY, trials=2, epochs=1, objectives=["val_acc", "params:min"], study="again",
                    storage=storage, quiet=True, pruner="none", export=out)
    states = [t.state for t in result.trials]
    assert states == ["complete", "duplicate", "complete", "waiting"]   # 2 trained: --trials 2 is met
    original, copy = result.trials[0], result.trials[1]
    assert copy.duplicate_of == 0 and copy.values == original.values and copy.epochs == 0 and not copy.run_ids
    assert len(open_store().list_runs(tags={"study": "again"})) == 2
    assert 1 not in {t.number for t in result.best}                # never a second front member
    specs = [{k: v for k, v in yaml.safe_load(Path(p).read_text()).items() if k not in ("name", "description")}
             for p in result.exported]
    assert len(result.exported) == len(result.best) and all(a != b for i, a in enumerate(specs)
                                                              for b in specs[i + 1:])
    # Re-running with a larger total: the fourth queued proposal repeats trial 0 and is reused too.
    more = search(TINY, trials=3, epochs=1, objectives=["val_acc", "params:min"], study="again",
                  storage=storage, quiet=True, pruner="none")
    assert more.trials[3].state == "duplicate" and more.trials[3].duplicate_of == 0
    assert sum(t.counted for t in more.trials) == 3


def test_the_front_keeps_one_trial_per_set_of_choices(tmp_path):
    """Two workers that drew the same choices at once both trained: the front lists one."""
    from archlab.search import export_specs

    storage = _journal(tmp_path)
    st, _ = open_storage(storage)
    first = search(TINY, trials=1, epochs=1, objectives=["val_acc", "params:min"], storage=storage,
                   quiet=True, sampler="random")
    study = optuna.load_study(study_name=first.study, storage=st)
    (t0,) = study.get_trials()
    study.add_trial(optuna.trial.create_trial(params=t0.params, distributions=t0.distributions, values=t0.values,
                                              user_attrs=t0.user_attrs))
    again = load_search(first.study, storage)
    assert [t.state for t in again.trials] == ["complete", "complete"]
    assert [t.number for t in again.best] == [0]
    assert len(export_specs(again, tmp_path / "front.yaml")) == 1


def test_a_shape_error_makes_a_candidate_infeasible_not_a_crash(tmp_path):
    spec = {"input": {"shape": [1, 8, 8]}, "vars": {"num_classes": 10, "k": {"choice": [3, 9]}},
            "model": [{"conv2d": {"out": 4, "kernel": "$k"}}, "flatten", {"linear": "$num_classes"}],
            "train": {"epochs": 1}}
    result = search(spec, trials=4, sampler="random", storage=_journal(tmp_path), quiet=True, seed=1,
                    max_skipped=10)
    by_k = {t.params["k"]: t for t in reversed(result.trials)}     # each value's first trial
    assert by_k[9].state == "infeasible" and "cannot be built" in by_k[9].infeasible
    assert by_k[3].state == "complete"
    # The space holds one buildable point: once it is trained, the search says it ran out.
    assert sum(t.counted for t in result.trials) == 1 and "looks exhausted" in result.stopped


# ----------------------------------------------------------------------- pruning


def test_median_pruner_stops_bad_trials_after_the_warm_up(tmp_path):
    storage = _journal(tmp_path)
    st, _ = open_storage(storage)
    study = optuna.create_study(study_name="prune", storage=st, direction="maximize")
    for width, lr in [(12, 1e-2), (14, 1e-2), (16, 1e-2), (18, 1e-2), (20, 1e-2), (16, 1e-7), (20, 1e-7)]:
        study.enqueue_trial({"width": width, "act": "relu", "lr": lr})   # five good, then two hopeless
    result = search(TINY, trials=7, epochs=3, study="prune", storage=storage, quiet=True)
    states = [t.state for t in result.trials]
    assert states == ["complete"] * 5 + ["pruned"] * 2
    for t in result.trials[5:]:
        assert t.epochs == 2 and len(t.curve) == 2        # stopped at epoch 2 (epoch 1 is warm-up)
        assert open_store().get_run(t.run_id).status == "pruned"
    assert result.epochs == 5 * 3 + 2 * 2
    # Intermediate values reached Optuna, one per epoch.
    frozen = optuna.load_study(study_name="prune", storage=st).trials
    assert sorted(frozen[0].intermediate_values) == [0, 1, 2]


def test_pareto_median_rule():
    p = ParetoMedianPruner(percentile=50, n_startup_trials=2, n_warmup_steps=1)
    peers = [((100, 10), [0.5, 0.8, 0.9]), ((200, 20), [0.6, 0.9, 0.95]), ((900, 90), [0.9, 0.99, 0.99])]
    # During warm-up nothing is pruned.
    assert not p.should_prune([0.1], (300, 30), peers)
    # At epoch 2 the cheaper peers (100 and 200) had 0.8 and 0.9: median 0.85.
    assert p.should_prune([0.1, 0.84], (300, 30), peers)
    assert not p.should_prune([0.1, 0.86], (300, 30), peers)
    assert not p.should_prune([0.86, 0.2], (300, 30), peers)        # its best so far counts
    # The expensive peer (900) does not count against a cheaper trial: too few cheaper peers.
    assert not p.should_prune([0.1, 0.1], (150, 15), peers)
    # Cheaper on one cost but not the other: not a peer.
    assert not p.should_prune([0.1, 0.1], (150, 95), peers)
    # No cheaper completed trial at all: it may still be on the front.
    assert not p.should_prune([0.0, 0.0, 0.0], (50, 5), peers)
    # Minimised objectives mirror the rule.
    loss_peers = [((1,), [2.0, 1.0]), ((1,), [2.0, 1.2])]
    assert p.should_prune([3.0, 1.5], (5,), loss_peers, maximize=False)
    assert not p.should_prune([3.0, 1.05], (5,), loss_peers, maximize=False)
    # Peers that stopped early (shorter curves) do not vote for later epochs.
    assert p.threshold(3, (1000, 100), [((1, 1), [0.9, 0.9]), ((1, 1), [0.9])]) is None
    with pytest.raises(SpecError):
        ParetoMedianPruner(percentile=120)


def test_multi_objective_search_prunes_with_the_pareto_rule_and_returns_the_front(tmp_path):
    storage = _journal(tmp_path)
    st, _ = open_storage(storage)
    study = optuna.create_study(study_name="front", storage=st, directions=["maximize", "minimize"])
    for params in [{"width": 5, "act": "relu", "lr": 2e-2}, {"width": 8, "act": "relu", "lr": 2e-2},
                   {"width": 6, "act": "tanh", "lr": 2e-2},
                   {"width": 32, "act": "relu", "lr": 1e-7},      # costly and hopeless: pruned
                   {"width": 4, "act": "tanh", "lr": 1e-7}]:      # hopeless but cheapest: kept
        study.enqueue_trial(params)
    result = search(TINY, trials=5, epochs=3, objectives=["val_acc", "params:min"], study="front",
                    storage=storage, pruner=ParetoMedianPruner(n_startup_trials=3, n_warmup_steps=1), quiet=True)
    states = [t.state for t in result.trials]
    assert states == ["complete", "complete", "complete", "pruned", "complete"]
    assert result.trials[3].epochs == 2
    assert result.multi and len(result.best) >= 2
    front = {t.number for t in result.best}
    assert 4 in front                                   # the cheapest trial is always on the front
    values = {t.number: t.values for t in result.trials if t.values}
    for n in front:                                      # nothing completed dominates a front trial
        acc, params = values[n]
        assert not any(a >= acc and p <= params and (a, p) != (acc, params) for a, p in values.values())
    assert all(t.costs["params"] == t.values[1] for t in result.best)
    with pytest.raises(SpecError, match="Pareto"):
        search(TINY, trials=1, objectives=["val_acc", "params:min"], pruner="hyperband",
               storage=storage, quiet=True)


# ------------------------------------------------------------------ store, resume


def test_trials_are_runs_tagged_with_their_study_and_resume_adds_up(tmp_path):
    storage = _journal(tmp_path)
    first = search(TINY, trials=2, epochs=1, storage=storage, quiet=True, sampler="random")
    assert len(first.trials) == 2
    for t in first.trials:
        run = open_store().get_run(t.run_id)
        assert run.tags["study"] == first.study and run.tags["trial"] == str(t.number)
        assert run.status == "finished" and len(run.history) == 1
    again = search(TINY, trials=2, epochs=1, storage=storage, quiet=True, sampler="random")
    assert again.study == first.study and len(again.trials) == 2     # done already: nothing new
    more = search(TINY, trials=5, epochs=1, storage=storage, quiet=True, sampler="random")
    assert [t.number for t in more.trials] == [0, 1, 2, 3, 4]
    assert [t.run_id for t in more.trials[:2]] == [t.run_id for t in first.trials]
    assert len({t.run_id for t in more.trials}) == 5
    # A resumed random sampler does not replay the first trials' choices.
    assert {tuple(t.params.items()) for t in more.trials[2:]}.isdisjoint(
        {tuple(t.params.items()) for t in first.trials})
    # Another spec, settings or objective is another study.
    other = search(TINY, trials=1, epochs=2, storage=storage, quiet=True)
    assert other.study != first.study
    names = [s.name for s in studies(storage)]
    assert first.study in names and other.study in names
    with pytest.raises(SpecError, match="another spec"):
        search(TINY, trials=1, epochs=3, storage=storage, study=first.study, quiet=True)


def test_two_worker_processes_share_one_study_without_losing_or_repeating_trials(tmp_path):
    storage = _journal(tmp_path)
    result = search(TINY, trials=6, epochs=1, jobs=2, storage=storage, quiet=True)
    numbers = [t.number for t in result.trials]
    assert numbers == list(range(6))                              # none lost, none extra
    assert all(t.state == "complete" for t in result.trials)
    run_ids = [t.run_id for t in result.trials]
    assert len(set(run_ids)) == 6
    runs = open_store().list_runs(tags={"study": result.study})
    assert sorted(r.run_id for r in runs) == sorted(run_ids)       # one run per trial, no duplicate
    assert sorted(int(r.tags["trial"]) for r in runs) == numbers
    pids = {open_store().get_run(r).env["pid"] for r in run_ids}
    assert len(pids) == 2                                          # both workers did trials


# ------------------------------------------------------------------ export, CLI, report


def test_export_writes_a_concrete_spec_that_archlab_train_accepts(tmp_path):
    out = tmp_path / "best.yaml"
    result = search("zoo:search-digits", trials=2, epochs=1, storage=_journal(tmp_path), export=out,
                    quiet=True, sampler="random")
    assert result.exported == (str(out),)
    data = yaml.safe_load(out.read_text())
    text = out.read_text()
    assert "int:" not in text and "float:" not in text and "choice:" not in text
    assert data["vars"]["block"] in ("plain", "residual", "parallel")
    assert data["train"]["epochs"] == 1 and isinstance(data["train"]["lr"], float)
    assert not load_spec(str(out)).spaces
    cli_out = runner.invoke(app, ["train", str(out), "--quiet"])
    assert cli_out.exit_code == 0, cli_out.output
    assert "test  loss" in cli_out.stdout
    # Training the export reproduces the trial's validation curve (same spec, settings, seed).
    best = result.best[0]
    run = [r for r in open_store().list_runs() if r.name == data["name"]][0]
    assert run.history[0].metrics["val_acc"] == pytest.approx(best.curve[0])


def test_multi_objective_export_writes_one_file_per_pareto_trial(tmp_path):
    out = tmp_path / "front.yaml"
    result = search(TINY, trials=4, epochs=1, objectives=["val_acc", "flops:min"], storage=_journal(tmp_path),
                    export=out, quiet=True)
    assert len(result.exported) == len(result.best) >= 1
    assert result.exported[0].endswith("front-1.yaml")
    for path in result.exported:
        assert not load_spec(path).spaces


def test_cli_search_studies_and_one_line_errors(tmp_path, monkeypatch, capsys):
    storage = _journal(tmp_path)
    report = tmp_path / "search.html"
    res = runner.invoke(app, ["search", "zoo:search-digits", "--trials", "2", "--epochs", "1", "--storage",
                              storage, "--sampler", "random", "--max-params", "1M", "--report", str(report),
                              "--quiet"])
    assert res.exit_code == 0, res.output
    assert "best trial of study search-digits.digits.val_acc." in res.stdout
    assert "trials            2:" in res.stdout and "2 count toward --trials" in res.stdout
    html = report.read_text()
    for section in ("search-history", "search-front", "search-importance", "search-trials"):
        assert f'id="{section}"' in html
    assert "<script" not in html and "http" not in html.split("<main>")[1].replace("http://www.w3.org", "")
    listed = runner.invoke(app, ["studies", "--storage", storage])
    assert listed.exit_code == 0 and "search-digits" in listed.stdout
    name = load_search(studies(storage)[0].name, storage).study
    shown = runner.invoke(app, ["studies", name, "--storage", storage])
    assert shown.exit_code == 0 and name in shown.stdout

    for args, message in [
        (["search", "zoo:cnn", "--storage", storage], "no search space"),
        (["search", "zoo:search-digits", "--timeout", "ten", "--storage", storage], "--timeout"),
        (["search", "zoo:search-digits", "--objective", "params:min", "--storage", storage], "--objective"),
        (["search", "zoo:search-digits", "--max-params", "big", "--storage", storage], "--max-params"),
        (["search", "zoo:search-digits", "--sampler", "grid", "--storage", storage], "--sampler"),
        (["studies", "nope", "--storage", storage], "not in"),
    ]:
        monkeypatch.setattr(sys, "argv", ["archlab", *args])
        with pytest.raises(SystemExit) as info:
            cli.main()
        _, err = capsys.readouterr()
        assert info.value.code == 2, err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_search_report_draws_three_charts_for_a_multi_objective_study(tmp_path):
    from archlab.search import search_sections_html

    result = search(TINY, trials=4, epochs=1, objectives=["val_acc", "params:min"], storage=_journal(tmp_path),
                    quiet=True, sampler="random")
    html = search_sections_html(result)
    assert html.count("<svg") == 3 if result.importances else html.count("<svg") == 2
    assert "Pareto front" in html


def test_front_labels_neither_overlap_nor_leave_the_frame():
    from archlab.search import SearchResult, TrialSummary
    from archlab.search._report import _front_figure

    objs = parse_objectives(["val_acc", "params:min"])
    # A front on a log axis: six trials of nearly the same cost and score in a cluster (their
    # labels would stack), three more spread out to the frame's corner.
    costs = [1000, 1004, 1008, 1012, 1016, 1020, 30000, 60000, 100000]
    trials = tuple(TrialSummary(number=n, state="complete", params={},
                                values=(0.9 + (0.002 * n if n < 6 else 0.01 * n), float(c)), vars={}, train={},
                                costs={"params": float(c)}, curve=(), epochs=1, run_ids=())
                   for n, c in enumerate(costs))
    result = SearchResult(study="s", storage="journal:x", objectives=objs, trials=trials, best=trials,
                          best_specs=(), spec={}, data="digits")
    fig, _ = _front_figure(result)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    frame = ax.get_window_extent(renderer)
    boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_text()]
    assert len(boxes) == len(costs)
    for i, box in enumerate(boxes):
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, i
        assert not any(box.overlaps(other) for other in boxes[i + 1:]), i


def test_ctrl_c_stops_cleanly_keeps_finished_trials_and_the_same_command_resumes(tmp_path):
    import os
    import signal
    import subprocess
    import time

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    storage = _journal(tmp_path)
    args = [sys.executable, "-m", "archlab", "search", str(spec), "--trials", "500", "--epochs", "2",
            "--storage", storage, "--pruner", "none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(0.3)
            found = studies(storage) if Path(storage[8:]).exists() else []
            if found and found[0].trials >= 2:
                break
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "stopped: finished trials are kept" in err and "Traceback" not in err
    assert "best trial of study" in out
    name = studies(storage)[0].name
    kept = load_search(name, storage)
    finished = [t for t in kept.trials if t.state in ("complete", "pruned")]
    assert len(finished) >= 2 and all(t.state != "running" for t in kept.trials)
    assert all(open_store().get_run(t.run_id).status == "finished" for t in finished)
    # The same command, with a total just above what is done, finishes the study.
    target = len(finished) + 1
    resumed = search(str(spec), trials=target, epochs=2, storage=storage, pruner="none", quiet=True)
    assert resumed.study == name
    assert sum(t.state == "complete" for t in resumed.trials) == target
