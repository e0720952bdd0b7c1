"""Backpropagation by hand: a two-layer network in NumPy, its forward pass, its backward pass
and gradient descent, with nothing hidden.

The network, for a batch X of B samples with D features each (rows are samples, as NumPy
and torch lay batches out):

    h = σ(X W₁ + b₁)        (B, H)   the hidden layer
    y = σ(h W₂ + b₂)        (B, C)   one output per class, each in (0, 1)
    L = (1/N) Σ (y − t)²             t: the one-hot targets (B, C)

where σ(z) = 1 / (1 + e^−z) and N = B · C is the number of terms the loss averages: the
mean over every element, as torch's `MSELoss` (reduction "mean") and `F.mse_loss` take it.
The chain rule, one layer at a time from the loss back (⊙ is the elementwise product; σ′(z)
= σ(z)(1 − σ(z)), so the slope is written in terms of the activation already computed):

    δ₂ = ∂L/∂(hW₂ + b₂) = (2/N)(y − t) ⊙ y(1 − y)       (B, C)
    ∂W₂ = hᵀ δ₂                  ∂b₂ = Σ_rows δ₂
    δ₁ = ∂L/∂(XW₁ + b₁) = (δ₂ W₂ᵀ) ⊙ h(1 − h)            (B, H)
    ∂W₁ = Xᵀ δ₁                  ∂b₁ = Σ_rows δ₁

and gradient descent moves every parameter a step `lr` against its gradient: θ ← θ − lr ∂θ.

The seed article this follows got three things wrong, each of which still "trains" a little
(which is why they survive) but none of which is the gradient of its loss:
  1. it used the squared error (y − t)² as the output error where the derivative of the
     square is needed, 2(y − t)/N: the square loses the sign, so an output that is too high
     and one that is too low are pushed the same way;
  2. it applied the sigmoid twice, computing the slope as σ(y)(1 − σ(y)) from an output y that
     was already σ(z); the slope at the output is y(1 − y);
  3. its ∂W₁ ignored W₂ and σ′: the hidden layer's error is the output error sent back
     through the weights that carried the signal forward (δ₂W₂ᵀ), scaled by the hidden
     sigmoid's own slope h(1 − h).
`tests/test_scratch.py` checks these gradients against central finite differences and
against torch's autograd; `archlab scratch` trains this network next to the same spec trained
by archlab's trainer (plain SGD, same initial weights, same batches) and prints both losses.

NumPy only: importing this module does not import torch.

>>> net = init_mlp(4, 3, 2, seed=0)
>>> X, t = np.ones((5, 4)), one_hot(np.array([0, 1, 1, 0, 1]), 2)
>>> grads = backward(net, X, t, forward(net, X))
>>> grads.W1.shape, grads.W2.shape, grads.b1.shape
((4, 3), (3, 2), (3,))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

__all__ = ["MLP", "Activations", "Gradients", "accuracy", "backward", "epoch", "forward", "init_mlp",
           "mse", "one_hot", "sgd_step", "sigmoid", "train"]


# ----------------------------------------------------------------------------- the network


@dataclass
class MLP:
    """The parameters: X (B, D) → h (B, H) → y (B, C). Updated in place by `sgd_step`."""

    W1: np.ndarray  # (D, H): a column per hidden unit, so a batch is one matrix product X @ W1
    b1: np.ndarray  # (H,)
    W2: np.ndarray  # (H, C)
    b2: np.ndarray  # (C,)

    @property
    def sizes(self) -> tuple[int, int, int]:
        """(inputs D, hidden H, outputs C)."""
        return self.W1.shape[0], self.W1.shape[1], self.W2.shape[1]

    def copy(self) -> MLP:
        return MLP(*(getattr(self, f.name).copy() for f in fields(self)))


def init_mlp(inputs: int, hidden: int, outputs: int, seed: int = 0) -> MLP:
    """Random weights as torch's `nn.Linear` draws them: U(−1/√fan_in, 1/√fan_in), biases too.
    Small weights keep σ near its steep middle at first, where the gradients are largest;
    random ones make the hidden units differ (equal units would get equal updates forever)."""
    rng = np.random.default_rng(seed)

    def uniform(fan_in: int, *shape: int) -> np.ndarray:
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=shape)

    return MLP(uniform(inputs, inputs, hidden), uniform(inputs, hidden),
               uniform(hidden, hidden, outputs), uniform(hidden, outputs))


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^−z), written as (1 + tanh(z/2)) / 2: the same function, but e^−z overflows
    (with a warning) for z < −709 where tanh never does."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    """Class ids (B,) → targets (B, C): 1 at the sample's class, 0 elsewhere."""
    t = np.zeros((len(labels), classes))
    t[np.arange(len(labels)), labels] = 1.0
    return t


# ---------------------------------------------------------------------------- forward


@dataclass
class Activations:
    """What the forward pass computed and the backward pass needs again."""

    h: np.ndarray  # (B, H) hidden activations σ(X W1 + b1)
    y: np.ndarray  # (B, C) outputs σ(h W2 + b2)


def forward(net: MLP, X: np.ndarray) -> Activations:
    h = sigmoid(X @ net.W1 + net.b1)   # (B, D) @ (D, H) -> (B, H); b1 broadcasts over rows
    y = sigmoid(h @ net.W2 + net.b2)   # (B, H) @ (H, C) -> (B, C)
    return Activations(h, y)


def mse(y: np.ndarray, t: np.ndarray) -> float:
    """The mean of (y − t)² over all B · C elements (torch's MSELoss)."""
    return float(np.mean((y - t) ** 2))


# --------------------------------------------------------------------------- backward


@dataclass
class Gradients:
    """∂L/∂θ for each parameter θ, shaped like θ."""

    W1: np.ndarray
    b1: np.ndarray
    W2: np.ndarray
    b2: np.ndarray


def backward(net: MLP, X: np.ndarray, t: np.ndarray, act: Activations) -> Gradients:
    """The gradients of `mse(forward(net, X).y, t)`: the chain rule, from the loss back."""
    h, y = act.h, act.y
    n = y.size  # N = B * C: the loss is the mean over every element, so each one weighs 1/N
    # Output layer. ∂L/∂y = (2/N)(y − t): the derivative of the square, with its sign (not
    # the squared error itself). σ′ at the output is y(1 − y), from y = σ(z₂) (not σ(y)).
    delta2 = (2.0 / n) * (y - t) * y * (1.0 - y)   # (B, C) = ∂L/∂z₂, z₂ = h W2 + b2
    dW2 = h.T @ delta2                               # (H, B) @ (B, C) -> (H, C): sums over the batch
    db2 = delta2.sum(axis=0)                         # b2 is added to every row: its gradient sums them
    # Hidden layer. Each hidden unit fed every output through W2, so its share of the error
    # is δ₂ sent back through W2ᵀ, then scaled by its own sigmoid's slope h(1 − h).
    delta1 = (delta2 @ net.W2.T) * h * (1.0 - h)    # (B, C) @ (C, H) -> (B, H) = ∂L/∂z₁
    dW1 = X.T @ delta1                               # (D, B) @ (B, H) -> (D, H)
    db1 = delta1.sum(axis=0)
    return Gradients(dW1, db1, dW2, db2)


# ------------------------------------------------------------------- gradient descent


def sgd_step(net: MLP, grads: Gradients, lr: float) -> None:
    """θ ← θ − lr ∂θ for every parameter, in place (what torch.optim.SGD does with momentum 0,
    no weight decay)."""
    for f in fields(net):
        getattr(net, f.name)[...] -= lr * getattr(grads, f.name)


def epoch(net: MLP, X: np.ndarray, labels: np.ndarray, order: np.ndarray, lr: float,
          batch_size: int) -> dict[str, float]:
    """One pass over the samples in `order`, one step per batch. Returns the epoch's mean loss
    and accuracy over its samples, each batch measured before its own step (as a training
    loop that reports the losses it trained on does: archlab's trainer, for one)."""
    classes = net.sizes[2]
    loss_sum = correct = 0.0
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        x, t = X[rows], one_hot(labels[rows], classes)
        act = forward(net, x)
        loss_sum += mse(act.y, t) * len(rows)   # a batch's mean, weighted by its size
        correct += float((act.y.argmax(axis=1) == labels[rows]).sum())
        sgd_step(net, backward(net, x, t, act), lr)
    return {"loss": loss_sum / len(order), "acc": correct / len(order)}


def accuracy(net: MLP, X: np.ndarray, labels: np.ndarray) -> float:
    """The share of samples whose largest output is their class."""
    return float((forward(net, X).y.argmax(axis=1) == labels).mean())


def train(net: MLP, X: np.ndarray, labels: np.ndarray, *, epochs: int, lr: float, batch_size: int,
          seed: int = 0, order: Callable[[int], np.ndarray] | None = None,
          val: tuple[np.ndarray, np.ndarray] | None = None,
          on_epoch: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Mini-batch gradient descent: `epochs` passes, each over the samples in a fresh random
    order (`order(epoch)`, default a permutation seeded by (seed, epoch)). Returns one record
    per epoch: train_loss and train_acc (see `epoch`), and val_loss, val_acc after the epoch
    when `val` = (X, labels) is given. `on_epoch(record)` is called after each epoch.

    >>> X = np.random.default_rng(0).normal(size=(40, 3)); y = (X[:, 0] > 0).astype(int)
    >>> history = train(init_mlp(3, 8, 2), X, y, epochs=30, lr=2.0, batch_size=8)
    >>> history[-1]["train_loss"] < history[0]["train_loss"]
    True
    """
    if order is None:
        def order(e: int) -> np.ndarray:
            return np.random.default_rng((seed, e)).permutation(len(X))
    history = []
    for e in range(epochs):
        result = epoch(net, X, labels, order(e), lr, batch_size)
        record: dict[str, Any] = {"epoch": e + 1, "train_loss": result["loss"], "train_acc": result["acc"]}
        if val is not None:
            xv, yv = val
            record["val_loss"] = mse(forward(net, xv).y, one_hot(yv, net.sizes[2]))
            record["val_acc"] = accuracy(net, xv, yv)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return history
