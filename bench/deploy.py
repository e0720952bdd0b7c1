"""ONNX export: how long it takes, and onnxruntime's inference latency against plain PyTorch.

Headline: for each zoo spec (built with seed 0, eval mode), `archlab.deploy.export_onnx`
(torch.onnx.export with dynamo=True, dynamic batch) is timed once, then the forward pass of
the same model is timed in PyTorch (`torch.no_grad`, eager) and in onnxruntime (CPU
provider), one intra-op thread each, one after the other (a warm-up call first), median of
--repeats runs, at batch 1 and 256. Ratio = PyTorch time / onnxruntime time (above 1: onnxruntime is faster). Included:
the forward pass only (inputs already built, outputs copied back as numpy for onnxruntime);
not included: preprocessing, session creation, the export.

    python bench/deploy.py [--specs mlp,cnn,resnet-mini,gpt-mini] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import archlab
from archlab.deploy import Shipped, export_onnx, onnx_graph


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", default="mlp,cnn,resnet-mini,gpt-mini")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batches", default="1,256")
    args = parser.parse_args()
    import onnxruntime as ort

    torch.set_num_threads(1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, 1 thread, median of {args.repeats}")
    print(f"{'spec':16} {'export s':>9} {'batch':>6} {'torch ms':>10} {'ort ms':>10} {'torch/ort':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.specs.split(","):
            net = archlab.build(f"zoo:{name}", seed=0).eval()
            t = time.perf_counter()
            done = export_onnx(Shipped(net, net.spec, {}, name), Path(tmp) / f"{name}.onnx")
            export_s = time.perf_counter() - t
            session = ort.InferenceSession(str(done.path), options, providers=["CPUExecutionProvider"])
            module, _, inputs, _, make = onnx_graph(net)
            for b in (int(x) for x in args.batches.split(",")):
                xs = make(b, 0)
                feeds = {n: x.numpy() for n, x in zip(inputs, xs, strict=True)}
                with torch.no_grad():
                    pt = _median_ms(lambda xs=xs, m=module: m(*xs), args.repeats)
                rt = _median_ms(lambda feeds=feeds, s=session: s.run(None, feeds), args.repeats)
                print(f"{name:16} {export_s:9.1f} {b:6d} {pt:10.3f} {rt:10.3f} {pt / rt:10.2f}", flush=True)


if __name__ == "__main__":
    main()
