"""Quantization on CPU: archlab's int8 / bf16 / fp16 / auto against the same fp32 model, same run.

Headline per model: forward latency at batch 64 on one thread (the model's forward only: no
data loading; int8-dynamic includes quantizing each batch's activations, every mode includes
casting the input and output), as fp32 time / quantized time (above 1: faster); the file-size
ratio (fp32 safetensors / quantized.safetensors; quantized.json, the spec and layout, is
printed beside it); test accuracy on digits' test split, quantized minus fp32, in points.

Models (trained here on digits with archlab.train.fit, seeds given by --seeds):
- dense: zoo:mlp (256-128 hidden) and a wider zoo:mlp (--wide hidden units, default 2048-1024)
- conv:  zoo:resnet-mini (static int8, calibrated on 16 training batches of 64)

Timing: every candidate of one model is timed in turn within each round (interleaved, in a new
random order each round: an AVX-512-heavy or cache-evicting model must not always run just
before the same one), after warm-up, `--rounds` rounds; the median of wall time (perf_counter) and of process CPU time
(process_time: with one thread it counts the work, not the time other jobs took) is printed.
On a machine shared with other jobs, read the CPU-time column. Before timing, every candidate
runs once at batch 64 and then on the val split (180 samples), as auto's pick did (timed, then
scored): an int8 model whose first forward pass was at another batch size was 15-25% slower at
batch 64 afterwards in tests here, so all rows share one history.

    .venv/bin/python bench/quantize.py                   # ~2-4 min on a loaded 2-core machine
    .venv/bin/python bench/quantize.py --quick           # smoke run: fewer epochs and rounds
    .venv/bin/python bench/quantize.py --flows           # also torchao's flows, when installed
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_model

import archlab
from archlab.compress import load_quantized, quantize, save_quantized
from archlab.data import load_dataset
from archlab.train import fit


def timed(models: dict, x: torch.Tensor, rounds: int, warmup: int = 5) -> dict[str, tuple[float, float]]:
    """Median (wall, cpu) seconds per forward of each model, interleaved within each round."""
    wall: dict[str, list[float]] = {k: [] for k in models}
    cpu: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():
            for _ in range(warmup):
                m(x)
        order, shuffle = list(models), random.Random(0).shuffle
        for _ in range(rounds):
            shuffle(order)  # a new order each round: no model always runs after the same one
            for k in order:
                m = models[k]
                w0, c0 = time.perf_counter(), time.process_time()
                m(x)
                cpu[k].append(time.process_time() - c0)
                wall[k].append(time.perf_counter() - w0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in models}


def accuracy(model, split) -> float:
    with torch.inference_mode():
        return float((model(split.x).argmax(-1) == split.y).float().mean())


def bench_model(label: str, spec, vars_: dict, epochs: int, seed: int, args, tmp: Path) -> list[dict]:
    run = fit(spec, data="digits", vars=vars_, epochs=epochs, seed=seed, quiet=True, store=tmp / "store")
    net = run.model.cpu().eval()
    data = load_dataset("digits", seed=seed)
    calibration = [data.train.slice(i, i + 64)[0] for i in range(0, 64 * 16, 64)]
    fp32_file = tmp / f"{label}-{seed}-fp32.safetensors"
    save_model(net, str(fp32_file))
    acc32 = accuracy(net, data.test)
    candidates = {"fp32": net}
    for mode, engine in [("int8-dynamic", "x86"), ("int8-dynamic", "onednn"), ("int8-static", "x86"),
                         ("int8-static", "onednn"), ("bf16", None), ("fp16", None)]:
        try:
            candidates[f"{mode}@{engine}" if engine else mode] = quantize(
                net, mode, engine=engine, calibration=calibration, speed_check=False)
        except archlab.ArchlabError as e:
            print(f"  {label}: {mode}@{engine} skipped: {e}")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auto = quantize(net, "auto", calibration=calibration, data=data.val)
    auto_s = time.perf_counter() - t0
    candidates["auto"] = auto
    x = data.test.x[:64].contiguous()
    with torch.inference_mode():  # every candidate: batch 64 first, then the val split, as auto's pick
        for m in candidates.values():
            m(x)
            m(data.val.x)
    times = timed(candidates, x, args.rounds)
    rows = []
    for key, model in candidates.items():
        folder = tmp / f"{label}-{seed}-{key}"
        if key == "fp32":
            size, meta = fp32_file.stat().st_size, 0
        else:
            size = save_quantized(model, folder).stat().st_size
            meta = (folder / "quantized.json").stat().st_size
            with torch.inference_mode():  # the reload is bit-identical
                assert torch.equal(load_quantized(folder)(x), model(x)), key
        rows.append({"model": label, "seed": seed, "candidate": key if key != "auto" else
                     f"auto -> {auto.mode}{'@' + auto.engine if auto.engine else ''}",
                     "wall": times[key][0], "cpu": times[key][1], "speed_wall": times["fp32"][0] / times[key][0],
                     "speed_cpu": times["fp32"][1] / times[key][1], "size": size, "meta": meta,
                     "size_ratio": fp32_file.stat().st_size / size, "acc": accuracy(model, data.test),
                     "acc_points": 100 * (accuracy(model, data.test) - acc32)})
    print(f"  {label} seed {seed}: auto took {auto_s:.1f} s; {auto.notes[-1]}")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--wide", type=int, default=2048)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--flows", action="store_true", help="also time torchao's flows (when installed)")
    args = p.parse_args()
    if args.quick:
        args.rounds = 10
    torch.set_num_threads(1)
    epochs = {"dense": 3 if args.quick else 15, "conv": 1 if args.quick else 5}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, engine default "
          f"{torch.backends.quantized.engine}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          f"(shared machine: wall times swing; CPU time is the steadier column)")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ["ARCHLAB_HOME"] = str(tmp / "home")
        for seed in range(args.seeds):
            rows += bench_model("zoo:mlp", "zoo:mlp", {}, epochs["dense"], seed, args, tmp)
            rows += bench_model(f"mlp-{args.wide}", "zoo:mlp", {"hidden": args.wide}, epochs["dense"], seed,
                                args, tmp)
            rows += bench_model("zoo:resnet-mini", "zoo:resnet-mini", {}, epochs["conv"], seed, args, tmp)
    print("\nbatch 64, one thread, forward only; speed = fp32 time / candidate time (above 1: faster); "
          "size = fp32 safetensors / candidate safetensors; acc = test accuracy, points vs fp32")
    print(f"{'model':<16} {'seed':>4} {'candidate':<28} {'wall µs':>9} {'cpu µs':>9} {'speed(wall)':>11} "
          f"{'speed(cpu)':>10} {'size':>6} {'json B':>7} {'acc %':>7} {'Δacc':>6}")
    for r in rows:
        print(f"{r['model']:<16} {r['seed']:>4} {r['candidate']:<28} {1e6 * r['wall']:>9.0f} {1e6 * r['cpu']:>9.0f} "
              f"{r['speed_wall']:>10.2f}× {r['speed_cpu']:>9.2f}× {r['size_ratio']:>5.2f}× {r['meta']:>7} "
              f"{100 * r['acc']:>7.2f} {r['acc_points']:>+6.2f}")
    if args.flows:
        flows(args)


def flows(args) -> None:
    """The flows archlab did not choose, on the wide MLP and a small CNN (random weights: speed only)."""
    try:
        import torchao  # noqa: F401
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
            quantize_,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    except ImportError:
        print("\n--flows: torchao is not installed (pip install torchao); skipped")
        return
    import copy
    print("\nflows (random weights, batch 64, one thread; speed = fp32 eager / flow)")
    specs = {f"mlp-{args.wide}": archlab.load_spec("zoo:mlp").with_vars({"hidden": args.wide}),
             "cnn-8x8": {"input": {"shape": [1, 8, 8]}, "model": [
                 {"conv2d": {"out": 32, "kernel": 3, "padding": 1}}, "relu",
                 {"conv2d": {"out": 64, "kernel": 3, "padding": 1}}, "relu", {"maxpool": 2}, "flatten",
                 {"linear": 128}, "relu", {"linear": 10}]}}
    for name, spec in specs.items():
        net = archlab.build(spec).eval()
        x = torch.randn(64, 1, 8, 8)
        models = {"fp32": net, "archlab int8": quantize(net, "int8", calibration=[x], speed_check=False)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            exported = torch.export.export(copy.deepcopy(net), (x,)).module()
            quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
            prepared = prepare_pt2e(exported, quantizer)
            prepared(x)
            pt2e = convert_pt2e(prepared)
            models["pt2e (no compile)"] = pt2e
            with torch.no_grad():
                compiled = torch.compile(pt2e)
                compiled(x)
            models["pt2e + compile"] = compiled
            print(f"  {name}: PT2E export + calibrate + compile took {time.perf_counter() - t0:.1f} s")
            fp32c = torch.compile(copy.deepcopy(net))
            with torch.no_grad():
                fp32c(x)
            models["fp32 + compile"] = fp32c
            for label, config in [("torchao int8 dyn", Int8DynamicActivationInt8WeightConfig()),
                                  ("torchao int8 weight-only", Int8WeightOnlyConfig())]:
                m = copy.deepcopy(net)
                quantize_(m, config)
                models[label] = m
        times = timed(models, x, max(10, args.rounds // 3))
        for k, (wall, cpu) in times.items():
            print(f"  {name:<10} {k:<26} wall {1e6 * wall:>8.0f} µs  cpu {1e6 * cpu:>8.0f} µs  "
                  f"speed(cpu) {times['fp32'][1] / cpu:.2f}×")


if __name__ == "__main__":
    main()
