"""Explanations of a zoo:cnn run on digits: the checks against issue 14's targets, and the
wall time of `archlab.explain.explain` against plain Captum calls on the same model.

What is timed:

  archlab explain   explain(run, samples=32): saliency, integrated gradients (steps doubled per
                    sample until its completeness error is <= 1e-3), Grad-CAM, each also on a
                    weight-randomised copy (the randomisation test), deletion curves for each
                    method and 8 random orders; loading the run and its data included
  plain Captum      Saliency + IntegratedGradients at a fixed n_steps (the largest any sample
                    needed above) + LayerGradCam, on the same
                    model and samples, no checks: what the attributions alone cost

Training the run (zoo:cnn, --epochs, on digits) comes first and is not in either time.
Also printed: Captum's default integrated gradients (Gauss-Legendre, 50 steps) completeness
error, which is why the steps must rise.

    python bench/explain.py                 # 10 epochs, 32 samples, 2 threads
    python bench/explain.py --epochs 30 --samples 32 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("ARCHLAB_HOME", tempfile.mkdtemp(prefix="archlab-bench-explain-"))

    from captum.attr import IntegratedGradients, LayerGradCam, Saliency

    from archlab.explain import (
        COMPLETENESS_TARGET,
        DELETION_TARGET,
        RANDOMISATION_TARGET,
        completeness_error,
        explain,
        last_conv,
    )
    from archlab.train import fit, load_run_model

    t0 = time.perf_counter()
    run = fit("zoo:cnn", data="digits", epochs=args.epochs, quiet=True)
    train_s = time.perf_counter() - t0
    print(f"trained zoo:cnn on digits for {args.epochs} epochs in {train_s:.1f}s: test acc "
          f"{run.test_metrics['acc']:.4f} (run {run.run_id}; not in the times below)")

    t0 = time.perf_counter()
    expl = explain(run.run_id, samples=args.samples)
    archlab_s = time.perf_counter() - t0
    s = expl.summary()

    # Plain Captum on the same model and samples, no checks.
    net, _ = load_run_model(run.run_id)
    net.eval()
    rows = torch.as_tensor(expl.indices)
    from archlab.data import load_dataset

    x = load_dataset("digits").test.x[rows]
    target = torch.as_tensor(expl.targets)
    steps = int(s["ig"]["steps_max"])
    t0 = time.perf_counter()
    xg = x.clone().requires_grad_(True)
    Saliency(net).attribute(xg, target=target)
    ig_fixed = IntegratedGradients(net).attribute(x, baselines=x * 0, target=target, n_steps=steps,
                                                  method="riemann_middle", internal_batch_size=4096)
    LayerGradCam(net, last_conv(net, net.layers)[1]).attribute(xg, target=target, relu_attributions=True)
    plain_s = time.perf_counter() - t0
    fixed_err = completeness_error(net, x, x * 0, target, ig_fixed.detach())
    default = IntegratedGradients(net).attribute(x, baselines=x * 0, target=target)  # Captum's defaults
    default_err = completeness_error(net, x, x * 0, target, default.detach())

    ig, sal, cam = s["ig"], s["saliency"], s["gradcam"]
    print(f"\n{args.samples} digit test samples, {args.threads} threads (machine shared with other jobs: "
          f"times are indicative)\n")
    print(f"{'check':58s} {'measured':>12s} {'target':>10s}  ok")

    def line(what: str, value: str, target: str = "", ok: bool | None = None) -> None:
        print(f"{what:58s} {value:>12s} {target:>10s}  {'' if ok is None else 'yes' if ok else 'NO'}")

    line("IG completeness error, max over samples", f"{ig['completeness_max']:.2e}",
         f"<= {COMPLETENESS_TARGET:g}", ig["completeness_pass"])
    line("  (steps per sample: max / mean)", f"{ig['steps_max']} / {ig['steps_mean']:.0f}")
    line("Spearman rho trained vs randomised, IG (mean)", f"{ig['rank_corr_mean']:.3f}",
         f"<= {RANDOMISATION_TARGET:g}", ig["randomisation_pass"])
    line("  the same on |IG| (input-dominated, not judged)", f"{ig['rank_corr_abs_mean']:.3f}")
    line("Spearman rho trained vs randomised, saliency (mean)", f"{sal['rank_corr_mean']:.3f}",
         f"<= {RANDOMISATION_TARGET:g}", sal["randomisation_pass"])
    line("Spearman rho trained vs randomised, Grad-CAM (mean)", f"{cam['rank_corr_mean']:.3f}",
         f"<= {RANDOMISATION_TARGET:g}", cam["randomisation_pass"])
    line("IG deletion beats random deletion (share of samples)", f"{ig['deletion_wins']:.0%}",
         f">= {DELETION_TARGET:.0%}", ig["deletion_pass"])
    line("  deletion AUC: IG / saliency / Grad-CAM / random",
         f"{ig['deletion_auc_mean']:.3f} / {sal['deletion_auc_mean']:.3f} / {cam['deletion_auc_mean']:.3f} / "
         f"{ig['random_auc_mean']:.3f}")
    line("archlab explain wall time (s)", f"{archlab_s:.1f}", "<= 60", archlab_s <= 60)
    print(f"\nplain Captum (saliency + IG at a fixed {steps} steps + Grad-CAM, no checks): {plain_s:.1f}s; "
          f"archlab explain / plain = {archlab_s / plain_s:.2f}x (the checks: randomised copy, deletion curves)")
    print(f"fixed {steps}-step IG for every sample: completeness error max {np.max(fixed_err):.2e} (the error is not "
          f"monotone in the steps, so one fixed count is no guarantee); Captum's default IG "
          f"(Gauss-Legendre, 50 steps) max {np.max(default_err):.2e}, mean {np.mean(default_err):.2e}")


if __name__ == "__main__":
    main()
