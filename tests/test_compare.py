"""Cross-validation, diagnosis, recommendation and reuse of finished folds."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from archlab.cli import app
from archlab.compare import (
    OVERFIT_GAP,
    CandidateSummary,
    compare,
    comparison_from_runs,
    diagnose,
    fold_indices,
    make_candidates,
    parse_vary,
    recommend,
    sweep_hints,
)
from archlab.core import DataError, SpecError
from archlab.runs import open_store

TINY = {
    "name": "tiny",
    "input": {"shape": [1, 8, 8]},
    "vars": {"num_classes": 10, "width": 16, "depth": 1},
    "model": ["flatten", {"repeat": "$depth", "block": [{"linear": "$width"}, "relu"]}, {"linear": "$num_classes"}],
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.01},
}


def test_parse_vary_reads_yaml_scalars_and_builds_a_grid():
    assert parse_vary(["depth=1,2,3", "act=relu,gelu"]) == {"depth": [1, 2, 3], "act": ["relu", "gelu"]}
    assert parse_vary(["lr=0.1"]) == {"lr": [0.1]}
    cands = make_candidates([TINY], parse_vary(["depth=1,2", "width=8,16"]))
    assert [c.label for c in cands] == ["tiny[depth=1,width=8]", "tiny[depth=1,width=16]",
                                        "tiny[depth=2,width=8]", "tiny[depth=2,width=16]"]
    assert cands[3].spec.vars["depth"] == 2


def test_vary_of_an_unknown_var_and_duplicate_specs():
    with pytest.raises(SpecError, match=r"--vary \(in tiny\) dpth: the spec has no var .dpth."):
        make_candidates([TINY], {"dpth": [1]})
    assert [c.label for c in make_candidates([TINY, TINY], {})] == ["tiny", "tiny#2"]


def test_stratified_folds_partition_the_data_and_keep_class_balance():
    y = torch.arange(100) % 4
    folds = fold_indices(y, 5, 0, 0, stratified=True)
    seen = torch.cat([torch.as_tensor(v) for _, v in folds])
    assert sorted(seen.tolist()) == list(range(100))
    for train, val in folds:
        assert set(train.tolist()).isdisjoint(val.tolist())
        assert torch.bincount(y[torch.as_tensor(val)]).tolist() == [5, 5, 5, 5]
    assert [v.tolist() for _, v in fold_indices(y, 5, 1, 0, True)] != [v.tolist() for _, v in folds]
    with pytest.raises(DataError, match="smallest class has only 1"):
        fold_indices(torch.tensor([0, 0, 0, 1]), 3, 0, 0, True)


def test_diagnosis_rule():
    assert diagnose(train=0.80, val=0.79, best_val=0.95) == "under-fitting"
    assert diagnose(train=1.00, val=1.00 - OVERFIT_GAP - 0.01, best_val=0.96) == "over-fitting"
    assert diagnose(train=0.97, val=0.96, best_val=0.96) == "fine"


def _summary(label, params, mean, std, n=5):
    return CandidateSummary(label, {}, params, 0, 0.0, 0.0, 0.0, mean, std, 0.0, "fine",
                            tuple(range(n)))  # folds only counted for the standard error


def test_recommend_best_or_smallest_within_one_standard_error():
    big, small = _summary("big", 1000, 0.970, 0.02), _summary("small", 10, 0.962, 0.01)
    label, rule = recommend([big, small], "max", "acc")
    assert label == "small" and "one-standard-error" in rule       # 0.970 - 0.962 < 0.02 / sqrt(5)
    far = _summary("far", 10, 0.90, 0.01)
    label, rule = recommend([big, far], "max", "acc")
    assert label == "big" and "best mean" in rule


def test_compare_end_to_end_reuses_finished_folds(tmp_path):
    wide = {**TINY, "name": "wide", "vars": {**TINY["vars"], "width": 64}}
    first = compare([TINY, wide], data="digits", cv=2, epochs=1, report=False, quiet=True)
    assert {c.label for c in first.candidates} == {"tiny", "wide"}
    assert first.recommended in ("tiny", "wide") and first.rule
    assert 0 <= first.test_metrics["acc"] <= 1
    for c in first.candidates:
        assert len(c.folds) == 2 and c.params > 0 and c.flops > 0
        assert c.latency_ms_b1 > 0 and c.latency_ms_b256 > 0
        assert c.diagnosis in ("under-fitting", "over-fitting", "fine")
        assert not any(f.reused for f in c.folds)
    store = open_store()
    fold_runs = store.list_runs(tags={"cv": "2"})
    finals = [r for r in fold_runs if r.tags.get("role") == "final"]
    assert len(finals) == 1 and len(fold_runs) == 5
    # The test split is never evaluated for a fold: only the final run has test metrics.
    assert all(not r.test_metrics for r in fold_runs if r.tags.get("role") != "final")

    again = compare([TINY, wide], data="digits", cv=2, epochs=1, report=False, quiet=True)
    assert all(f.reused for c in again.candidates for f in c.folds)
    assert [c.val_mean for c in again.candidates] == [c.val_mean for c in first.candidates]
    assert again.final_run_id == first.final_run_id
    assert len(store.list_runs(tags={"cv": "2"})) == 5       # nothing retrained

    ids = [f.run_id for c in first.candidates for f in c.folds] + [first.final_run_id]
    rebuilt = comparison_from_runs(ids)
    assert {c.label for c in rebuilt.candidates} == {"tiny", "wide"}
    assert rebuilt.test_metrics == first.test_metrics


def test_compare_in_two_worker_processes(tmp_path):
    result = compare([TINY], data="digits", cv=2, epochs=1, jobs=2, report=False, quiet=True)
    assert len(result.candidates[0].folds) == 2


def test_a_candidate_that_does_not_fit_the_data_fails_before_any_training():
    bad = {**TINY, "model": ["flatten", {"linear": 3}]}
    with pytest.raises(SpecError, match="does not fit 10-class classification"):
        compare([TINY, bad], data="digits", cv=2, epochs=1, report=False, quiet=True)
    assert open_store().list_runs() == []


def test_cli_compare_with_vary_prints_the_table_and_recommendation(tmp_path):
    spec = tmp_path / "tiny.yaml"
    import yaml

    spec.write_text(yaml.safe_dump(TINY))
    result = CliRunner().invoke(app, ["compare", str(spec), "--vary", "depth=1,2", "--cv", "2", "--epochs", "1",
                                      "--report", str(tmp_path / "r.html"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "tiny[depth=1]" in result.output and "tiny[depth=2]" in result.output
    assert "recommended" in result.output and "test (once)" in result.output
    assert (tmp_path / "r.html").exists()
    # depth=2 ends the sweep (and 0 would not extend it downwards): only that winner gets a hint.
    won_at_edge = "tiny[depth=2] *" in result.output
    assert ("hint              depth=2 is the largest value" in result.output) == won_at_edge
    assert ("--vary depth=1,2,3,4" in result.output) == won_at_edge


def test_report_from_single_runs_is_honest_and_refuses_what_it_cannot_compare(tmp_path):
    from archlab.core import ArchlabError
    from archlab.train import fit

    a = fit(TINY, data="digits", epochs=1, quiet=True)
    b = fit({**TINY, "name": "wide", "vars": {**TINY["vars"], "width": 32}}, data="digits", epochs=1, quiet=True)
    result = comparison_from_runs([a.run_id, b.run_id])
    assert result.cv == 1 and "single validation split" in result.design
    assert "no retraining" in result.test_note and result.final_run_id in (a.run_id, b.run_id)
    assert all(c.val_std == 0.0 for c in result.candidates)
    other = fit(TINY, data="synthetic:images?n=300&shape=1x8x8&classes=10", epochs=1, quiet=True)
    with pytest.raises(ArchlabError, match="different data sets"):
        comparison_from_runs([a.run_id, other.run_id])


def test_set_fixes_a_var_in_every_candidate_and_refuses_one_that_is_also_varied():
    cands = make_candidates([TINY], parse_vary(["depth=1,2"]), vars={"width": 8})
    assert [c.spec.vars["width"] for c in cands] == [8, 8] and [c.assignment for c in cands] == [{"depth": 1},
                                                                                                 {"depth": 2}]
    with pytest.raises(SpecError, match="--set depth and --vary depth"):
        make_candidates([TINY], {"depth": [1, 2]}, vars={"depth": 3})
    with pytest.raises(SpecError, match="--set wdth: the spec has no var 'wdth'"):
        make_candidates([TINY], {}, vars={"wdth": 3})


def test_a_winner_at_the_edge_of_a_sweep_gets_a_hint_to_extend_it():
    up, = sweep_hints({"depth": [1, 2, 3]}, {"depth": 3})
    assert up.startswith("depth=3 is the largest value the sweep tried") and up.endswith("--vary depth=2,3,4,5")
    down, = sweep_hints({"width": [16, 32, 64], "depth": [1, 2]}, {"width": 16, "depth": 1})
    assert "smallest" in down and down.endswith("--vary width=4,8,16,32")   # depth 0 is no extension
    assert sweep_hints({"lr": [0.001, 0.01, 0.1]}, {"lr": 0.1})[0].endswith("--vary lr=0.01,0.1,1,10")
    assert sweep_hints({"depth": [1, 2, 3]}, {"depth": 2}) == ()          # inside the sweep: no hint
    assert sweep_hints({"act": ["relu", "gelu"]}, {"act": "gelu"}) == ()  # not a number: no end
    assert sweep_hints({}, {}) == ()


def test_batch_norm_after_a_flat_linear_layer_compares_without_crashing():
    bn = {**TINY, "name": "bn", "model": ["flatten", {"linear": 64}, "batchnorm", "relu", {"linear": 10}],
          "train": {"epochs": 1, "batch_size": 64, "lr": 0.01}}
    result = compare([bn], data="digits", cv=2, report=False, quiet=True)
    (c,) = result.candidates
    assert c.params == 64 * 65 + 2 * 64 + 65 * 10 and c.flops > 0 and len(c.folds) == 2
    assert 0 <= result.test_metrics["acc"] <= 1


def test_cli_compare_takes_set_device_max_minutes_and_early_stop(tmp_path):
    import yaml

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    result = CliRunner().invoke(app, ["compare", str(spec), "--set", "width=8", "--device", "cpu",
                                      "--max-minutes", "5", "--early-stop", "1", "--epochs", "4", "--cv", "2",
                                      "--report", str(tmp_path / "r.html"), "--quiet"])
    assert result.exit_code == 0, result.output
    runs = open_store().list_runs(tags={"cv": "2"})
    folds = [r for r in runs if r.tags.get("role") != "final"]
    (final,) = [r for r in runs if r.tags.get("role") == "final"]
    assert len(folds) == 2
    for r in folds:
        assert r.spec["vars"]["width"] == 8 and r.params == 65 * 8 + 9 * 10
        assert r.settings["device"] == "cpu" and r.settings["max_minutes"] == 5
        assert r.settings["early_stop"] == 1 and r.settings["epochs"] == 4
    # No validation split to stop on: the final run trains for the folds' median best epoch.
    assert final.settings["early_stop"] is None and 1 <= final.settings["epochs"] <= 4
    assert len(final.history) == final.settings["epochs"]
    assert "median best epoch" in result.output


def test_search_cv_folds_are_the_folds_compare_trains_on():
    """One fold builder: `search --cv` and `compare` train a spec on the same samples."""
    import optuna

    from archlab.search import concrete_spec, open_storage, search
    from archlab.spec import load_spec

    searchable = {**TINY, "vars": {**TINY["vars"], "width": {"int": [4, 32]}}}
    storage = f"journal:{open_store().root / 'cv.journal'}"
    st, _ = open_storage(storage)
    optuna.create_study(study_name="cv", storage=st, direction="maximize").enqueue_trial({"width": 8})
    found = search(searchable, trials=1, cv=2, epochs=1, study="cv", storage=storage, quiet=True)
    (trial,) = found.trials
    spec = concrete_spec(load_spec(searchable), trial.vars, trial.train, {"epochs": 1, "seed": 0})
    compared = compare([spec], data="digits", cv=2, epochs=1, report=False, quiet=True)
    folds = compared.candidates[0].folds
    assert [f.history[0]["val_acc"] for f in folds] == pytest.approx(list(trial.curve), abs=0)
