"""Training on many processes: DDP and FSDP2 through torchrun (2 gloo processes on CPU), exact
distributed resume after a SIGKILLed rank (2 -> 1 and 1 -> 2 processes), two torchrun agents as
two nodes, gradient accumulation, and the one-line refusals.

Equivalence: every distributed run here ends with the weights of the one-process run at the
same global batch within 1e-5 relative (measured: ~3e-7). It is not bitwise: DDP and FSDP sum
the ranks' gradients (each the weighted mean of its part) in another order than one backward
over the whole batch, and FSDP's optimizer updates shards. The model has no dropout: dropout
masks come from each rank's own global RNG, so they cannot match one process's masks for the
same samples (augmentation can, and does: `Augment(part=...)`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from archlab import build
from archlab.cli import app
from archlab.core import SpecError, thaw
from archlab.data import Augment, DiskSplit, Split
from archlab.model import inspect
from archlab.runs import open_store
from archlab.spec import Spec
from archlab.train import (
    RankInfo,
    batches,
    check_layout,
    child_arguments,
    epoch_order,
    fit,
    load_checkpoint,
    load_distributed_weights,
    load_run_model,
    newest_checkpoint,
    part,
    resume,
)
from tests.interrupts import interrupt_at

# A one-process load of a DCP checkpoint: torch says it assumes one process, which it is.
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 4
SPEC = """\
name: tiny
input: {shape: [1, 8, 8]}
model:
  - flatten
  - linear: 32
  - relu
  - linear: $num_classes
train: {batch_size: 64, lr: 0.01}
"""
TOL = 1e-5


# ----------------------------------------------------------------------------- helpers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(ARCHLAB_HOME=str(home), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return env


def _start(home: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "archlab", "train", *args], env=_env(home), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        _kill_group(proc)
    return proc.returncode, out, err


def _kill_group(proc: subprocess.Popen) -> None:
    """The launcher and every rank it started (one process group: start_new_session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait()


def _cli(home: Path, *args: str, expect: int = 0) -> tuple[str, str]:
    code, out, err = _finish(_start(home, *args))
    assert code == expect, f"rc {code}\n{out[-3000:]}\n{err[-3000:]}"
    return out, err


def _run_id(text: str) -> str:
    match = re.search(r"^run\s+(r[0-9a-f]{8})\b", text, re.MULTILINE)
    assert match, text
    return match.group(1)


def _weights(home: Path, run_id: str) -> dict[str, torch.Tensor]:
    """The run's last weights, from whichever checkpoint is newest (one process's or DCP)."""
    store = open_store(home)
    record = store.get_run(run_id)
    folder = store.run_dir(record.run_id)
    net = build(Spec.from_dict(thaw(record.spec)), seed=0)
    if newest_checkpoint(folder) == "distributed":
        load_distributed_weights(folder, net)
    else:
        load_checkpoint(folder, model=net, restore_rng=False)
    return net.state_dict()


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float = TOL) -> None:
    assert a.keys() == b.keys()
    for key in a:
        rel = ((a[key] - b[key]).abs().max() / a[key].abs().max().clamp(min=1e-12)).item()
        assert rel <= tol, f"{key}: relative difference {rel:.3g} > {tol}"


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


# ----------------------------------------------------------------------------- scenarios


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dist-home")


@pytest.fixture(scope="module")
def spec_file(home) -> Path:
    path = home / "tiny.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def baseline(home, spec_file) -> tuple[str, dict[str, torch.Tensor]]:
    """One process, the whole global batch per step: what every distributed run must end as."""
    run = fit(str(spec_file), data="digits", store=home, quiet=True, epochs=EPOCHS)
    return run.run_id, _weights(home, run.run_id)


@pytest.fixture(scope="module")
def ddp(home, spec_file) -> str:
    out, err = _cli(home, str(spec_file), "--epochs", str(EPOCHS), "--nproc", "2", "-q")
    assert err.count("recorded;") == 1, err  # rank 0 alone speaks
    return _run_id(out)


def test_ddp_ends_with_the_one_process_weights(home, baseline, ddp):
    _assert_close(baseline[1], _weights(home, ddp))
    store = open_store(home)
    record, one = store.get_run(ddp), store.get_run(baseline[0])
    assert record.status == "finished" and record.env["world_size"] == 2 and record.env["strategy"] == "ddp"
    assert len(record.history) == EPOCHS  # one record per epoch: rank 0 alone writes
    # Metrics are all-reduced (train) or measured whole on rank 0 (val): the one-process numbers.
    for mine, theirs in zip(record.history, one.history, strict=True):
        mine, theirs = mine.metrics, theirs.metrics
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-4)
        assert mine["train_acc"] == pytest.approx(theirs["train_acc"], abs=1e-3)
        assert mine["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-4)
    assert record.test_metrics["acc"] == pytest.approx(one.test_metrics["acc"], abs=1e-3)
    assert (store.run_dir(ddp) / "best.safetensors").exists()  # final weights stay safetensors


def test_plain_torchrun_with_accumulation(home, baseline, spec_file):
    """`torchrun ... -m archlab train` works as --nproc does (RANK/WORLD_SIZE detected); two ranks
    x two micro-batches of 16 take the one-process step at 64 (gradients reduced once per step)."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "archlab", "train", str(spec_file), "--epochs", str(EPOCHS), "--accumulate", "2", "-q"]
    proc = subprocess.Popen(torchrun, env=_env(home), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    code, out, err = _finish(proc)
    assert code == 0, err[-3000:]
    _assert_close(baseline[1], _weights(home, _run_id(out)))


@pytest.fixture(scope="module")
def killed(home, spec_file) -> str:
    """A 2-process run whose rank 1 is SIGKILLed once its first distributed checkpoint is committed."""
    before = set((home / "runs").glob("*"))
    proc = _start(home, str(spec_file), "--epochs", str(EPOCHS), "--nproc", "2", "-q")
    try:
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and proc.poll() is None:
            if any(p.parents[2] not in before for p in (home / "runs").glob("*/distributed/step-*/state.json")):
                ranks = {_rank_of(c): c for c in _children(proc.pid)}
                if 1 in ranks:
                    os.kill(ranks[1], signal.SIGKILL)
                    break
            time.sleep(0.005)
        code, out, err = _finish(proc, timeout=200)
    finally:
        _kill_group(proc)
    assert code != 0, f"the run ended (rc {code}) before rank 1 could be killed: {err[-2000:]}"
    return _run_id(err)


def test_a_killed_two_process_run_resumes_on_one(home, baseline, killed):
    assert newest_checkpoint(open_store(home).run_dir(killed)) == "distributed"
    run = resume(killed, store=home, quiet=True)  # one process, from the DCP checkpoint
    assert run.status == "finished" and len(run.history) == EPOCHS
    _assert_close(baseline[1], _weights(home, killed))
    # The 1-process resume wrote the one-process format: now the newest.
    assert newest_checkpoint(open_store(home).run_dir(killed)) == "archlab"


@pytest.fixture(scope="module")
def one_to_two(home, spec_file) -> tuple[str, str]:
    """A one-process run Ctrl-C'ed mid-epoch 3, resumed on 2 processes with FSDP2."""
    started: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        interrupt_at(mp, 50)  # 20 steps per epoch: epoch 3, step 10
        with pytest.raises(KeyboardInterrupt):
            fit(str(spec_file), data="digits", store=home, quiet=True, epochs=EPOCHS, on_start=started.append)
    position = json.loads((open_store(home).run_dir(started[0]) / "checkpoint.json").read_text())["state"]
    assert (position["epoch"], position["step_in_epoch"]) == (2, 10)
    out, _ = _cli(home, "--resume", started[0], "--nproc", "2", "--strategy", "fsdp", "-q")
    return started[0], out


def test_a_one_process_run_resumes_on_two_with_fsdp(home, baseline, one_to_two):
    run_id, out = one_to_two
    assert _run_id(out) == run_id
    assert newest_checkpoint(open_store(home).run_dir(run_id)) == "distributed"
    _assert_close(baseline[1], _weights(home, run_id))
    record = open_store(home).get_run(run_id)
    assert record.status == "finished" and len(record.history) == EPOCHS
    net, _ = load_run_model(run_id, store=home)  # the best weights, gathered whole by rank 0: safetensors
    assert (open_store(home).run_dir(run_id) / "best.safetensors").exists()
    assert net.state_dict().keys() == baseline[1].keys()
    # The epoch that straddled the resume has the whole epoch's all-reduced sums.
    one = open_store(home).get_run(baseline[0]).history[2].metrics
    assert record.history[2].metrics["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)


@pytest.fixture(scope="module")
def two_nodes(home, spec_file) -> str:
    """Two torchrun agents on 127.0.0.1 meeting by c10d rendezvous, one process each, FSDP2."""
    port = _free_port()
    args = (str(spec_file), "--epochs", str(EPOCHS), "--nnodes", "2", "--nproc", "1", "--strategy", "fsdp",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "archlab-test", "--rdzv-timeout", "100", "-q")
    agents = [_start(home, *args), _start(home, *args)]
    try:
        results = [_finish(p) for p in agents]
    finally:
        for p in agents:
            _kill_group(p)
    assert [r[0] for r in results] == [0, 0], results
    ids = [_run_id(out) for _, out, _ in results if out.strip()]
    assert len(ids) == 1, results  # the node holding rank 0 records and reports; the other is quiet
    return ids[0]


def test_two_agents_as_two_nodes(home, baseline, two_nodes):
    _assert_close(baseline[1], _weights(home, two_nodes))
    assert open_store(home).get_run(two_nodes).env["world_size"] == 2


def test_a_rendezvous_that_never_answers_is_a_bounded_one_line_error(home, spec_file):
    with socket.socket() as server:  # accepts connections, never says a word
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        t0 = time.monotonic()
        code, out, err = _finish(_start(home, str(spec_file), "--nnodes", "2", "--nproc", "1", "--rdzv-endpoint",
                                        f"127.0.0.1:{port}", "--rdzv-timeout", "2"), timeout=120)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --rdzv-endpoint 127.0.0.1:"), err
    assert "did not complete within 2 s" in lines[0]
    assert time.monotonic() - t0 < 100


# ----------------------------------------------------------------------------- in one process


def test_nproc_zero_and_other_launch_mistakes_are_one_line():
    runner = CliRunner()
    for args, words in ((["--nproc", "0"], "--nproc: expected at least 1"),
                        (["--nproc", "2", "--strategy", "zero"], "--strategy: expected one of ddp, fsdp"),
                        (["--nproc", "2", "--batch-size", "33"], "--batch-size: the batch size is the global"),
                        (["--nproc", "2", "--nnodes", "2"], "--rdzv-endpoint HOST:PORT"),
                        (["--nproc", "2", "--nnodes", "2", "--rdzv-endpoint", "nohost"], "expected HOST:PORT")):
        result = runner.invoke(app, ["train", "zoo:mlp", *args])
        assert result.exit_code != 0 and words in str(result.exception), (args, result.exception)


def test_the_batch_must_split_evenly():
    with pytest.raises(SpecError, match=r"divisible by 4. Received: batch_size=30; use --batch-size 28 or 32"):
        check_layout(30, 2, 2)
    with pytest.raises(SpecError, match="--batch-size 4"):
        check_layout(3, 4, 1)
    check_layout(64, 2, 4)
    with pytest.raises(SpecError, match="divisible by 3"):
        fit("zoo:mlp", data="digits", quiet=True, epochs=1, accumulate=3)


def test_a_task_with_its_own_step_refuses_accumulation():
    with pytest.raises(SpecError, match="task gan writes its own training step"):
        fit("zoo:gan", data="digits", quiet=True, epochs=1, accumulate=2)


def test_accumulation_matches_the_whole_batch(tmp_path, spec_file):
    plain = fit(str(spec_file), data="digits", quiet=True, epochs=2)
    micro = fit(str(spec_file), data="digits", quiet=True, epochs=2, accumulate=4)  # 4 x 16, last batch 41
    _assert_close(plain.model.state_dict(), micro.model.state_dict())
    assert micro.history[-1]["train_loss"] == pytest.approx(plain.history[-1]["train_loss"], rel=1e-5)


def test_inspect_counts_the_activations_of_one_micro_batch():
    whole = inspect("zoo:cnn", batch=64)
    micro = inspect("zoo:cnn", batch=64, accumulate=4)
    assert micro.memory.activations < whole.memory.activations
    assert micro.memory.activations == inspect("zoo:cnn", batch=16).memory.activations
    assert micro.memory.weights == whole.memory.weights and micro.memory.accumulate == 4
    result = CliRunner().invoke(app, ["inspect", "zoo:cnn", "--batch", "64", "--accumulate", "4"])
    assert result.exit_code == 0 and "batch 64 (4 micro-batches of 16)" in result.stdout
    with pytest.raises(SpecError, match="--accumulate"):
        inspect("zoo:cnn", batch=64, accumulate=5)


def test_parts_and_rank_environment():
    assert [part(41, r, 2) for r in range(2)] == [(0, 21), (21, 41)]
    assert [part(64, r, 2) for r in range(2)] == [(0, 32), (32, 64)]
    assert RankInfo.from_env({}) == RankInfo()
    info = RankInfo.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert info.distributed and not info.primary
    from archlab.core import TrainingError

    with pytest.raises(TrainingError, match="RANK must be in 0..WORLD_SIZE-1"):
        RankInfo.from_env({"RANK": "2", "WORLD_SIZE": "2"})
    assert child_arguments(["train", "s.yaml", "--nproc", "2", "--rdzv-id=j", "--strategy", "fsdp"]) == \
        ["train", "s.yaml", "--strategy", "fsdp"]


@pytest.mark.parametrize("disk", [False, True])
def test_rank_parts_make_up_the_global_batch(disk):
    """In memory and streamed: each rank's part of every step, joined, is one process's batch,
    augmented the same way."""
    g = torch.Generator().manual_seed(0)
    split = Split(torch.rand(37, 1, 6, 6, generator=g), torch.arange(37))
    served = DiskSplit.from_split(split) if disk else split
    order, _ = epoch_order(37, 0, 0)
    augment = Augment(crop_padding=1, hflip=True)

    def run(rank: int, world: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(5)
        return [(x, y) for _, x, y in batches(served, order, 8, 0, augment, gen, rank=rank, world=world, workers=0)]

    whole = run(0, 1)
    parts = [run(r, 2) for r in range(2)]
    assert len(whole) == len(parts[0]) == len(parts[1]) == 5
    for step, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([parts[0][step][1], parts[1][step][1]]), y)
        assert torch.equal(torch.cat([parts[0][step][0], parts[1][step][0]]), x)
