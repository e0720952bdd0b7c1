"""Test helpers shared by the kill/resume tests: Ctrl-C a training run at a chosen step, or stop
CLI runs once their first epoch is saved."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import archlab.train._progress as progress_module


def interrupt_at(monkeypatch, at: int, signals: int = 1) -> None:
    """Send ourselves SIGINT (Ctrl-C) after the `at`-th optimizer step of this process."""
    count = [0]

    class Interrupting(progress_module.EpochProgress):
        def step(self, step, loss):
            super().step(step, loss)
            count[0] += 1
            if count[0] == at:
                for _ in range(signals):
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(0.01)  # let the handler run before the next signal

    monkeypatch.setattr(progress_module, "EpochProgress", Interrupting)


def checkpoint_position(home: Path) -> tuple[int, int] | None:
    for path in (home / "runs").glob("*/checkpoint.json"):
        try:
            state = json.loads(path.read_text())["state"]
        except (OSError, ValueError, KeyError):
            return None
        return state["epoch"], state["step_in_epoch"]
    return None


def stop_after_first_epoch(stops: dict[str, tuple[subprocess.Popen, Path, int]]) -> None:
    """Signal each process as soon as its first epoch's checkpoint is on disk (polled side by
    side: on a loaded machine one process may run epochs ahead of another)."""
    deadline = time.monotonic() + 120
    pending = dict(stops)
    while pending and time.monotonic() < deadline:
        for name, (proc, home, sig) in list(pending.items()):
            if proc.poll() is not None:
                break
            position = checkpoint_position(home)
            if position and position[0] >= 1:
                proc.send_signal(sig)
                del pending[name]
        else:
            time.sleep(0.01)
            continue
        break
    for proc, _home, _sig in pending.values():
        out, err = proc.communicate()
        raise AssertionError(f"the run ended (rc {proc.returncode}) before it could be stopped: {err[-2000:]}")
