"""The names of every file in a run store, and the only way the store reads and writes them.

Layout under the store's root::

    <root>/archlab.db                 the records (SQLite, WAL mode)
    <root>/studies.journal            search studies (an Optuna journal)
    <root>/runs/<run_id>/             one run's artifacts:
        spec.yaml                     the spec as trained (vars resolved)
        tokenizer.json                text runs: the tokenizer, for `archlab generate`
        preprocessing.json            what a new input needs (scaling, csv encodings), for `archlab predict`
        checkpoint.json               the last checkpoint: metadata, trainer state, hashes
        checkpoint.safetensors        ... its model weights
        optimizer.safetensors         ... every other tensor (optimizer state, RNG)
        best.safetensors              the weights of the kept (best-validation) epoch
        test_report.json              test-time extras (confusion matrix, per-class accuracy)
        fold.json                     cross-validation runs: which fold this run trained on
        .lock                         held (flock) by the one process training the run

The store never trusts its own files. It reads only regular files, never through a
symbolic link, and at most :data:`MAX_JSON_BYTES` of JSON (a link to ``/dev/zero`` or a FIFO
is refused at once instead of read forever); it writes by replacing a file atomically (a
link in its place is replaced, never written through). A file that breaks these rules is a
one-line :class:`~archlab.core.StoreError` that names it and says what to do.

>>> import tempfile
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> write_text(folder / TEST_REPORT, '{"confusion": [[1]]}')
>>> read_json(folder / TEST_REPORT)
{'confusion': [[1]]}
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from ..core import StoreError

__all__ = [
    "BEST_WEIGHTS",
    "CHECKPOINT_FILES",
    "CHECKPOINT_JSON",
    "CHECKPOINT_OPTIMIZER",
    "CHECKPOINT_WEIGHTS",
    "DB_FILE",
    "FOLD_FILE",
    "LOCK_FILE",
    "MAX_JSON_BYTES",
    "PREPROCESSING_FILE",
    "QUANTIZED_META",
    "QUANTIZED_WEIGHTS",
    "RUNS_FOLDER",
    "SPEC_FILE",
    "STUDIES_JOURNAL",
    "TEST_REPORT",
    "TOKENIZER_FILE",
    "open_regular",
    "read_bytes",
    "read_json",
    "read_text",
    "write_text",
]

DB_FILE = "archlab.db"
STUDIES_JOURNAL = "studies.journal"
RUNS_FOLDER = "runs"

SPEC_FILE = "spec.yaml"
TOKENIZER_FILE = "tokenizer.json"
PREPROCESSING_FILE = "preprocessing.json"
# A quantized run (archlab compress --quantize): its int8/fp16/bf16 weights and how to rebuild them.
QUANTIZED_WEIGHTS = "quantized.safetensors"
QUANTIZED_META = "quantized.json"
CHECKPOINT_JSON = "checkpoint.json"
CHECKPOINT_WEIGHTS = "checkpoint.safetensors"
CHECKPOINT_OPTIMIZER = "optimizer.safetensors"
CHECKPOINT_FILES = (CHECKPOINT_JSON, CHECKPOINT_WEIGHTS, CHECKPOINT_OPTIMIZER)
BEST_WEIGHTS = "best.safetensors"
TEST_REPORT = "test_report.json"
FOLD_FILE = "fold.json"
LOCK_FILE = ".lock"

# The largest JSON artifact read (checkpoint.json of a long run holds every epoch's metrics:
# ~70 bytes a metric; 64 MiB is far above any real one and far below a memory problem).
MAX_JSON_BYTES = 64 * 2**20

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def open_regular(path: str | os.PathLike, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """Open ``path`` (a file descriptor) only if it is a regular file and not a symbolic link.

    Non-blocking, so a FIFO cannot hang the open; the descriptor is blocking again on return.
    ``FileNotFoundError`` passes through (a missing file is the caller's case); everything
    else that is not a plain file is a StoreError.
    """
    path = Path(path)
    try:
        fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK | getattr(os, "O_CLOEXEC", 0), mode)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP or path.is_symlink():
            raise StoreError(
                f"{path}: is a symbolic link; the run store never reads or writes through links "
                f"(they can point outside it). Delete the link, or replace it with the file itself"
            ) from None
        raise StoreError(f"{path}: cannot open ({exc.strerror}); check the file and its permissions") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StoreError(
                f"{path}: is not a regular file ({_kind(info.st_mode)}); the run store reads "
                f"only plain files. Delete it, or replace it with the file itself"
            )
        if _NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return "not a plain file"


def read_bytes(path: str | os.PathLike, *, limit: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; StoreError otherwise."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise StoreError(
            f"{path}: larger than the {limit:,} bytes the run store reads from such a file; "
            f"it is not one archlab wrote: delete it or move it aside"
        )
    return data


def read_text(path: str | os.PathLike, *, limit: int = MAX_JSON_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes; StoreError otherwise."""
    data = read_bytes(path, limit=limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StoreError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                         f"the file is damaged: delete it or restore it from a backup") from None


def read_json(path: str | os.PathLike, *, limit: int = MAX_JSON_BYTES, expect: type = dict) -> Any:
    """Parse a JSON file the store wrote; a StoreError if it is not a ``expect`` (an object).

    ``FileNotFoundError`` passes through, so callers decide what a missing file means.
    """
    text = read_text(path, limit=limit)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise StoreError(f"{path}: damaged JSON ({exc}); delete the file or restore it from a "
                         f"backup") from None
    if not isinstance(value, expect):
        raise StoreError(
            f"{path}: damaged: expected a JSON {'object' if expect is dict else expect.__name__}. "
            f"Received: {type(value).__name__}; delete the file or restore it from a backup"
        )
    return value


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically: a temporary file, then a rename over ``path``.

    The rename replaces whatever was at ``path`` — a symbolic link included — instead of
    writing through it, so a link planted in a run folder never redirects a write.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(3).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
