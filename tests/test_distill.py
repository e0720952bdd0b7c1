"""Knowledge distillation (archlab.train._distill_task, archlab.compress.distill, `archlab distill`):
Hinton's loss, a run of the one loop that records its teacher, refusals before anything is
recorded, and a bit-exact resume after Ctrl-C mid-epoch."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from interrupts import interrupt_at
from safetensors.torch import load_file
from typer.testing import CliRunner

from archlab.cli import app
from archlab.compress import distill
from archlab.core import DataError, SpecError, StoreError, TrainingError
from archlab.runs import open_store
from archlab.train import KD_ALPHA, KD_TEMPERATURE, distillation_loss, fit, load_run_model, resume

REPO = Path(__file__).resolve().parents[1]
TIMING = ("seconds", "samples_per_s")
TEACHER = {"name": "teacher", "input": {"shape": [1, 8, 8]},
           "model": ["flatten", {"linear": 64}, "relu", {"linear": "$num_classes"}]}
STUDENT = {"name": "student", "input": {"shape": [1, 8, 8]},
           "model": ["flatten", {"linear": 8}, "relu", {"dropout": 0.1}, {"linear": "$num_classes"}]}
# 1,257 digits training images in batches of 256: 5 steps per epoch.
QUICK = {"batch_size": 256, "lr": 1e-2, "quiet": True}


@pytest.fixture(scope="module")
def teacher_home(tmp_path_factory):
    """One store holding a finished teacher (2 epochs of a 64-unit MLP on digits)."""
    home = tmp_path_factory.mktemp("teacher-home")
    run = fit(TEACHER, data="digits", store=home, epochs=2, **QUICK)
    return home, run.run_id


@pytest.fixture
def home(teacher_home, tmp_path, monkeypatch):
    """A copy of the teacher's store as this test's ARCHLAB_HOME (tests add runs to it)."""
    import shutil

    src, run_id = teacher_home
    dst = tmp_path / "home"
    shutil.copytree(src, dst)
    monkeypatch.setenv("ARCHLAB_HOME", str(dst))
    return dst, run_id


def _strip(history) -> list[dict[str, float]]:
    return [{k: v for k, v in dict(h).items() if k not in TIMING} for h in history]


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


# ------------------------------------------------------------------------- the loss


def test_distillation_loss_is_t_squared_times_the_kl_of_softened_logits():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    for temp in (1.0, 4.0):
        p, q = F.softmax(t / temp, -1), F.softmax(s / temp, -1)
        by_hand = (p * (p.log() - q.log())).sum(-1).mean() * temp**2
        assert torch.allclose(distillation_loss(s, t, temp), by_hand, atol=1e-6)
    assert float(distillation_loss(t, t, 4.0)) == pytest.approx(0.0, abs=1e-7)
    # per position for (B, T, C) logits: the mean over every sample and position
    s3, t3 = torch.randn(2, 3, 7, generator=g), torch.randn(2, 3, 7, generator=g)
    assert torch.allclose(distillation_loss(s3, t3, 2.0), distillation_loss(s3.reshape(6, 7), t3.reshape(6, 7), 2.0))


def test_a_single_logit_is_distilled_as_a_bernoulli():
    s, t = torch.tensor([[0.3], [-1.2]]), torch.tensor([[2.0], [0.5]])
    temp = 2.0
    p, q = torch.sigmoid(t / temp), torch.sigmoid(s / temp)
    bernoulli = (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).mean() * temp**2
    assert torch.allclose(distillation_loss(s, t, temp), bernoulli, atol=1e-6)


def test_defaults_are_hintons_temperature_and_a_teacher_heavy_alpha():
    assert (KD_TEMPERATURE, KD_ALPHA) == (4.0, 0.9)


# ----------------------------------------------------------------- a run of the one loop


def test_a_distilled_run_records_its_teacher_t_and_alpha_and_leaves_the_teacher_alone(home):
    _, teacher = home
    before = load_run_model(teacher)[0].state_dict()
    run = distill(teacher[:6], STUDENT, epochs=2, temperature=3, alpha=0.7, **QUICK)
    record = open_store().get_run(run.run_id)
    assert record.settings["teacher"] == teacher and record.tags["teacher"] == teacher  # the full id
    assert record.settings["kd_temperature"] == 3.0 and record.settings["kd_alpha"] == 0.7
    assert record.tags["task"] == "classify" and record.data == "digits"  # the teacher's data
    assert {"train_loss", "train_acc", "train_kd", "val_loss", "val_acc"} <= set(run.history[-1])
    assert "acc" in run.test_metrics and record.status == "finished"
    _same_weights(before, load_run_model(teacher)[0].state_dict())
    # the defaults are filled in and recorded
    again = fit(STUDENT, data="digits", teacher=teacher, epochs=1, **QUICK)
    assert (again.settings.kd_temperature, again.settings.kd_alpha) == (KD_TEMPERATURE, KD_ALPHA)


def test_alpha_0_is_the_student_alone_and_alpha_1_learns_from_the_teacher_alone(home):
    _, teacher = home
    alone = fit(STUDENT, data="digits", epochs=2, seed=1, **QUICK)
    no_kd = fit(STUDENT, data="digits", epochs=2, seed=1, teacher=teacher, kd_alpha=0.0, **QUICK)
    _same_weights(alone.model.state_dict(), no_kd.model.state_dict())  # the teacher costs no RNG draw
    assert alone.test_metrics == no_kd.test_metrics
    only_kd = fit(STUDENT, data="digits", epochs=3, seed=1, teacher=teacher, kd_alpha=1.0, **QUICK)
    assert only_kd.history[-1]["train_kd"] < only_kd.history[0]["train_kd"]

    # the student that learned from the teacher alone is closer to it than the one that learned alone
    from archlab.data import load_dataset

    x = load_dataset("digits").test.x
    t_net = load_run_model(teacher)[0]
    with torch.no_grad():
        soft = t_net(x)
        kl = {name: float(distillation_loss(r.model.eval()(x), soft, 4.0)) for name, r in
              (("alone", alone), ("kd", only_kd))}
    assert kl["kd"] < kl["alone"]


def test_a_distilled_run_interrupted_mid_epoch_resumes_bit_exactly(home, monkeypatch):
    _, teacher = home
    settings = dict(epochs=3, seed=2, schedule="cosine", warmup=2, teacher=teacher, **QUICK)
    reference = fit(STUDENT, data="digits", **settings)
    interrupt_at(monkeypatch, 7)  # mid-epoch 2
    with pytest.raises(KeyboardInterrupt, match="resume with `archlab train --resume"):
        fit(STUDENT, data="digits", **settings)
    [record] = open_store().list_runs(status="interrupted")
    resumed = resume(record.run_id, quiet=True)  # the teacher is reloaded from the store
    assert _strip(resumed.history) == _strip(reference.history)
    assert resumed.test_metrics == reference.test_metrics and resumed.best_epoch == reference.best_epoch
    _same_weights(reference.model.state_dict(), resumed.model.state_dict())
    _same_weights(load_file(reference.directory / "checkpoint.safetensors"),
                  load_file(resumed.directory / "checkpoint.safetensors"))
    assert open_store().get_run(record.run_id).settings["teacher"] == teacher


def test_a_language_model_learns_from_a_language_model_teacher(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 40)
    lm = {"name": "tiny-lm", "input": {"shape": [16], "dtype": "long"},
          "model": [{"embedding": {"vocab": "$vocab_size", "dim": 8}}, {"linear": "$vocab_size"}]}
    data = f"text:{corpus}?context=16"
    teacher = fit(lm, data=data, epochs=1, batch_size=64, lr=1e-2, quiet=True)
    student = distill(teacher.run_id, lm, epochs=1, batch_size=64, lr=1e-2, quiet=True)
    assert student.settings.teacher == teacher.run_id and student.data.task == "language_model"
    assert math.isfinite(student.history[-1]["train_kd"]) and "ppl" in student.test_metrics


# ----------------------------------------------------------------- refusals, one line


def _runs() -> int:
    return len(open_store().list_runs())


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


@pytest.fixture
def tables(tmp_path):
    """Three small csv files of two features: 3 classes, 2 classes, a regression target."""
    out = {}
    for name, target in (("three", lambda i: i % 3), ("two", lambda i: i % 2), ("reg", lambda i: i * 0.5)):
        path = tmp_path / f"{name}.csv"
        path.write_text("a,b,y\n" + "".join(f"{i % 7},{i % 5},{target(i)}\n" for i in range(60)))
        out[name] = f"csv:{path}"
    return out


MLP = {"name": "t", "model": [{"linear": 8}, "relu", {"linear": "$num_classes"}]}
REG = {"name": "r", "model": [{"linear": 4}, "relu", {"linear": 1}]}


def test_a_teacher_with_other_classes_is_refused_before_anything_is_recorded(home, tables):
    teacher = fit(MLP, data=tables["three"], epochs=1, quiet=True)
    n = _runs()
    with pytest.raises(SpecError, match="outputs \\(3,\\) logits.*the student outputs \\(2,\\)") as e:
        distill(teacher.run_id, MLP, data=tables["two"], epochs=1, quiet=True)
    _one_line(e)
    assert _runs() == n


def test_a_binary_classifier_with_one_logit_learns_from_one(home, tables):
    one = {"name": "b", "model": [{"linear": 8}, "relu", {"linear": 1}]}
    teacher = fit(one, data=tables["two"], epochs=2, quiet=True)
    student = distill(teacher.run_id, one, epochs=2, quiet=True)
    assert student.data.num_classes == 2 and math.isfinite(student.history[-1]["train_kd"])
    assert student.history[-1]["train_kd"] > 0 and "acc" in student.test_metrics


def test_a_teacher_of_another_input_shape_task_or_status_is_refused(home, tables):
    _, teacher = home
    regressor = fit(REG, data=tables["reg"], task="regress", epochs=1, quiet=True).run_id
    n = _runs()
    with pytest.raises(DataError, match="reads samples of shape \\(1, 8, 8\\); the data gives \\(2,\\). Received: "
                                        "data samples \\(2,\\); distil on data the teacher reads") as e:
        distill(teacher, MLP, data=tables["three"], epochs=1, quiet=True)
    _one_line(e)
    with pytest.raises(SpecError, match="needs a classification task.*Received: a regress student") as e:
        distill(regressor, REG, epochs=1, quiet=True)
    _one_line(e)
    with pytest.raises(SpecError, match="is a regress run; this student's task is classify") as e:
        fit(MLP, data=tables["three"], teacher=regressor, epochs=1, quiet=True)
    _one_line(e)
    with pytest.raises(StoreError, match="teacher r0000dead:.*not found") as e:
        fit(STUDENT, data="digits", teacher="r0000dead", epochs=1, quiet=True)
    _one_line(e)
    with pytest.raises(SpecError, match="give the teacher too"):
        fit(STUDENT, data="digits", kd_alpha=0.5, epochs=1, quiet=True)
    with pytest.raises(SpecError, match="--alpha: expected a weight in \\[0, 1\\].*Received: 1.5"):
        distill(teacher, STUDENT, alpha=1.5, epochs=1, quiet=True)
    with pytest.raises(SpecError, match="--temperature: expected a number > 0.*Received: 0"):
        distill(teacher, STUDENT, temperature=0, epochs=1, quiet=True)
    assert _runs() == n
    # a teacher that is not finished
    unfinished = fit(STUDENT, data="digits", epochs=1, **QUICK).run_id
    open_store().set_status(unfinished, "interrupted")
    with pytest.raises(TrainingError, match="a teacher must be a finished run. Received: a run with status "
                                            "'interrupted'") as e:
        distill(unfinished, STUDENT, epochs=1, quiet=True)
    _one_line(e)
    assert _runs() == n + 1


# ----------------------------------------------------------------------------- the CLI


def test_cli_distill_trains_a_student_and_prints_its_teacher(home):
    _, teacher = home
    result = CliRunner().invoke(app, ["distill", teacher[:7], "zoo:mlp", "--epochs", "1", "--batch-size", "256",
                                      "--lr", "0.01", "--seed", "3", "--temperature", "2", "--alpha", "0.5",
                                      "--set", "hidden=16", "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"student of {teacher}, T 2, alpha 0.5" in result.output and "the teacher's" in result.output
    [record] = [r for r in open_store().list_runs() if r.tags.get("teacher") == teacher]
    assert record.settings["seed"] == 3 and record.settings["epochs"] == 1 and record.spec["vars"]["hidden"] == 16


@pytest.mark.parametrize("args, message", [
    (["r0000dead", "zoo:mlp"], "error: teacher r0000dead: run 'r0000dead' not found"),
    (["TEACHER", "zoo:mlp", "--alpha", "2"], "error: --alpha: expected a weight in [0, 1]"),
    (["TEACHER", "BAD"], "error: model output (5,) does not fit 10-class classification"),
])
def test_cli_distill_errors_are_one_line_with_exit_2(home, tmp_path, monkeypatch, capsys, args, message):
    from archlab import cli

    _, teacher = home
    bad = tmp_path / "bad.yaml"  # a student whose output fits neither the data nor the teacher
    bad.write_text("name: bad\ninput: {shape: [1, 8, 8]}\nmodel: [flatten, {linear: 5}]\n")
    n = _runs()
    given = [{"TEACHER": teacher, "BAD": str(bad)}.get(a, a) for a in args]
    monkeypatch.setattr(sys, "argv", ["archlab", "distill", *given, "--epochs", "1", "--quiet"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    out, err = capsys.readouterr()
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert err.startswith(message), err
    assert _runs() == n


def _kill_after_first_epoch(proc: subprocess.Popen, home: Path, teacher: str) -> None:
    """SIGKILL `proc` once its student run (not the teacher, whose checkpoint is there from the
    start) has saved its first epoch."""
    import json
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        for path in (home / "runs").glob("*/checkpoint.json"):
            if path.parent.name == teacher:
                continue
            try:
                epoch = json.loads(path.read_text())["state"]["epoch"]
            except (OSError, ValueError, KeyError):
                continue
            if epoch >= 1:
                proc.send_signal(signal.SIGKILL)
                return
        time.sleep(0.01)
    raise AssertionError(f"the run ended (rc {proc.poll()}) before it could be killed")


@pytest.mark.slow
def test_a_distilled_cli_run_killed_mid_epoch_resumes_bit_exactly(home, tmp_path):
    """SIGKILL an `archlab distill` process in its second epoch; a resume (a new Trainer that
    reloads the teacher from the store) finishes it to what an uninterrupted run computes."""
    dst, teacher = home
    spec = tmp_path / "student.yaml"
    spec.write_text(yaml.safe_dump(STUDENT))
    settings = {"epochs": 3, "batch_size": 16, "seed": 3}
    cmd = [sys.executable, "-m", "archlab", "distill", teacher, str(spec), "--quiet",
           *[f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]]
    env = {**os.environ, "ARCHLAB_HOME": str(dst), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _kill_after_first_epoch(proc, dst, teacher)
        proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    [killed] = [r for r in open_store().list_runs() if r.run_id != teacher]
    assert killed.status == "running"  # as a SIGKILL leaves it
    resumed = resume(killed.run_id, quiet=True)
    reference = distill(teacher, STUDENT, quiet=True, **settings)
    assert _strip(resumed.history) == _strip(reference.history) and resumed.test_metrics == reference.test_metrics
    _same_weights(load_file(reference.directory / "checkpoint.safetensors"),
                  load_file(resumed.directory / "checkpoint.safetensors"))


# ------------------------------------------------------------- archlab compress --distill


def test_compress_distill_fine_tunes_the_pruned_network_from_its_parent(home):
    from archlab.compress import compress

    _, parent = home
    result = runner().invoke(app, ["compress", parent, "--prune", "0.5", "--finetune", "1", "--distill",
                                   "--temperature", "2", "--alpha", "0.5", "--quiet"])
    assert result.exit_code == 0, result.output
    store = open_store()
    child = store.get_run(result.stdout.split("run   ")[1].split()[0])
    assert child.tags["parent"] == child.settings["teacher"] == child.tags["teacher"] == parent
    assert (child.settings["kd_temperature"], child.settings["kd_alpha"]) == (2.0, 0.5)
    assert "distilled from the parent" in child.tags["compression"]
    assert "train_kd" in child.history[-1].metrics
    # a distilled run pruned without --distill fine-tunes on its own: its teacher is not inherited
    grandchild = compress(child.run_id, prune_ratio=0.25, finetune=1, quiet=True, repeats=1)
    record = store.get_run(grandchild.run_id)
    assert record.settings["teacher"] is None and "teacher" not in record.tags
    assert "train_kd" not in record.history[-1].metrics


@pytest.mark.parametrize("args, message", [
    (["--distill", "--finetune", "0"], "--distill: the pruned network learns from its parent while it fine-tunes"),
    (["--distill", "--unstructured", "--finetune", "0"], "--distill: the pruned network learns from its parent "
                                                         "while it fine-tunes. Received: --unstructured"),
    (["--temperature", "2"], "--temperature/--alpha: set how --distill learns"),
    (["--distill", "--alpha", "2"], "--alpha: expected a weight in [0, 1]"),
])
def test_compress_distill_refusals_are_one_line_and_write_nothing(home, monkeypatch, capsys, args, message):
    from archlab import cli

    _, parent = home
    n = _runs()
    monkeypatch.setattr(sys, "argv", ["archlab", "compress", parent, "--prune", "0.5", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    _, err = capsys.readouterr()
    assert info.value.code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert _runs() == n


def runner() -> CliRunner:
    return CliRunner()
