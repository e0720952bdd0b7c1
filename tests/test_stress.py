"""The stress harness (stress/, `make stress`): its pool counts hangs, memory blow-ups and
crashes; its cases are reproducible; a tiny run prints the table. The campaign itself, with
its full counts, is `make stress` (RELIABILITY.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STRESS = REPO / "stress"
sys.path.insert(0, str(STRESS))

import attacks  # noqa: E402
import cli_checks  # noqa: E402
import fuzz  # noqa: E402
import pool  # noqa: E402


def _task(kind: str) -> dict:
    if kind == "spin":
        while True:
            pass
    if kind == "block":
        time.sleep(3600)
    if kind == "alloc":
        return {"outcome": "ok", "size": len(bytearray(64 * 2**30))}
    if kind == "die":
        os._exit(3)
    if kind == "raise":
        raise RuntimeError("a bug in the harness")
    return {"outcome": "ok"}


def test_pool_reports_hangs_memory_crashes_and_keeps_going():
    p = pool.Pool(_task, workers=2, timeout=1.0, memory=2**30, wall_factor=1000)
    results = dict(p.map(["spin", "ok", "alloc", "die", "raise", "ok2"]))
    assert results["spin"]["outcome"] == "hang" and results["spin"]["cpu"] > 1.0   # CPU time, not wall
    assert results["alloc"]["outcome"] == "memory"             # the address-space limit, not the machine's
    assert results["die"]["outcome"] == "crash" and "exit 3" in results["die"]["error"]
    assert results["raise"]["outcome"] == "harness"
    assert results["ok"]["outcome"] == results["ok2"]["outcome"] == "ok"   # workers were replaced
    [(_, blocked)] = pool.Pool(_task, workers=1, timeout=0.5, wall_factor=2.0).map(["block"])
    assert blocked["outcome"] == "hang" and blocked["seconds"] >= 1.0      # the wall-time backstop


def test_cases_are_reproducible_and_cover_the_sizes_asked_for():
    assert fuzz.case_text("mutated", 7) == fuzz.case_text("mutated", 7)
    assert fuzz.case_text("mutated", 7) != fuzz.case_text("mutated", 8)
    cases = fuzz.plan(100, seed=3, huge=4)
    assert len(cases) == 100 and cases == fuzz.plan(100, seed=3, huge=4)
    kinds = [k for k, _ in cases]
    assert kinds.count("huge-list") == kinds.count("deep") == 4 and kinds.count("random") > 10
    for seed in range(6):
        layers = fuzz.case_text("huge-list", seed).count("\n  - ")
        assert 5000 <= layers <= 20000
        deep = fuzz.case_text("deep", seed)
        assert max(deep.count("["), deep.count("{a: "), deep.count("\n  b")) >= 100


def test_a_spec_case_is_classified_by_who_raised():
    assert fuzz.run_case(("spec", "random", 0))["outcome"] in ("ok", "archlab", "foreign")
    out = fuzz.run_case(("spec", "mutated", 0))
    assert out["outcome"] in ("ok", "archlab", "foreign")
    if out["outcome"] == "archlab":
        assert out["error"].split(":")[0] in ("SpecError", "ShapeError", "DataError")


def test_an_attack_that_runs_code_is_caught(tmp_path, monkeypatch):
    def writes_marker(tmp: Path):
        (tmp / attacks.MARKER_NAME).write_text("ran")
        from archlab.core import SpecError
        raise SpecError("refused (but too late)")

    monkeypatch.setitem(attacks.ATTACKS, "test-marker", ("yaml", "writes the marker", ("archlab",)))
    monkeypatch.setitem(attacks._FUNCTIONS, "test-marker", writes_marker)
    assert attacks.run_attack(("attack", "test-marker"))["outcome"] == "code-ran"
    refused = attacks.run_attack(("attack", "cifar-reduce-os-system"))
    assert refused["outcome"] == "archlab" and refused["passed"]
    assert attacks.run_attack(("attack", "cifar-clean"))["passed"]  # the harness's batches are valid


def test_one_line_error_rule():
    assert cli_checks.Result(2, "", "error: run r1 not found\n", 0.1).one_line_error()
    assert not cli_checks.Result(1, "", "Traceback (most recent call last):\n  ...\nKeyError: 'x'\n", 0.1).one_line_error()
    assert not cli_checks.Result(0, "ok", "", 0.1).one_line_error()
    assert cli_checks.Result(None, "", "", 30.0).summary().startswith("no exit in 30 s")


@pytest.mark.parametrize("kind", ["length", "json", "offsets", "dtype", "pickle"])
def test_tampered_safetensors_are_what_they_claim(tmp_path, kind):
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.ones(4), "b": torch.zeros(2)}, path)
    path.write_bytes(cli_checks._header_tamper(kind)(path.read_bytes()))
    with pytest.raises((SafetensorError, OSError, ValueError, RuntimeError)):
        load_file(path)


def test_smoke_run_prints_the_table(tmp_path):
    out = tmp_path / "details.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, str(STRESS / "run.py"), "--only", "fuzz", "--specs", "6", "--huge", "0",
                        "--timeout", "5", "--minimize", "0", "--save", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    assert "check " in r.stdout and "| tried | failed | worst example" in r.stdout.replace("  ", " ")
    assert "specs: exceptions not archlab's" in r.stdout
    rows = json.loads(out.read_text())["rows"]
    assert rows and all(row[1] == 6 for row in rows if row[0].startswith("specs: ") and "over one line" not in row[0])
    assert (r.returncode == 1) == any(row[2] for row in rows)
