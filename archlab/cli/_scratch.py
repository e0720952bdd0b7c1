"""archlab scratch: backpropagation by hand, next to archlab's own trainer."""

from __future__ import annotations

from typing import Annotated

import typer

from ._app import app


@app.command("scratch")
def scratch_cmd(
    data: Annotated[str, typer.Option(help="Classification data with float features: digits, mnist[:PATH], "
                                           "csv:PATH, ...")] = "digits",
    hidden: Annotated[int | None, typer.Option(help="Hidden units (default 32; with --spec: sets its var "
                                                    "'hidden').")] = None,
    epochs: Annotated[int, typer.Option()] = 20,
    lr: Annotated[float | None, typer.Option(help="Learning rate of plain SGD (default 20: the MSE averages "
                                                  "over the classes too, so its gradients are small).")] = None,
    batch_size: Annotated[int, typer.Option()] = 64,
    seed: Annotated[int, typer.Option(help="Initial weights and batch order, for both networks.")] = 0,
    spec: Annotated[str | None, typer.Option(help="A spec of flatten (optional), linear, sigmoid, linear, "
                                                  "sigmoid (default: the one --hidden makes).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train a two-layer sigmoid network by hand (NumPy: forward, hand-written backward,
    gradient descent) and the same spec with archlab's trainer (plain SGD, MSE on one-hot
    targets, same initial weights and batches); print both losses per epoch."""
    from ..scratch import LR, TOLERANCE, compare_with_trainer

    c = compare_with_trainer(spec, data, hidden=hidden, epochs=epochs, lr=LR if lr is None else lr,
                             batch_size=batch_size, seed=seed, quiet=quiet)
    print(f"{c.spec.name}: {c.layers} on {c.data} ({c.train_samples:,} training samples); "
          f"SGD lr {LR if lr is None else lr:g}, batch {batch_size}, seed {seed}; loss: MSE on one-hot targets")
    print("train_loss: the mean over the epoch of each batch's loss before its step; val_loss: after the epoch")
    head = f"{'epoch':>5}  {'numpy train':>12}  {'archlab train':>13}  {'|diff|':>7}  " \
           f"{'numpy val':>10}  {'archlab val':>11}  {'|diff|':>7}"
    print(head)
    for r in c.rows:
        print(f"{r['epoch']:>5}  {r['scratch_train']:>12.8f}  {r['archlab_train']:>13.8f}  "
              f"{abs(r['scratch_train'] - r['archlab_train']):>7.1e}  {r['scratch_val']:>10.8f}  "
              f"{r['archlab_val']:>11.8f}  {abs(r['scratch_val'] - r['archlab_val']):>7.1e}")
    last = c.rows[-1]
    verdict = "equal within" if c.max_diff <= TOLERANCE else "DIFFER by more than"
    print(f"max |difference| {c.max_diff:.1e}: {verdict} {TOLERANCE:g} (NumPy float64, torch float32)")
    print(f"val accuracy after epoch {last['epoch']}: numpy {last['scratch_val_acc']:.4f}, archlab "
          f"{last['archlab_val_acc']:.4f}")
    print(f"run   {c.run_id}  (the archlab run; details: archlab show {c.run_id})")
    if c.max_diff > TOLERANCE:
        raise typer.Exit(1)
