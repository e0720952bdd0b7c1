"""Backpropagation by hand (archlab.scratch): the hand gradients against central finite
differences and torch's autograd, and `archlab scratch` against archlab's own trainer."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clirun import run_main as _main

from archlab.core import SpecError
from archlab.runs import open_store
from archlab.scratch import (
    MLP,
    backward,
    forward,
    init_mlp,
    mse,
    one_hot,
    sgd_step,
)
from archlab.train import make_task

REPO = Path(__file__).resolve().parents[1]
PARAMS = ("W1", "b1", "W2", "b2")


def _problem(seed: int = 0, batch: int = 7, d: int = 5, h: int = 4, c: int = 3) -> tuple[MLP, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    net = init_mlp(d, h, c, seed=seed)
    net.W1 *= 3  # larger weights: the sigmoids leave their near-linear middle, so σ′ matters
    X = rng.normal(size=(batch, d))
    return net, X, one_hot(rng.integers(0, c, size=batch), c)


def _loss(net: MLP, X: np.ndarray, t: np.ndarray) -> float:
    return mse(forward(net, X).y, t)


def _finite_differences(net: MLP, X: np.ndarray, t: np.ndarray, eps: float = 1e-6) -> dict[str, np.ndarray]:
    """Central differences (L(θ + ε) − L(θ − ε)) / 2ε, one parameter entry at a time."""
    out = {}
    for name in PARAMS:
        theta = getattr(net, name)
        grad = np.zeros_like(theta)
        for i in np.ndindex(theta.shape):
            saved = theta[i]
            theta[i] = saved + eps
            up = _loss(net, X, t)
            theta[i] = saved - eps
            down = _loss(net, X, t)
            theta[i] = saved
            grad[i] = (up - down) / (2 * eps)
        out[name] = grad
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hand_gradients_match_central_finite_differences(seed):
    net, X, t = _problem(seed)
    grads = backward(net, X, t, forward(net, X))
    numeric = _finite_differences(net, X, t)
    for name in PARAMS:
        hand = getattr(grads, name)
        assert hand.shape == getattr(net, name).shape
        # Central differences are accurate to O(ε²) plus rounding (~1e-10 here).
        np.testing.assert_allclose(hand, numeric[name], rtol=1e-6, atol=1e-10, err_msg=name)
        assert np.abs(hand).max() > 1e-4, name  # not trivially zero


def test_the_finite_difference_check_catches_the_seed_articles_mistakes():
    """Each of the article's three errors, written into the backward pass, fails the check."""
    net, X, t = _problem(3)
    act = forward(net, X)
    h, y, n = act.h, act.y, act.y.size
    numeric = _finite_differences(net, X, t)
    right = (2 / n) * (y - t) * y * (1 - y)
    squared = (y - t) ** 2 * y * (1 - y)                      # 1. the squared error for ∂L/∂y
    twice = (2 / n) * (y - t) * _sig(y) * (1 - _sig(y))       # 2. the sigmoid applied twice
    for delta2 in (squared, twice):
        assert not np.allclose(h.T @ delta2, numeric["W2"], rtol=1e-3, atol=1e-8)
    assert np.allclose(h.T @ right, numeric["W2"], rtol=1e-6, atol=1e-10)
    # 3. ∂W₁ without W₂ and σ′: as if W₂ were all ones and the hidden sigmoid's slope were 1.
    ignoring = X.T @ np.repeat(right.sum(axis=1, keepdims=True), h.shape[1], axis=1)
    assert not np.allclose(ignoring, numeric["W1"], rtol=1e-3, atol=1e-8)
    assert np.allclose(X.T @ ((right @ net.W2.T) * h * (1 - h)), numeric["W1"], rtol=1e-6, atol=1e-10)


def _sig(z):
    return 1 / (1 + np.exp(-z))


@pytest.mark.parametrize("seed", [0, 1])
def test_hand_gradients_match_torch_autograd(seed):
    net, X, t = _problem(seed, batch=16, d=8, h=6, c=4)
    params = {k: torch.tensor(getattr(net, k), requires_grad=True) for k in PARAMS}   # float64
    x, target = torch.tensor(X), torch.tensor(t)
    hidden = torch.sigmoid(x @ params["W1"] + params["b1"])
    out = torch.sigmoid(hidden @ params["W2"] + params["b2"])
    loss = F.mse_loss(out, target)   # the mean over B * C elements, as the hand formulas' N
    loss.backward()
    act = forward(net, X)
    assert mse(act.y, t) == pytest.approx(loss.item(), rel=1e-14)
    grads = backward(net, X, t, act)
    for name in PARAMS:
        np.testing.assert_allclose(getattr(grads, name), params[name].grad.numpy(), rtol=1e-12, atol=1e-15,
                                   err_msg=name)


def test_sgd_step_moves_against_the_gradient_and_lowers_the_loss():
    net, X, t = _problem(4)
    before = net.copy()
    grads = backward(net, X, t, forward(net, X))
    sgd_step(net, grads, lr=0.5)
    np.testing.assert_array_equal(net.W2, before.W2 - 0.5 * grads.W2)
    np.testing.assert_array_equal(net.b1, before.b1 - 0.5 * grads.b1)
    assert _loss(net, X, t) < _loss(before, X, t)


def test_importing_archlab_scratch_does_not_import_torch():
    code = "import sys, archlab.scratch; assert 'torch' not in sys.modules, 'torch was imported'"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# -------------------------------------------------------------------------- the trainer's side


def test_classify_mse_task_is_mse_on_one_hot_targets():
    task = make_task("classify_mse", num_classes=3)
    task.check_output((3,))
    out = torch.tensor([[0.2, 0.7, 0.1], [0.5, 0.5, 0.9]])
    y = torch.tensor([1, 2])
    want = ((out - torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])) ** 2).mean()
    assert task.loss(out, y).item() == pytest.approx(want.item())
    with pytest.raises(SpecError, match=r"expected \(3,\) outputs"):
        task.check_output((1,))


def test_cli_scratch_loss_columns_equal_the_trainers_within_1e_6(monkeypatch, capsys, archlab_home):
    code, out, err = _main(monkeypatch, capsys, "scratch", "--data", "digits", "--hidden", "8", "--epochs", "3",
                           "--quiet")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines() if re.match(r"\s+\d+\s+\d\.\d+", line)]
    assert [int(r[0]) for r in rows] == [1, 2, 3]
    for _, mine_train, theirs_train, _, mine_val, theirs_val, _ in rows:
        assert abs(float(mine_train) - float(theirs_train)) <= 1e-6
        assert abs(float(mine_val) - float(theirs_val)) <= 1e-6
    diff = float(re.search(r"max \|difference\| (\S+):", out).group(1))
    assert diff <= 1e-6 and "equal within 1e-06" in out
    # The columns differ at all (two implementations, not one printed twice) ...
    assert diff > 0
    # ... and the archlab column is the run the trainer logged, trained with plain SGD on MSE.
    run_id = re.search(r"^run\s+(r[0-9a-f]{8})\b", out, re.MULTILINE).group(1)
    record = open_store().get_run(run_id)
    assert record.tags["task"] == "classify_mse"
    s = record.settings
    assert (s["optimizer"], s["momentum"], s["weight_decay"], s["schedule"], s["grad_clip"]) == ("sgd", 0.0, 0.0,
                                                                                                   "constant", None)
    logged = [e.metrics["train_loss"] for e in record.history]
    assert [f"{v:.8f}" for v in logged] == [r[2] for r in rows]


@pytest.mark.parametrize(("args", "says"), [
    (["--hidden", "0"], "the hidden layer needs at least 1 unit. Received: 0"),
    (["--data", "seq:copy"], "scratch trains on classification data with float features"),
    (["--seed", "-1"], "seed must be between 0 and"),
    (["--spec", "zoo:mlp"], "model[2].relu: scratch runs a two-layer sigmoid network: [flatten,] linear: H, "
                            "sigmoid, linear: $num_classes, sigmoid"),
])
def test_cli_scratch_refuses_what_it_cannot_run_in_one_line(monkeypatch, capsys, args, says):
    code, out, err = _main(monkeypatch, capsys, "scratch", "--epochs", "1", "--quiet", *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert says in err and "Received:" in err
    assert "run " not in out  # refused before any run was recorded


def test_cli_scratch_runs_a_spec_file_of_the_layers_it_supports(monkeypatch, capsys, tmp_path):
    spec = tmp_path / "two.yaml"
    spec.write_text("name: two\nvars: {hidden: 16}\nmodel: [flatten, {linear: $hidden}, sigmoid, "
                    "{linear: $num_classes}, sigmoid]\ntrain: {optimizer: adamw, momentum: 0.9, grad_clip: 1.0}\n")
    code, out, err = _main(monkeypatch, capsys, "scratch", "--spec", str(spec), "--hidden", "4", "--epochs", "1",
                           "--quiet")
    assert code == 0, err
    assert "linear(4)" in out and "equal within 1e-06" in out   # the spec's own train: section is set aside
