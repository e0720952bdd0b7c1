"""Does pruning pay? The same search budget with and without Optuna's pruner.

`archlab.search.search` on `zoo:search-digits` (depth, width, block type plain / residual /
parallel, kernel, dropout, learning rate) and the bundled `digits` data, the same number of
trials, the same TPE seed, once per pruner (`none`, then `median`, optionally `hyperband`).
For each it prints the epochs trained over all trials, the wall time and the best validation
accuracy. The target (the project's issue): the median pruner trains at most half of the
epochs, and its best result is within 0.5 points of the unpruned one.

Then the best architecture found (the pruned search's) is compared with `zoo:cnn`: both are
trained once on the train split, chosen by validation, and scored once on the test split,
with parameters and FLOPs from the inspector. The best-found spec is trained with the
epochs of the search, zoo:cnn with its own settings (30 epochs).

    python bench/search_efficiency.py                 # 40 trials x 12 epochs, 3-fold CV (see --help)
    python bench/search_efficiency.py --quick         # 8 trials x 3 epochs, no CV: a smoke run
    python bench/search_efficiency.py --multi         # also accuracy vs parameters (Pareto pruning)

`--cv 3` scores every trial by 3-fold cross-validation of the pooled train+validation data
(1,437 samples), so one sample is 0.07 points, not the 0.56 points of the 180-sample
validation split: a "within 0.5 points" check on the latter would be a check on noise.
Results and a discussion: bench/search_efficiency.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from archlab.model import inspect  # noqa: E402
from archlab.search import export_specs, search  # noqa: E402
from archlab.spec import load_spec  # noqa: E402
from archlab.train import fit  # noqa: E402


def run_search(pruner: str, args: argparse.Namespace, home: Path, objectives=("val_acc",)) -> dict:
    started = time.perf_counter()
    multi = len(objectives) > 1
    result = search("zoo:search-digits", data="digits", trials=args.trials, epochs=args.epochs, cv=args.cv,
                    objectives=objectives, pruner=pruner, sampler="nsga2" if multi else "tpe", seed=args.seed,
                    storage=f"journal:{home / f'{pruner}-{len(objectives)}.journal'}",
                    store=home / "runs", quiet=not args.verbose)
    wall = time.perf_counter() - started
    best = result.best[0] if result.best else None
    states = {s: result.count(s) for s in ("complete", "pruned", "infeasible", "failed")}
    return {"pruner": pruner, "result": result, "epochs": result.epochs, "wall_s": wall,
            "best_val": best.values[0] if best else float("nan"), "best_trial": best.number if best else None,
            "best_params": dict(best.params) if best else {}, "states": states,
            "full_epochs": args.trials * args.epochs * (args.cv or 1),
            "front": sorted((t.values[1], t.values[0], t.number) for t in result.best) if multi else []}


def hypervolume(front: list[tuple[float, float, int]], params_ref: float, acc_ref: float) -> float:
    """Area dominated by the front in (log10 params, accuracy), from (log10 params_ref, acc_ref):
    larger is better; both axes are normalised, so 1.0 would be 100% accuracy at 1 parameter."""
    import math

    area, best = 0.0, acc_ref
    points = sorted((math.log10(p), a) for p, a, _ in front if p <= params_ref and a > acc_ref)
    xs = [x for x, _ in points] + [math.log10(params_ref)]
    for (x, a), x_next in zip(points, xs[1:], strict=True):
        best = max(best, a)
        area += (x_next - x) * (best - acc_ref)
    return area / math.log10(params_ref) / (1 - acc_ref)


def multi_section(args: argparse.Namespace, home: Path) -> None:
    """val_acc vs params:min (NSGA-II): no pruning against the Pareto-aware median rule."""
    largest = inspect("zoo:search-digits", vars={"depth": 3, "width": 64, "block": "residual", "kernel": 5}).params
    print(f"\nmulti-objective: val_acc (max) and params (min), NSGA-II, {args.trials} trials; hypervolume in "
          f"(log10 params, val_acc) from ({largest:,} params, {args.acc_ref:.0%}) -- the largest model of the "
          f"space; normalised: 1.0 would be 100% accuracy at 1 parameter")
    rows = [run_search(p, args, home, ("val_acc", "params:min")) for p in ("none", "median")]
    print(f"{'pruner':<10} {'epochs trained':>15} {'wall s':>8} {'front':>6} {'hypervolume':>12}  front (params: val acc)")
    for r in rows:
        r["hypervolume"] = hypervolume(r["front"], largest, args.acc_ref)
        pts = ", ".join(f"{p:,.0f}: {100 * a:.2f}%" for p, a, _ in r["front"])
        print(f"{r['pruner']:<10} {r['epochs']:>15} {r['wall_s']:>8.1f} {len(r['front']):>6} "
              f"{r['hypervolume']:>12.4f}  {pts}")
    base, pruned = rows
    print(f"\nPareto-aware median vs none: {100 * (1 - pruned['epochs'] / base['epochs']):.1f}% fewer epochs, "
          f"{100 * (1 - pruned['wall_s'] / base['wall_s']):.1f}% less wall time, hypervolume "
          f"{pruned['hypervolume']:.4f} vs {base['hypervolume']:.4f}")
    MULTI.extend({k: v for k, v in r.items() if k != "result"} for r in rows)


MULTI: list[dict] = []


def score(spec, home: Path, label: str, **settings) -> dict:
    started = time.perf_counter()
    run = fit(spec, data="digits", store=home / "final", quiet=True, **settings)
    report = inspect(load_spec(spec) if not isinstance(spec, dict) else spec, input_shape=(1, 8, 8))
    best_val = max(e["val_acc"] for e in run.history)
    return {"label": label, "params": report.params, "flops": report.flops_per_sample,
            "val_acc": best_val, "test_acc": run.test_metrics["acc"], "epochs": len(run.history),
            "train_s": time.perf_counter() - started}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--cv", type=int, default=3, help="folds per trial (0: the validation split)")
    ap.add_argument("--pruners", default="none,median", help="comma-separated: none, median, hyperband")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steady on a busy machine)")
    ap.add_argument("--quick", action="store_true", help="8 trials x 3 epochs, no CV")
    ap.add_argument("--multi", action="store_true", help="also: val_acc vs params:min, Pareto-aware pruning or none")
    ap.add_argument("--acc-ref", type=float, default=0.9, help="hypervolume reference accuracy")
    ap.add_argument("--verbose", action="store_true", help="a progress line per trial")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    if args.quick:
        args.trials, args.epochs, args.cv = 8, 3, 0
    args.cv = args.cv or None
    torch.set_num_threads(args.threads)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); load average at start {os.getloadavg()[0]:.1f}")
    print(f"search:  zoo:search-digits on digits, {args.trials} trials x {args.epochs} epochs"
          + (f" x {args.cv} folds" if args.cv else " (validation split)") + f", TPE seed {args.seed}\n")
    home = Path(tempfile.mkdtemp(prefix="archlab-search-bench-"))
    rows = [run_search(p.strip(), args, home) for p in args.pruners.split(",")]

    print(f"{'pruner':<10} {'epochs trained':>15} {'of':>6} {'wall s':>8} {'best val acc':>13} "
          f"{'complete':>9} {'pruned':>7}  best trial")
    for r in rows:
        print(f"{r['pruner']:<10} {r['epochs']:>15} {r['full_epochs']:>6} {r['wall_s']:>8.1f} "
              f"{100 * r['best_val']:>12.2f}% {r['states']['complete']:>9} {r['states']['pruned']:>7}  "
              f"#{r['best_trial']} {r['best_params']}")
    base = next((r for r in rows if r["pruner"] == "none"), None)
    verdicts = {}
    if base:
        for r in rows:
            if r is base:
                continue
            saved = 1 - r["epochs"] / base["epochs"]
            gap = 100 * (base["best_val"] - r["best_val"])
            ok = saved >= 0.5 and gap <= 0.5
            verdicts[r["pruner"]] = {"epochs_saved": saved, "points_behind": gap, "wall_saved": 1 - r["wall_s"] / base["wall_s"],
                                     "target_met": ok}
            print(f"\n{r['pruner']} vs none: {100 * saved:.1f}% fewer epochs, {100 * (1 - r['wall_s'] / base['wall_s']):.1f}% "
                  f"less wall time, best {gap:+.2f} points behind  -> target "
                  f"(>= 50% fewer epochs, <= 0.5 points behind) {'MET' if ok else 'NOT met'}")

    if args.multi:
        multi_section(args, home)

    # The best architecture found (by the pruned search if there is one) against zoo:cnn.
    pick = next((r for r in rows if r["pruner"] != "none"), rows[0])
    paths = export_specs(pick["result"], home / "best.yaml")
    best_spec = str(paths[0])
    print(f"\nbest found ({pick['pruner']} search, trial #{pick['best_trial']}) against zoo:cnn, trained once on the "
          f"train split, test split scored once:")
    finals = [score(best_spec, home, f"best found (search-digits trial {pick['best_trial']})"),
              score("zoo:cnn", home, "zoo:cnn (its own settings)")]
    print(f"{'model':<38} {'params':>9} {'fwd FLOPs':>10} {'epochs':>7} {'val acc':>8} {'test acc':>9} {'train s':>8}")
    for f in finals:
        print(f"{f['label']:<38} {f['params']:>9,} {f['flops']:>10,} {f['epochs']:>7} {100 * f['val_acc']:>7.2f}% "
              f"{100 * f['test_acc']:>8.2f}% {f['train_s']:>8.1f}")
    print(f"\nbest spec: {best_spec}")
    if args.json:
        out = {"args": {k: v for k, v in vars(args).items()}, "load_avg_end": os.getloadavg()[0],
               "searches": [{k: v for k, v in r.items() if k != "result"} for r in rows],
               "verdicts": verdicts, "multi": MULTI, "finals": finals, "best_spec": Path(best_spec).read_text()}
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
