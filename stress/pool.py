"""Worker processes with a time limit and a memory limit, for inputs that may hang or blow up.

A task runs in a process forked from this one (so torch, once imported here, costs nothing
per worker). The worker caps its own address space with `resource.setrlimit(RLIMIT_AS)`, so
a runaway allocation ends in MemoryError (or the worker's death) instead of the machine's.
A task may spend at most `timeout` seconds of CPU time (the worker's user + system time, read
from /proc, so a busy machine does not turn slow answers into hangs) and at most
`wall_factor * timeout` seconds of wall time (for tasks that block without computing); a
worker over either is killed, its task reported as a hang, and a fresh worker forked.

    pool = Pool(run_case, workers=2, timeout=10)
    for task, result in pool.map(tasks):
        result["outcome"]   # whatever run_case returned, or "hang" / "crash"
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import wait
from typing import Any

# Headroom over what a worker already maps when forked (torch alone maps ~0.7 GB).
DEFAULT_MEMORY = 3 * 2**30


def address_space() -> int:
    """This process's mapped address space, in bytes (VmSize)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def limit_memory(extra: int = DEFAULT_MEMORY) -> int:
    """Cap this process's address space at what it maps now plus `extra` bytes."""
    cap = address_space() + extra
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return cap


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def _worker(fn: Callable[[Any], dict], conn, extra_memory: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    limit_memory(extra_memory)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # progress bars and warnings of the code under test stay quiet
    os.dup2(devnull, 2)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        try:
            result = fn(task)
        except MemoryError:
            result = {"outcome": "memory", "error": "MemoryError (in the harness)"}
        except BaseException as exc:  # noqa: BLE001 - a bug of the harness, reported as such
            result = {"outcome": "harness", "error": "".join(traceback.format_exception_only(exc)).strip()}
        try:
            conn.send(result)
        except MemoryError:
            conn.send({"outcome": "memory", "error": "MemoryError while answering"})


class Pool:
    """`workers` forked processes running `fn(task) -> dict`, each answer within `timeout` s."""

    def __init__(self, fn: Callable[[Any], dict], workers: int = 2, timeout: float = 10.0,
                 memory: int = DEFAULT_MEMORY, wall_factor: float = 6.0):
        self.fn, self.workers, self.timeout, self.memory = fn, workers, timeout, memory
        self.wall = timeout * wall_factor
        self._ctx = mp.get_context("fork")

    def _spawn(self):
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker, args=(self.fn, child, self.memory), daemon=True)
        proc.start()
        child.close()
        return proc, parent

    def map(self, tasks: Iterable[Any]) -> Iterator[tuple[Any, dict]]:
        todo = iter(tasks)
        slots: list[list] = []  # [proc, conn, task, started (wall), cpu at start]
        try:
            for _ in range(self.workers):
                slots.append([*self._spawn(), None, 0.0, 0.0])
            pending = True
            while True:
                for slot in slots:
                    if slot[2] is None and pending:
                        task = next(todo, None)
                        if task is None:
                            pending = False
                            continue
                        slot[3], slot[4] = time.monotonic(), cpu_seconds(slot[0].pid)
                        slot[1].send(task)
                        slot[2] = task
                busy = [s for s in slots if s[2] is not None]
                if not busy:
                    return
                ready = wait([s[1] for s in busy], timeout=0.25)
                now = time.monotonic()
                for slot in busy:
                    proc, conn, task, started, cpu0 = slot
                    result = None
                    if conn in ready:
                        try:
                            result = conn.recv()
                        except (EOFError, OSError):
                            proc.join(1)
                            code = proc.exitcode
                            why = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
                            result = {"outcome": "crash", "error": f"the worker died ({why})",
                                      "seconds": now - started, "cpu": 0.0}
                    else:
                        cpu = cpu_seconds(proc.pid) - cpu0
                        if cpu > self.timeout or now - started > self.wall:
                            result = {"outcome": "hang", "seconds": now - started, "cpu": cpu,
                                      "error": f"no answer after {cpu:.0f} s of CPU ({now - started:.0f} s wall)"}
                    if result is None:
                        continue
                    if result["outcome"] in ("crash", "hang"):
                        self._kill(proc)
                        slot[0], slot[1] = self._spawn()
                    result.setdefault("seconds", now - started)
                    result.setdefault("cpu", cpu_seconds(proc.pid) - cpu0)
                    slot[2] = None
                    yield task, result
        finally:
            for _proc, conn, *_ in slots:
                try:
                    conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
            for proc, *_ in slots:
                proc.join(2)
                if proc.is_alive():
                    self._kill(proc)

    @staticmethod
    def _kill(proc) -> None:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(5)
