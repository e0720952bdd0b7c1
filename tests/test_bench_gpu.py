"""bench/gpu_train.py on a machine without a GPU: it refuses a full run with one line, and
`--tiny` (2 layers, context 64, a few steps) runs the whole script on CPU."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import gpu_train  # noqa: E402


def test_refuses_a_cpu_run_without_tiny(monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_train.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: bench/gpu_train.py: expected a CUDA GPU")
    assert "--tiny" in err


def test_tiny_runs_on_cpu_and_prints_tokens_per_second_and_mfu(monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_train.main(["--tiny", "--no-compile", "--steps", "2", "--warmup", "1", "--peak-tflops", "1"]) == 0
    out = capsys.readouterr().out
    assert "6N + attention rule" in out and "tokens/s" in out and "MFU" in out
    eager = next(line for line in out.splitlines() if line.startswith("eager"))
    assert eager.split()[1] == "2" and eager.rstrip().endswith("1.00x")
    assert "%" in eager  # the MFU column, against the 1 TFLOPS given


def test_peak_table() -> None:
    assert gpu_train.peak_tflops("NVIDIA H100 80GB HBM3", None) == 989
    assert gpu_train.peak_tflops("NVIDIA H200", None) == 989
    assert gpu_train.peak_tflops("NVIDIA A100-SXM4-80GB", None) == 312
    assert gpu_train.peak_tflops("NVIDIA A100-SXM4-80GB", 400.0) == 400
    assert gpu_train.peak_tflops("cpu", None) is None


def test_inspector_flops_per_token_agree_with_the_6n_rule_for_gpt2() -> None:
    inspector, rule, params = gpu_train.flops_per_token({}, 1024, "cuda")
    assert params == 124_439_808
    assert abs(inspector / rule - 1) < 0.002
