"""Training on many processes: PyTorch's own engine (torch.distributed, launched by torchrun).

    archlab train zoo:mlp --nproc 2                       # two processes on this machine (DDP)
    archlab train zoo:mlp --nproc 2 --strategy fsdp       # FSDP2: weights sharded by block
    torchrun --nproc-per-node 2 -m archlab train zoo:mlp  # the same, launched by hand

Every rank runs the one loop (`archlab.train.Trainer`); this module holds what differs:

- Ranks: `RankInfo.from_env` reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK; `Group.start`
  joins the process group (gloo on CPU, nccl on CUDA). Rank 0 alone writes the run store,
  the progress, the reports and the weights; the other ranks are quiet.
- Data: `--batch-size` stays the GLOBAL batch. Each step's global batch is cut from the one
  permutation of the epoch and rank r takes its contiguous part (`part`): no rank holds a
  copy of the data set of its own, and N ranks at B/N take the step one process takes at
  B (the losses are weighted by each part's share, so an uneven last batch is exact too).
- Wrapping: DDP, or FSDP2 (`fully_shard` on every repeat copy and top-level block, then the
  root): `wrap`.
- Checkpoints: torch.distributed.checkpoint (DCP) with its safetensors storage
  (`HuggingFaceStorageWriter`, one shard file per rank, offsets in the file headers): a
  checkpoint written by N ranks loads on any number of ranks, one process included, and
  nothing is unpickled. The state besides the tensors is one JSON that rank 0 writes last:
  it is the commit point (`save_distributed`, `load_distributed`).
- Launch: `launch` starts `python -m archlab train ...` on every rank through
  `torch.distributed.run` (torchrun): standalone on one machine, or c10d rendezvous across
  machines (`--nnodes`, `--rdzv-endpoint`, `--rdzv-id`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core import SpecError, StoreError, TrainingError
from ..runs import CHECKPOINT_JSON
from ._checkpoint import _decode, _encode, has_checkpoint

STRATEGIES = ("ddp", "fsdp")
DIST_DIR = "distributed"      # under a run's folder: one committed step-N folder (DCP) at a time
STATE_JSON = "state.json"     # written last by rank 0: the commit point of a distributed checkpoint
STATE_TENSORS = "state.safetensors"
SHARDS = "shards"             # DCP's files, one per rank
FORMAT = "archlab-distributed-checkpoint"
VERSION = 1


# --------------------------------------------------------------------------- ranks


@dataclass(frozen=True)
class RankInfo:
    """Where this process stands among the ranks of a run (torchrun's environment)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RankInfo:
        env = os.environ if env is None else env
        if "WORLD_SIZE" not in env:
            return cls()
        try:
            rank, world = int(env.get("RANK", "0")), int(env["WORLD_SIZE"])
            local = int(env.get("LOCAL_RANK", "0"))
        except ValueError:
            raise TrainingError(f"RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (torchrun sets them). "
                                f"Received: RANK={env.get('RANK')!r}, WORLD_SIZE={env.get('WORLD_SIZE')!r}, "
                                f"LOCAL_RANK={env.get('LOCAL_RANK')!r}") from None
        if world < 1 or not 0 <= rank < world:
            raise TrainingError(f"RANK must be in 0..WORLD_SIZE-1. Received: RANK={rank}, WORLD_SIZE={world}")
        return cls(rank, world, local)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def primary(self) -> bool:
        return self.rank == 0


def rank_info() -> RankInfo:
    return RankInfo.from_env()


def part(total: int, rank: int, world: int) -> tuple[int, int]:
    """Rank `rank`'s contiguous part [a, b) of `total` items cut into `world` parts whose sizes
    differ by at most one (the first ones larger), as `torch.tensor_split` cuts.

    >>> [part(10, r, 3) for r in range(3)]
    [(0, 4), (4, 7), (7, 10)]
    """
    base, extra = divmod(total, world)
    a = rank * base + min(rank, extra)
    return a, a + base + (rank < extra)


def check_layout(batch_size: int, world: int, accumulate: int, where: str = "train.batch_size") -> None:
    """The global batch must split evenly into `world` ranks x `accumulate` micro-batches."""
    parts = world * accumulate
    if batch_size % parts:
        what = " x ".join(x for x in (f"{world} processes" if world > 1 else "",
                                      f"{accumulate} micro-batches" if accumulate > 1 else "") if x)
        lower, upper = batch_size // parts * parts, (batch_size // parts + 1) * parts
        fix = f"--batch-size {upper}" if lower == 0 else f"--batch-size {lower} or {upper}"
        raise SpecError(f"{where}: the batch size is the global batch, split into {what}; it must "
                        f"be divisible by {parts}. Received: batch_size={batch_size}; use {fix}")


# --------------------------------------------------------------------------- the group


class Group:
    """The process group of a distributed run and the few collectives the loop needs."""

    def __init__(self, info: RankInfo, device: torch.device):
        self.info, self.device = info, device
        self.rank, self.world = info.rank, info.world

    @classmethod
    def start(cls, device: torch.device, info: RankInfo | None = None, timeout_s: float = 600) -> Group:
        """Join the process group (torchrun's env:// rendezvous): nccl on CUDA, gloo on CPU."""
        import torch.distributed as dist

        info = info or rank_info()
        if device.type == "cuda":
            device = torch.device("cuda", info.local_rank % max(1, torch.cuda.device_count()))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), **kwargs)
        return cls(info, device)

    @property
    def primary(self) -> bool:
        return self.rank == 0

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of `t` over the ranks (a new tensor)."""
        import torch.distributed as dist

        out = t.detach().to(self.device, torch.float64 if t.dtype == torch.float64 else torch.float32).clone()
        dist.all_reduce(out)
        return out.to(t.device)

    def broadcast_json(self, value: Any = None) -> Any:
        """Rank 0's JSON value on every rank (sent as bytes in a tensor: nothing is pickled)."""
        import torch.distributed as dist

        data = json.dumps(value).encode() if self.primary else b""
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        dist.broadcast(size, 0)
        buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.device) if self.primary
               else torch.empty(int(size.item()), dtype=torch.uint8, device=self.device))
        dist.broadcast(buf, 0)
        return json.loads(bytes(buf.cpu().tolist()).decode()) if not self.primary else value

    def agree(self, loss_share: torch.Tensor, *flags: bool) -> tuple[torch.Tensor, list[bool]]:
        """One small all-reduce per step: the global mean loss (each rank passes its weighted
        share of it) and whether any rank raised a flag (Ctrl-C, the time budget), so every
        rank stops at the same step."""
        import torch.distributed as dist

        t = torch.tensor([float(f) for f in flags], device=self.device)
        t = torch.cat([loss_share.detach().float().reshape(1).to(self.device), t])
        dist.all_reduce(t)
        return t[0].to(loss_share.device), [bool(v > 0) for v in t[1:].tolist()]

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()


def shutdown(synchronize: bool = False) -> None:
    """Tear the process group down. After a run every rank finished, `synchronize` first waits
    for all of them, so no rank destroys the group while another's last collective may still be
    in flight. (Once, under load, a finished FSDP resume exited 1 with "terminate called without
    an active exception"; this is the usual cure, not a proven cause: it did not recur in 16
    tries here.) After a failure it does not wait: the other ranks may be gone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


# --------------------------------------------------------------------------- wrapping


def fsdp_units(net: nn.Module) -> list[nn.Module]:
    """The modules FSDP2 shards one by one, innermost first: every copy of a `repeat` and every
    top-level block (the children of each section's top serial) that holds parameters. The
    root is sharded last, by `wrap`."""
    from ..model import Repeat

    units: list[nn.Module] = []
    for module in net.modules():
        if isinstance(module, Repeat):
            units.extend(c for c in module.repeat.children() if any(True for _ in c.parameters()))
    for section in net.children():
        for child in section.children():
            if any(True for _ in child.parameters()) and not isinstance(child, Repeat) and child not in units:
                units.append(child)
    return units


def wrap(net: nn.Module, strategy: str, device: torch.device) -> nn.Module:
    """The module the loop calls: DistributedDataParallel over `net`, or `net` itself sharded
    in place by FSDP2 (`fully_shard` per block, then the root)."""
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for unit in fsdp_units(net):
            fully_shard(unit)
        fully_shard(net)
        return net
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=ids)


def no_sync(model: nn.Module, last: bool):  # noqa: ANN201
    """A context for one micro-batch's backward: gradients are reduced only on the last one."""
    from contextlib import nullcontext

    if last:
        if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
            model.set_requires_gradient_sync(True)
        return nullcontext()
    if hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(False)
    return nullcontext()


def full_model_state(net: nn.Module, group: Group | None) -> dict[str, torch.Tensor]:
    """The whole model's weights on CPU (on rank 0; the other ranks get {}). Sharded weights
    are gathered: a collective, every rank calls it."""
    if group is None or not _is_sharded(net):
        return {k: v.detach().cpu() for k, v in net.state_dict().items()} if group is None or group.primary else {}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(net, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _is_sharded(net: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in net.parameters())


# --------------------------------------------------------------------------- checkpoints


def _committed(directory: Path) -> list[Path]:
    """Committed distributed checkpoints (a state.json that parses), newest last."""
    root = directory / DIST_DIR
    if not root.is_dir():
        return []
    found = []
    for step_dir in root.glob("step-*"):
        try:
            meta = json.loads((step_dir / STATE_JSON).read_text())
        except (OSError, ValueError):
            continue  # a save that died before its commit: ignored (removed by the next save)
        if isinstance(meta, dict) and meta.get("format") == FORMAT:
            found.append((int(meta.get("global_step", -1)), step_dir))
    return [p for _, p in sorted(found)]


def _archlab_step(directory: Path) -> int | None:
    """The global step of the one-process checkpoint, if there is one."""
    if not has_checkpoint(directory):
        return None
    try:
        state = json.loads((directory / CHECKPOINT_JSON).read_text()).get("state", {})
        return int(state.get("global_step", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def newest_checkpoint(directory: str | Path) -> str | None:
    """Which checkpoint a resume continues from: "distributed" (DCP, written by several ranks),
    "archlab" (the one-process format) or None. Both may exist when a run changed its number
    of processes: the one further along wins."""
    directory = Path(directory)
    dist_dirs = _committed(directory)
    one = _archlab_step(directory)
    if not dist_dirs:
        return None if one is None else "archlab"
    if one is None:
        return "distributed"
    step = json.loads((dist_dirs[-1] / STATE_JSON).read_text()).get("global_step", -1)
    return "distributed" if step > one else "archlab"


def has_any_checkpoint(directory: str | Path) -> bool:
    return newest_checkpoint(directory) is not None


def _flat(model_sd: Mapping[str, Any], optim_sd: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors of a model + optimizer state dict under flat keys, and the rest (JSON)."""
    flat = {f"model/{k}": v for k, v in model_sd.items()}
    extra: dict[str, Any] = {}
    for fqn, entries in optim_sd.get("state", {}).items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                flat[f"optim/{fqn}/{key}"] = value
            else:
                extra.setdefault(fqn, {})[key] = value
    return flat, extra


def _rng_tensors() -> dict[str, torch.Tensor]:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state()
    return rng


def save_distributed(directory: Path, group: Group, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: Any, state: Mapping[str, Any], *, strategy: str) -> Path:
    """A checkpoint of every rank's state (a collective: every rank calls it).

    DCP writes each rank's shard of the weights and optimizer state (safetensors); each rank
    its RNG; then rank 0 writes the rest of the state as JSON, last: a save killed before that
    leaves the previous checkpoint the newest one."""
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import save_file
    from torch.distributed.checkpoint import HuggingFaceStorageWriter
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    flat, extra = _flat(model_sd, optim_sd)
    step = int(state["global_step"])
    target = directory / DIST_DIR / f"step-{step:09d}"
    if group.primary and target.exists():
        shutil.rmtree(target)  # an uncommitted save of this very step, or a stale one
    group.barrier()
    dcp.save(flat, storage_writer=HuggingFaceStorageWriter(str(target / SHARDS), save_distributed=True))
    save_file({k: v.contiguous() for k, v in _rng_tensors().items()}, str(target / f"rng-rank{group.rank}.safetensors"))
    group.barrier()
    if group.primary:
        tensors: dict[str, torch.Tensor] = {}
        body = _encode({"trainer": dict(state), "param_groups": optim_sd["param_groups"], "optim_extra": extra,
                        "scheduler": scheduler.state_dict()}, tensors, "state")
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(target / STATE_TENSORS))
        meta = {"format": FORMAT, "version": VERSION, "global_step": step, "world_size": group.world,
                "strategy": strategy, "body": body}
        tmp = target / (STATE_JSON + ".tmp")
        with open(tmp, "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target / STATE_JSON)  # the commit point
        for old in (directory / DIST_DIR).glob("step-*"):  # older checkpoints and dead saves
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
    return target


def _read_state(step_dir: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    where = step_dir / STATE_JSON
    try:
        meta = json.loads(where.read_text())
        tensors = load_file(str(step_dir / STATE_TENSORS))
        body = _decode(meta["body"], tensors, "state")
    except Exception as e:  # noqa: BLE001 - any damage reads as one line
        raise StoreError(f"{where}: the distributed checkpoint is damaged ({type(e).__name__}: {e}); delete "
                         f"{step_dir} to resume from the checkpoint before it") from None
    return meta, body


def load_distributed(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                     group: Group | None) -> dict[str, Any]:
    """Load the newest distributed checkpoint into `model` and `optimizer` (plain, DDP or FSDP2,
    on any number of ranks: DCP reshards) and return the trainer's state. The RNG comes back
    only on the same number of ranks (each rank has its own)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    step_dir = _committed(directory)[-1]
    meta, body = _read_state(step_dir)
    model_sd, optim_sd = get_state_dict(model, optimizer)  # initialises the optimizer's state
    flat, _ = _flat(model_sd, optim_sd)
    try:
        dcp.load(flat, storage_reader=HuggingFaceStorageReader(str(step_dir / SHARDS)))
    except Exception as e:  # noqa: BLE001
        raise StoreError(f"{step_dir}: the distributed checkpoint does not fit this run ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); it is damaged or from another spec") from None
    model_sd = {k[len("model/"):]: v for k, v in flat.items() if k.startswith("model/")}
    state: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        if key.startswith("optim/"):
            fqn, name = key[len("optim/"):].rsplit("/", 1)
            state.setdefault(fqn, {})[name] = value
    for fqn, entries in body.get("optim_extra", {}).items():
        state.setdefault(fqn, {}).update(entries)
    set_state_dict(model, optimizer, model_state_dict=model_sd,
                   optim_state_dict={"state": state, "param_groups": body["param_groups"]})
    scheduler.load_state_dict(body["scheduler"])
    world = group.world if group is not None else 1
    if meta.get("world_size") == world:
        from safetensors.torch import load_file

        rng = load_file(str(step_dir / f"rng-rank{group.rank if group else 0}.safetensors"))
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return body["trainer"]


def load_distributed_weights(directory: str | Path, net: nn.Module) -> None:
    """The newest distributed checkpoint's weights into a plain `net` (one process, no group)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    step_dir = _committed(Path(directory))[-1]
    flat = {f"model/{k}": v for k, v in net.state_dict().items()}
    dcp.load(flat, storage_reader=HuggingFaceStorageReader(str(step_dir / SHARDS)))
    net.load_state_dict({k[len("model/"):]: v for k, v in flat.items()})


def full_optimizer_state(net: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(model, optimizer) state dicts keyed by parameter names, for `set_full_state`."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    return get_state_dict(net, optimizer)


def set_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_sd: dict, optim_sd: dict) -> None:
    """Whole (unsharded) state dicts, held by every rank, into a DDP or FSDP2 model: each rank
    keeps its shard (a one-process checkpoint resumed on several processes)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd,
                   options=StateDictOptions(full_state_dict=True))


# --------------------------------------------------------------------------- launch

LAUNCH_FLAGS = ("--nproc", "--nnodes", "--rdzv-endpoint", "--rdzv-id", "--rdzv-timeout")


def child_arguments(argv: Sequence[str]) -> list[str]:
    """`archlab train ...`'s arguments minus the launch flags (each rank runs the rest).

    >>> child_arguments(["train", "zoo:mlp", "--nproc", "2", "--nnodes=1", "--epochs", "3"])
    ['train', 'zoo:mlp', '--epochs', '3']
    """
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in LAUNCH_FLAGS:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def launch(argv: Sequence[str], *, nproc: int, nnodes: int = 1, rdzv_endpoint: str | None = None,
           rdzv_id: str | None = None, rdzv_timeout: float = 120) -> int:
    """Run `python -m archlab ARGV` on `nproc` processes per machine through torchrun
    (`torch.distributed.run`) and return rank 0's exit code (the first failure's otherwise).

    One machine: a standalone rendezvous on a free local port. Several: c10d rendezvous at
    `rdzv_endpoint` (HOST:PORT on the first machine), every machine with the same `rdzv_id`;
    one that finds no peers within `rdzv_timeout` seconds fails with a one-line error."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.run import parse_args, run

    if nproc < 1:
        raise TrainingError(f"--nproc: expected at least 1 process per machine. Received: {nproc}")
    if nnodes < 1:
        raise TrainingError(f"--nnodes: expected at least 1 machine. Received: {nnodes}")
    if rdzv_timeout <= 0:
        raise TrainingError(f"--rdzv-timeout: expected seconds > 0. Received: {rdzv_timeout}")
    if nnodes > 1 and not rdzv_endpoint:
        raise TrainingError(f"--nnodes {nnodes}: several machines meet at a rendezvous; give --rdzv-endpoint "
                            f"HOST:PORT (a port on the first machine that all can reach) and --rdzv-id JOB")
    if rdzv_endpoint:
        host, sep, port = rdzv_endpoint.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise TrainingError(f"--rdzv-endpoint: expected HOST:PORT. Received: {rdzv_endpoint!r}")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    args = ["--nproc-per-node", str(nproc), "--max-restarts", "0", "--monitor-interval", "0.2"]
    if rdzv_endpoint:
        seconds = str(int(rdzv_timeout))
        args += ["--nnodes", str(nnodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint,
                 "--rdzv-id", rdzv_id or "archlab", "--rdzv-conf", f"join_timeout={seconds},read_timeout={seconds}"]
    else:
        args += ["--standalone"]
    args += ["--module", "archlab", *argv]
    import logging

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    where = rdzv_endpoint or "the local rendezvous"
    message = (f"--rdzv-endpoint {where}: the rendezvous did not complete within {rdzv_timeout:g} s; check that "
               f"HOST:PORT is reachable from every machine and that all {nnodes} machines started with the same "
               f"--rdzv-id")
    watchdog = _Watchdog(rdzv_timeout + 5, message) if rdzv_endpoint else None
    try:
        run(parse_args(args))
    except ChildFailedError as e:
        codes = {f.local_rank: f.exitcode for f in e.failures.values()}
        code = codes.get(0, next(iter(codes.values()), 1))
        return code if isinstance(code, int) and code > 0 else 1
    except RendezvousError:
        raise TrainingError(message) from None
    finally:
        if watchdog is not None:
            watchdog.cancel()
    return 0


class _Watchdog:
    """Ends the launcher with `message` (exit 2) if it has started no worker process within
    `seconds`: a TCP store client waiting on an endpoint that accepts connections but never
    answers does not always honour its own read timeout."""

    def __init__(self, seconds: float, message: str):
        import threading

        self.message = message
        self.timer = threading.Timer(seconds, self._check)
        self.timer.daemon = True
        self.timer.start()

    def cancel(self) -> None:
        self.timer.cancel()

    def _check(self) -> None:
        import sys

        try:
            children = [c for task in Path(f"/proc/{os.getpid()}/task").iterdir()
                        for c in (task / "children").read_text().split()]
        except OSError:  # no /proc: nothing to tell by
            return
        if not children:
            print(f"error: {self.message}", file=sys.stderr, flush=True)
            os._exit(2)
