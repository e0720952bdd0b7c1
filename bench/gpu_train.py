"""GPT-2 small (zoo:gpt2, 124M) trained in bf16 with SDPA flash attention and torch.compile:
tokens/s and MFU, against the same loop in eager PyTorch, measured in the same run.

    PYTHONPATH=. python bench/gpu_train.py                     # a CUDA GPU (not yet run on one)
    PYTHONPATH=. python bench/gpu_train.py --peak-tflops 700   # a device not in the table
    PYTHONPATH=. python bench/gpu_train.py --tiny              # CPU check: 2 layers, context 64, 4 steps

Included in each figure: timed optimizer steps of the archlab-built module (fp32 weights, forward
under bf16 autocast as nanoGPT trains, cross-entropy on fp32 logits, backward, fused AdamW step, zero_grad), after warm-up
steps that pay torch.compile's compilation; a CUDA synchronize closes the timing. Not
included: building, compiling, the inspector, making the data. Data: random token ids made on
the device before timing (no downloads; throughput does not depend on the tokens).

FLOPs per token are archlab's own inspector's: 3 x the forward's matmul, convolution and
attention FLOPs (2 x `inspect(...).macs_per_sample`) / context; the 6N + attention rule
(6 x parameters without the position embedding + 12 x layers x context x dim, nanoGPT's and
PaLM's MFU formula) is printed beside it. Both count full (not causal-halved) attention.
MFU = FLOPs per token x tokens/s / peak, the peak from a per-device table of dense bf16
tensor-core TFLOPS (H100 and H200 989, A100 312) or `--peak-tflops`.

No GPU: the script refuses to run on CPU without `--tiny` (one line, exit 2). `--tiny` runs a
2-layer, dim-128, context-64 GPT-2 for a handful of steps on whatever device there is, so the
script itself is exercised on CPU; its figures say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import sys
import time

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}


def peak_tflops(device_name: str, override: float | None) -> float | None:
    if override is not None:
        return override
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in device_name.upper():
            return value
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a 2-layer, context-64 model for a CPU check")
    p.add_argument("--batch", type=int, default=None, help="sequences per step (default 32; tiny 2)")
    p.add_argument("--context", type=int, default=None, help="tokens per sequence (default 1024; tiny 64)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 40; tiny 4)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 8; tiny 2)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute every block's forward in backward (MFU still counts the model's FLOPs only)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    p.add_argument("--no-eager", action="store_true", help="skip the eager baseline row")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="stop timing a row early once the whole run has used this many seconds")
    args = p.parse_args(argv)
    tiny = args.tiny
    args.batch = args.batch or (2 if tiny else 32)
    args.context = args.context or (64 if tiny else 1024)
    args.steps = args.steps or (4 if tiny else 40)
    args.warmup = args.warmup if args.warmup is not None else (2 if tiny else 8)
    return args


def model_vars(tiny: bool) -> dict:
    return {"depth": 2, "dim": 128, "heads": 4} if tiny else {}


def flops_per_token(vars: dict, context: int, device: str) -> tuple[float, float, int]:
    """(inspector's, the 6N + attention rule's, parameters) per trained token."""
    from archlab import inspect

    r = inspect("zoo:gpt2", input_shape=(context,), vars=vars, dtype="bf16", device=device)
    inspector = 3 * 2 * r.macs_per_sample / context
    v = {"vocab_size": 50257, "dim": 768, "depth": 12, **vars}
    n = r.params - context * v["dim"]  # without the position embedding (its lookup is no matmul)
    rule = 6 * n + 12 * v["depth"] * context * v["dim"]
    return inspector, rule, r.params


def time_row(net, args: argparse.Namespace, device, compiled: bool, started: float) -> tuple[float, int]:
    """Seconds per timed step and the number of timed steps of one row."""
    import torch
    import torch.nn.functional as F

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = net(x)  # (B, T, vocab)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))

    # The loss inside the compiled graph: the fp32 cast and the log-softmax fuse (as in nanoGPT).
    forward = torch.compile(loss_of) if compiled else loss_of
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(net.parameters(), lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95), fused=fused)
    g = torch.Generator(device=device).manual_seed(0)
    vocab = 50257  # zoo:gpt2's vocabulary, tiny or not
    data = torch.randint(0, vocab, (args.warmup + args.steps, args.batch, args.context + 1),
                         device=device, generator=g)
    kernels = _attention_kernels(device)

    def step(i: int) -> None:
        x, y = data[i, :, :-1], data[i, :, 1:]
        with kernels:
            loss = forward(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(args.warmup):
        step(i)
    _sync(device)
    t0, done = time.perf_counter(), 0
    for i in range(args.warmup, args.warmup + args.steps):
        step(i)
        done += 1
        if time.perf_counter() - started > args.budget_s:
            break
    _sync(device)
    return (time.perf_counter() - t0) / done, done


def _attention_kernels(device):
    import contextlib


    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION])  # flash or an error: never a silent fallback


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.no_eager and args.no_compile:
        print("error: bench/gpu_train.py: --no-eager and --no-compile leave nothing to time. Received: both; "
              "drop one", file=sys.stderr)
        return 2
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print("error: bench/gpu_train.py: expected a CUDA GPU for zoo:gpt2 (124M). Received: no CUDA "
              "device; run it on a GPU, or add --tiny to check the script on CPU", file=sys.stderr)
        return 2
    started = time.perf_counter()
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    peak = peak_tflops(name, args.peak_tflops)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    from archlab import build
    from archlab.model import checkpoint_repeats

    vars = model_vars(args.tiny)
    per_token, rule, params = flops_per_token(vars, args.context, device.type)
    tokens = args.batch * args.context
    print(f"zoo:gpt2{' (tiny: ' + str(vars) + ')' if args.tiny else ''}: {params:,} params, context "
          f"{args.context}, batch {args.batch} ({tokens:,} tokens a step), bf16 autocast, "
          f"{'flash SDPA, ' if cuda else ''}AdamW{' (fused)' if cuda else ''}"
          f"{', activation checkpointing' if args.activation_checkpointing else ''} on {name}")
    print(f"FLOPs per token: {per_token / 1e9:.3f} GFLOPs (archlab inspector: 3 x forward matmul+attention); "
          f"6N + attention rule: {rule / 1e9:.3f} GFLOPs ({per_token / rule:.3f}x)")
    print(f"peak: {f'{peak:g} TFLOPS dense bf16' if peak else 'unknown (give --peak-tflops): MFU not shown'}")

    rows = []
    for compiled in ([] if args.no_eager else [False]) + ([] if args.no_compile else [True]):
        torch.manual_seed(0)
        net = build("zoo:gpt2", input_shape=(args.context,), vars=vars, seed=0).to(device).train()
        if args.activation_checkpointing:
            checkpoint_repeats(net)
        seconds, done = time_row(net, args, device, compiled, started)
        rows.append((compiled, seconds, done))
        del net
        if cuda:
            torch.cuda.empty_cache()

    base = next((s for c, s, _ in rows if not c), None)
    print(f"{'row':<22}{'steps':>6}{'s/step':>10}{'tokens/s':>12}{'TFLOPS':>9}{'MFU':>8}{'vs eager':>10}")
    for compiled, seconds, done in rows:
        tps = tokens / seconds
        achieved = per_token * tps / 1e12
        mfu = f"{achieved / peak:.1%}" if peak else "n/a"
        ratio = f"{base / seconds:.2f}x" if base else "n/a"
        label = "torch.compile" if compiled else "eager"
        print(f"{label:<22}{done:>6}{seconds:>10.4f}{tps:>12,.0f}{achieved:>9.2f}{mfu:>8}{ratio:>10}")
    print(f"wall: {time.perf_counter() - started:.0f} s in all (compilation included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
