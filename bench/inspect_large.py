"""Benchmark: inspect a 7B-parameter model on a laptop, without allocating its weights.

Inspects zoo:llama-7b (32 layers, d=4096, SwiGLU 11008, RMSNorm, 32 heads, vocab 32000,
context 4096) at batch 1 with an 80 GB device, then zoo:gpt2 (context 1024), and prints wall
time, peak RSS, parameters and FLOPs per token against the analytic 6·N rule; then times the
whole command `archlab inspect zoo:llama-7b` as a subprocess. Run it as its own process (the
first call and peak RSS are per process):

    .venv/bin/python bench/inspect_large.py

Targets (issue 13): llama-7b's first inspection in a process at most 1 s once archlab.model
(and so torch) is imported, the whole command at most 4 s wall, peak RSS under 1.5 GB.
Exit status 1 if one is missed.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

TARGET_SECONDS = 1.0          # llama-7b, first call in the process, after import
TARGET_COMMAND_SECONDS = 4.0  # `archlab inspect zoo:llama-7b`, wall, import torch included
TARGET_RSS_MIB = 1536.0


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def attention_flops_per_token(layers: int, context: int, dim: int) -> tuple[int, int]:
    """Forward and training FLOPs per token of the T-dependent attention products
    (q k^T and a v: 2 * 2 * T * d MACs-as-FLOPs per token per layer), which 6N leaves out."""
    forward = 4 * layers * context * dim
    return forward, 3 * forward  # training = 12 * L * T * d


def report(name: str, context: int, layers: int, dim: int, **options: object) -> dict:
    from archlab import inspect

    start = time.perf_counter()
    r = inspect(f"zoo:{name}", **options)
    seconds = time.perf_counter() - start
    n = r.params
    fwd_token = r.flops_per_sample / context
    train_token = 3 * fwd_token
    six_n = 6 * n
    attn_fwd, attn_train = attention_flops_per_token(layers, context, dim)
    print(f"\nzoo:{name}  (context {context}, batch {r.memory.batch}, {r.dtype}, {r.optimizer})")
    print(f"  wall time                    {seconds:8.2f} s")
    print(f"  params N                     {n:,}")
    print(f"  forward FLOPs / token        {fwd_token:,.0f}   (= {fwd_token / n:.3f} * N)")
    print(f"  training FLOPs / token (3x)  {train_token:,.0f}")
    print(f"  analytic 6N / token          {six_n:,}")
    print(f"  ratio measured / 6N          {train_token / six_n:.3f}")
    print(f"  6N + 12*L*T*d / token        {six_n + attn_train:,}   "
          f"(ratio measured / that {train_token / (six_n + attn_train):.3f})")
    print(f"  uncounted ops                {', '.join(u.op for u in r.uncounted) or 'none'}")
    if r.device_memory is not None:
        print(f"  training memory at batch 1   {r.memory.total / 1e9:.1f} GB on a "
              f"{r.device_memory / 1e9:.0f} GB device: {'fits' if r.fits else 'does not fit'}; "
              f"largest batch {r.max_batch}")
    return {"seconds": seconds, "params": n, "fwd_token": fwd_token, "train_token": train_token,
            "ratio": train_token / six_n}


def the_command() -> list[str]:
    """`archlab inspect zoo:llama-7b` with this interpreter's archlab: the console script
    beside it where there is one, else `python -m archlab`."""
    script = Path(sys.executable).with_name("archlab")
    if script.exists():
        return [str(script), "inspect", "zoo:llama-7b"]
    found = shutil.which("archlab")
    return [found, "inspect", "zoo:llama-7b"] if found else [sys.executable, "-m", "archlab", "inspect", "zoo:llama-7b"]


def time_command() -> float:
    command = the_command()
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\nthe whole command, a subprocess: {' '.join(command)}")
    print(f"  wall time                    {seconds:8.2f} s")
    print(f"  peak RSS (its process)       {child_rss:8.0f} MiB")
    return seconds


def main() -> int:
    t0 = time.perf_counter()
    import archlab.model  # noqa: F401  (torch and the inspector: import time reported apart)

    import_seconds = time.perf_counter() - t0
    print(f"import archlab.model (and torch): {import_seconds:.2f} s, RSS after import {peak_rss_mib():.0f} MiB")
    llama = report("llama-7b", 4096, 32, 4096, batch=1, device_memory="80GB")
    rss_llama = peak_rss_mib()
    print(f"  peak RSS (process)           {rss_llama:8.0f} MiB")
    loaded = [m for m in ("torch._dynamo", "sympy") if m in sys.modules]
    print(f"  loaded after the first call  {', '.join(loaded) or 'neither torch._dynamo nor sympy'}")
    from archlab import inspect

    start = time.perf_counter()
    inspect("zoo:llama-7b", batch=1, device_memory="80GB")
    print(f"  wall time, warm (2nd call)   {time.perf_counter() - start:8.2f} s")
    gpt2 = report("gpt2", 1024, 12, 768, batch=1)
    print(f"  peak RSS (process)           {peak_rss_mib():8.0f} MiB")

    command_seconds = time_command()

    ok_time = llama["seconds"] <= TARGET_SECONDS
    ok_command = command_seconds <= TARGET_COMMAND_SECONDS
    ok_rss = rss_llama < TARGET_RSS_MIB
    print(f"\nllama-7b first inspect {llama['seconds']:.2f} s <= {TARGET_SECONDS:.0f} s: "
          f"{'PASS' if ok_time else 'FAIL'}")
    print(f"archlab inspect zoo:llama-7b {command_seconds:.2f} s <= {TARGET_COMMAND_SECONDS:.0f} s: "
          f"{'PASS' if ok_command else 'FAIL'}")
    print(f"peak RSS {rss_llama:.0f} MiB < {TARGET_RSS_MIB:.0f} MiB: {'PASS' if ok_rss else 'FAIL'}")
    print(f"RESULT import_s={import_seconds:.2f} llama_s={llama['seconds']:.2f} gpt2_s={gpt2['seconds']:.2f} "
          f"command_s={command_seconds:.2f} peak_rss_mib={rss_llama:.0f} "
          f"llama_ratio={llama['ratio']:.3f} gpt2_ratio={gpt2['ratio']:.3f}")
    return 0 if ok_time and ok_command and ok_rss else 1


if __name__ == "__main__":
    sys.exit(main())
