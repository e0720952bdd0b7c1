"""Knowledge distillation as a task of the one training loop (Hinton et al., 2015).

A run whose settings name a `teacher` (a finished run in the same store) trains its student
with the student's own task (classify or language_model), whose training step adds what the
teacher knows:

    loss = alpha * KD + (1 - alpha) * CE
    KD   = T² · KL(softmax(teacher / T) || softmax(student / T))    (mean per sample / token)

`alpha` weighs the teacher's side (1: the soft targets alone, 0: the labels alone); T² keeps
the KD gradients on the scale of the CE ones whatever the temperature. The teacher is frozen
and in eval mode; its logits are computed for every batch under no_grad, on the very batch
the student sees (after augmentation, so random crops and flips need no cache), which also
keeps a mid-epoch resume bit-exact: the teacher is reloaded from the store and is a pure
function of the batch. Validation and test passes are the student task's own (accuracy, CE).

The student's epochs log `train_loss` (the CE part: comparable with `val_loss`) and
`train_kd`; the loss the step optimises and checks for divergence is the mixed one.
The teacher's forward costs time on every step (2.9x a 128-unit MLP's run with a zoo:cnn
teacher, bench/distill.py) and memory that the pre-run memory check does not count.
A teacher that cannot teach this student is refused before the run is recorded: a task
other than classify or language_model, a different task, inputs that do not fit the data
(by name, shape and dtype; `archlab.train._inputs_fit`), an embedding too small for the
data's token ids, or another number of classes (or vocabulary).

    fit("spec.yaml", data="digits", teacher="r20260101-abcd", kd_temperature=4, kd_alpha=0.9)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core import SpecError, StoreError, TrainingError, thaw
from ..data import DataInfo, Dataset
from ..model import build
from ..runs import BEST_WEIGHTS, SQLiteRunStorage
from ..spec import Spec
from ._checkpoint import has_checkpoint, load_checkpoint
from ._inputs_fit import check_inputs_fit
from ._optim import StepContext
from ._settings import TrainSettings
from ._tasks import Task

# Defaults, chosen on digits by bench/distill.py (see there): T = 4 as in Hinton's paper and
# most KD recipes; alpha = 0.9 leans on the soft targets, which carry the teacher's knowledge
# of which wrong classes are close.
KD_TEMPERATURE = 4.0
KD_ALPHA = 0.9

# Tasks whose outputs are logits over classes (per sample, or per position for a language model).
DISTILLABLE = ("classify", "language_model")


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(teacher / T) || softmax(student / T)), averaged over samples (and positions).

    Logits are (B, C) or (B, T, C); a single logit (binary classification) is read as the
    two-class logits (0, z), whose softmax is (1 - sigmoid(z), sigmoid(z)).

    >>> z = torch.tensor([[2.0, 0.0, -1.0]])
    >>> float(distillation_loss(z, z, 4.0))
    0.0
    """
    if student.shape[-1] == 1:
        student = torch.cat([torch.zeros_like(student), student], dim=-1)
        teacher = torch.cat([torch.zeros_like(teacher), teacher], dim=-1)
    classes = student.shape[-1]
    s = F.log_softmax(student.reshape(-1, classes) / temperature, dim=-1)
    t = F.log_softmax(teacher.reshape(-1, classes) / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def load_teacher(store: SQLiteRunStorage, run_id: str) -> tuple[nn.Module, Any]:
    """A finished run's model with its best (else last) weights, frozen and in eval mode, on CPU."""
    try:
        record = store.get_run(run_id)
    except StoreError as e:
        raise StoreError(f"teacher {run_id}: {e}") from None
    if record.status != "finished":
        raise TrainingError(f"teacher {record.run_id}: a teacher must be a finished run. Received: a run with status "
                            f"{record.status!r}; finish it first (`archlab train --resume {record.run_id}`)")
    net = build(Spec.from_dict(thaw(record.spec)), seed=0)
    directory = store.run_dir(record.run_id)
    best = directory / BEST_WEIGHTS
    if best.exists():
        from safetensors.torch import load_model

        try:
            load_model(net, str(best))
        except Exception as e:  # safetensors raises plain errors for truncated or foreign files
            raise StoreError(f"teacher {record.run_id}: cannot load {best} ({type(e).__name__}: {e})") from None
    elif has_checkpoint(directory):
        load_checkpoint(directory, model=net, restore_rng=False)
    else:
        raise StoreError(f"teacher {record.run_id}: has no saved weights in {directory}")
    net.eval()
    net.requires_grad_(False)
    return net, record


class Distill(Task):
    """The student's task (`base`), whose training step also learns from a frozen teacher.

    Everything but `train_step` and the training summary is the base task's, so a distilled
    run is recorded, evaluated, ranked and compared as any run of its task."""

    def __init__(self, base: Task, teacher: nn.Module, teacher_id: str, temperature: float = KD_TEMPERATURE,
                 alpha: float = KD_ALPHA):
        super().__init__(base.num_classes, base.vocab_size)
        self.base, self.teacher, self.teacher_id = base, teacher, teacher_id
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.name, self.primary, self.mode = base.name, base.primary, base.mode
        self.has_report, self.validates, self.options = base.has_report, base.validates, base.options

    # -- the base task's, unchanged

    def adapt_spec(self, spec: Spec, dataset: Dataset) -> Spec:
        return self.base.adapt_spec(spec, dataset)

    def data_vars(self, dataset: Dataset) -> dict[str, Any]:
        return self.base.data_vars(dataset)

    def check_settings(self, s: TrainSettings, info: DataInfo) -> None:
        self.base.check_settings(s, info)

    def configure_optimizers(self, net: nn.Module, s: TrainSettings) -> list[torch.optim.Optimizer]:
        return self.base.configure_optimizers(net, s)  # the student's parameters only

    def evaluate(self, model: nn.Module, split: Any, **kwargs: Any) -> tuple[dict[str, float], dict[str, Any]]:
        return self.base.evaluate(model, split, **kwargs)

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.base.forward(model, x, y)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.base.loss(out, y)

    def stats(self, out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        return self.base.stats(out, y, loss)

    def report(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        return self.base.report(out, y)

    def better(self, a: float, b: float | None) -> bool:
        return self.base.better(a, b)

    # -- what distillation adds

    def check_output(self, shape: tuple[int, ...]) -> None:
        self.base.check_output(shape)
        theirs = tuple(self.teacher.output_shape)
        if tuple(shape) != theirs:
            raise SpecError(f"teacher {self.teacher_id} outputs {theirs} logits per sample; the student "
                            f"outputs {tuple(shape)}: distillation needs the same classes on both sides. "
                            f"Received: student output {tuple(shape)}; end the student with the teacher's "
                            f"`linear: $num_classes` (or distil on the teacher's data)")

    def train_step(self, ctx: StepContext, batch: tuple[torch.Tensor, torch.Tensor],
                   optimizers: Sequence[torch.optim.Optimizer]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        teacher = self._teacher_on(x.device)
        with torch.no_grad(), ctx.autocast():
            soft = self.base.forward(teacher, x, y).float()
        with ctx.autocast():
            out = self.base.forward(ctx.model, x, y)
        out = out.float()
        ce = self.base.loss(out, y)
        kd = distillation_loss(out, soft, self.temperature)
        loss = self.alpha * kd + (1.0 - self.alpha) * ce
        ctx.update(loss, optimizers[0])
        sums = self.base.stats(out.detach(), y, ce)
        return loss, torch.cat([sums, (kd.detach() * y.shape[0]).reshape(1)])

    def summarize(self, sums: torch.Tensor, n: int) -> dict[str, float]:
        """Training sums: the base task's, then the KD term (evaluation uses the base's own)."""
        return {**self.base.summarize(sums[:-1], n), "kd": float(sums[-1]) / n}

    def _teacher_on(self, device: torch.device) -> nn.Module:
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        return self.teacher


def distill_task(base: Task, settings: TrainSettings, info: DataInfo, store: SQLiteRunStorage
                 ) -> tuple[Distill, TrainSettings]:
    """The distillation task for a run whose settings name a teacher, and the settings as they
    are recorded (the teacher's full id, T and alpha filled in). Refuses a teacher that cannot
    teach this student (one line) before anything is recorded."""
    assert settings.teacher is not None
    teacher, record = load_teacher(store, settings.teacher)
    theirs = record.tags.get("task")
    if base.name not in DISTILLABLE:
        raise SpecError(f"teacher={record.run_id}: distillation needs a classification task "
                        f"({', '.join(DISTILLABLE)}). Received: a {base.name} student; train it without a teacher")
    if theirs != base.name:
        raise SpecError(f"teacher {record.run_id}: is a {theirs or 'untagged'} run; this student's task is "
                        f"{base.name}. Received: teacher task {theirs!r}; distil from a {base.name} run")
    # The teacher sees every batch the student sees: its inputs by name, shape and dtype, and
    # its embeddings' vocabularies, must fit this data as well as the student's do.
    check_inputs_fit(teacher, info, where=f"teacher {record.run_id} on data {info.name}",
                     fix=f"distil on data the teacher reads, e.g. its own ({record.data})")
    settings = dataclasses.replace(
        settings, teacher=record.run_id,
        kd_temperature=KD_TEMPERATURE if settings.kd_temperature is None else settings.kd_temperature,
        kd_alpha=KD_ALPHA if settings.kd_alpha is None else settings.kd_alpha)
    task = Distill(base, teacher, record.run_id, settings.kd_temperature, settings.kd_alpha)
    return task, settings
