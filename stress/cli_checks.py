"""Damaged stores, tampered run state, escaping paths and bad training inputs, through the CLI.

Each check copies a template store (one finished run, one interrupted run with a checkpoint),
damages it, runs `python -m archlab ...` with ARCHLAB_HOME pointing at the copy under a time
limit and an address-space limit, and looks at the exit status, stderr and the files outside
the store. A refusal passes when it is one of archlab's one-line errors (exit 2, one line
`error: ...`, no traceback); nothing may be read or written outside the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLI_MEMORY = 6 * 2**30
PRECIOUS = "precious: must not change\n"


def env(home: Path) -> dict[str, str]:
    e = {**os.environ, "ARCHLAB_HOME": str(home), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
         "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return e


def _limit(memory: int) -> Callable[[], None]:
    def pre() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    return pre


@dataclass
class Result:
    rc: int | None
    out: str
    err: str
    seconds: float

    @property
    def timed_out(self) -> bool:
        return self.rc is None

    def one_line_error(self) -> bool:
        lines = [line for line in self.err.splitlines() if line.strip()]
        return self.rc == 2 and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in self.err

    def summary(self) -> str:
        if self.timed_out:
            return f"no exit in {self.seconds:.0f} s"
        lines = [line for line in self.err.splitlines() if line.strip()]
        if "Traceback" in self.err:
            last = lines[-1] if lines else ""
            return f"exit {self.rc}, traceback ({len(lines)} lines) ending {last[:160]!r}"
        return f"exit {self.rc}: {(lines[-1] if lines else self.out.strip()[-160:])[:200]}"


def cli(home: Path, *args: str, timeout: float = 60, memory: int = CLI_MEMORY, cwd: Path | None = None,
        extra_env: dict[str, str] | None = None) -> Result:
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "archlab", *args], env={**env(home), **(extra_env or {})},
                            cwd=cwd or home.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                            preexec_fn=_limit(memory), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return Result(proc.returncode, out, err, time.monotonic() - start)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return Result(None, out, err, time.monotonic() - start)


# ------------------------------------------------------------------ the template store


@dataclass
class Template:
    home: Path
    finished: str     # a finished run: test_report.json, best.safetensors
    stopped: str      # a run stopped by SIGINT after its first epoch: a checkpoint to resume


def make_template(root: Path) -> Template:
    """Train one run to the end and stop another after its first epoch (SIGINT)."""
    from archlab.runs import open_store

    home = root / "home"
    home.mkdir(parents=True)
    r = cli(home, "train", "zoo:mlp", "--data", "digits", "--epochs", "2", "--seed", "1", "--quiet", timeout=300)
    if r.rc != 0:
        raise RuntimeError(f"could not train the template run: {r.summary()}")
    [finished] = [x.run_id for x in open_store(home).list_runs()]
    proc = subprocess.Popen([sys.executable, "-m", "archlab", "train", "zoo:mlp", "--data", "digits", "--epochs", "6",
                             "--batch-size", "8", "--seed", "2", "--quiet"], env=env(home), cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            runs = [x for x in open_store(home).list_runs() if x.run_id != finished]
            if runs and (home / "runs" / runs[0].run_id / "checkpoint.json").exists():
                time.sleep(0.05)
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.05)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stopped = [x.run_id for x in open_store(home).list_runs() if x.run_id != finished]
    if not stopped or open_store(home).get_run(stopped[0]).status == "finished":
        raise RuntimeError("could not stop the template's second run after its first epoch")
    open_store(home).close()
    return Template(home, finished, stopped[0])


def copy_template(t: Template, dest: Path) -> Template:
    shutil.copytree(t.home, dest / "home", symlinks=True)
    return Template(dest / "home", t.finished, t.stopped)


def run_dir(t: Template, run_id: str) -> Path:
    return t.home / "runs" / run_id


def _edit_checkpoint(t: Template, fn: Callable[[dict], Any]) -> None:
    path = run_dir(t, t.stopped) / "checkpoint.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def _rehash(t: Template, part: str) -> None:
    """Make checkpoint.json agree with a tampered tensor file (size and SHA-256)."""
    folder = run_dir(t, t.stopped)

    def fix(meta: dict) -> None:
        entry = meta["files"][part]
        data = (folder / entry["file"]).read_bytes()
        entry["size"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    _edit_checkpoint(t, fix)


def _db(t: Template) -> sqlite3.Connection:
    return sqlite3.connect(t.home / "archlab.db")


# ------------------------------------------------------------------ checks

# name -> (group, description, fn(template copy, scratch folder) -> (passed, example))
CHECKS: dict[str, tuple[str, str, Callable[[Template, Path], tuple[bool, str]]]] = {}


def check(name: str, group: str, description: str):
    def decorator(fn):
        CHECKS[name] = (group, description, fn)
        return fn
    return decorator


def _refused(r: Result, *forbidden: str) -> tuple[bool, str]:
    bad = [f for f in forbidden if f in r.err]
    if bad:
        return False, f"{r.summary()} (says {bad[0]!r})"
    return r.one_line_error(), r.summary()


def _resume_refused(t: Template, *forbidden: str) -> tuple[bool, str]:
    return _refused(cli(t.home, "train", "--resume", t.stopped, "--quiet"), *forbidden)


def _set_state(key: str, value: Any):
    def fn(meta: dict) -> None:
        if value is KeyError:
            del meta["state"][key]
        else:
            meta["state"][key] = value
    return fn


def _python_rng_short(meta: dict) -> None:
    version, internal, gauss = meta["rng"]["python"]["$tuple"]
    internal = dict(internal)
    internal["$tuple"] = internal["$tuple"][:10]
    meta["rng"]["python"]["$tuple"] = [version, internal, gauss]


def _string_lr(meta: dict) -> None:
    meta["optimizer"]["param_groups"][0]["lr"] = "fast"


TAMPER = {
    "ckpt-no-aliases": ("no `aliases`", lambda m: m.pop("aliases")),
    "ckpt-no-state-epoch": ("no `state.epoch`", _set_state("epoch", KeyError)),
    "ckpt-epoch-string": ('`state.epoch: "x"`', _set_state("epoch", "x")),
    "ckpt-history-5": ("`state.history: 5`", _set_state("history", 5)),
    "ckpt-dangling-tensor": ("a `$tensor` reference to no tensor", lambda m: m["rng"]["torch"].update({"$tensor": "nope"})),
    "ckpt-float-abc": ('`state.best: {"$float": "abc"}`', _set_state("best", {"$float": "abc"})),
    "ckpt-rng-short": ("Python RNG state of the wrong length", _python_rng_short),
    "ckpt-string-lr": ('`lr: "fast"` in the optimizer state', _string_lr),
    "ckpt-version-99": ("`version: 99`", lambda m: m.update({"version": 99})),
}

for _name, (_what, _fn) in TAMPER.items():
    def _make(fn, forbidden=()):
        def run(t: Template, tmp: Path) -> tuple[bool, str]:
            _edit_checkpoint(t, fn)
            return _resume_refused(t, *forbidden)
        return run
    check(_name, "checkpoint", f"checkpoint.json with {_what}, then `train --resume`")(
        _make(_fn, ("has no checkpoint",) if _name == "ckpt-version-99" else ()))


@check("ckpt-truncated", "checkpoint", "checkpoint.json cut in half, then `train --resume` (must say damaged)")
def _ckpt_truncated(t: Template, tmp: Path):
    path = run_dir(t, t.stopped) / "checkpoint.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    return _resume_refused(t, "has no checkpoint", "stopped before its first epoch")


@check("ckpt-deep-json", "checkpoint", "checkpoint.json of 100,000 nested `[`, then `train --resume`")
def _ckpt_deep(t: Template, tmp: Path):
    (run_dir(t, t.stopped) / "checkpoint.json").write_text("[" * 100000 + "]" * 100000)
    return _resume_refused(t, "has no checkpoint")


@check("ckpt-not-object", "checkpoint", "checkpoint.json holding `[]`, then `train --resume`")
def _ckpt_list(t: Template, tmp: Path):
    (run_dir(t, t.stopped) / "checkpoint.json").write_text("[]")
    return _resume_refused(t, "has no checkpoint")


def _header_tamper(kind: str) -> Callable[[bytes], bytes]:
    def fn(data: bytes) -> bytes:
        n = int.from_bytes(data[:8], "little")
        header = data[8:8 + n]
        if kind == "length":
            return (2**62).to_bytes(8, "little") + data[8:]
        if kind == "json":
            return data[:8] + b"{" + b"!" * (n - 1) + data[8 + n:]
        if kind == "offsets":
            meta = json.loads(header)
            for k, v in meta.items():
                if k != "__metadata__":
                    v["data_offsets"] = [0, 10**15]
                    break
            new = json.dumps(meta).encode()
            return len(new).to_bytes(8, "little") + new + data[8 + n:]
        if kind == "dtype":
            new = header.replace(b'"F32"', b'"Q99"')
            return data[:8] + new + data[8 + n:]
        if kind == "pickle":
            import pickle
            return pickle.dumps({"weight": [1.0, 2.0]})
        raise ValueError(kind)
    return fn


SAFETENSORS = {"length": "a header length of 2**62", "json": "a header that is not JSON",
               "offsets": "data offsets past the end of the file", "dtype": "an unknown dtype",
               "pickle": "a pickle in place of the file"}

for _kind, _what in SAFETENSORS.items():
    def _make_st(kind: str, rehash: bool):
        def run(t: Template, tmp: Path) -> tuple[bool, str]:
            path = run_dir(t, t.stopped) / "checkpoint.safetensors"
            path.write_bytes(_header_tamper(kind)(path.read_bytes()))
            if rehash:
                _rehash(t, "weights")
            return _resume_refused(t)
        return run
    check(f"st-{_kind}", "safetensors", f"checkpoint.safetensors with {_what} (hash updated), then `train --resume`")(
        _make_st(_kind, True))
check("st-hash-mismatch", "safetensors", "checkpoint.safetensors with a tampered header and the old hash")(
    _make_st("length", False))


def _make_best(kind: str):
    def run(t: Template, tmp: Path) -> tuple[bool, str]:
        path = run_dir(t, t.finished) / "best.safetensors"
        path.write_bytes(_header_tamper(kind)(path.read_bytes()))
        return _refused(cli(t.home, "evaluate", t.finished))
    return run


for _kind in ("length", "offsets", "pickle"):
    check(f"best-{_kind}", "safetensors", f"best.safetensors with {SAFETENSORS[_kind]}, then `evaluate`")(_make_best(_kind))


# -- test_report.json


def _show_ok(t: Template, run_id: str, timeout: float = 30) -> tuple[bool, str]:
    r = cli(t.home, "show", run_id, timeout=timeout)
    ok = not r.timed_out and "Traceback" not in r.err and r.rc in (0, 2)
    if r.rc == 2:
        ok = r.one_line_error()
    return ok, r.summary()


def _report(t: Template) -> Path:
    return run_dir(t, t.finished) / "test_report.json"


@check("report-dev-zero", "reads", "test_report.json a symlink to /dev/zero, then `show` (limit 6 GB, 30 s)")
def _report_zero(t: Template, tmp: Path):
    _report(t).unlink()
    _report(t).symlink_to("/dev/zero")
    return _show_ok(t, t.finished)


@check("report-fifo", "reads", "test_report.json a FIFO nobody writes, then `show` (30 s)")
def _report_fifo(t: Template, tmp: Path):
    _report(t).unlink()
    os.mkfifo(_report(t))
    return _show_ok(t, t.finished)


@check("report-truncated", "reads", "test_report.json cut in half, then `show`")
def _report_truncated(t: Template, tmp: Path):
    text = _report(t).read_text()
    _report(t).write_text(text[: len(text) // 2])
    return _show_ok(t, t.finished)


@check("report-not-object", "reads", "test_report.json holding `5`, then `show`")
def _report_number(t: Template, tmp: Path):
    _report(t).write_text("5")
    return _show_ok(t, t.finished)


@check("report-symlink-outside-read", "reads", "test_report.json a symlink to a file outside the store, then `show`")
def _report_outside_read(t: Template, tmp: Path):
    secret = tmp / "secret.json"
    secret.write_text(json.dumps({"confusion": [[123456789]], "per_class": {"SECRET": 1.0}}))
    _report(t).unlink()
    _report(t).symlink_to(secret)
    r = cli(t.home, "show", t.finished)
    if "123456789" in r.out or "SECRET" in r.out:
        return False, "show printed the outside file's contents"
    return ("Traceback" not in r.err and not r.timed_out), r.summary()


# -- the database


@check("db-truncated-settings", "database", "a run's `settings` JSON cut short in the database, then `runs`")
def _db_truncated_runs(t: Template, tmp: Path):
    with _db(t) as c:
        c.execute("UPDATE runs SET settings = '{\"epochs\": 2, \"ba' WHERE run_id = ?", (t.finished,))
    r = cli(t.home, "runs")
    if "Traceback" in r.err or r.rc != 0:
        return False, r.summary()
    if t.stopped not in r.out:
        return False, "`runs` did not list the undamaged run"
    return True, r.summary()


@check("db-truncated-show", "database", "a run's `spec` JSON cut short in the database, then `show` it")
def _db_truncated_show(t: Template, tmp: Path):
    with _db(t) as c:
        c.execute("UPDATE runs SET spec = '{\"name\": \"ml' WHERE run_id = ?", (t.finished,))
    return _show_ok(t, t.finished)  # shown with the damage said, or refused in one line


@check("db-truncated-epoch", "database", "one epoch's metrics JSON cut short, then `runs` and `show`")
def _db_truncated_epoch(t: Template, tmp: Path):
    with _db(t) as c:
        c.execute("UPDATE epochs SET metrics = '{\"loss\": 0.' WHERE run_id = ? AND epoch = 1", (t.finished,))
    r = cli(t.home, "runs")
    if "Traceback" in r.err or r.rc != 0 or t.stopped not in r.out:
        return False, f"runs: {r.summary()}"
    return _show_ok(t, t.finished)


EVIL = "../../outside/evil"


def _evil_row(t: Template) -> None:
    with _db(t) as c:
        cols = [row[1] for row in c.execute("PRAGMA table_info(runs)")]
        row = list(c.execute(f"SELECT {', '.join(cols)} FROM runs WHERE run_id = ?", (t.finished,)).fetchone())
        row[cols.index("run_id")] = EVIL
        c.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", row)


def _outside(t: Template) -> Path:
    return (t.home / "runs" / EVIL).resolve()


@check("db-run-id-escape-show", "paths", f"a run id `{EVIL}` stored in the database, then `show` it")
def _evil_show(t: Template, tmp: Path):
    _evil_row(t)
    r = cli(t.home, "show", EVIL)
    if _outside(t).exists():
        return False, f"{r.summary()}; created {_outside(t)} outside the store"
    return _refused(r)


@check("db-run-id-escape-read", "paths", f"`show {EVIL}` with a test_report.json waiting outside the store")
def _evil_read(t: Template, tmp: Path):
    _evil_row(t)
    _outside(t).mkdir(parents=True)
    (_outside(t) / "test_report.json").write_text(json.dumps({"confusion": [[987654321]], "per_class": {"OUTSIDE": 1}}))
    r = cli(t.home, "show", EVIL)
    if "987654321" in r.out or "OUTSIDE" in r.out:
        return False, "show read test_report.json from outside the store"
    return _refused(r)


@check("db-run-id-escape-runs", "paths", f"a run id `{EVIL}` in the database, then `runs`")
def _evil_runs(t: Template, tmp: Path):
    _evil_row(t)
    r = cli(t.home, "runs")
    if _outside(t).exists():
        return False, f"created {_outside(t)}"
    return (r.rc == 0 and "Traceback" not in r.err and t.stopped in r.out), r.summary()


@check("arg-run-id-escape", "paths", f"`train --resume {EVIL}` and `evaluate {EVIL}` (no such row)")
def _evil_arg(t: Template, tmp: Path):
    for args in (("train", "--resume", EVIL, "--quiet"), ("evaluate", EVIL)):
        r = cli(t.home, *args)
        if _outside(t).exists():
            return False, f"{' '.join(args[:1])}: created {_outside(t)}"
        ok, example = _refused(r)
        if not ok:
            return False, f"{args[0]}: {example}"
    return True, "refused"


def _symlink_out(t: Template, tmp: Path, name: str) -> Path:
    target = tmp / f"outside-{name}"
    target.write_text(PRECIOUS)
    link = run_dir(t, t.stopped) / name
    if link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(target)
    return target


@check("symlink-lock", "paths", "the stopped run's .lock a symlink to a file outside, then `train --resume`")
def _sym_lock(t: Template, tmp: Path):
    target = _symlink_out(t, tmp, ".lock")
    r = cli(t.home, "train", "--resume", t.stopped, "--quiet", timeout=300)
    if target.read_text() != PRECIOUS:
        return False, f"{r.summary()}; the outside file now holds {target.read_text()[:40]!r}"
    return ("Traceback" not in r.err and not r.timed_out), r.summary()


@check("symlink-test-report", "paths", "the stopped run's test_report.json a symlink outside, then `train --resume`")
def _sym_report(t: Template, tmp: Path):
    target = _symlink_out(t, tmp, "test_report.json")
    r = cli(t.home, "train", "--resume", t.stopped, "--quiet", timeout=300)
    if target.read_text() != PRECIOUS:
        return False, f"{r.summary()}; the outside file was overwritten ({len(target.read_text())} bytes)"
    return ("Traceback" not in r.err and not r.timed_out), r.summary()


@check("symlink-run-folder", "paths", "a run folder that is a symlink to a folder outside, then `train --resume`")
def _sym_folder(t: Template, tmp: Path):
    outside = tmp / "outside-run"
    shutil.move(str(run_dir(t, t.stopped)), outside)
    run_dir(t, t.stopped).symlink_to(outside)
    before = sorted(p.name for p in outside.iterdir())
    r = cli(t.home, "train", "--resume", t.stopped, "--quiet", timeout=300)
    after = sorted(p.name for p in outside.iterdir())
    if before != after or (outside / "test_report.json").exists():
        return False, f"{r.summary()}; wrote into the outside folder ({sorted(set(after) - set(before))})"
    return _refused(r)


# -- training inputs (issue 16 items 5, 6, 11, 12)


def _nothing_recorded(t: Template, r: Result) -> tuple[bool, str]:
    from archlab.runs import open_store

    runs = {x.run_id for x in open_store(t.home).list_runs()} - {t.finished, t.stopped}
    ok, example = _refused(r)
    if runs:
        return False, f"{example}; recorded {len(runs)} run(s)"
    return ok, example


def _spec_file(tmp: Path, text: str) -> str:
    path = tmp / "spec.yaml"
    path.write_text(text)
    return str(path)


@check("train-linear-1e11", "train", "`train` a spec with `linear: 100000000000` (must refuse with figures, record nothing)")
def _train_big(t: Template, tmp: Path):
    spec = _spec_file(tmp, "input: {shape: [1, 8, 8]}\nmodel: [flatten, linear: 100000000000, relu, linear: 10]\n")
    return _nothing_recorded(t, cli(t.home, "train", spec, "--data", "digits", "--epochs", "1", "--quiet"))


@check("train-set-hidden-1e11", "train", "`train zoo:mlp --set hidden=100000000000`")
def _train_set_big(t: Template, tmp: Path):
    return _nothing_recorded(t, cli(t.home, "train", "zoo:mlp", "--data", "digits", "--epochs", "1",
                                    "--set", "hidden=100000000000", "--quiet"))


@check("train-crop-padding-1e5", "train", "`train zoo:cnn --crop-padding 100000`")
def _train_crop(t: Template, tmp: Path):
    return _nothing_recorded(t, cli(t.home, "train", "zoo:cnn", "--data", "digits", "--epochs", "1",
                                    "--crop-padding", "100000", "--quiet"))


@check("train-450M-under-4GB", "train", "`train` a 450M-parameter MLP with a 4 GB address-space limit")
def _train_450m(t: Template, tmp: Path):
    spec = _spec_file(tmp, "input: {shape: [1, 8, 8]}\nmodel: [flatten, linear: 15000, relu, linear: 15000, relu,"
                           " linear: 15000, relu, linear: 10]\n")
    # The cap is the process's address-space limit, and ARCHLAB_MEMORY_LIMIT says it too.
    r = cli(t.home, "train", spec, "--data", "digits", "--epochs", "1", "--quiet", memory=4 * 10**9, timeout=120,
            extra_env={"ARCHLAB_MEMORY_LIMIT": "4G"})
    return _nothing_recorded(t, r)


@check("train-seed-2**63", "train", "`train zoo:mlp --seed 9223372036854775808`")
def _train_seed(t: Template, tmp: Path):
    return _nothing_recorded(t, cli(t.home, "train", "zoo:mlp", "--data", "digits", "--epochs", "1",
                                    "--seed", str(2**63), "--quiet"))


@check("train-set-num-classes-0", "train", "`train zoo:mlp --set num_classes=0` (silently overridden today)")
def _train_classes0(t: Template, tmp: Path):
    return _nothing_recorded(t, cli(t.home, "train", "zoo:mlp", "--data", "digits", "--epochs", "1",
                                    "--set", "num_classes=0", "--quiet"))


@check("train-last-batch-of-one", "train", "`train` a batchnorm MLP with --batch-size 1257 on digits (a last batch of 1)")
def _train_bn1(t: Template, tmp: Path):
    spec = _spec_file(tmp, "input: {shape: [1, 8, 8]}\nmodel: [flatten, linear: 64, batchnorm, relu, linear: 10]\n")
    r = cli(t.home, "train", spec, "--data", "digits", "--epochs", "1", "--batch-size", "1257", "--quiet")
    return (r.rc == 0), r.summary()


def _tiny_csv(tmp: Path, rows: int) -> str:
    path = tmp / f"rows{rows}.csv"
    path.write_text("a,b,label\n" + "".join(f"{i}.5,{i % 3}.25,{'xy'[i % 2]}\n" for i in range(rows)))
    return str(path)


for _rows in (2, 5):
    def _make_csv(rows: int):
        def run(t: Template, tmp: Path) -> tuple[bool, str]:
            from archlab.runs import open_store

            r = cli(t.home, "train", "zoo:mlp", "--data", f"csv:{_tiny_csv(tmp, rows)}", "--epochs", "2", "--quiet")
            if r.rc == 2:
                return _nothing_recorded(t, r)
            runs = [x for x in open_store(t.home).list_runs() if x.run_id not in (t.finished, t.stopped)]
            if r.rc == 0 and runs:
                best = runs[0].best("val_acc")
                if best is None:
                    return False, f"exit 0 with no validation split (best epoch None): {r.out.strip()[-120:]}"
                return True, r.summary()
            return False, r.summary()
        return run
    check(f"train-csv-{_rows}-rows", "train", f"`train` on a {_rows}-row CSV (must refuse, or validate)")(_make_csv(_rows))
