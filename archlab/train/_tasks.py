"""Tasks: each owns its training step, its optimizers, its loss, metrics and output check.

The one training loop (`archlab.train.Trainer`) asks the task for its optimizers
(`configure_optimizers`) and runs `train_step(ctx, batch, optimizers)` for every batch, as
Lightning's manual optimisation does: a classifier steps one optimizer, a GAN two (D, then
G). A step returns its loss (checked for divergence) and a vector of summed statistics
that stays on the device during an epoch (no sync per step); `summarize` turns the sums
into metrics once per epoch. The primary metric decides early stopping and which epoch's
weights are kept. Tasks are looked up by name in `TASKS` (the VAE and GAN tasks are
registered by archlab.train._generative).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..core import Registry, SpecError
from ..data import DataInfo, Dataset
from ..model import generative_task
from ..spec import Spec
from ._optim import StepContext, autocast, make_optimizer
from ._settings import TrainSettings

TASKS: Registry[type[Task]] = Registry("task", SpecError)


class Task(ABC):
    name: str = ""
    primary: str = ""       # e.g. "acc": reported as val_acc
    mode: str = "max"       # whether a larger primary metric is better
    has_report = False      # whether `report` adds anything (then test outputs are kept)
    validates = True        # False: no validation pass; the last epoch's weights are kept (a GAN)
    options: tuple[str, ...] = ()  # the settings make_task passes to the constructor

    def __init__(self, num_classes: int | None = None, vocab_size: int | None = None):
        self.num_classes = num_classes
        self.vocab_size = vocab_size

    # -- before a run: the spec and settings it trains with

    def adapt_spec(self, spec: Spec, dataset: Dataset) -> Spec:
        """The spec as this data set fills it in: its vars (num_classes, ...) and input shape."""
        info = dataset.info
        return spec.with_vars(self.data_vars(dataset), strict=False).with_input(info.input_shape, info.input_dtype, named=info.named_inputs())

    def data_vars(self, dataset: Dataset) -> dict[str, Any]:
        return dict(dataset.info.vars())

    def check_settings(self, s: TrainSettings, info: DataInfo) -> None:
        """Raise SpecError for settings this task cannot train with (before a run is recorded)."""
        if (s.crop_padding or s.hflip) and info.inputs is not None:
            raise SpecError(f"train: crop_padding/hflip augment one image input; this data set has several inputs "
                            f"({', '.join(info.inputs)}). Received: crop_padding={s.crop_padding}, hflip={s.hflip}; "
                            f"drop them")
        if (s.crop_padding or s.hflip) and info.input_dtype != "float":
            raise SpecError("train: crop_padding/hflip augment images; this data set has token input")

    # -- the training step

    def configure_optimizers(self, net: torch.nn.Module, s: TrainSettings) -> list[torch.optim.Optimizer]:
        """The optimizers `train_step` receives, in this order (the first is the checkpoint's main one)."""
        return [make_optimizer(net, s)]

    def train_step(self, ctx: StepContext, batch: tuple[torch.Tensor, torch.Tensor],
                   optimizers: Sequence[torch.optim.Optimizer]) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on a batch: returns (loss, summed statistics of the batch).

        The default is supervised learning: forward (under autocast), the task's loss, one
        optimizer step."""
        x, y = batch
        if not ctx.plain:
            return self._accumulated_step(ctx, batch, optimizers[0])
        with ctx.autocast():
            out = self.forward(ctx.model, x, y)
            loss = self.loss(out.float(), y)
        ctx.update(loss, optimizers[0])
        return loss, self.stats(out.detach().float(), y, loss)

    def _accumulated_step(self, ctx: StepContext, batch: tuple[torch.Tensor, torch.Tensor],
                          optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        """One update from micro-batches (this rank's part of the global batch, `--accumulate`
        pieces): each loss weighted by its share, gradients reduced across ranks once, one step.
        Returns this rank's share of the global mean loss and its sums."""
        optimizer.zero_grad(set_to_none=True)
        share = sums = None
        for x, y, weight, last in ctx.micro_batches(*batch):
            with ctx.sync(last):
                with ctx.autocast():
                    out = self.forward(ctx.model, x, y)
                    loss = self.loss(out.float(), y)
                ctx.backward(loss * weight)
            if weight:
                part = loss.detach() * weight
                stats = self.stats(out.detach().float(), y, loss)
                share = part if share is None else share + part
                sums = stats if sums is None else sums + stats
        ctx.step(optimizer)
        assert share is not None and sums is not None  # a rank's part is never empty
        return share, sums

    @property
    def own_step(self) -> bool:
        """Whether this task writes its own training step (a VAE, a GAN): then it trains on one
        process without accumulation."""
        return type(self).train_step is not Task.train_step

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, split: Any, *, device: torch.device, precision: str = "fp32",
                 batch_size: int = 1024, seed: int = 0, report: bool = False) -> tuple[dict[str, float], dict[str, Any]]:
        """Metrics of `model` on a split, in eval mode; with `report`, the task's extra results too."""
        was_training = model.training
        model.eval()
        sums, outs = None, []
        try:
            for start in range(0, len(split), batch_size):
                x, y = split.slice(start, start + batch_size)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with autocast(device, precision):
                    out = self.forward(model, x, y)
                out = out.float()
                batch_sums = self.eval_stats(model, out, x, y, self.loss(out, y))
                sums = batch_sums if sums is None else sums + batch_sums
                if report and self.has_report:
                    outs.append(out.cpu())
        finally:
            model.train(was_training)
        if sums is None:
            return {}, {}
        metrics = self.summarize(sums, len(split))
        extra = self.report(torch.cat(outs), split.targets().cpu()) if outs else {}
        return metrics, extra

    def forward(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Run the model on a batch; seq2seq also feeds it the shifted target."""
        return model(x)

    def eval_stats(self, model: torch.nn.Module, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                   loss: torch.Tensor) -> torch.Tensor:
        """Sums for an evaluation batch: by default the same as in training."""
        return self.stats(out, y, loss)

    @abstractmethod
    def check_output(self, shape: tuple[int, ...]) -> None:
        """Raise SpecError if the model's per-sample output cannot serve this task."""

    @abstractmethod
    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def stats(self, out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        """A vector of sums for one batch (first entry: loss * batch size)."""

    @abstractmethod
    def summarize(self, sums: torch.Tensor, n: int) -> dict[str, float]: ...

    def report(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """Extra test-time results (confusion matrix, per-class accuracy). Default: none."""
        return {}

    def better(self, a: float, b: float | None) -> bool:
        if b is None or math.isnan(b):
            return not math.isnan(a)
        return a > b if self.mode == "max" else a < b


@TASKS.register("classify")
class Classify(Task):
    """Cross-entropy over C logits, or binary cross-entropy over one logit when C == 2."""

    name, primary, mode = "classify", "acc", "max"
    has_report = True
    options = ("label_smoothing",)

    def __init__(self, num_classes: int | None = None, vocab_size: int | None = None,
                 label_smoothing: float = 0.0):
        super().__init__(num_classes)
        self.label_smoothing = label_smoothing
        self.binary = False
        self.topk = 5 if (num_classes or 0) > 5 else 0

    def check_output(self, shape: tuple[int, ...]) -> None:
        c = self.num_classes
        if len(shape) != 1 or (shape[0] != c and not (shape[0] == 1 and c == 2)):
            want = f"({c},) logits" + (" or (1,) for binary" if c == 2 else "")
            raise SpecError(f"model output {shape} does not fit {c}-class classification: expected "
                            f"{want}; end the model with `linear: $num_classes`")
        self.binary = shape[0] == 1

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.binary:
            return F.binary_cross_entropy_with_logits(out.squeeze(-1), y.to(out.dtype))
        return F.cross_entropy(out, y, label_smoothing=self.label_smoothing)

    def predict(self, out: torch.Tensor) -> torch.Tensor:
        return (out.squeeze(-1) > 0).long() if self.binary else out.argmax(dim=-1)

    def stats(self, out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        n = y.shape[0]
        correct = (self.predict(out) == y).sum()
        parts = [loss.detach().float() * n, correct.float()]
        if self.topk:
            top = out.topk(self.topk, dim=-1).indices
            parts.append((top == y[:, None]).any(dim=-1).sum().float())
        return torch.stack(parts)

    def summarize(self, sums: torch.Tensor, n: int) -> dict[str, float]:
        s = sums.tolist()
        metrics = {"loss": s[0] / n, "acc": s[1] / n}
        if self.topk:
            metrics[f"top{self.topk}"] = s[2] / n
        return metrics

    def report(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        c = self.num_classes or int(out.shape[-1])
        pred = self.predict(out).cpu()
        y = y.cpu()
        confusion = torch.bincount(y * c + pred, minlength=c * c).reshape(c, c)
        support = confusion.sum(dim=1)
        per_class = (confusion.diagonal().float() / support.clamp(min=1)).tolist()
        return {"confusion": confusion.tolist(), "per_class_acc": per_class}


@TASKS.register("classify_mse")
class ClassifyMSE(Classify):
    """Classification trained on the mean squared error between the model's C outputs and
    one-hot targets, averaged over samples x classes (`F.mse_loss`): the textbook network with
    sigmoid outputs that `archlab scratch` trains by hand (end the model with `sigmoid`).
    Metrics and report are the classifier's; cross-entropy (`classify`) trains better."""

    name = "classify_mse"
    options = ()

    def check_settings(self, s: TrainSettings, info: DataInfo) -> None:
        super().check_settings(s, info)
        if s.label_smoothing:
            raise SpecError(f"train.label_smoothing: applies to cross-entropy, not to task classify_mse. "
                            f"Received: {s.label_smoothing}; drop it or use task classify")

    def check_output(self, shape: tuple[int, ...]) -> None:
        c = self.num_classes
        if len(shape) != 1 or shape[0] != c:
            raise SpecError(f"model output {shape} does not fit classify_mse: expected ({c},) outputs, one per "
                            f"class; end the model with `linear: $num_classes` and `sigmoid`")
        self.binary = False

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(out, F.one_hot(y, out.shape[-1]).to(out.dtype))


@TASKS.register("regress")
class Regress(Task):
    """Mean squared error; reports MAE and R² as well."""

    name, primary, mode = "regress", "r2", "max"

    def check_output(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 1:
            raise SpecError(f"model output {shape} does not fit regression: expected (k,) values; "
                            f"end the model with `linear: 1`")
        self.width = shape[0]

    def _align(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = y.to(out.dtype)
        p = out.squeeze(-1) if y.dim() == 1 and out.dim() == 2 and out.shape[-1] == 1 else out
        if p.shape != y.shape:  # mse_loss would broadcast (B, k) against (B,) without a word
            want = 1 if y.dim() == 1 else tuple(y.shape[1:])
            raise SpecError(f"model output {tuple(out.shape[1:])} does not fit regression targets of "
                            f"{want} value(s) per sample; end the model with `linear: {want}`")
        return p, y

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(*self._align(out, y))

    def stats(self, out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        p, t = self._align(out.float(), y)
        n = y.shape[0]
        return torch.stack([loss.detach().float() * n, (p - t).abs().sum() / max(1, t[0].numel()),
                            ((p - t) ** 2).sum(), t.sum(), (t**2).sum(), torch.tensor(float(t.numel()), device=t.device)])

    def summarize(self, sums: torch.Tensor, n: int) -> dict[str, float]:
        loss_sum, abs_sum, ss_res, t_sum, t_sq, count = sums.tolist()
        ss_tot = t_sq - t_sum**2 / max(count, 1)
        r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
        return {"loss": loss_sum / n, "mae": abs_sum / n, "r2": r2}


@TASKS.register("language_model")
class LanguageModel(Task):
    """Next-token cross-entropy at every position: outputs (T, V) logits, targets (T,) ids.

    Reports loss (nats per token), perplexity, bits per token (bits per character for a
    character-level tokenizer) and next-token accuracy. Lower loss is better.
    """

    name, primary, mode = "language_model", "loss", "min"

    def check_output(self, shape: tuple[int, ...]) -> None:
        v = self.vocab_size
        if len(shape) != 2 or (v is not None and shape[1] != v):
            raise SpecError(f"model output {shape} does not fit language modelling: expected (T, {v}) "
                            f"logits per position; end the model with `unembed` or `linear: $vocab_size`")

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    def stats(self, out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        n = y.shape[0]
        correct = (out.argmax(dim=-1) == y).float().mean(dim=-1).sum()  # per-sample token accuracy
        return torch.stack([loss.detach().float() * n, correct])

    def summarize(self, sums: torch.Tensor, n: int) -> dict[str, float]:
        loss_sum, correct = sums.tolist()
        loss = loss_sum / n
        return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "bits": loss / math.log(2), "acc": correct / n}


PAD = 0  # archlab.text's sequence tasks: 0 = <pad>, 1 = <bos>, 2 = <eos>


@TASKS.register("seq2seq")
class Seq2Seq(Task):
    """Target sequence from a source sequence, trained with teacher forcing.

    The decoder reads the target shifted right (<bos> first) and predicts the next token;
    padding is ignored. `exact` is the share of sequences a model gets entirely right when
    it decodes on its own (greedy, no teacher forcing): measured at evaluation only.
    """

    name, primary, mode = "seq2seq", "exact", "max"

    def data_vars(self, dataset: Dataset) -> dict[str, Any]:
        # The decoder reads the target minus its last token.
        return {**super().data_vars(dataset), "target_len": dataset.train.target_shape[0] - 1}

    def forward(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return model(x, y[:, :-1])

    def check_output(self, shape: tuple[int, ...]) -> None:
        v = self.vocab_size
        if len(shape) != 2 or (v is not None and shape[1] != v):
            raise SpecError(f"decoder output {shape} does not fit seq2seq: expected (T, {v}) logits; "
                            f"end the decoder with `linear: $vocab_size`")

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y[:, 1:].reshape(-1), ignore_index=PAD)

    def stats(self, out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor,
              decoded: torch.Tensor | None = None) -> torch.Tensor:
        target = y[:, 1:]
        real = target != PAD
        hit = out.argmax(dim=-1) == target
        zero = loss.new_zeros(())
        exact = ((decoded == target) | ~real).all(dim=-1).sum().float() if decoded is not None else zero
        return torch.stack([loss.detach().float() * y.shape[0], (hit & real).sum().float(), real.sum().float(),
                            (hit | ~real).all(dim=-1).sum().float(), exact,
                            zero + (y.shape[0] if decoded is not None else 0)])

    def eval_stats(self, model: torch.nn.Module, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                   loss: torch.Tensor) -> torch.Tensor:
        decoded = model.greedy(x, y.shape[1] - 1)
        return self.stats(out, y, loss, decoded)

    def summarize(self, sums: torch.Tensor, n: int) -> dict[str, float]:
        loss_sum, hits, tokens, forced, exact, decoded_n = sums.tolist()
        metrics = {"loss": loss_sum / n, "token_acc": hits / max(tokens, 1), "forced_exact": forced / n}
        if decoded_n:
            metrics["exact"] = exact / decoded_n
        return metrics


def make_task(name: str, num_classes: int | None = None, vocab_size: int | None = None, **options: Any) -> Task:
    """The registered task `name`; `options` it does not take (see `Task.options`) are ignored."""
    cls = TASKS.get(name, "task")
    if issubclass(cls, Classify) and not num_classes:
        raise SpecError(f"task {name} needs num_classes; the data set did not give it")
    return cls(num_classes, vocab_size, **{k: v for k, v in options.items() if k in cls.options})


def task_for(spec: Spec, s: TrainSettings, info: DataInfo) -> Task:
    """The task a run of `spec` on data `info` trains: a VAE or GAN spec's own, else --task,
    else the data set's."""
    name = generative_task(spec, s.task) or s.task or info.task
    return make_task(name, info.num_classes, info.vocab_size, **{k: getattr(s, k) for k in TASKS.get(name, "task").options})
