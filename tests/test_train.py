"""The trainer: fit, settings, schedules, tasks, divergence, interrupt and resume, evaluate.

Everything trains tiny models on the bundled digits (or tables the tests write) with one
torch thread, so results are bit-for-bit reproducible and the module stays fast.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from interrupts import checkpoint_position, interrupt_at, stop_after_first_epoch
from safetensors.torch import load_file

from archlab.core import ArchlabError, DataError, SpecError, TrainingError
from archlab.data import DataInfo, Dataset, Split, load_dataset
from archlab.model import build
from archlab.runs import open_store
from archlab.spec import load_spec
from archlab.train import (
    Run,
    Trainer,
    TrainSettings,
    evaluate,
    fit,
    has_checkpoint,
    load_checkpoint,
    make_optimizer,
    make_schedule,
    resolve_settings,
    resume,
    save_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]
TIMING = ("seconds", "samples_per_s")  # the only per-epoch fields allowed to differ between runs
# A small dense net with dropout, so the global RNG matters for reproducibility.
TINY = {"name": "tiny", "model": ["flatten", {"linear": 32}, "relu", {"dropout": 0.2},
                                  {"linear": "$num_classes"}]}


@pytest.fixture
def store(tmp_path):
    return open_store(tmp_path / "store")


def _strip(history) -> list[dict[str, float]]:
    return [{k: v for k, v in dict(h).items() if k not in TIMING} for h in history]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def _assert_same_run(a: Run, b: Run) -> None:
    assert _strip(a.history) == _strip(b.history)
    assert a.test_metrics == b.test_metrics
    assert a.test_report == b.test_report
    assert a.best_epoch == b.best_epoch
    _assert_same_weights(a.model.state_dict(), b.model.state_dict())  # the best weights
    for name in ("checkpoint.safetensors", "best.safetensors"):  # last and best weights on disk
        _assert_same_weights(load_file(a.directory / name), load_file(b.directory / name))


def _write_csv(path: Path, header: list[str], rows) -> Path:
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(f"{v}" for v in r) for r in rows) + "\n")
    return path


# ------------------------------------------------------------------------------ fit


def test_fit_digits_returns_and_records_the_run(store):
    run = fit("zoo:mlp", data="digits", epochs=2, batch_size=128, store=store, quiet=True)

    assert isinstance(run, Run) and run.status == "finished"
    assert [h["epoch"] for h in run.history] == [1, 2]
    for h in run.history:
        assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "samples_per_s"} <= h.keys()
        assert all(math.isfinite(v) for v in h.values())
    assert set(run.test_metrics) == {"loss", "acc", "top5"}
    assert 0.3 < run.test_metrics["acc"] <= 1.0  # 2 epochs already learn something
    assert run.best_epoch in (1, 2)

    record = store.get_run(run.run_id)
    assert record.status == "finished" and record.name == "mlp" and record.data == "digits"
    assert record.duration_s is not None and record.duration_s > 0
    assert record.params == sum(p.numel() for p in run.model.parameters())
    assert dict(record.test_metrics) == run.test_metrics
    assert [e.epoch for e in record.history] == [1, 2]
    assert [dict(e.metrics) for e in record.history] == run.history
    assert record.settings["epochs"] == 2 and record.settings["batch_size"] == 128
    assert record.settings["lr"] == 2e-3  # from the zoo spec's train section
    assert record.env["device"] == "cpu"

    folder = store.run_dir(run.run_id)
    assert run.directory == folder
    for name in ("spec.yaml", "best.safetensors", "checkpoint.json", "checkpoint.safetensors",
                 "optimizer.safetensors", "test_report.json"):
        assert (folder / name).is_file(), name
    assert not list(folder.glob("*.tmp"))
    assert has_checkpoint(folder)
    state = load_checkpoint(folder, model=build(run.spec), restore_rng=False)
    assert state["epoch"] == 2 and state["step_in_epoch"] == 0
    saved_spec = load_spec(str(folder / "spec.yaml"))
    assert saved_spec.input.shape == (1, 8, 8) and saved_spec.vars["num_classes"] == 10

    report = json.loads((folder / "test_report.json").read_text())
    n_test = len(load_dataset("digits").test)
    assert np.array(report["confusion"]).shape == (10, 10)
    assert np.array(report["confusion"]).sum() == n_test
    assert np.trace(np.array(report["confusion"])) == round(run.test_metrics["acc"] * n_test)


def test_fit_uses_archlab_home_by_default(archlab_home):
    run = fit(TINY, epochs=1, quiet=True)
    assert open_store().get_run(run.run_id).status == "finished"
    assert run.directory.is_relative_to(archlab_home)


def test_data_sets_fill_input_shape_and_num_classes(store, tmp_path):
    # zoo:cnn is declared for 1x28x28 MNIST; trained on digits it becomes a 1x8x8 model.
    assert load_spec("zoo:cnn").input.shape == (1, 28, 28)
    run = fit("zoo:cnn", data="digits", epochs=1, batch_size=256, store=store, quiet=True)
    assert run.model.input_shape == (1, 8, 8) and run.model.output_shape == (10,)
    assert run.spec.input.shape == (1, 8, 8)

    # A 3-class table: the spec's default num_classes (10) gives way to the data's.
    rng = np.random.default_rng(0)
    rows = [(*rng.normal(size=2).round(4), i % 3) for i in range(90)]
    path = _write_csv(tmp_path / "three.csv", ["a", "b", "label"], rows)
    run = fit("zoo:mlp", data=f"csv:{path}", epochs=1, store=store, quiet=True)
    assert run.model.input_shape == (2,) and run.model.output_shape == (3,)
    assert run.data.num_classes == 3
    assert "top5" not in run.test_metrics  # 3 classes: no top-5


# ------------------------------------------------------------------------- settings


def test_settings_precedence_defaults_spec_then_explicit(store):
    spec = load_spec({**TINY, "train": {"epochs": 3, "lr": 0.5, "batch_size": 32, "optimizer": "sgd"}})
    s = resolve_settings(spec, {"lr": 0.01, "batch_size": None, "momentum": 0.5})
    assert s.epochs == 3 and s.batch_size == 32 and s.optimizer == "sgd"  # spec over defaults
    assert s.lr == 0.01 and s.momentum == 0.5  # explicit over spec; None means "not given"
    assert s.weight_decay == TrainSettings().weight_decay and s.seed == 0  # defaults

    run = fit(spec, epochs=1, lr=0.02, store=store, quiet=True)
    assert run.settings.epochs == 1 and run.settings.lr == 0.02 and run.settings.batch_size == 32
    assert len(run.history) == 1
    stored = store.get_run(run.run_id).settings
    assert stored["epochs"] == 1 and stored["lr"] == 0.02 and stored["optimizer"] == "sgd"
    assert TrainSettings.from_mapping(dict(stored)) == run.settings  # round trip


def test_settings_convert_strings_and_reject_bools():
    s = TrainSettings.from_mapping({"epochs": "4", "lr": "1e-2", "hflip": "true", "grad_clip": 2})
    assert (s.epochs, s.lr, s.hflip, s.grad_clip) == (4, 0.01, True, 2.0)
    with pytest.raises(SpecError, match=r"train\.epochs: expected int"):
        TrainSettings.from_mapping({"epochs": True})
    with pytest.raises(SpecError, match=r"train\.epochs: expected int"):
        TrainSettings.from_mapping({"epochs": 2.5})


@pytest.mark.parametrize("where", ["spec", "kwarg"])
def test_unknown_setting_suggests_the_close_name(store, where):
    if where == "spec":
        with pytest.raises(SpecError, match=r"unknown setting 'epoch'\. Did you mean 'epochs'\?"):
            fit({**TINY, "train": {"epoch": 3}}, store=store, quiet=True)
    else:
        with pytest.raises(SpecError, match=r"unknown setting 'batchsize'\. Did you mean 'batch_size'\?"):
            fit(TINY, batchsize=32, store=store, quiet=True)
    assert store.list_runs() == []  # nothing recorded for a run that never started


@pytest.mark.parametrize("bad, words", [
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"lr": -1}, "lr must be > 0"),
    ({"optimizer": "adamx"}, "optimizer must be one of sgd, adam, adamw"),
    ({"precision": "fp8"}, "precision must be one of fp32, bf16, fp16"),
    ({"schedule": "linear"}, "schedule must be one of"),
    ({"device": "tpu"}, "device must be one of"),
    ({"grad_clip": 0}, "grad_clip must be > 0"),
    ({"early_stop": 0}, "early_stop must be >= 1"),
    ({"label_smoothing": 1.0}, "label_smoothing must be in"),
    ({"warmup": -1}, "warmup must be >= 0"),
    ({"step_size": 0}, "step_size must be >= 1"),
    ({"eval_batch_size": 0}, "eval_batch_size must be >= 1"),
])
def test_bad_setting_values_are_one_line_spec_errors(bad, words):
    with pytest.raises(SpecError) as info:
        TrainSettings.from_mapping(bad)
    text = str(info.value)
    assert words in text and "\n" not in text
    assert f"Received: {next(iter(bad.values()))!r}" in text or "Received:" in text


def test_unknown_task_is_a_spec_error(store):
    with pytest.raises(SpecError, match="classify"):
        fit(TINY, task="clasify", epochs=1, store=store, quiet=True)


def test_early_stop_keeps_the_best_epoch(store):
    # With a vanishing lr the validation accuracy never improves after epoch 1.
    run = fit(TINY, epochs=10, lr=1e-9, early_stop=1, store=store, quiet=True)
    assert len(run.history) == 2 and run.best_epoch == 1
    assert run.status == "finished" and store.get_run(run.run_id).status == "finished"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains_on_cpu(store, precision):
    run = fit(TINY, epochs=1, precision=precision, store=store, quiet=True)
    assert math.isfinite(run.test_metrics["loss"]) and run.settings.precision == precision
    assert all(p.dtype == torch.float32 for p in run.model.parameters())  # autocast, fp32 master weights


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_one_is_a_clear_error(store):
    with pytest.raises(TrainingError, match="no CUDA device.*--device cpu"):
        fit(TINY, device="cuda", store=store, quiet=True)
    assert store.list_runs() == []


# --------------------------------------------------------------- schedules, optimizers


def _lrs(settings: TrainSettings, steps_per_epoch: int) -> list[float]:
    """The learning rate used by each optimizer step, for base lr 1."""
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    sched = make_schedule(opt, settings, steps_per_epoch)
    out = []
    for _ in range(settings.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine():
    lrs = _lrs(TrainSettings(epochs=2, warmup=4, schedule="cosine"), steps_per_epoch=10)  # 20 steps
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)  # cosine starts after the warm-up
    assert lrs[12] == pytest.approx(0.5)  # half way through the 16 cosine steps
    assert lrs[19] == pytest.approx(0.5 * (1 + math.cos(math.pi * 15 / 16)))
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False))  # never rises after warm-up


def test_step_and_constant_schedules():
    lrs = _lrs(TrainSettings(epochs=4, schedule="step", step_size=1, gamma=0.5), steps_per_epoch=5)
    assert lrs[0] == lrs[4] == pytest.approx(1.0)
    assert lrs[5] == lrs[9] == pytest.approx(0.5)
    assert lrs[10] == pytest.approx(0.25) and lrs[19] == pytest.approx(0.125)
    assert set(_lrs(TrainSettings(epochs=2), steps_per_epoch=3)) == {1.0}
    warm = _lrs(TrainSettings(epochs=1, warmup=2), steps_per_epoch=4)
    assert warm == pytest.approx([0.5, 1.0, 1.0, 1.0])


def test_optimizers_get_their_hyperparameters():
    model = torch.nn.Linear(3, 2)
    sgd = make_optimizer(model, TrainSettings(optimizer="sgd", lr=0.1, momentum=0.8, weight_decay=1e-4))
    assert type(sgd) is torch.optim.SGD
    assert sgd.defaults["lr"] == 0.1 and sgd.defaults["momentum"] == 0.8 and sgd.defaults["weight_decay"] == 1e-4
    adam = make_optimizer(model, TrainSettings(optimizer="adam", lr=0.01, weight_decay=0.1))
    assert type(adam) is torch.optim.Adam and adam.defaults["lr"] == 0.01 and adam.defaults["weight_decay"] == 0.1
    adamw = make_optimizer(model, TrainSettings(optimizer="adamw", lr=0.003))
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["lr"] == 0.003
    assert adamw.defaults["weight_decay"] == 0.0  # ours, not torch's 0.01 default
    assert sum(p.numel() for g in adamw.param_groups for p in g["params"]) == 3 * 2 + 2

    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(TrainingError, match="no trainable parameters"):
        make_optimizer(model, TrainSettings())


def test_optimizers_take_the_fused_implementation_with_the_same_update():
    for name in ("sgd", "adam", "adamw"):
        settings = TrainSettings(optimizer=name, lr=0.01, momentum=0.9, weight_decay=0.01)
        nets = []
        for fused in (True, False):
            torch.manual_seed(0)
            net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
            opt = make_optimizer(net, settings)
            assert opt.defaults["fused"] is True
            if not fused:  # the default implementation, what a plain hand-written loop gets
                opt.param_groups[0]["fused"] = None
            g = torch.Generator().manual_seed(1)
            for _ in range(20):
                loss = net(torch.randn(8, 6, generator=g)).square().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            nets.append(net)
        for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # one kernel, another rounding
    # parameters the fused kernels do not take get the default implementation
    complex_net = torch.nn.Module()
    complex_net.w = torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))
    assert make_optimizer(complex_net, TrainSettings(optimizer="adam")).defaults["fused"] is None


def test_a_run_saved_with_the_default_optimizer_resumes_with_it(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    old = torch.optim.AdamW(net.parameters(), lr=0.01)  # as make_optimizer built it before fused
    net(torch.randn(3, 4)).sum().backward()
    old.step()
    save_checkpoint(tmp_path, model=net, optimizer=old, state={})
    new = make_optimizer(net, TrainSettings(optimizer="adamw", lr=0.01))
    load_checkpoint(tmp_path, model=net, optimizer=new)
    assert new.param_groups[0]["fused"] is None  # the saved implementation, so resume is bit-exact


def _one_step_dataset(n: int = 16) -> Dataset:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, 6, generator=g) * 5, torch.arange(n) % 3
    info = DataInfo("toy", (6,), "float", "classify", 3)
    return Dataset(info, Split(x, y), Split(x[:4], y[:4]), Split(x[:4], y[:4]))


@pytest.mark.parametrize("clip", [None, 1e-3])
def test_grad_clip_bounds_the_update(store, clip):
    """One SGD step with lr 1 moves the weights by exactly the (clipped) gradient."""
    spec = load_spec({"name": "lin", "model": [{"linear": 16}, "tanh", {"linear": "$num_classes"}]})
    data = _one_step_dataset()
    s = TrainSettings(epochs=1, batch_size=len(data.train), optimizer="sgd", lr=1.0, momentum=0.0,
                      grad_clip=clip)
    trainer = Trainer(spec, data, s, store, data_uri="toy", quiet=True)
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}

    # The full-batch gradient of the same initial model, computed by hand.
    ref = build(trainer.spec)
    ref.load_state_dict(before)
    torch.nn.functional.cross_entropy(ref(data.train.x), data.train.y).backward()
    grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ref.parameters()])).item()
    assert grad_norm > 1e-2  # so a clip of 1e-3 really clips

    trainer.run()
    after = trainer.net.state_dict()
    step = torch.linalg.vector_norm(torch.stack([(after[k] - before[k]).norm() for k in before])).item()
    assert step == pytest.approx(clip if clip else grad_norm, rel=1e-3)


def test_grad_clip_tames_a_huge_sgd_learning_rate(store):
    common = dict(epochs=2, batch_size=64, optimizer="sgd", momentum=0.0, lr=1e6, store=store, quiet=True)
    with pytest.raises(TrainingError, match="the run diverged"):  # a finite loss of ~1e18: divergence_rule
        fit(TINY, **common)
    tame = fit(TINY, grad_clip=1e-6, **common)  # each step moves the weights by at most 1
    assert tame.history[-1]["train_loss"] < 2 and tame.test_metrics["acc"] > 0.5


# -------------------------------------------------------------------- other tasks


def test_regression_on_a_csv(store, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    y = 3 * x[:, 0] - 2 * x[:, 1] + 0.5 * x[:, 2] + 0.1 * rng.normal(size=400)
    # The target is not the last column: `target` names it.
    rows = [(*r[:2].round(5), round(t, 5), *r[2:].round(5)) for r, t in zip(x, y, strict=True)]
    path = _write_csv(tmp_path / "reg.csv", ["a", "b", "y", "c", "d"], rows)
    spec = {"name": "reg", "model": [{"linear": 32}, "relu", {"linear": 1}]}
    run = fit(spec, data=f"csv:{path}", target="y", epochs=25, batch_size=32, lr=1e-2, store=store, quiet=True)

    assert run.data.task == "regress" and run.data.input_shape == (4,)
    assert set(run.test_metrics) == {"loss", "mae", "r2"}
    assert run.test_metrics["r2"] > 0.5
    assert run.test_metrics["mae"] < 1.0
    assert {"train_r2", "val_r2", "val_mae", "val_loss"} <= run.history[-1].keys()
    # Re-evaluation reads the same table with the same target column.
    again = evaluate(run.run_id, store=store)
    assert {k: again[k] for k in run.test_metrics} == pytest.approx(run.test_metrics)
    assert store.get_run(run.run_id).settings["target"] == "y"


def test_regression_with_a_wide_output_is_a_clear_error(store, tmp_path):
    rows = [(i / 7, (i * 37 % 101) / 10) for i in range(60)]
    path = _write_csv(tmp_path / "reg.csv", ["x", "y"], rows)
    with pytest.raises(SpecError, match=r"does not fit regression targets.*linear: 1"):
        fit("zoo:mlp", data=f"csv:{path}", epochs=1, batch_size=8, store=store, quiet=True)
    assert store.list_runs()[0].status == "failed"


def test_binary_classification_with_one_logit(store, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 2))
    label = np.where(x[:, 0] + x[:, 1] > 0, "yes", "no")
    path = _write_csv(tmp_path / "bin.csv", ["a", "b", "label"], [(*r.round(4), t) for r, t in zip(x, label, strict=True)])
    spec = {"name": "logit", "model": [{"linear": 1}]}
    run = fit(spec, data=f"csv:{path}", epochs=20, batch_size=32, lr=5e-2, store=store, quiet=True)

    assert run.data.num_classes == 2 and run.data.class_names == ("no", "yes")
    assert run.model.output_shape == (1,)
    assert set(run.test_metrics) == {"loss", "acc"}
    assert run.test_metrics["acc"] > 0.9
    assert np.array(run.test_report["confusion"]).shape == (2, 2)
    again = evaluate(run.run_id, store=store)
    assert again["acc"] == run.test_metrics["acc"] and again["loss"] == pytest.approx(run.test_metrics["loss"])

    with pytest.raises(SpecError, match=r"\(2,\) logits or \(1,\) for binary"):
        fit({"name": "bad", "model": [{"linear": 3}]}, data=f"csv:{path}", epochs=1, store=store, quiet=True)


# ----------------------------------------------------------------------- divergence


def test_divergence_in_the_first_epoch(store):
    with pytest.raises(TrainingError) as info:
        fit("zoo:mlp", lr=1e6, epochs=2, store=store, quiet=True)  # NaN at step 5
    text = str(info.value)
    assert "\n" not in text
    assert "at epoch 1, step " in text and "global step" in text
    # Not a mechanical tenth (--lr 100000): the optimizer's usual learning rate.
    assert "--lr 0.001; adamw's usual is 0.001" in text and "--grad-clip" in text
    assert "no checkpoint was saved" in text  # and it does not claim one is intact

    [record] = store.list_runs()
    assert record.status == "failed" and record.message == text
    folder = store.run_dir(record.run_id)
    assert not has_checkpoint(folder) and not list(folder.glob("*.tmp"))
    with pytest.raises(TrainingError, match="no checkpoint"):
        resume(record.run_id, store=store, quiet=True)


def test_divergence_keeps_the_last_epoch_checkpoint(store):
    # A step schedule that multiplies the lr by 1e12 after epoch 1: epoch 1 trains normally,
    # epoch 2 diverges.
    common = dict(epochs=3, batch_size=64, lr=1e-3, seed=5, schedule="step", step_size=1, gamma=1e12,
                  store=store, quiet=True)
    with pytest.raises(TrainingError) as info:
        fit("zoo:mlp", **common)
    text = str(info.value)
    assert "at epoch 2, step " in text and "(end of epoch 1) is intact" in text
    assert "--lr" in text and "--grad-clip" in text

    [record] = store.list_runs()
    assert record.status == "failed" and len(record.history) == 1
    folder = store.run_dir(record.run_id)
    assert has_checkpoint(folder)
    net = build(load_spec(str(folder / "spec.yaml")))
    state = load_checkpoint(folder, model=net, restore_rng=False)
    assert state["epoch"] == 1 and state["step_in_epoch"] == 0
    assert all(torch.isfinite(p).all() for p in net.parameters())

    # The checkpoint holds exactly the weights after epoch 1 (the failure did not touch it).
    one = fit("zoo:mlp", **{**common, "epochs": 1})
    _assert_same_weights(net.state_dict(), load_file(one.directory / "checkpoint.safetensors"))


# --------------------------------------------------------------- interrupt and resume




RESUME_CASES = {
    # Ctrl-C in the middle of epoch 2 (20 steps per epoch).
    "mid-epoch": dict(at=27, augment={}),
    "mid-epoch-augmented": dict(at=27, augment={"crop_padding": 1, "hflip": True}),
    # Ctrl-C after the last step of epoch 1, before its validation.
    "end-of-epoch": dict(at=20, augment={"crop_padding": 1}),
}


@pytest.mark.parametrize("case", RESUME_CASES)
def test_ctrl_c_then_resume_equals_an_uninterrupted_run(store, monkeypatch, case):
    at, augment = RESUME_CASES[case]["at"], RESUME_CASES[case]["augment"]
    settings = dict(data="digits", epochs=3, batch_size=64, seed=3, schedule="cosine", warmup=5, store=store,
                    quiet=True, **augment)
    steps_per_epoch = math.ceil(len(load_dataset("digits").train) / 64)
    assert steps_per_epoch == 20
    reference = fit(TINY, **settings)

    interrupt_at(monkeypatch, at)
    with pytest.raises(KeyboardInterrupt):
        fit(TINY, **settings)
    [record] = store.list_runs(status="interrupted")
    assert "archlab train --resume " + record.run_id in record.message
    folder = store.run_dir(record.run_id)
    state = load_checkpoint(folder, model=build(load_spec(str(folder / "spec.yaml"))), restore_rng=False)
    epoch, step = divmod(at, steps_per_epoch)
    if step == 0:
        epoch, step = epoch - 1, steps_per_epoch
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (epoch, step, at)
    assert isinstance(state["partial_sums"], torch.Tensor) and isinstance(state["generator"], torch.Tensor)
    assert len(state["history"]) == epoch

    resumed = resume(record.run_id, store=store, quiet=True)
    assert resumed.run_id == record.run_id
    _assert_same_run(reference, resumed)
    after = store.get_run(record.run_id)
    assert after.status == "finished" and len(after.history) == 3
    assert dict(after.test_metrics) == reference.test_metrics


def test_second_ctrl_c_stops_at_once_and_keeps_the_last_consistent_checkpoint(store, monkeypatch):
    settings = dict(data="digits", epochs=2, batch_size=64, seed=3, store=store, quiet=True)
    reference = fit(TINY, **settings)
    interrupt_at(monkeypatch, 27, signals=2)
    with pytest.raises(KeyboardInterrupt):
        fit(TINY, **settings)
    [record] = store.list_runs(status="interrupted")
    folder = store.run_dir(record.run_id)
    state = load_checkpoint(folder, model=build(load_spec(str(folder / "spec.yaml"))), restore_rng=False)
    assert (state["epoch"], state["step_in_epoch"]) == (1, 0)  # not a checkpoint of a half-done step
    _assert_same_run(reference, resume(record.run_id, store=store, quiet=True))


def test_resume_refuses_finished_and_unknown_runs(store):
    run = fit(TINY, epochs=1, store=store, quiet=True)
    with pytest.raises(TrainingError, match="already finished"):
        resume(run.run_id, store=store)
    with pytest.raises(ArchlabError, match="nope"):
        resume("nope", store=store)


def test_augmentation_changes_training_and_is_seeded(store):
    plain = fit(TINY, epochs=1, seed=1, store=store, quiet=True)
    augmented = fit(TINY, epochs=1, seed=1, crop_padding=2, hflip=True, store=store, quiet=True)
    again = fit(TINY, epochs=1, seed=1, crop_padding=2, hflip=True, store=store, quiet=True)
    assert augmented.history[0]["train_loss"] != plain.history[0]["train_loss"]
    _assert_same_run(augmented, again)
    tokens = Split(torch.randint(0, 10, (8, 4)), torch.arange(8) % 2)
    data = Dataset(DataInfo("tok", (4,), "long", "classify", 2, vocab_size=10), tokens, tokens, tokens)
    spec = load_spec({"name": "tok", "model": [{"embedding": {"vocab": 10, "dim": 4}}, "flatten", {"linear": 2}]})
    with pytest.raises(SpecError, match="token input"):
        Trainer(spec, data, TrainSettings(crop_padding=1), store, data_uri="tok", quiet=True)


# ---------------------------------------------------------------- kill the process


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "ARCHLAB_HOME": str(home), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "archlab", "train", *args]


def _stored_result(home: Path) -> dict:
    [record] = open_store(home).list_runs()
    folder = open_store(home).run_dir(record.run_id)
    return {"status": record.status, "history": _strip(e.metrics for e in record.history),
            "epochs": [e.epoch for e in record.history], "test": dict(record.test_metrics),
            "report": json.loads((folder / "test_report.json").read_text()),
            "last": load_file(folder / "checkpoint.safetensors"), "best": load_file(folder / "best.safetensors")}


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """One uninterrupted CLI run, one killed with SIGKILL and one stopped with SIGINT in an
    epoch after the first, each then resumed with `archlab train --resume`. All side by side:
    a stopped run is resumed while the uninterrupted one still trains."""
    epochs = 8
    cmd = _train_cmd("zoo:mlp", "--data", "digits", "--epochs", str(epochs), "--batch-size", "8",
                     "--seed", "3", "--quiet")
    homes = {name: tmp_path_factory.mktemp(name) for name in ("reference", "sigkill", "sigint")}

    def start(args: list[str], home: Path) -> subprocess.Popen:
        return subprocess.Popen(args, env=_env(home), cwd=home, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    procs = {name: start(cmd, home) for name, home in homes.items()}
    resumes: dict[str, subprocess.Popen] = {}
    stopped: dict[str, dict] = {}
    try:
        stop_after_first_epoch({name: (procs[name], homes[name], sig)
                                 for name, sig in (("sigkill", signal.SIGKILL), ("sigint", signal.SIGINT))})
        for name in ("sigkill", "sigint"):
            out, err = procs[name].communicate(timeout=300)
            [record] = open_store(homes[name]).list_runs()
            folder = open_store(homes[name]).run_dir(record.run_id)
            stopped[name] = {"run_id": record.run_id, "status": record.status, "rc": procs[name].returncode,
                             "stderr": err, "position": checkpoint_position(homes[name]),
                             "state_files": has_checkpoint(folder), "epochs_logged": len(record.history)}
            resumes[name] = start(_train_cmd("--resume", record.run_id, "--quiet"), homes[name])
        out, err = procs["reference"].communicate(timeout=300)
        reference = (out, err, procs["reference"].returncode)
        for name, p in resumes.items():
            out, err = p.communicate(timeout=300)
            stopped[name]["resume"] = (out, err, p.returncode)
    finally:
        for p in [*procs.values(), *resumes.values()]:
            if p.poll() is None:
                p.kill()
                p.wait()
    return {"epochs": epochs, "reference": reference, "stopped": stopped,
            "results": {name: _stored_result(home) for name, home in homes.items()}}


def _assert_same_stored(a: dict, b: dict) -> None:
    assert a["epochs"] == b["epochs"]
    assert a["history"] == b["history"]
    assert a["test"] == b["test"]
    assert a["report"] == b["report"]
    _assert_same_weights(a["last"], b["last"])
    _assert_same_weights(a["best"], b["best"])


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(killed_and_resumed):
    k = killed_and_resumed
    out, err, rc = k["reference"]
    assert rc == 0, err
    assert "test  loss" in out
    killed = k["stopped"]["sigkill"]
    assert killed["rc"] == -signal.SIGKILL
    assert killed["status"] == "running"  # nobody could record anything
    assert killed["state_files"] and 1 <= killed["position"][0] < k["epochs"]
    out, err, rc = killed["resume"]
    assert rc == 0, err
    assert killed["run_id"] in out and "test  loss" in out
    results = k["results"]
    assert results["sigkill"]["status"] == "finished"
    assert results["reference"]["epochs"] == list(range(1, k["epochs"] + 1))
    _assert_same_stored(results["reference"], results["sigkill"])


@pytest.mark.slow
def test_sigint_mid_epoch_exits_130_and_resumes_identically(killed_and_resumed):
    k = killed_and_resumed
    stopped = k["stopped"]["sigint"]
    assert stopped["rc"] == 130, stopped["stderr"]
    assert "Traceback" not in stopped["stderr"]
    assert stopped["status"] == "interrupted"
    epoch, step = stopped["position"]
    assert 1 <= epoch < k["epochs"] and step > 0  # a mid-epoch checkpoint
    out, err, rc = stopped["resume"]
    assert rc == 0, err
    assert k["results"]["sigint"]["status"] == "finished"
    _assert_same_stored(k["results"]["reference"], k["results"]["sigint"])


# Trains TINY in a child process whose second checkpoint write (end of epoch 2, on the
# writer's background thread) stops just before its commit, while training goes on.
_HELD_WRITE = """
import json, os, sys, threading, time
import torch
torch.set_num_threads(1)
import archlab.train._checkpoint as ckpt
from archlab.train import fit
held, commits, real_replace = sys.argv[1], [], os.replace

def replace(src, dst):
    if str(dst).endswith("checkpoint.json"):
        commits.append(threading.current_thread() is threading.main_thread())
        if len(commits) == 2:
            open(held, "w").write(json.dumps(commits))
            time.sleep(600)  # killed here: staged files written, not committed
    return real_replace(src, dst)

ckpt.os.replace = replace
fit(json.loads(sys.argv[2]), data="digits", epochs=4, batch_size=64, seed=5, store=sys.argv[3], quiet=True)
"""


@pytest.mark.slow
def test_sigkill_during_a_background_checkpoint_write_resumes_from_the_previous_one(store, tmp_path):
    reference = fit(TINY, data="digits", epochs=4, batch_size=64, seed=5, store=store, quiet=True)
    held, home = tmp_path / "held", tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", _HELD_WRITE, str(held), json.dumps(TINY), str(home)],
                             env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not held.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert held.exists(), child.communicate()[1][-2000:]
        child.kill()
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert json.loads(held.read_text()) == [False, False]  # both commits on the writer thread
    killed = open_store(home)
    [record] = killed.list_runs()
    folder = killed.run_dir(record.run_id)
    assert record.status == "running" and list(folder.glob("*.tmp"))  # the held write's files
    state = load_checkpoint(folder, model=build(load_spec(str(folder / "spec.yaml"))), restore_rng=False)
    assert (state["epoch"], state["step_in_epoch"]) == (1, 0)  # the previous complete checkpoint
    resumed = resume(record.run_id, store=killed, quiet=True)
    _assert_same_run(reference, resumed)
    assert not list(folder.glob("*.tmp"))
    assert not [t for t in threading.enumerate() if t.name.startswith("archlab-checkpoint")]  # closed


# ------------------------------------------------------------------------- evaluate


def test_evaluate_reproduces_the_stored_test_metrics(store):
    run = fit(TINY, epochs=2, label_smoothing=0.2, store=store, quiet=True)
    result = evaluate(run.run_id[:5], store=store)  # a unique prefix will do
    assert result["run_id"] == run.run_id and result["data"] == "digits" and result["split"] == "test"
    assert {k: result[k] for k in run.test_metrics} == pytest.approx(run.test_metrics, rel=1e-6)
    assert result["confusion"] == run.test_report["confusion"]
    val = evaluate(run.run_id, store=store, split="val")
    assert val["acc"] == pytest.approx(run.history[-1]["val_acc"]) or run.best_epoch != 2
    with pytest.raises(ArchlabError, match="--split must be train, val or test"):
        evaluate(run.run_id, store=store, split="dev")


def test_evaluate_on_data_of_another_shape_is_a_clear_error(store, tmp_path):
    run = fit(TINY, epochs=1, store=store, quiet=True)
    with pytest.raises(ArchlabError) as info:
        evaluate(run.run_id, "synthetic:images?n=50&shape=1x4x4&classes=10", store=store)
    text = str(info.value)
    assert "(1, 4, 4)" in text and "(1, 8, 8)" in text and "\n" not in text
    with pytest.raises(DataError, match="file not found"):
        evaluate(run.run_id, f"csv:{tmp_path / 'missing.csv'}", store=store)


# ------------------------------------------------------------------ quality targets


@pytest.mark.slow
@pytest.mark.parametrize("name, target", [("zoo:mlp", 0.96), ("zoo:cnn", 0.98)])
def test_zoo_models_reach_their_accuracy_on_digits(store, name, target):
    """The acceptance numbers: the zoo specs' own train settings, seed 0, bundled digits."""
    run = fit(name, data="digits", store=store, quiet=True)
    assert run.settings == resolve_settings(load_spec(name), {})  # nothing overridden
    assert run.test_metrics["acc"] >= target, f"{name}: test accuracy {run.test_metrics['acc']:.4f}"


# ---------------------------------------------------------------- run lock and data paths


def test_run_lock_refuses_a_second_trainer_and_is_released(tmp_path):
    from archlab.runs import is_alive, run_lock

    assert not is_alive(tmp_path)
    with run_lock(tmp_path, "r1"):
        assert is_alive(tmp_path)
        with pytest.raises(TrainingError, match="being trained by another process"):
            with run_lock(tmp_path, "r1"):
                pass
    assert not is_alive(tmp_path)


def test_relative_data_paths_are_recorded_absolute(tmp_path, monkeypatch):
    from archlab.train import absolute_data_uri

    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    monkeypatch.chdir(tmp_path)
    assert absolute_data_uri("csv:t.csv") == f"csv:{tmp_path / 't.csv'}"
    assert absolute_data_uri("t.csv") == f"csv:{tmp_path / 't.csv'}"
    assert absolute_data_uri("digits") == "digits"
    assert absolute_data_uri("synthetic:images?n=10") == "synthetic:images?n=10"


def test_an_epoch_callback_can_stop_a_run_with_a_status():
    from archlab.data import load_dataset
    from archlab.runs import open_store
    from archlab.spec import load_spec
    from archlab.train import StopRun, Trainer, TrainSettings

    seen = []

    def prune_after_two(record):
        seen.append(record["epoch"])
        if record["epoch"] == 2:
            raise StopRun("pruned", "below the median at epoch 2")

    store = open_store()
    trainer = Trainer(load_spec("zoo:mlp"), load_dataset("digits"), TrainSettings(epochs=5), store,
                      data_uri="digits", quiet=True, on_epoch=prune_after_two)
    with pytest.raises(StopRun):
        trainer.run()
    record = store.get_run(trainer.run_id)
    assert seen == [1, 2] and record.status == "pruned" and len(record.history) == 2
    assert "median" in record.message


def test_a_time_budget_ends_training_early_with_a_partial_last_epoch():
    run = fit("zoo:mlp", data="digits", epochs=500, batch_size=8, max_minutes=0.02, quiet=True)
    assert 1 <= len(run.history) < 500
    last = run.history[-1]
    assert "val_acc" in last and run.test_metrics["acc"] > 0
    if "partial" in last:
        assert 0 < last["partial"] < 1
    with pytest.raises(SpecError, match="max_minutes"):
        fit("zoo:mlp", data="digits", max_minutes=0, quiet=True)


def test_eval_batch_defaults_to_the_training_batch_on_cpu_and_big_on_gpus() -> None:
    s = TrainSettings(batch_size=32)
    assert s.eval_batch("cpu") == 32  # big CPU eval batches fall out of cache (bench/fit_overhead.md)
    assert s.eval_batch("cuda") == 1024 and TrainSettings(batch_size=4096).eval_batch("cuda") == 4096
    assert TrainSettings(batch_size=32, eval_batch_size=100).eval_batch("cuda") == 100
    assert TrainSettings.from_mapping({"eval_batch_size": "256"}).eval_batch("cpu") == 256
