"""Atomic checkpoints that load without executing code (safetensors + JSON, never pickle).

A checkpoint is a folder holding three files::

    checkpoint.safetensors   model weights (one copy of tied tensors; aliases in the JSON)
    optimizer.safetensors    every other tensor: optimizer state (Adam's exp_avg, ...),
                             RNG states, tensors inside the trainer's ``state``
    checkpoint.json          everything else, plus the size and SHA-256 of both tensor files

Crash safety. Two files cannot be swapped in one atomic step, so the JSON is the commit
point: new tensor files are first written (and fsynced) under temporary names, then the
new JSON, which names both the final and the temporary file of each, replaces the old one
atomically, and only then are the tensor files renamed into place. Whatever the moment of a
crash, the JSON on disk points at files whose hashes match it: a crash before the JSON is
replaced leaves the previous checkpoint whole; a crash after it leaves the new one
loadable from the temporary names (the next save finishes the renames). A file damaged
afterwards (truncated, edited, swapped) fails the hash check and loading raises StoreError.

>>> import tempfile, torch
>>> model = torch.nn.Linear(2, 1)
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
>>> folder = save_checkpoint(Path(tempfile.mkdtemp()), model=model, optimizer=opt, state={"epoch": 3})
>>> load_checkpoint(folder, model=model, optimizer=opt)["epoch"]
3
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import stat
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core import JSON_TAGS, CodecError, StoreError, decode, encode
from ..runs import CHECKPOINT_FILES, CHECKPOINT_JSON, MAX_JSON_BYTES, open_regular, read_text
from ..runs import CHECKPOINT_OPTIMIZER as OPTIMIZER_FILE  # optimizer state, all other tensors
from ..runs import CHECKPOINT_WEIGHTS as WEIGHTS_FILE

__all__ = [
    "CHECKPOINT_JSON",
    "OPTIMIZER_FILE",
    "WEIGHTS_FILE",
    "CheckpointWriter",
    "has_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT = "archlab-checkpoint"
VERSION = 1
_TMP = ".tmp"  # suffix of every temporary file a save writes


# ----------------------------------------------------------------------------- encoding
# Nested Python values <-> strict JSON. Tensors go to a tensor dict and are referenced by
# name; tuples, non-str dict keys, non-finite floats, bytes and numpy arrays are tagged so
# they come back as they went in (optimizer state uses int keys, Adam's betas a tuple).

# The one JSON codec (archlab.core) with two tags of the checkpoint's own: tensors and numpy
# arrays live in the safetensors files and are referenced by name.
_TAGS = JSON_TAGS | {"$tensor", "$ndarray"}


def _encode(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    def other(value: Any, where: str) -> Any:
        if isinstance(value, torch.Tensor):
            return {"$tensor": _add_tensor(tensors, where, value)}
        if type(value).__module__ == "numpy":
            import numpy as np

            if isinstance(value, np.ndarray) and value.dtype != object:
                return {"$ndarray": _add_tensor(tensors, where, torch.from_numpy(value.copy()))}
            if isinstance(value, np.generic):
                return encode(value.item(), where, exact=True, other=other, reserved=_TAGS)
        raise StoreError(
            f"checkpoint {where}: cannot save a value of type {type(value).__name__} (expected "
            f"JSON types, tuples, bytes, tensors or numpy arrays). Received: {value!r:.80}"
        )

    return encode(obj, path, exact=True, other=other, reserved=_TAGS)


def _add_tensor(tensors: dict[str, torch.Tensor], path: str, t: torch.Tensor) -> str:
    name, n = path, 1
    while name in tensors:
        n += 1
        name = f"{path}#{n}"
    tensors[name] = t
    return name


class _Damaged(ValueError):
    """A checkpoint value that cannot be what archlab wrote (becomes a one-line StoreError)."""


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor], where: str = "") -> Any:
    """Inverse of :func:`_encode`; a value that cannot have come from it raises _Damaged."""
    def tensor(name: str, value: Any, at: str) -> Any:
        if name not in ("$tensor", "$ndarray"):
            return NotImplemented
        if not isinstance(value, str) or value not in tensors:
            raise _Damaged(f"{at}: refers to tensor {value!r:.60}, which is not in the tensor files")
        return tensors[value] if name == "$tensor" else tensors[value].cpu().numpy()

    try:
        return decode(obj, where, tag=tensor)
    except CodecError as exc:
        raise _Damaged(str(exc)) from None


# ----------------------------------------------------------------------------- files


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _cpu_tensors(tensors: dict[str, torch.Tensor], file: str, copy: bool) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors for safetensors; with ``copy``, copies taken now."""
    seen: set[tuple[str, int]] = set()
    out = {}
    for name, t in tensors.items():
        t = t.detach()
        if t.device.type == "meta":
            raise StoreError(
                f"{file}: tensor {name!r} is on the meta device and has no data; "
                f"materialise the model (e.g. model.to_empty(device='cpu')) before saving"
            )
        key = (str(t.device), t.untyped_storage().data_ptr())
        # safetensors refuses tensors that share memory: copy every later sharer
        shared = bool(t.numel()) and key in seen
        seen.add(key)
        t = t.to("cpu", copy=copy or shared).contiguous()
        out[name] = t
    return out


def _hash_and_sync(path: Path) -> tuple[int, str]:
    """fsync a freshly written file; return its size and SHA-256 (read from page cache)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        os.fsync(f.fileno())
        f.seek(0)
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)  # releases the GIL
        size = f.tell()
    return size, digest.hexdigest()


def _model_tensors(model: torch.nn.Module) -> tuple[dict, dict[str, str], dict]:
    """(unique tensors, {alias: name of the saved copy}, non-tensor extra state)."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    extra: dict[str, Any] = {}
    first: dict[tuple, str] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if not isinstance(t, torch.Tensor):  # a module's get_extra_state()
            extra[name] = t
            continue
        t = t.detach()
        if t.numel() and t.device.type != "meta":
            storage = t.untyped_storage().data_ptr()
            view = (t.device, storage, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
            if view in first:  # the same tensor under a second name: tied weights
                aliases[name] = first[view]
                continue
            first[view] = name
        tensors[name] = t
    return tensors, aliases, extra


def _temp_name(final: str, token: str) -> str:
    return f"{final}.{token}{_TMP}"


def _finish_pending(directory: Path) -> None:
    """Complete the renames of a save that crashed after its commit; drop orphan temps."""
    meta = _read_json(directory, quiet=True)
    keep = set()
    if meta is not None:
        for entry in meta.get("files", {}).values():
            staged = directory / entry["staged"]
            final = directory / entry["file"]
            if staged.exists():
                if staged.stat().st_size == entry["size"]:
                    os.replace(staged, final)
                else:
                    keep.add(staged.name)
    for path in directory.glob(f"*{_TMP}"):
        if path.name not in keep and path.name.split(".")[0] in ("checkpoint", "optimizer"):
            path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- save


@dataclass
class _Snapshot:
    """A checkpoint taken but not yet written: the tensors of each file (copies when it is
    written later, so training may go on changing them) and the JSON metadata without its
    ``files`` entry."""

    meta: dict[str, Any]
    files: list[tuple[str, str, dict[str, torch.Tensor]]]  # (role, final file name, tensors)


def _snapshot(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    state: Mapping[str, Any],
    rng: bool,
    copy: bool,
) -> _Snapshot:
    weights, aliases, model_extra = _model_tensors(model)
    extra: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "created_at": time.time(),
        "torch": torch.__version__,
        "model_class": type(model).__name__,
        "aliases": aliases,
        "model_extra": _encode(model_extra, extra, "model_extra"),
        "optimizer": None,
        "scheduler": None,
        "rng": None,
    }
    if optimizer is not None:
        meta["optimizer_class"] = type(optimizer).__name__
        meta["optimizer"] = _encode(optimizer.state_dict(), extra, "optimizer")
    if scheduler is not None:
        meta["scheduler_class"] = type(scheduler).__name__
        meta["scheduler"] = _encode(scheduler.state_dict(), extra, "scheduler")
    if rng:
        meta["rng"] = _encode(_rng_state(), extra, "rng")
    meta["state"] = _encode(dict(state), extra, "state")
    # The encoded values are fresh containers of immutable leaves and, with ``copy``, the
    # tensors are copied: nothing in the snapshot changes when training goes on.
    files = [
        ("weights", WEIGHTS_FILE, _cpu_tensors(weights, WEIGHTS_FILE, copy)),
        ("extra", OPTIMIZER_FILE, _cpu_tensors(extra, OPTIMIZER_FILE, copy)),
    ]
    return _Snapshot(meta, files)


def _write(directory: Path, snap: _Snapshot) -> None:
    """Write a snapshot into ``directory`` by the commit protocol of the module docstring."""
    from safetensors.torch import save_file

    _finish_pending(directory)
    token = f"{os.getpid()}-{os.urandom(4).hex()}"
    meta = {**snap.meta, "files": {}}
    written: list[Path] = []
    renames: list[tuple[Path, Path]] = []
    try:
        for role, final, tensors in snap.files:
            staged = directory / _temp_name(final, token)
            written.append(staged)
            save_file(tensors, str(staged), metadata={"format": FORMAT, "role": role})
            size, sha = _hash_and_sync(staged)
            meta["files"][role] = {
                "file": final,  # where the bytes end up
                "staged": staged.name,  # where they are until the renames after the commit
                "size": size,
                "sha256": sha,
            }
            renames.append((staged, directory / final))
        # Compact JSON: the C encoder (indent= would fall back to the pure-Python one).
        text = json.dumps(meta, separators=(",", ":"), allow_nan=False)
        staged_json = directory / _temp_name(CHECKPOINT_JSON, token)
        written.append(staged_json)
        _write_synced(staged_json, text.encode("utf-8"))
        _fsync_dir(directory)  # the staged tensor files exist before the JSON names them
        os.replace(staged_json, directory / CHECKPOINT_JSON)  # <- the commit point
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    # The commit is on disk before any final name is replaced: otherwise a crash could keep
    # the old JSON next to renamed (new) tensor files.
    _fsync_dir(directory)
    # After the commit, a failure here is harmless: the JSON names the staged files too, and
    # the next save (or load) finds them. So the renames need no fsync of their own.
    for staged, final in renames:
        os.replace(staged, final)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(
    directory: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any = None,
    state: Mapping[str, Any],
    rng: bool = True,
) -> Path:
    """Save model, optimizer, scheduler, RNG states and trainer ``state`` atomically.

    ``state`` holds JSON-able values (tuples, bytes, tensors and numpy arrays are kept as
    such). Returns ``directory`` once the checkpoint is on disk. One writer per folder at a
    time; `CheckpointWriter` writes from a background thread instead.

    >>> import tempfile, torch
    >>> d = save_checkpoint(tempfile.mkdtemp(), model=torch.nn.Linear(2, 2), optimizer=None, state={})
    >>> has_checkpoint(d)
    True
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write(directory, _snapshot(model, optimizer, scheduler, state, rng, copy=False))
    return directory


class CheckpointWriter:
    """Checkpoints of one folder, written by a background thread while training goes on.

    `save` takes the snapshot at once, on the calling thread: the tensors (weights,
    optimizer state, RNG states, tensors in ``state``) are copied into memory and the rest is
    encoded, so what is saved is the state at the call, whatever training does next. The
    writing (files, fsyncs, hashes, the atomic commit) runs on a thread, overlapping the
    next epoch; most of it is I/O that holds no lock, so training barely notices it. At most
    one write is in flight: the next `save`, and `wait`, join it first; `close` also ends
    the worker thread (kept between saves: starting a thread waits for the OS to schedule
    it). A crash or SIGKILL
    while a write is in flight leaves the previous checkpoint whole (the commit protocol of
    the module docstring); a write that failed raises its error from the next `save` or
    `wait`. While a write is in flight the process holds one more copy of the model and
    optimizer state in memory. ``background=False`` writes inside `save`, as
    `save_checkpoint` does.

    >>> import tempfile, torch
    >>> model = torch.nn.Linear(2, 1)
    >>> writer = CheckpointWriter(tempfile.mkdtemp())
    >>> writer.save(model=model, optimizer=None, state={"epoch": 1})
    >>> with torch.no_grad():
    ...     _ = model.weight.add_(1.0)  # training goes on; the checkpoint keeps the old weights
    >>> writer.close()
    >>> saved = torch.nn.Linear(2, 1)
    >>> load_checkpoint(writer.directory, model=saved)["epoch"]
    1
    >>> bool(torch.equal(saved.weight + 1.0, model.weight))
    True
    """

    def __init__(self, directory: str | Path, *, background: bool = True):
        self.directory = Path(directory)
        self.background = background
        self._pool: ThreadPoolExecutor | None = None  # one worker thread, kept between saves
        self._pending: Future | None = None

    def save(
        self,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Any = None,
        state: Mapping[str, Any],
        rng: bool = True,
    ) -> None:
        """Snapshot now; write in the background (after the write in flight, if any)."""
        self.wait()
        snap = _snapshot(model, optimizer, scheduler, state, rng, copy=self.background)
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.background:
            _write(self.directory, snap)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archlab-checkpoint")
        self._pending = self._pool.submit(_write, self.directory, snap)

    @property
    def writing(self) -> bool:
        """True while a background write is in flight."""
        return self._pending is not None and not self._pending.done()

    def wait(self, *, reraise: bool = True) -> None:
        """Block until the write in flight (if any) is on disk; raise the error it met.

        With ``reraise=False`` the error is dropped (for clean-up while another error is
        already on its way)."""
        pending, self._pending = self._pending, None
        error = pending.exception() if pending is not None else None
        if error is not None and reraise:
            raise error

    def close(self, *, reraise: bool = True) -> None:
        """`wait`, then end the worker thread (a later `save` starts another)."""
        try:
            self.wait(reraise=reraise)
        finally:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=True)


def _rng_state() -> dict[str, Any]:
    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),  # uint8 tensor -> optimizer.safetensors
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],  # plain JSON
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        n = min(len(cuda), torch.cuda.device_count())
        torch.cuda.set_rng_state_all([t.cpu() for t in cuda[:n]])


# ----------------------------------------------------------------------------- load


def _damaged(path: Path, detail: str) -> StoreError:
    names = ", ".join(CHECKPOINT_FILES)
    return StoreError(
        f"{path}: the checkpoint is damaged ({detail}); delete the checkpoint files ({names}) "
        f"in {path.parent} and train the run again from scratch, or restore them from a backup"
    )


def _read_json(directory: Path, quiet: bool = False) -> dict | None:
    """The checkpoint's metadata, checked for shape; None when missing (or, with ``quiet``,
    unreadable). Read only from a regular file of at most MAX_JSON_BYTES, never a link."""
    path = directory / CHECKPOINT_JSON
    try:
        meta = json.loads(read_text(path, limit=MAX_JSON_BYTES))
        _check_meta(meta)
        return meta
    except FileNotFoundError:
        if quiet:
            return None
        raise StoreError(
            f"{path}: no checkpoint here (file missing); save one first or point at the "
            f"run folder that holds {CHECKPOINT_JSON}"
        ) from None
    except StoreError:  # a link, a FIFO, too large, not UTF-8: already one line
        if quiet:
            return None
        raise
    except _Newer as exc:
        if quiet:
            return None
        raise StoreError(
            f"{path}: written by a newer archlab, or damaged ({exc}); upgrade archlab, or "
            f"delete the checkpoint files ({', '.join(CHECKPOINT_FILES)}) and train the run "
            f"again from scratch"
        ) from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and _Damaged included
        if quiet:
            return None
        raise _damaged(path, str(exc)) from None


class _Newer(ValueError):
    pass


def _check_meta(meta: Any) -> None:
    """Raise _Damaged (or _Newer) unless ``meta`` has the shape save_checkpoint writes."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _Damaged(f"not an {FORMAT} file")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _Damaged(f"version: expected a positive integer. Received: {version!r:.40}")
    if version > VERSION:
        raise _Newer(f"checkpoint version {version}; this archlab reads up to {VERSION}")
    files = meta.get("files")
    if not isinstance(files, dict) or set(files) != {"weights", "extra"}:
        raise _Damaged("files: expected the entries 'weights' and 'extra'")
    for role, entry in files.items():
        if not isinstance(entry, dict):
            raise _Damaged(f"files.{role}: expected an object")
        for key in ("file", "staged"):
            name = entry.get(key)
            if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
                raise _Damaged(f"files.{role}.{key}: expected a file name without folders. "
                               f"Received: {name!r:.60}")
        size, sha = entry.get("size"), entry.get("sha256")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _Damaged(f"files.{role}.size: expected a byte count. Received: {size!r:.40}")
        if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
            raise _Damaged(f"files.{role}.sha256: expected 64 hex digits. Received: {sha!r:.40}")
    aliases = meta.get("aliases")
    if not isinstance(aliases, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
    ):
        raise _Damaged(f"aliases: expected an object of parameter names. Received: {aliases!r:.40}")
    if not isinstance(meta.get("state"), dict):
        raise _Damaged(f"state: expected an object. Received: {meta.get('state')!r:.40}")
    for part in ("optimizer", "scheduler"):
        if meta.get(part) is not None and not isinstance(meta.get(f"{part}_class"), str):
            raise _Damaged(f"{part}_class: expected the class name of the saved {part}")


def _locate(directory: Path, entry: Mapping[str, Any], verify: bool) -> Path | None:
    """The file holding ``entry``'s bytes: its final name, or the staged one after a crash.
    Only a regular file (never a link, FIFO or device) of the recorded size counts."""
    for name in (entry["file"], entry["staged"]):
        path = directory / name
        try:
            info = path.lstat()
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_size != entry["size"]:
            continue
        if not verify or _hash_regular(path) == entry["sha256"]:
            return path
    return None


def _hash_regular(path: Path) -> str | None:
    try:
        fd = open_regular(path)
    except (OSError, StoreError):
        return None
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def has_checkpoint(directory: str | Path) -> bool:
    """Whether ``directory`` holds a checkpoint: False if it has none (no checkpoint.json),
    True if it has a complete one; a damaged one (unreadable or tampered JSON, a tensor file
    missing or of the wrong size) is a one-line StoreError saying so and what to do.

    >>> has_checkpoint("/nonexistent")
    False
    """
    directory = Path(directory)
    meta = _read_json(directory, quiet=False) if (directory / CHECKPOINT_JSON).exists() or (
        directory / CHECKPOINT_JSON).is_symlink() else None
    if meta is None:
        return False
    for entry in meta["files"].values():
        if _locate(directory, entry, verify=False) is None:
            final = directory / entry["file"]
            raise _damaged(directory / CHECKPOINT_JSON, f"{final.name} is missing or not the "
                           f"{entry['size']:,} bytes it names")
    return True


def load_checkpoint(
    directory: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    restore_rng: bool = True,
    map_location: str | torch.device = "cpu",
    state_like: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Load a checkpoint into ``model`` (and ``optimizer``, ``scheduler``, RNGs); return the
    trainer ``state`` saved with it, its tensors on ``map_location``.

    Files missing, truncated or altered, metadata that cannot be what ``save_checkpoint``
    wrote (tampered or truncated JSON, a dangling tensor reference, an RNG state of the wrong
    size, an optimizer hyperparameter of the wrong type), weights that do not fit the model,
    and a missing or different optimizer/scheduler raise a one-line StoreError before
    anything is changed. With ``state_like`` (e.g. the state a fresh trainer would save),
    every key of it must be in the saved state with a value of the same kind (a number, a
    list, an object, ...; a None there accepts anything).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = _read_json(directory)
    assert meta is not None
    json_path = directory / CHECKPOINT_JSON
    loaded: dict[str, dict[str, torch.Tensor]] = {}
    for role, entry in meta["files"].items():
        path = _locate(directory, entry, verify=True)
        if path is None:
            final = directory / entry["file"]
            found = f"{final.stat().st_size} bytes" if final.exists() else "missing"
            raise StoreError(
                f"{final}: does not match {json_path} (expected {entry['size']} bytes with "
                f"sha256 {entry['sha256'][:12]}..., found {found}: truncated, altered or from "
                f"another save); delete the checkpoint folder and train from scratch"
            )
        try:
            loaded[role] = load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise StoreError(
                f"{path}: cannot read tensors ({exc}); delete the checkpoint folder and "
                f"train from scratch"
            ) from None
    weights, extra = loaded["weights"], loaded["extra"]

    # Decode and check everything first, so that a damaged or mismatched checkpoint
    # changes nothing.
    try:
        for alias, name in meta["aliases"].items():
            if name not in weights:
                raise _Damaged(f"aliases.{alias}: names {name!r}, which is not in the weights")
            weights[alias] = weights[name]
        model_extra = _decode(meta.get("model_extra") or {}, extra, "model_extra")
        if not isinstance(model_extra, dict):
            raise _Damaged("model_extra: expected an object")
        weights.update(model_extra)
        parts = {part: _decode(meta.get(part), extra, part) for part in ("optimizer", "scheduler")}
        rng = _decode(meta.get("rng"), extra, "rng") if restore_rng else None
        state = _decode(meta["state"], extra, "state")
        if state_like is not None:
            _check_like(state, state_like, "state")
        if optimizer is not None and parts["optimizer"] is not None:
            _check_optimizer(parts["optimizer"], optimizer.state_dict())
        if rng is not None:
            _check_rng(rng)
    except _Damaged as exc:
        raise _damaged(json_path, str(exc)) from None
    _check_fits(model, weights, directory / meta["files"]["weights"]["file"])
    for part, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is None:
            continue
        if meta.get(part) is None:
            raise StoreError(
                f"{json_path}: has no {part} state; pass {part}=None to load_checkpoint, or "
                f"save with the {part}"
            )
        saved = meta.get(f"{part}_class")
        if saved != type(obj).__name__:
            raise StoreError(
                f"{json_path}: {part} state is for {saved}, received a {type(obj).__name__}; "
                f"build the same {part} the run was saved with"
            )

    model.load_state_dict(weights, strict=True)
    _retie(model, meta["aliases"])
    try:
        if optimizer is not None:
            optimizer.load_state_dict(parts["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(parts["scheduler"])
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError) as exc:
        raise StoreError(
            f"{json_path}: optimizer or scheduler state does not fit ({exc}); build them "
            f"over the same parameters as the saved run"
        ) from None
    if rng is not None:
        _set_rng_state(rng)
    return state


_NUMBER = (int, float)


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, _NUMBER):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, torch.Tensor):
        return "a tensor"
    return type(value).__name__


def _check_like(saved: Any, like: Any, where: str) -> None:
    """``saved`` has the kind of ``like`` (recursively for objects); None in ``like`` accepts
    anything, and a number accepts an integer or a float."""
    if like is None:
        return
    if isinstance(like, Mapping):
        if not isinstance(saved, Mapping):
            raise _Damaged(f"{where}: expected an object. Received: {saved!r:.40}")
        for key, value in like.items():
            if key not in saved:
                raise _Damaged(f"{where}.{key}: missing")
            _check_like(saved[key], value, f"{where}.{key}")
        return
    if _kind(saved) != _kind(like) and not (isinstance(like, torch.Tensor) and saved is None):
        raise _Damaged(f"{where}: expected {_kind(like)}. Received: {saved!r:.40}")


def _check_optimizer(saved: Any, current: Mapping[str, Any]) -> None:
    """The saved optimizer state has the current one's structure and hyperparameter kinds."""
    if not isinstance(saved, Mapping) or not isinstance(saved.get("state"), Mapping) or not (
        isinstance(saved.get("param_groups"), list)
    ):
        raise _Damaged("optimizer: expected an object with 'state' and 'param_groups'")
    for i, (group, now) in enumerate(zip(saved["param_groups"], current["param_groups"], strict=False)):
        if not isinstance(group, Mapping):
            raise _Damaged(f"optimizer.param_groups[{i}]: expected an object")
        for key, value in now.items():
            if key == "params" or key not in group:
                continue
            old = group[key]
            if isinstance(value, torch.Tensor) or isinstance(old, torch.Tensor):
                continue  # a tensor learning rate (capturable optimizers)
            if _kind(old) != _kind(value) and value is not None and old is not None:
                raise _Damaged(f"optimizer.param_groups[{i}].{key}: expected {_kind(value)} "
                               f"(as {type(value).__name__}). Received: {old!r:.40}")
            if isinstance(value, tuple) and not all(isinstance(v, _NUMBER) for v in old):
                raise _Damaged(f"optimizer.param_groups[{i}].{key}: expected numbers. "
                               f"Received: {old!r:.40}")
    for key, per_param in saved["state"].items():
        if not isinstance(per_param, Mapping):
            raise _Damaged(f"optimizer.state.{key}: expected an object")
        for name, value in per_param.items():
            if not isinstance(value, torch.Tensor | int | float) or isinstance(value, bool):
                raise _Damaged(f"optimizer.state.{key}.{name}: expected a tensor or a number. "
                               f"Received: {value!r:.40}")


def _check_rng(rng: Any) -> None:
    """Try the RNG states on, then put the current ones back: a state of the wrong size or
    type is found before anything else changed."""
    import numpy as np

    if not isinstance(rng, Mapping) or not all(k in rng for k in ("torch", "python", "numpy")):
        raise _Damaged("rng: expected the 'torch', 'python' and 'numpy' states")
    t = rng["torch"]
    if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.shape != torch.get_rng_state().shape:
        raise _Damaged(f"rng.torch: expected a uint8 tensor of {torch.get_rng_state().numel()} bytes")
    numpy_state = rng["numpy"]
    if not (isinstance(numpy_state, list) and len(numpy_state) == 5 and isinstance(numpy_state[1], list)
            and len(numpy_state[1]) == len(np.random.get_state()[1])):
        raise _Damaged("rng.numpy: expected [kind, keys, pos, has_gauss, cached] with 624 keys")
    cuda = rng.get("cuda")
    if cuda is not None and not (
        isinstance(cuda, list) and all(isinstance(x, torch.Tensor) and x.dtype == torch.uint8 for x in cuda)
    ):
        raise _Damaged("rng.cuda: expected a list of uint8 tensors")
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state())
    try:
        torch.set_rng_state(t.cpu())
        random.setstate(rng["python"])
        kind, keys, pos, has_gauss, cached = numpy_state
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    except (TypeError, ValueError, RuntimeError, OverflowError, IndexError, KeyError) as exc:
        raise _Damaged(f"rng: not a state this Python, NumPy and torch accept ({exc})") from None
    finally:
        torch.set_rng_state(before[0])
        random.setstate(before[1])
        np.random.set_state(before[2])


def _check_fits(model: torch.nn.Module, weights: Mapping[str, Any], path: Path) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = sorted(k for k in weights if k not in expected)
    shapes = []
    for k, v in expected.items():
        w = weights.get(k)
        if isinstance(v, torch.Tensor) and isinstance(w, torch.Tensor) and w.shape != v.shape:
            shapes.append(f"{k}: checkpoint {tuple(w.shape)} vs model {tuple(v.shape)}")
    if not (missing or unexpected or shapes):
        return

    def first(items: list[str]) -> str:
        more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
        return ", ".join(items[:3]) + more

    problems = [
        f"{label} [{first(items)}]"
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", shapes),
        )
        if items
    ]
    raise StoreError(
        f"{path}: weights do not fit {type(model).__name__}: {'; '.join(problems)}; load it "
        f"into a model built from the same spec it was saved with"
    )


def _retie(model: torch.nn.Module, aliases: Mapping[str, str]) -> None:
    """Make parameters that were one tensor at save time one tensor again."""
    for alias, name in aliases.items():
        target = model.get_parameter(name) if _is_param(model, name) else None
        if target is None or not _is_param(model, alias):
            continue  # buffers: values were copied, nothing to tie
        owner_name, _, attr = alias.rpartition(".")
        owner = model.get_submodule(owner_name)
        if getattr(owner, attr) is not target:
            setattr(owner, attr, target)


def _is_param(model: torch.nn.Module, name: str) -> bool:
    try:
        model.get_parameter(name)
        return True
    except AttributeError:
        return False
