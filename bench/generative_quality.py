"""Quality of zoo:vae and zoo:gan samples on digits, judged by a digits classifier.

    python bench/generative_quality.py                      # both models, the recorded settings
    python bench/generative_quality.py --models gan --gan-epochs 100 --set gan.hidden=128

Steps, all with fixed seeds on CPU:
1. Train the judge: zoo:cnn on digits (seed 0). zoo:cnn trains with label smoothing 0.1,
   which caps its confidence near 0.91, so that even most *real* test digits fall below
   0.9; the judge therefore trains with --label-smoothing 0 (all else as zoo:cnn), and the
   stock zoo:cnn's numbers are printed beside it. The share of real test digits each judge
   classifies with confidence >= 0.9 is the reference a generator can hope to reach.
2. Train zoo:vae and zoo:gan on digits (seed 0, their zoo settings unless overridden).
3. Draw 1000 samples from each (seed 0: VAE z ~ N(0, I) through the decoder; GAN G(z)) and
   report: the share classified with confidence >= 0.9, the mean confidence, the class
   histogram of confident samples (a collapsed GAN piles into a few classes), and timings.

The run store is a temporary folder unless --store is given (then runs are kept and a
second call with --judge RUN_ID reuses a trained judge).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from archlab.data import load_dataset  # noqa: E402
from archlab.runs import open_store  # noqa: E402
from archlab.spec import parse_assignment  # noqa: E402
from archlab.train import fit, fit_generative, load_run_model, save_grid  # noqa: E402  # noqa: E402

CONFIDENCE = 0.9


@torch.no_grad()
def judge(classifier: torch.nn.Module, images: torch.Tensor) -> dict:
    classifier.eval()
    probs = classifier(images).softmax(dim=-1)
    conf, pred = probs.max(dim=-1)
    confident = conf >= CONFIDENCE
    hist = Counter(pred[confident].tolist())
    return {"confident_share": confident.float().mean().item(), "mean_confidence": conf.mean().item(),
            "histogram": [hist.get(c, 0) for c in range(probs.shape[1])],
            "argmax_histogram": [int((pred == c).sum()) for c in range(probs.shape[1])]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vae,gan", help="comma-separated: vae, gan")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0, help="training seed of every run")
    ap.add_argument("--sample-seed", type=int, default=0)
    ap.add_argument("--vae-epochs", type=int, default=None, help="default: zoo:vae's")
    ap.add_argument("--gan-epochs", type=int, default=None, help="default: zoo:gan's")
    ap.add_argument("--set", action="append", default=[], help="MODEL.VAR=VALUE, e.g. gan.hidden=128")
    ap.add_argument("--train", action="append", default=[], help="MODEL.SETTING=VALUE, e.g. gan.lr=1e-4")
    ap.add_argument("--store", default=None, help="run store folder (default: a temporary one)")
    ap.add_argument("--judge", default=None, help="reuse this classifier run id from --store")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared 2-core box)")
    ap.add_argument("--no-stock", action="store_true", help="skip the stock zoo:cnn judge")
    ap.add_argument("--grids", default=None, help="folder for 64-sample PNG grids")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    store = open_store(args.store or tempfile.mkdtemp(prefix="archlab-genq-"))
    results: dict = {"torch": torch.__version__, "python": platform.python_version(), "threads": args.threads,
                     "cpu": platform.processor() or platform.machine(), "samples": args.samples}

    # 1. The judges, and how confident they are on real test digits.
    test = load_dataset("digits").test
    judges = {}
    kinds = [("judge", {"label_smoothing": 0.0})] + ([] if args.no_stock else [("stock zoo:cnn", {})])
    for label, extra in kinds:
        t0 = time.perf_counter()
        if label == "judge" and args.judge:
            net, _ = load_run_model(args.judge, store=store)
            run_id = args.judge
        else:
            run = fit("zoo:cnn", data="digits", seed=0, quiet=True, store=store, **extra)
            net, run_id = run.model, run.run_id
        acc = (net.eval()(test.x).argmax(-1) == test.y).float().mean().item()
        real = judge(net, test.x)
        judges[label] = net
        results[label] = {"run_id": run_id, "test_acc": acc, "real_confident_share": real["confident_share"],
                          "seconds": time.perf_counter() - t0}
        print(f"{label:14s} zoo:cnn{' --label-smoothing 0' if extra else ''}: test acc {acc:.4f}; real test "
              f"digits with confidence >= {CONFIDENCE}: {real['confident_share']:.1%} "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)

    # 2-3. The generators.
    sets: dict[str, dict] = {"vae": {}, "gan": {}}
    trains: dict[str, dict] = {"vae": {}, "gan": {}}
    for target, text in [(sets, s) for s in args.set] + [(trains, s) for s in args.train]:
        model, _, assignment = text.partition(".")
        name, value = parse_assignment(assignment)
        target[model][name] = value
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        epochs = args.vae_epochs if model == "vae" else args.gan_epochs
        t0 = time.perf_counter()
        run = fit_generative(f"zoo:{model}", data="digits", store=store, quiet=True, seed=args.seed,
                             vars=sets[model] or None, **({"epochs": epochs} if epochs else {}), **trains[model])
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        images = run.model.sample(args.samples, generator=torch.Generator().manual_seed(args.sample_seed))
        sample_ms = (time.perf_counter() - t1) * 1000
        if args.grids:
            os.makedirs(args.grids, exist_ok=True)
            save_grid(images[:64], os.path.join(args.grids, f"{model}.png"))
        last = run.history[-1]
        results[model] = {"run_id": run.run_id, "epochs": run.settings.epochs, "train_seconds": train_s,
                          "sample_ms": sample_ms, "vars": sets[model], "settings": trains[model],
                          "last_epoch": last, "test": run.test_metrics}
        for label, net in judges.items():
            results[model][label] = j = judge(net, images)
            print(f"{model} ({run.settings.epochs} epochs, {train_s:.0f}s train, {sample_ms:.0f} ms for "
                  f"{args.samples} samples) by {label}: {j['confident_share']:.1%} with confidence >= "
                  f"{CONFIDENCE}, mean confidence {j['mean_confidence']:.3f}; confident per class "
                  f"{j['histogram']}", flush=True)
        print(f"{model} last epoch: " + "  ".join(f"{k} {v:.4f}" for k, v in last.items() if k != "epoch")
              + "  test: " + "  ".join(f"{k} {v:.4f}" for k, v in run.test_metrics.items()), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
