"""Will a training step fit? Checked on the meta device before any weight is allocated.

`check_memory` counts what a step needs at least — weights, gradients and optimizer state
(exact, from the model built on the meta device: no weights exist yet) plus the input batch
and its augmentation — and refuses, with both figures, when that exceeds the memory
available: free device memory on a GPU; on the CPU the least of MemAvailable, the
address-space limit (`ulimit -v`) and the cgroup limit. Activations come on top of this
lower bound (see `archlab inspect --device-memory` for the whole estimate).
"""

from __future__ import annotations

import math
import resource
from pathlib import Path

import torch
from torch import nn

from ..core import TrainingError
from ..data import DataInfo
from ._settings import TrainSettings

_STATES = {"adam": 2, "adamw": 2}  # optimizer tensors per parameter; sgd: 1 with momentum, else 0


def _gb(n: float) -> str:
    """Bytes in decimal units (GB = 10^9), three significant digits."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:,.3g} {unit}"
    return f"{n:.0f} B"


def available_memory(device: torch.device) -> tuple[int, str] | None:
    """(bytes free, where the figure comes from), or None where it cannot be told."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {device}"
    found: list[tuple[int, str]] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "MemAvailable"))
    except (OSError, ValueError, IndexError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        used = 0
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmSize:"):
                    used = int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        found.append((max(0, soft - used), "the address-space limit (ulimit -v)"))
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            current = int(Path("/sys/fs/cgroup/memory.current").read_text())
            found.append((max(0, int(limit) - current), "the cgroup memory limit"))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def step_bytes(net: nn.Module, s: TrainSettings, info: DataInfo) -> dict[str, int]:
    """A lower bound on one training step's memory, by part (bytes)."""
    params = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    states = _STATES.get(s.optimizer, 1 if s.momentum else 0)
    width = 4  # fp32 master weights, also under autocast
    shape = tuple(info.input_shape)
    item = 4 if info.input_dtype == "float" else 8
    named = info.named_inputs() or {"": (shape, info.input_dtype)}  # several inputs: every one's batch
    batch = sum(s.batch_size * math.prod(sh) * (4 if dt == "float" else 8) for sh, dt in named.values())
    if s.crop_padding and len(shape) == 3:  # the zero-padded copy a random crop is cut from
        c, h, w = shape
        p = s.crop_padding
        batch += s.batch_size * c * (h + 2 * p) * (w + 2 * p) * item
    return {"weights": width * params + sum(b.numel() * b.element_size() for b in net.buffers()),
            "gradients": width * trainable, "optimizer": width * trainable * states, "batch": batch,
            "params": params}


def check_memory(net: nn.Module, s: TrainSettings, info: DataInfo, device: torch.device) -> None:
    """Raise TrainingError, with the figures, if a training step cannot fit (see the module doc)."""
    parts = step_bytes(net, s, info)
    need = parts["weights"] + parts["gradients"] + parts["optimizer"] + parts["batch"]
    free = available_memory(device)
    if free is None or need <= free[0]:
        return
    model = parts["weights"] + parts["gradients"] + parts["optimizer"]
    raise TrainingError(
        f"train: a training step needs at least {_gb(need)} ({parts['params']:,} parameters: {_gb(model)} for "
        f"weights, gradients and {s.optimizer} state; a batch of {s.batch_size}: {_gb(parts['batch'])}) but "
        f"{_gb(free[0])} is available ({free[1]} on {device}); make the model or the batch smaller"
        f"{' or --crop-padding' if s.crop_padding else ''}, or train on a device with more memory. "
        f"Nothing was recorded")
