"""SIGKILL a small training run at random moments, resume it, compare with an uninterrupted run.

The run is `archlab train zoo:mlp --data digits` (4 epochs of batch 4, fixed seed, one
thread). Half the kills land at moments drawn uniformly over the reference run's wall time,
so some fall in the start-up, before anything is recorded; the other half once the run is in
the store, after a delay drawn uniformly over the time the reference run took from that
moment to its end. After the kill:

  - no run recorded: the user runs the same command again (counted as "nothing recorded");
  - a run recorded: `archlab train --resume RUN_ID` must finish it (a refusal is a failure);

and either way the final weights (checkpoint.safetensors and best.safetensors) must equal the
uninterrupted run's bit for bit, with the same history and test metrics.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cli_checks import cli, env

TIMINGS = ("seconds", "samples_per_s")  # per-epoch figures that differ from run to run
ARGS = ("zoo:mlp", "--data", "digits", "--epochs", "4", "--batch-size", "4", "--seed", "5", "--quiet")


@dataclass
class Outcome:
    delay: float
    recorded: bool
    passed: bool
    example: str
    checkpoint: bool = False
    extra: dict = field(default_factory=dict)


def _result(home: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    from archlab.runs import open_store

    store = open_store(home)
    [record] = store.list_runs()
    folder = store.run_dir(record.run_id)
    torch.set_num_threads(1)
    out = {"status": record.status, "test": dict(record.test_metrics),
           "history": [(e.epoch, {k: v for k, v in e.metrics.items() if k not in TIMINGS}) for e in record.history],
           "weights": {name: load_file(folder / name) for name in ("checkpoint.safetensors", "best.safetensors")}}
    store.close()
    return out


def _differences(a: dict, b: dict) -> list[str]:
    import torch

    diffs = []
    if a["status"] != b["status"]:
        diffs.append(f"status {b['status']} != {a['status']}")
    if a["test"] != b["test"]:
        diffs.append("test metrics differ")
    if a["history"] != b["history"]:
        diffs.append("history differs")
    for name, tensors in a["weights"].items():
        other = b["weights"].get(name, {})
        if tensors.keys() != other.keys():
            diffs.append(f"{name}: other tensors")
            continue
        bad = [k for k in tensors if not torch.equal(tensors[k], other[k])]
        if bad:
            diffs.append(f"{name}: {len(bad)} tensors differ ({bad[0]})")
    return diffs


def _train(home: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "archlab", "train", *ARGS], env=env(home), cwd=home.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def reference(root: Path) -> tuple[dict, dict[str, float]]:
    """The uninterrupted run, and when (seconds after its start) it was recorded in the store,
    wrote its first checkpoint and ended."""
    home = root / "reference"
    home.mkdir(parents=True)
    start = time.monotonic()
    proc = _train(home)
    times: dict[str, float] = {}
    while proc.poll() is None:
        if "recorded" not in times and (home / "archlab.db").exists() and list((home / "runs").glob("*")):
            times["recorded"] = time.monotonic() - start
        if "checkpoint" not in times and list((home / "runs").glob("*/checkpoint.json")):
            times["checkpoint"] = time.monotonic() - start
        time.sleep(0.02)
    _, err = proc.communicate(timeout=600)
    times["end"] = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"the reference run failed: {err[-500:]}")
    return _result(home), times


def one_kill(root: Path, i: int, delay: float, ref: dict, after_record: bool = False) -> Outcome:
    """Kill `delay` s after the start, or (after_record) `delay` s after the run appears in the store."""
    from archlab.runs import open_store

    home = root / f"kill-{i:02d}"
    home.mkdir(parents=True)
    start = time.monotonic()
    proc = _train(home)
    if after_record:
        while proc.poll() is None and not list((home / "runs").glob("*")):
            time.sleep(0.01)
    time.sleep(delay)
    delay = time.monotonic() - start
    finished_first = proc.poll() is not None
    if not finished_first:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    store = open_store(home)
    runs = store.list_runs() if (home / "archlab.db").exists() else []
    store.close()
    if not runs:
        r = cli(home, "train", *ARGS, timeout=600)
        how = "nothing recorded; ran again"
        recorded = checkpoint = False
    else:
        checkpoint = (store.run_dir(runs[0].run_id) / "checkpoint.json").exists()
        recorded = True
        if finished_first or runs[0].status == "finished":
            # Killed after the run was marked finished (or it ended first): nothing to resume,
            # but what it left must still be the uninterrupted run's.
            how = "finished before the kill" if finished_first else "killed after it finished"
            r = None
        else:
            r = cli(home, "train", "--resume", runs[0].run_id, "--quiet", timeout=600)
            how = f"resumed ({'with' if checkpoint else 'without'} a checkpoint)"
    if r is not None and r.rc != 0:
        return Outcome(delay, recorded, False, f"kill at {delay:.2f} s, {how}: {r.summary()}", checkpoint)
    diffs = _differences(ref, _result(home))
    if diffs:
        return Outcome(delay, recorded, False, f"kill at {delay:.2f} s, {how}: {'; '.join(diffs)}", checkpoint)
    return Outcome(delay, recorded, True, f"kill at {delay:.2f} s, {how}: bit-exact", checkpoint)


def campaign(root: Path, kills: int, seed: int, workers: int = 2) -> tuple[list[Outcome], dict[str, float]]:
    ref, times = reference(root)
    rng = random.Random(seed)
    # Half over the whole run (start-up included); half after the run appears in the store,
    # over the time the reference run took from then to its end, so most find a run to resume.
    training = times["end"] - times.get("recorded", 0.0)
    plan = [(i, rng.uniform(0.2, times["end"]), False) if i % 2 else (i, rng.uniform(0.0, training), True)
            for i in range(kills)]
    with ThreadPoolExecutor(workers) as pool:
        outcomes = list(pool.map(lambda a: one_kill(root, a[0], a[1], ref, a[2]), plan))
    return outcomes, times
