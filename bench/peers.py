"""archlab against other training front-ends: the same model on the same split.

zoo:cnn (archlab.build, same seed) on digits' train / validation split, the same batch size,
learning rate, cosine schedule, label smoothing and thread count, trained by

  archlab       archlab's Trainer (what `archlab.fit` runs): store, best weights, a checkpoint
                every epoch
  lightning     a LightningModule around the same nn.Module (AdamW as users write it,
                per-step LambdaLR); no logger, no checkpointing, no progress bar
  keras         Keras 3 on the torch backend: TorchModuleWrapper around the same nn.Module,
                keras.optimizers.AdamW with CosineDecay, model.fit(validation_data=...)
  DataLoader    a plain loop over TensorDataset + DataLoader
  hand-written  a plain loop over in-memory tensors (randperm + index_select)

in interleaved rounds (every method once per round, in turn, so load that drifts hits all
alike). Each is timed between its own epoch-end hooks (archlab: `on_epoch`; Lightning:
`on_train_epoch_end`, after validation; Keras: `on_epoch_end`, after validation; the loops:
after their validation pass), so an epoch is all a front-end does from one epoch's end to the
next; n epochs give n - 1 timed epochs. Every ratio is to the hand-written loop.

Lightning and Keras are optional (`pip install -e ".[peers]"`); a missing one is skipped and
said so.

    python bench/peers.py                 # digits, 6 epochs x 7 rounds (~3 min idle)
    python bench/peers.py --quick         # 3 epochs x 2 rounds
    python bench/peers.py --rounds 11 --epochs 8
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")  # before anything imports keras

import torch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fit_overhead as fo  # noqa: E402


def run_lightning(setup: fo.Setup) -> fo.Outcome:
    try:
        import lightning as L
    except ImportError:
        import pytorch_lightning as L

    s = setup.settings
    net = fo.build_model(setup)
    loader = DataLoader(TensorDataset(setup.train.x, setup.train.y), batch_size=s.batch_size,
                        sampler=fo.SameOrder(len(setup.train), s.seed), generator=torch.Generator())
    val_loader = DataLoader(TensorDataset(setup.val.x, setup.val.y), batch_size=fo.EVAL_BATCH,
                            generator=torch.Generator())
    steps = len(loader)
    criterion = fo.loss_fn(s)

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def training_step(self, batch, _i):
            x, y = batch
            return criterion(self.net(x), y)

        def validation_step(self, batch, _i):
            x, y = batch
            out = self.net(x)
            self.log("val_loss", criterion(out, y), on_epoch=True)
            self.log("val_acc", (out.argmax(-1) == y).float().mean(), on_epoch=True)

        def configure_optimizers(self):
            opt, sched = fo.optimizer_and_schedule(self.net, s, steps)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    clock = fo.EpochClock()

    class Timer(L.Callback):  # validation runs inside the train epoch, before this hook
        def on_train_epoch_end(self, trainer, module) -> None:
            clock.mark()

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)  # no banners between the timings
    trainer = L.Trainer(max_epochs=s.epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[Timer()],
                        default_root_dir=str(setup.home / "lightning"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(), loader, val_loader)
    return clock.outcome(float(trainer.callback_metrics.get("val_acc", float("nan"))))


def run_keras(setup: fo.Setup) -> fo.Outcome:
    import keras

    s = setup.settings
    net = fo.build_model(setup)
    steps = math.ceil(len(setup.train) / s.batch_size)
    classes = setup.dataset.info.num_classes
    model = keras.Sequential([keras.Input(shape=tuple(setup.train.x.shape[1:])),
                              keras.layers.TorchModuleWrapper(net)])
    lr = keras.optimizers.schedules.CosineDecay(s.lr, decay_steps=s.epochs * steps)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=lr, weight_decay=s.weight_decay),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=s.label_smoothing),
                  metrics=["accuracy"])
    clock = fo.EpochClock()

    class Timer(keras.callbacks.Callback):  # on_epoch_end comes after validation
        def on_epoch_end(self, epoch, logs=None) -> None:
            clock.mark()

    def onehot(y: torch.Tensor):  # keras smooths labels only on one-hot targets
        return torch.nn.functional.one_hot(y, classes).float().numpy()

    hist = model.fit(setup.train.x.numpy(), onehot(setup.train.y), batch_size=s.batch_size, epochs=s.epochs,
                     validation_data=(setup.val.x.numpy(), onehot(setup.val.y)),
                     validation_batch_size=fo.EVAL_BATCH, shuffle=True, verbose=0, callbacks=[Timer()])
    return clock.outcome(float(hist.history["val_accuracy"][-1]))


def lightning_missing() -> str | None:
    if importlib.util.find_spec("lightning") or importlib.util.find_spec("pytorch_lightning"):
        return None
    return "not installed (pip install -e '.[peers]')"


def keras_missing() -> str | None:
    if importlib.util.find_spec("keras") is None:
        return "not installed (pip install -e '.[peers]')"
    try:
        import keras

        backend = keras.backend.backend()
    except Exception as e:  # a broken install: say so and go on with the others
        return f"does not import ({type(e).__name__}: {e})"
    if backend != "torch":
        return f"runs on the {backend} backend, not torch (set KERAS_BACKEND=torch)"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    p.add_argument("--epochs", type=int, default=6, help="epochs per run (default 6: 5 timed)")
    p.add_argument("--data", default="digits", help="a data set archlab reads (default digits)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--quick", action="store_true", help="3 epochs x 2 rounds")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.epochs = 2, 3
    fo.EVAL_BATCH = a.batch_size  # archlab's eval batch on CPU; every method validates with it
    torch.set_num_threads(a.threads)
    print(fo.machine_line())

    methods: dict[str, Any] = {"archlab": fo.run_archlab}
    for name, fn, missing in (("lightning", run_lightning, lightning_missing()),
                              ("keras", run_keras, keras_missing())):
        if missing:
            print(f"skipping {name}: {missing}")
        else:
            methods[name] = fn
    methods["DataLoader"] = fo.run_dataloader
    methods["hand-written"] = fo.run_handwritten
    versions = {"torch": torch.__version__}
    for name in ("lightning", "keras"):
        if name in methods:
            versions[name] = __import__(name).__version__
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))

    w = fo.Workload(a.data, a.data, a.batch_size, a.epochs)
    with tempfile.TemporaryDirectory(prefix="archlab-peers-") as tmp:
        setup = fo.prepare(w, Path(tmp))
        print(f"\n== {a.data}: {fo.SPEC}, batch {a.batch_size}, {a.epochs} epochs per run ({a.epochs - 1} timed) x "
              f"{a.rounds} interleaved rounds; train {len(setup.train)}, val {len(setup.val)}", flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fo.warm_up(setup, methods)
            results = fo.run_rounds(setup, methods, a.rounds, log=lambda line: print(line, flush=True))
        os.environ.pop("ARCHLAB_HOME", None)
    rows = fo.summarize(results)
    fo.print_table(f"{a.data}: the whole epoch, between each front-end's epoch-end hooks", rows)
    by = {r["method"]: r for r in rows}
    print()
    for name, row in by.items():
        if name != "hand-written":
            print(f"{name} / hand-written: wall {row['wall']['ratio']:.3f} (paired {row['wall']['paired']:.3f}), "
                  f"cpu {row['cpu']['ratio']:.3f} (paired {row['cpu']['paired']:.3f})")
    others = [n for n in by if n not in ("archlab", "hand-written")]
    for clock in ("wall", "cpu"):
        ok = all(by["archlab"][clock]["median"] < by[n][clock]["median"] for n in others)
        print(f"target ({clock}): archlab faster than every front-end but the hand-written loop: "
              f"{'PASS' if ok else 'FAIL'}")
    print(f"loadavg at the end: {fo.loadavg()}")
    if a.json:
        a.json.write_text(json.dumps({"machine": fo.machine_line(), "versions": versions,
                                      "args": {k: str(v) for k, v in vars(a).items()}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
