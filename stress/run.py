"""archlab's stress campaign: `make stress` (or `python stress/run.py [--quick]`).

Checks, each counted as tried / failed (see the docstrings of the modules beside this one):

  fuzz         random and mutated specs through parse, build on the meta device and inspect,
               in worker processes with a time limit (10 s) and an address-space limit
  attacks      YAML attacks, expressions, huge integers, overflows, batch norm at one value,
               malicious CIFAR-10 pickles, bad npy labels and csv numbers (API, in workers)
  store        damaged stores and tampered run state through the CLI: checkpoint JSON,
               safetensors headers, test_report.json as /dev/zero or a FIFO, truncated rows,
               run ids with ../, symlinks out of the store, training inputs that must be refused
  kills        SIGKILLs at random moments of a training run, resumed, compared bit for bit
  concurrency  4 writer processes, 4 concurrent trainings, 2 search workers on one study

Prints one table (check | tried | failed | worst example) and exits 1 if anything failed.
Seeded: the same --seed tries the same inputs. At most 2 worker processes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # this checkout's archlab, ahead of any installed one
os.environ.setdefault("OMP_NUM_THREADS", "1")

STAGES = ("fuzz", "attacks", "store", "kills", "concurrency")
WIDTH = 120


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, int, int, str]] = []
        self.notes: list[str] = []
        self.details: dict[str, list] = defaultdict(list)

    def add(self, check: str, tried: int, failed: int, example: str) -> None:
        self.rows.append((check, tried, failed, example))
        print(f"  {check}: {failed} of {tried} failed" + (f" -- {example[:150]}" if failed else ""), flush=True)

    def failed(self) -> int:
        return sum(r[2] for r in self.rows)

    def render(self) -> str:
        w = max([len("check")] + [len(r[0]) for r in self.rows])
        head = f"{'check':<{w}} | {'tried':>6} | {'failed':>6} | worst example"
        lines = [head, "-" * min(len(head) + 60, w + WIDTH)]
        for check, tried, failed, example in self.rows:
            ex = " ".join(example.split()) if failed else "-"
            room = WIDTH - 20
            lines.append(f"{check:<{w}} | {tried:>6} | {failed:>6} | {ex[:room] + ('...' if len(ex) > room else '')}")
        return "\n".join(lines)


def _one_line(text: str, n: int = 400) -> str:
    return " ".join(text.replace("\n", " ⏎ ").split())[:n]


def _signature(error: str) -> str:
    return re.sub(r"\d+", "#", error)[:70]


# ------------------------------------------------------------------ fuzz


def stage_fuzz(table: Table, args) -> None:
    import fuzz
    import pool

    cases = fuzz.plan(args.specs, args.seed, args.huge)
    outcomes: Counter = Counter()
    failures: dict[str, list] = defaultdict(list)    # class -> [(len, kind, seed, error, seconds)]
    multiline: list = []
    slowest = (0.0, None)
    start = time.monotonic()
    done = 0
    deadline = start + args.fuzz_minutes * 60 if args.fuzz_minutes else float("inf")

    def tasks():
        for k, s in cases:
            if time.monotonic() > deadline:
                table.notes.append(f"fuzz: stopped at --fuzz-minutes {args.fuzz_minutes:g} after {done} of "
                                   f"{len(cases)} specs")
                return
            yield ("spec", k, s)

    for (_, kind, seed), r in pool.Pool(fuzz.run_case, args.workers, args.timeout).map(tasks()):
        done += 1
        o = r["outcome"]
        outcomes[o] += 1
        if r.get("cpu", 0) > slowest[0] and o not in ("hang",):
            slowest = (r["cpu"], (kind, seed))
        if o in ("foreign", "hang", "memory", "crash", "harness"):
            text = fuzz.case_text(kind, seed)
            failures[o].append((len(text), kind, seed, r.get("error", ""), r.get("cpu", 0)))
        elif o == "archlab" and r.get("lines", 1) > 1:
            multiline.append((len(fuzz.case_text(kind, seed)), kind, seed, r["error"]))
        if done % 1000 == 0:
            print(f"    {done} specs, {time.monotonic() - start:.0f} s", flush=True)
    n = done
    table.notes.append(f"fuzz: {n} specs in {time.monotonic() - start:.0f} s: " +
                       ", ".join(f"{k} {v}" for k, v in outcomes.most_common()) +
                       f"; slowest answer {slowest[0]:.1f} s of CPU ({slowest[1][0] if slowest[1] else '-'})")
    labels = {"foreign": "specs: exceptions not archlab's", "hang": f"specs: hangs over {args.timeout:g} s (CPU)",
              "memory": "specs: memory blow-ups / crashes", "harness": "specs: harness errors"}
    failures["memory"] += failures.pop("crash", [])
    minimized = _minimize(failures.get("foreign", []), args) if failures.get("foreign") and args.minimize else {}
    for cls, label in labels.items():
        items = sorted(failures.get(cls, []))
        if cls == "harness" and not items:
            continue
        example = ""
        if items:
            if cls == "foreign":
                sigs = Counter(_signature(i[3]) for i in items)
                top = sigs.most_common()
                example = "; ".join(f"{c}x {s}" for s, c in top[:3])
                smallest = minimized.get(top[0][0]) or fuzz.case_text(items[0][1], items[0][2])
                example += f" -- e.g. {_one_line(smallest, 200)}"
            else:
                size, kind, seed, error, _ = items[0]
                example = f"{kind}#{seed} ({size} bytes): {_describe(fuzz.case_text(kind, seed), kind)}"
            for size, kind, seed, error, seconds in items:
                table.details[label].append({"kind": kind, "seed": seed, "bytes": size, "error": error,
                                             "seconds": round(seconds, 2)})
            if cls == "foreign":
                table.details["minimized"].extend({"signature": k, "spec": v} for k, v in minimized.items())
        table.add(label, n, len(items), example)
    multiline.sort()
    table.add("specs: archlab errors over one line", outcomes["archlab"], len(multiline),
              f"{multiline[0][3]}" if multiline else "")


def _describe(text: str, kind: str) -> str:
    if kind == "huge-list":
        return f"a list of {text.count(chr(10)) - 2} layers ({text.splitlines()[2].strip()} ...)"
    if kind == "deep":
        for word in ("residual", "parallel", "repeat", "b0", "{a: "):
            if word in text:
                return f"nesting {max(text.count(word), text.count('['))} deep ({word.strip(': {')}): {_one_line(text, 90)}"
    return _one_line(text, 200)


def _minimize(items: list, args) -> dict[str, str]:
    """For each failure signature (up to 6), shrink its smallest spec by deleting nodes while
    the same error persists (greedy, bounded): the smallest reproducer to report."""
    import fuzz
    import pool
    import yaml

    by_sig: dict[str, tuple] = {}
    for item in sorted(items):
        by_sig.setdefault(_signature(item[3]), item)
    work = list(by_sig.items())[:6]
    p = pool.Pool(_run_text, 1, args.timeout)
    out = {}
    for sig, (_, kind, seed, _, _) in work:
        tree = yaml.load(fuzz.case_text(kind, seed), Loader=fuzz._Loader)
        deadline = time.monotonic() + args.minimize
        changed = True
        while changed and time.monotonic() < deadline:
            changed = False
            for path in sorted((p_ for p_, _ in fuzz._nodes(tree) if p_), key=len):
                if time.monotonic() > deadline:
                    break
                trial = _without(tree, path)
                if trial is None:
                    continue
                [(_, r)] = list(p.map([fuzz.dump(trial)]))
                if r.get("outcome") == "foreign" and _signature(r.get("error", "")) == sig:
                    tree, changed = trial, True
                    break
        out[sig] = fuzz.dump(tree)
    return out


def _without(tree, path):
    import copy

    t = copy.deepcopy(tree)
    parent = t
    for k in path[:-1]:
        parent = parent[k]
    try:
        del parent[path[-1]]
    except (KeyError, IndexError, TypeError):
        return None
    return t


def _run_text(text: str) -> dict:
    from archlab.core import ArchlabError
    from archlab.model import inspect
    from archlab.spec import load_spec

    try:
        inspect(load_spec(text))
        return {"outcome": "ok"}
    except ArchlabError:
        return {"outcome": "archlab"}
    except Exception as exc:  # noqa: BLE001
        first = (str(exc).splitlines() or [""])[0]
        return {"outcome": "foreign", "error": f"{type(exc).__name__}: {first}"[:300]}


# ------------------------------------------------------------------ attacks


def stage_attacks(table: Table, args) -> None:
    import attacks
    import pool

    names = [n for n in attacks.ATTACKS if not (args.quick and n in ("file-100MB",))]
    groups: dict[str, list] = defaultdict(list)
    scratch = Path(tempfile.mkdtemp(prefix="archlab-stress-attacks-"))
    tasks = [("attack", n, str(scratch / n)) for n in names]
    results = list(pool.Pool(attacks.run_attack, args.workers, args.timeout).map(tasks))
    shutil.rmtree(scratch, ignore_errors=True)
    for (_, name, _), r in results:
        group, description, _ = attacks.ATTACKS[name]
        passed = bool(r.get("passed"))
        groups[group].append((name, passed, r["outcome"], r.get("error", ""), r.get("seconds", 0), description))
        table.details["attacks"].append({"name": name, "description": description, "outcome": r["outcome"],
                                         "passed": passed, "error": r.get("error", ""),
                                         "seconds": round(r.get("seconds", 0), 2)})
    labels = {"yaml": "YAML attacks (aliases, !!python, big files)", "expression": "expressions ${...}",
              "integers": "integers past 4,300 digits", "overflow": "sizes that overflow",
              "batchnorm": "batch norm at one value per channel",
              "large": "large specs inspected in 10 s of CPU", "pickle": "malicious CIFAR-10 pickles",
              "data": "bad npy labels and csv numbers"}
    for group, label in labels.items():
        items = groups.get(group, [])
        bad = [i for i in items if not i[1]]
        example = "; ".join(f"{n}: {o} {e[:70]}".strip() for n, _, o, e, _, _ in bad[:2])
        table.add(label, len(items), len(bad), example)


# ------------------------------------------------------------------ store, via the CLI


def stage_store(table: Table, args, root: Path) -> None:
    import cli_checks

    template = cli_checks.make_template(root / "template")
    names = list(cli_checks.CHECKS)
    if args.quick:
        names = names[::3]

    def run(name: str):
        scratch = root / "checks" / name
        scratch.mkdir(parents=True)
        t = cli_checks.copy_template(template, scratch)
        try:
            passed, example = cli_checks.CHECKS[name][2](t, scratch)
        except Exception as exc:  # noqa: BLE001 - a bug of the harness, reported
            passed, example = False, f"harness error: {type(exc).__name__}: {exc}"
        return name, passed, example

    groups: dict[str, list] = defaultdict(list)
    with ThreadPoolExecutor(args.workers) as ex:
        for name, passed, example in ex.map(run, names):
            group, description, _ = cli_checks.CHECKS[name]
            groups[group].append((name, passed, example))
            table.details["store"].append({"name": name, "description": description, "passed": passed,
                                           "example": example})
    labels = {"checkpoint": "tampered checkpoint JSON (--resume)", "safetensors": "tampered safetensors",
              "reads": "test_report.json: /dev/zero, FIFO, damaged", "database": "damaged rows in the database",
              "paths": "run ids with ../ and symlinks out of the store",
              "train": "training inputs to refuse before allocating"}
    for group, label in labels.items():
        items = groups.get(group, [])
        bad = [i for i in items if not i[1]]
        example = "; ".join(f"{n}: {e[:90]}" for n, _, e in bad[:2])
        table.add(label, len(items), len(bad), example)


# ------------------------------------------------------------------ kills and concurrency


def stage_kills(table: Table, args, root: Path) -> None:
    import kills

    outcomes, times = kills.campaign(root / "kills", args.kills, args.seed, args.workers)
    seconds = times["end"]
    bad = [o for o in outcomes if not o.passed]
    nothing = sorted(o.delay for o in outcomes if not o.recorded)
    no_ckpt = sorted(o.delay for o in outcomes if o.recorded and not o.checkpoint)
    marks = ", ".join(f"{k} at {v:.1f} s" for k, v in times.items() if k != "end")
    table.notes.append(f"kills: the uninterrupted run took {seconds:.1f} s ({marks}); {len(nothing)} of {len(outcomes)} kills "
                       f"found nothing recorded" + (f" (latest at {nothing[-1]:.2f} s)" if nothing else "") +
                       f"; {len(no_ckpt)} found a run without a checkpoint")
    for o in outcomes:
        table.details["kills"].append({"delay": round(o.delay, 2), "recorded": o.recorded, "checkpoint": o.checkpoint,
                                       "passed": o.passed, "example": o.example})
    table.add("SIGKILL, resume, bit-exact weights", len(outcomes), len(bad), bad[0].example if bad else "")


def stage_concurrency(table: Table, args, root: Path) -> None:
    import concurrency

    runs = 25 if args.quick else 250
    tried, failed, example = concurrency.writers(root / "writers", 4, runs)
    table.add("4 writer processes: runs lost/duplicated", tried, failed, example)
    if not args.quick:
        tried, failed, example = concurrency.trainings(root / "trainings", 4)
        table.add("4 concurrent trainings: runs finished", tried, failed, example)
    trials = 4 if args.quick else 8
    tried, failed, example = concurrency.search_workers(root / "search-jobs", trials, jobs=True)
    table.add("search --jobs 2: trials lost/extra", tried, failed, example)
    tried, failed, example = concurrency.search_workers(root / "search-twice", trials)
    table.add("2 search commands, 1 study: trials lost/extra", tried, failed, example)


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts (about a minute)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--specs", type=int, help="fuzzed specs (default 10,000; --quick 300)")
    ap.add_argument("--huge", type=int, help="huge lists and deep nestings, each (default 10; --quick 2)")
    ap.add_argument("--fuzz-minutes", type=float, help="start no new fuzzed spec after this long (tried shows how many ran)")
    ap.add_argument("--kills", type=int, help="SIGKILLs (default 20; --quick 3)")
    ap.add_argument("--only", help=f"comma-separated stages of {','.join(STAGES)}")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (at most 2)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds before a spec or attack counts as a hang")
    ap.add_argument("--minimize", type=float, default=30.0,
                    help="seconds to shrink the smallest spec of each kind of exception (0: off)")
    ap.add_argument("--save", help="write every failure, with its reproducer, to this JSON file")
    args = ap.parse_args(argv)
    args.workers = max(1, min(args.workers, 2))
    args.specs = args.specs if args.specs is not None else (300 if args.quick else 10_000)
    args.huge = args.huge if args.huge is not None else (2 if args.quick else 10)
    args.kills = args.kills if args.kills is not None else (3 if args.quick else 20)
    stages = args.only.split(",") if args.only else list(STAGES)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        ap.error(f"--only: unknown stage {unknown[0]!r}; stages: {', '.join(STAGES)}")

    warnings.filterwarnings("ignore")
    import torch  # imported once here, so forked workers start at no cost

    torch.set_num_threads(1)
    import archlab.data  # noqa: F401
    import archlab.model  # noqa: F401

    table = Table()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="archlab-stress-") as tmp:
        root = Path(tmp)
        for stage in stages:
            print(f"[{time.monotonic() - start:5.0f} s] {stage}", flush=True)
            if stage == "fuzz":
                stage_fuzz(table, args)
            elif stage == "attacks":
                stage_attacks(table, args)
            else:
                globals()[f"stage_{stage}"](table, args, root / stage)
    elapsed = time.monotonic() - start
    print()
    print(table.render())
    for note in table.notes:
        print(f"  {note}")
    failed = table.failed()
    print(f"\n{'FAILED' if failed else 'passed'}: {failed} failure(s) in {sum(r[1] for r in table.rows)} tries, "
          f"{elapsed:.0f} s (seed {args.seed}{', --quick' if args.quick else ''})")
    if args.save:
        Path(args.save).write_text(json.dumps({"rows": table.rows, "notes": table.notes, "details": table.details},
                                              indent=1, default=str))
        print(f"details: {args.save}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
