"""TensorBoard event files for a run, written beside its checkpoints:

    tensorboard --logdir archlab-runs/runs      # every run, named by its id

Each epoch's metrics are scalars at step = epoch (the names the run store uses:
`train_loss`, `val_acc`, `lr`, ...), stored as float64 so they equal the store's values
exactly; the spec (YAML) and the settings (a table) are text at step 0. No server, no
TensorFlow: the `tensorboard` package's writer (through `torch.utils.tensorboard`) does it.

tensorboard is optional (`pip install archlab[tensorboard]`): without it a run trains as
before and says once per process that it wrote no event files.

A resumed run appends a new event file to the same folder. It starts with a purge marker
at its first epoch, so the epochs an interrupted process had written after its last
checkpoint (they are trained again) are dropped by TensorBoard: every epoch shows once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

_MISSING_NOTED = False  # the missing-package note is printed once per process


def _writer_class() -> Any:
    """SummaryWriter; ImportError when the tensorboard package is not installed."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter


def has_events(directory: Path) -> bool:
    """Whether a run's folder already holds TensorBoard event files (the run is resumed)."""
    return any(directory.glob("events.out.tfevents.*"))


def _settings_table(settings: Mapping[str, Any]) -> str:
    rows = "\n".join(f"| {key} | {value} |" for key, value in settings.items())
    return "| setting | value |\n|---|---|\n" + rows


def _code_block(text: str) -> str:
    """Markdown code: TensorBoard renders text summaries as markdown."""
    return "\n".join("    " + line for line in text.splitlines())


class TensorBoardLog:
    """One run's TensorBoard log: open at run start, `epoch(record)` at each epoch end, close.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with TensorBoardLog(folder, first_epoch=1, spec="name: x", settings={"lr": 0.1}) as log:
    ...     log.epoch({"epoch": 1, "train_loss": 0.5, "val_loss": 0.6})
    ...     written = log.enabled     # False only without the tensorboard package
    >>> has_events(folder) == written
    True
    """

    def __init__(self, directory: Path, *, first_epoch: int, spec: str = "",
                 settings: Mapping[str, Any] | None = None,
                 note: Callable[[str], None] | None = None):
        self.directory = Path(directory)
        self._writer: Any = None
        try:
            writer_class = _writer_class()
        except Exception as e:  # absent (ImportError), or broken (e.g. a protobuf it cannot use)
            global _MISSING_NOTED
            if note is not None and not _MISSING_NOTED:
                why = ("tensorboard is not installed" if isinstance(e, ImportError)
                       else f"tensorboard cannot be imported ({type(e).__name__}: {e})")
                note(f"note: {why}, so runs write no TensorBoard event files; "
                     f"`pip install tensorboard` to get them")
            _MISSING_NOTED = True
            return
        resumed = has_events(self.directory)
        # purge_step writes a session-start marker at that step. TensorBoard takes the first
        # marker of a run as its start and each later one as a restart, hiding what earlier
        # files logged at steps >= it: the epochs logged after the checkpoint resumed from.
        self._writer = writer_class(log_dir=str(self.directory),
                                    purge_step=first_epoch if resumed else 0)
        if not resumed:
            self._writer.add_text("spec", _code_block(spec), global_step=0)
            self._writer.add_text("settings", _settings_table(settings or {}), global_step=0)
            self._writer.flush()

    @property
    def enabled(self) -> bool:
        """Whether event files are written (False when tensorboard is not installed)."""
        return self._writer is not None

    def epoch(self, record: Mapping[str, float]) -> None:
        """Log one finished epoch: every metric of `record` at step `record["epoch"]`."""
        if self._writer is None:
            return
        step = int(record["epoch"])
        for name, value in record.items():
            if name != "epoch":
                self._writer.add_scalar(name, float(value), global_step=step, new_style=True,
                                        double_precision=True)
        self._writer.flush()  # the epoch is on disk before its checkpoint is taken

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
