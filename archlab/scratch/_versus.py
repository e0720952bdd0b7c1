"""The hand-written network against archlab's own trainer: the same network as a spec, trained
by `archlab.train.fit` with plain SGD from the same initial weights on the same batches.

What makes the two runs comparable, step for step:
- the weights: the spec is built with the run's seed exactly as the trainer builds it, and its
  float32 weights are copied into the NumPy network (transposed: nn.Linear keeps (out, in));
- the batches: each epoch's order is the trainer's own (`archlab.train.epoch_order`);
- the update: SGD with momentum 0, no weight decay, a constant learning rate, no clipping, no
  augmentation, no label smoothing, fp32, on the CPU (the spec's own `train:` is dropped);
- the loss: task `classify_mse`, the mean of (y - one_hot)² over samples x classes;
- what is logged: the trainer's train_loss is each batch's loss before its own step,
  averaged over the epoch's samples (weighted by batch size), and val_loss is measured after
  the epoch; `_mlp.epoch` reports the same two.
NumPy computes in float64, torch in float32: the columns differ by float32 rounding, ~1e-8
on digits (the CLI prints the largest difference).

Torch is imported inside the functions only, so `import archlab.scratch` stays NumPy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core import DataError, SpecError
from ._mlp import MLP, train

if TYPE_CHECKING:
    from ..spec import Spec

# What `archlab scratch` can run, for its errors.
SUPPORTED = ("a two-layer sigmoid network: [flatten,] linear: H, sigmoid, linear: $num_classes, "
             "sigmoid (linear layers with their bias)")
SUPPORTED_DATA = ("classification data with float features (digits, mnist, fashion-mnist, cifar10, "
                  "csv with a class column, synthetic:images)")
TOLERANCE = 1e-6  # the promise: the two loss columns agree within this
# The default learning rate is large because the gradients are small: the loss averages over
# the C outputs as well as the samples, and σ' is at most 1/4 at each of the two layers. On
# digits (hidden 32, batch 64, 20 epochs) lr 1 leaves validation accuracy near 35%, lr 20
# reaches ~92%.
LR = 20.0


def scratch_spec(hidden: int = 32) -> dict[str, Any]:
    """The network `_mlp` implements, as an archlab spec (the data set fills in its input shape
    and num_classes)."""
    if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 1:
        raise SpecError(f"--hidden: the hidden layer needs at least 1 unit. Received: {hidden!r}. archlab "
                        f"scratch trains {SUPPORTED}; pass --hidden 32")
    return {"name": f"scratch-mlp-{hidden}",
            "description": "flatten, linear(hidden), sigmoid, linear(num_classes), sigmoid: the network "
                           "archlab.scratch trains by hand",
            "vars": {"hidden": hidden, "num_classes": 10},
            "model": ["flatten", {"linear": "$hidden"}, "sigmoid", {"linear": "$num_classes"}, "sigmoid"]}


def mlp_from_network(net: Any) -> MLP:
    """The NumPy network holding a built archlab network's weights (float64 copies), or a
    SpecError naming the first layer it cannot run."""
    from torch import nn

    from ..model import require_one_input

    require_one_input(net, "scratch")
    tree = getattr(net, "tree", None)
    leaves = [] if tree is None or tree.kind != "serial" else list(tree.children)
    if tree is None or getattr(net, "kind", "") != "plain":
        raise SpecError(f"scratch: runs {SUPPORTED}. Received: a {getattr(net, 'kind', '?')} network; use a spec "
                        f"of those layers or --hidden N")
    nested = next((n for n in leaves if n.kind != "leaf"), None)
    if nested is not None:
        raise SpecError(f"{nested.path}: scratch runs {SUPPORTED}. Received: a {nested.kind} block; use a spec "
                        f"of those layers only or --hidden N")
    modules = list(net.model)
    start = 1 if leaves and leaves[0].name == "flatten" else 0
    want = ["linear", "sigmoid", "linear", "sigmoid"]
    got = [n.name for n in leaves[start:]]
    if got != want:
        where = next((leaves[start + i].path for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w),
                     leaves[-1].path if leaves else "model")
        raise SpecError(f"{where}: scratch runs {SUPPORTED}. Received: {', '.join(n.name for n in leaves) or 'no layers'}; "
                        f"use a spec of those layers or --hidden N")
    first, second = modules[start], modules[start + 2]
    for node, module in ((leaves[start], first), (leaves[start + 2], second)):
        if not isinstance(module, nn.Linear) or module.bias is None:
            raise SpecError(f"{node.path}: scratch runs {SUPPORTED}. Received: linear without bias; drop "
                            f"`bias: false`")
    if len(leaves[start].input.shape) != 1:
        raise SpecError(f"{leaves[start].path}: scratch's first linear layer takes flat samples. Received: "
                        f"input {leaves[start].input.shape}; put `flatten` first")

    def numpy(t: Any) -> np.ndarray:
        return t.detach().cpu().double().numpy().copy()

    return MLP(numpy(first.weight).T.copy(), numpy(first.bias), numpy(second.weight).T.copy(), numpy(second.bias))


def _flat(split: Any) -> tuple[np.ndarray, np.ndarray]:
    """A split as float64 rows (B, D) and int class ids (B,)."""
    x, y = split.slice(0, len(split))
    return x.reshape(len(x), -1).double().numpy(), y.numpy()


def _check_data(info: Any, uri: str) -> None:
    if info.inputs is not None:
        raise DataError(f"--data {uri}: scratch trains on {SUPPORTED_DATA}, one input. Received: {info.name}, with "
                        f"{len(info.inputs)} inputs ({', '.join(info.inputs)}); use --data digits")
    if info.task != "classify" or info.input_dtype != "float" or not info.num_classes:
        raise DataError(f"--data {uri}: scratch trains on {SUPPORTED_DATA}. Received: {info.name}, a {info.task} "
                        f"data set with {info.input_dtype} input; use --data digits")


@dataclass(frozen=True)
class Comparison:
    """Both runs' per-epoch losses (`rows`: epoch, scratch_train, archlab_train, scratch_val,
    archlab_val, scratch_val_acc, archlab_val_acc) and the archlab run's id."""

    run_id: str
    spec: Spec
    layers: str  # e.g. "flatten -> linear(32) -> sigmoid -> linear(10) -> sigmoid"
    data: str
    train_samples: int
    rows: tuple[Mapping[str, float], ...]

    @property
    def max_diff(self) -> float:
        """The largest |scratch - archlab| over both loss columns and every epoch."""
        return max(max(abs(r["scratch_train"] - r["archlab_train"]), abs(r["scratch_val"] - r["archlab_val"]))
                   for r in self.rows)


def compare_with_trainer(spec: Spec | str | Mapping[str, Any] | None = None, data: str = "digits", *,
                         hidden: int | None = None, epochs: int = 20, lr: float = LR, batch_size: int = 64,
                         seed: int = 0, quiet: bool = True, store: Any = None,
                         data_root: str | Path | None = None) -> Comparison:
    """Train the NumPy network and the same spec with `archlab.train.fit` (plain SGD, same
    initial weights, same batch order) and return both loss columns.

    >>> c = compare_with_trainer(data="digits", hidden=32, epochs=2)   # doctest: +SKIP
    >>> c.max_diff < 1e-6                                              # doctest: +SKIP
    True
    """
    from ..data import load_dataset
    from ..model import build
    from ..spec import Spec, load_spec
    from ..train import TaskProgress, TrainSettings, epoch_order, fit

    # Plain SGD, nothing else that changes an update; validated here, before either network trains.
    settings = dict(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, task="classify_mse", optimizer="sgd",
                    momentum=0.0, weight_decay=0.0, schedule="constant", warmup=0, precision="fp32",
                    compile=False, device="cpu", label_smoothing=0.0, crop_padding=0, hflip=False)
    TrainSettings.from_mapping(settings, where="scratch")
    if spec is None:
        spec = load_spec(scratch_spec(32 if hidden is None else hidden))
    else:  # the spec's own train: section would change the update; the comparison sets it
        loaded = load_spec(spec).to_dict()
        loaded.pop("train", None)
        spec = Spec.from_dict(loaded)
        if hidden is not None:
            if "hidden" not in spec.vars:
                raise SpecError(f"--hidden: sets the spec's var 'hidden', and {spec.name} has none. Received: "
                                f"--hidden {hidden}; drop --hidden, or declare `vars: {{hidden: 32}}` and use `linear: $hidden`")
            spec = spec.with_vars({"hidden": hidden})
    dataset = load_dataset(data, seed=seed, root=data_root)
    info = dataset.info
    _check_data(info, data)
    concrete = spec.with_vars(info.vars(), strict=False).with_input(info.input_shape, info.input_dtype, named=info.named_inputs())
    built = build(concrete, seed=seed)  # the trainer builds the same weights from the same seed
    net = mlp_from_network(built)
    layers = " -> ".join(f"{n.name}({n.args['out']})" if "out" in n.args else n.name for n in built.tree.children)

    X, labels = _flat(dataset.train)
    n = len(X)
    with TaskProgress(epochs, "numpy, by hand", quiet=quiet) as progress:
        mine = train(net, X, labels, epochs=epochs, lr=lr, batch_size=batch_size,
                     order=lambda e: epoch_order(n, seed, e)[0].numpy(), val=_flat(dataset.val),
                     on_epoch=lambda r: progress.advance(f"epoch {r['epoch']}: train_loss {r['train_loss']:.6f}"))
    run = fit(concrete, data, store=store, quiet=quiet, data_root=data_root, tags={"scratch": "numpy"}, **settings)
    rows = tuple({"epoch": a["epoch"], "scratch_train": a["train_loss"], "archlab_train": b["train_loss"],
                  "scratch_val": a["val_loss"], "archlab_val": b["val_loss"],
                  "scratch_val_acc": a["val_acc"], "archlab_val_acc": b["val_acc"]}
                 for a, b in zip(mine, run.history, strict=True))
    return Comparison(run.run_id, concrete, layers, data, n, rows)


__all__ = ["LR", "SUPPORTED", "SUPPORTED_DATA", "TOLERANCE", "Comparison", "compare_with_trainer", "mlp_from_network",
           "scratch_spec"]
