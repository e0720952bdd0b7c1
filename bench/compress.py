"""Structured pruning: zoo:resnet-mini on digits, 50% of channels, <= 5 fine-tune epochs, seeds.

For each seed: train the parent (the spec's own settings, 15 epochs), then
  archlab       `archlab.compress.compress(run, prune_ratio=0.5, round_to=8, finetune=5)`: the
                spec is rewritten (every width halved, residual couplings kept) and the new run
                fine-tuned by archlab's loop with the parent's settings
  torch-pruning the same parent pruned by Torch-Pruning's MetaPruner (DepGraph, L1 magnitude,
                the same ratio and round_to, the classifier ignored), fine-tuned for the same
                epochs by a plain loop with the same optimizer, lr, schedule and batch size
                (optional: `pip install torch-pruning==1.6.1`; skipped and said so if missing)
  unstructured  the parent with 50% of its conv/linear weights zeroed (global magnitude), not
                fine-tuned: the same shapes, so the same MACs and latency
and measures each the same way, in the same process: MACs per sample (torch's FLOP counter,
1 MAC = 2 FLOPs), CPU latency of one forward pass at batch 1 and 256 on ONE thread (median of
30 runs in 5 rounds after warm-up, the models timed in turn), and test accuracy. Ratios are parent / variant.

    python bench/compress.py              # 3 seeds (~4 min on an idle 2-core machine)
    python bench/compress.py --seeds 1 --epochs 3 --finetune 1     # a quick look
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from archlab.compress import accuracy, compress, count_macs, latency, magnitude_prune  # noqa: E402
from archlab.data import load_dataset  # noqa: E402
from archlab.runs import open_store  # noqa: E402
from archlab.train import fit, load_run_model, make_optimizer, make_schedule  # noqa: E402


def finetune_plain(net: nn.Module, dataset: Any, settings: Any, epochs: int, seed: int) -> nn.Module:
    """A plain loop with the run's optimizer, lr schedule, batch size and weight decay."""
    import dataclasses

    s = dataclasses.replace(settings, epochs=epochs)
    steps = math.ceil(len(dataset.train) / s.batch_size)
    opt = make_optimizer(net, s)
    sched = make_schedule(opt, s, steps)
    g = torch.Generator().manual_seed(seed)
    x_all, y_all = dataset.train.x, dataset.train.y
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_all), generator=g)
        for i in range(steps):
            idx = order[i * s.batch_size:(i + 1) * s.batch_size]
            if len(idx) < 2:
                continue
            loss = nn.functional.cross_entropy(net(x_all[idx]), y_all[idx], label_smoothing=s.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


def torch_pruning(parent: nn.Module, ratio: float, round_to: int) -> nn.Module | None:
    if importlib.util.find_spec("torch_pruning") is None:
        return None
    import torch_pruning as tp

    net = copy.deepcopy(parent).eval()
    final = net.get_submodule(net.layers[-1].module_name)
    pruner = tp.pruner.MetaPruner(net, net.example_input(1), importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=ratio, ignored_layers=[final], round_to=round_to)
    pruner.step()
    return net


def measure_all(models: dict[str, nn.Module], x: torch.Tensor, repeats: int) -> dict[str, dict[str, float]]:
    """Median latency per model and batch, the models timed in turn (drifting load hits all alike)."""
    times: dict[str, dict[str, list[float]]] = {k: {"1": [], "256": []} for k in models}
    rounds = 5
    for _ in range(rounds):  # interleaved rounds of repeats / rounds runs each, after 10 warm-up runs
        for name, net in models.items():
            t = latency(net, x, batches=(1, 256), repeats=max(2, repeats // rounds), warmup=10)
            for b in ("1", "256"):
                times[name][b].append(t[b]["median"])
    return {k: {b: statistics.median(v) for b, v in per.items()} for k, per in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="parent epochs (default: the spec's, 15)")
    ap.add_argument("--finetune", type=int, default=5)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--lr", type=float, default=None, help="fine-tuning lr (default: the parent's)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ["ARCHLAB_HOME"] = tempfile.mkdtemp(prefix="archlab-bench-compress-")
    store = open_store()
    rows: dict[str, list[dict[str, float]]] = {}
    have_tp = importlib.util.find_spec("torch_pruning") is not None
    for seed in range(args.seeds):
        extra = {"epochs": args.epochs} if args.epochs else {}
        parent_run = fit("zoo:resnet-mini", data="digits", seed=seed, quiet=True, store=store, **extra)
        parent, record = load_run_model(parent_run.run_id, store=store)
        parent.eval()
        settings = parent_run.settings
        if args.lr:
            import dataclasses

            settings = dataclasses.replace(settings, lr=args.lr)
        dataset = load_dataset("digits", seed=settings.seed)
        result = compress(parent_run.run_id, prune_ratio=args.ratio, round_to=args.round_to, finetune=args.finetune,
                          quiet=True, store=store, repeats=3, lr=args.lr)
        ours, _ = load_run_model(result.run_id, store=store)
        models = {"parent": parent, "archlab": ours.eval()}
        tp_net = torch_pruning(parent, args.ratio, args.round_to)
        if tp_net is not None:
            torch.manual_seed(seed)
            models["torch-pruning"] = finetune_plain(tp_net, dataset, settings, args.finetune, seed)
        models["unstructured"] = magnitude_prune(parent, args.ratio)[0].eval()
        x = dataset.test.x[:1]
        timing = measure_all(models, x, args.repeats)
        for name, net in models.items():
            rows.setdefault(name, []).append({
                "macs": count_macs(net, x), "params": sum(p.numel() for p in net.parameters()),
                "acc": accuracy(net, dataset.test), "b1": timing[name]["1"], "b256": timing[name]["256"]})
        print(f"seed {seed}: " + "  ".join(f"{k} {r[-1]['acc']:.2%}" for k, r in rows.items()), flush=True)

    def mean(name: str, key: str) -> float:
        return statistics.mean(r[key] for r in rows[name])

    print()
    print(f"zoo:resnet-mini on digits, structured {args.ratio:.0%} pruning, {args.finetune} fine-tune epochs, "
          f"{args.seeds} seed(s), fine-tune lr {settings.lr:g}; CPU, 1 thread; ratios parent / variant "
          f"(means over seeds)")
    print(f"{'':14} {'params':>8} {'MACs':>10} {'MACs x':>7} {'b1 ms':>7} {'b1 x':>6} {'b256 ms':>8} {'b256 x':>7} "
          f"{'test acc':>9} {'d acc':>8}")
    for name in rows:
        print(f"{name:14} {mean(name, 'params'):8.0f} {mean(name, 'macs'):10.0f} "
              f"{mean('parent', 'macs') / mean(name, 'macs'):6.2f}x {1e3 * mean(name, 'b1'):7.3f} "
              f"{mean('parent', 'b1') / mean(name, 'b1'):5.2f}x {1e3 * mean(name, 'b256'):8.2f} "
              f"{mean('parent', 'b256') / mean(name, 'b256'):6.2f}x {100 * mean(name, 'acc'):8.2f}% "
              f"{100 * (mean(name, 'acc') - mean('parent', 'acc')):+7.2f}pt")
    if not have_tp:
        print("torch-pruning: not installed (pip install torch-pruning==1.6.1), skipped")


if __name__ == "__main__":
    main()
