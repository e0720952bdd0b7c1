"""`archlab inspect`, `archlab zoo` and `archlab layers`: in-process through typer's runner,
and as a real `python -m archlab` subprocess for what only a process shows (exit codes,
stderr, no traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from archlab import LAYERS, inspect, zoo_names
from archlab.cli import app
from archlab.core import SpecError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def run(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def as_json(*args: str) -> dict:
    return json.loads(run("inspect", *args, "--json"))


# ------------------------------------------------------------------------- inspect


def test_table_output_has_path_and_params_columns() -> None:
    out = run("inspect", "zoo:cnn")
    header = next(line for line in out.splitlines() if "path" in line)
    for column in ("path", "layer", "output", "params", "fwd FLOPs/sample"):
        assert column in header
    assert "model[0].conv2d" in out and "model[10].linear" in out
    assert "1,625,866 total" in out and "1 MAC = 2 FLOPs" in out
    assert "training memory   batch 1, fp32 compute, adamw" in out


def test_json_matches_the_api() -> None:
    data = as_json("zoo:resnet-mini")
    api = inspect("zoo:resnet-mini").to_dict()
    assert data == json.loads(json.dumps(api))
    assert data["params"] == 169_834 and data["layers"][0]["path"] == "model[0].conv2d"


def test_input_batch_dtype_optimizer_and_set() -> None:
    data = as_json("zoo:mlp", "--input", "1,4,4", "--batch", "3", "--dtype", "bf16", "--optimizer", "sgd",
                   "--set", "hidden=64", "--set", "num_classes=4")
    api = inspect("zoo:mlp", input_shape=(1, 4, 4), batch=3, dtype="bf16", optimizer="sgd",
                  vars={"hidden": 64, "num_classes": 4})
    assert data["input_shape"] == [1, 4, 4] and data["output_shape"] == [4]
    assert data["memory"]["batch"] == 3 and data["dtype"] == "bf16" and data["optimizer"] == "sgd"
    assert data["params"] == api.params == 16 * 64 + 64 + 64 * 32 + 32 + 32 * 4 + 4
    assert data["vars"]["hidden"] == 64
    assert data["memory"]["optimizer"] == 4 * api.trainable


def test_set_accepts_exponent_floats() -> None:
    data = as_json("zoo:mlp", "--set", "dropout=1e-1")
    assert data["vars"]["dropout"] == 0.1


def test_device_memory_fit_line() -> None:
    out = run("inspect", "zoo:gpt-mini", "--batch", "8", "--device-memory", "8GB")
    assert "device            8 GB" in out and "batch 8 fits" in out and "largest batch that fits:" in out
    data = as_json("zoo:gpt-mini", "--device-memory", "8GB")
    assert data["device_memory"] == 8 * 10**9 and data["fits"] is True and data["max_batch"] > 8
    out = run("inspect", "zoo:llama-7b", "--device-memory", "80GB")
    assert "does not fit" in out and "no batch fits" in out


def test_spec_file_path(tmp_path: Path) -> None:
    path = tmp_path / "net.yaml"
    path.write_text(yaml.safe_dump({"input": {"shape": [4]}, "model": [{"linear": 8}, "relu", {"linear": 2}]}))
    data = as_json(str(path))
    assert data["name"] == "net" and data["params"] == 58 and data["flops_per_sample"] == 114


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["zoo:nope"], "no such zoo spec"),
        (["zoo:mlp", "--input", "a,b"], "--input: expected comma-separated integers"),
        (["zoo:mlp", "--dtype", "fp8"], "--dtype: expected one of"),
        (["zoo:mlp", "--device-memory", "lots"], "--device-memory: expected a size"),
        (["zoo:mlp", "--set", "hiden=3"], "Did you mean 'hidden'?"),
        (["zoo:mlp", "--set", "hidden"], "--set: expected NAME=VALUE"),
        (["zoo:cnn", "--input", "3,8"], "expects (C,H,W) input"),
        (['{input: {shape: [4]}, model: [{linear: 2}], train: {epochz: 3}}'], "Did you mean 'epochs'?"),
        (['{input: {shape: [4]}, model: [{linear: 2}], train: {lr: -1}}'], "train: lr must be > 0"),
    ],
)
def test_errors_are_spec_errors_in_process(args: list[str], fragment: str) -> None:
    result = runner.invoke(app, ["inspect", *args])
    assert isinstance(result.exception, SpecError), result.output
    assert fragment in str(result.exception)


# ------------------------------------------------------------------- zoo, layers


def test_zoo_lists_every_spec() -> None:
    out = run("zoo")
    for name in zoo_names():
        assert f"zoo:{name}" in out
    assert "11,689,512" in out and "6,738,415,616" in out


def test_layers_with_a_glob() -> None:
    out = run("layers", "conv*")
    assert "conv1d" in out and "conv2d (conv)" in out
    assert "linear" not in out and "maxpool" not in out
    everything = run("layers")
    for name in LAYERS.names():
        layer = LAYERS.get(name)
        assert layer.name in everything


def test_layers_name_lists_every_argument_with_its_allowed_values() -> None:
    out = run("layers", "encoder_block")
    assert "norm_position" in out and "one of 'pre', 'post'" in out and "required" in out
    assert "'gelu', 'gelu_exact', 'relu', 'swiglu'" in out
    assert "one of 'depthwise'" in run("layers", "conv2d")
    assert "'single'" in run("layers", "rnn")


# -------------------------------------------------------------------- subprocess


def _subprocess(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "archlab", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def test_subprocess_inspect_and_one_line_errors() -> None:
    ok = _subprocess("inspect", "zoo:mlp", "--json", "--batch", "2")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["params"] == 50_826

    bad = _subprocess("inspect", "zoo:cnn", "--input", "3,8", "--set", "num_classes=3")
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1, bad.stderr
    assert lines[0].startswith("error: model[0].conv2d: expects (C,H,W) input, got (3, 8)")
    assert "Traceback" not in bad.stderr and bad.stdout == ""


def test_help_imports_no_torch():
    # `archlab --help` answers at once: torch (~1.5 s to import) loads only when a command runs.
    import subprocess
    import sys

    code = ("import sys; from archlab.cli import app; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr
