"""Test helper shared by the kill/resume tests: Ctrl-C a training run at a chosen step."""

import os
import signal
import time

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
