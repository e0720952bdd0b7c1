"""Training settings: what a run is configured with, validated, from its spec and flags.

Precedence: the `TrainSettings` defaults < the spec's `train:` section < explicit flags
(`resolve_settings`). The trainer that uses them is `archlab.train`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..core import SpecError, thaw
from ..spec import Spec, is_search_marker

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
BN_MODES = ("train", "frozen")  # --bn: batch norm trains as usual, or stays in eval mode

MAX_SEED = 2**32 - 1  # epoch_order seeds a generator with seed * 1_000_003 + epoch: this keeps it in range

STRATEGIES = ("ddp", "fsdp")

# Settings that decide how data is read, not what is computed: a resume may change them. How the
# work is spread over processes (DDP or FSDP2) changes no result either (archlab.train._distributed).
IO_SETTINGS = ("stream", "workers", "strategy")


@dataclass(frozen=True)
class TrainSettings:
    """Training settings. Precedence: these defaults < the spec's `train:` < explicit flags."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adamw"
    momentum: float = 0.9           # sgd only
    weight_decay: float = 0.0
    schedule: str = "constant"      # constant | cosine | step
    warmup: int = 0                 # linear warm-up, in optimizer steps
    step_size: int = 10             # step schedule: epochs between decays
    gamma: float = 0.1              # step schedule: decay factor
    grad_clip: float | None = None  # max global gradient norm
    precision: str = "fp32"         # fp32 | bf16 | fp16 (autocast)
    compile: bool = False
    seed: int = 0                   # 0 <= seed <= 2**32 - 1 (each epoch's generator is seeded from it)
    early_stop: int | None = None   # patience in epochs on the validation primary metric
    device: str = "auto"
    task: str | None = None         # default: the data set's task
    target: str | None = None       # csv: the target column (default: the last one)
    label_smoothing: float = 0.0
    crop_padding: int = 0           # image augmentation: random crop with this zero padding
    hflip: bool = False             # image augmentation: random horizontal flip
    eval_batch_size: int | None = None  # None: batch_size on CPU, 1024 on GPUs (see eval_batch)
    stream: bool | None = None      # None: stream npy data from disk only when it exceeds memory
    workers: int | None = None      # DataLoader reader processes when streaming (None: half the cores, <= 4)
    max_minutes: float | None = None  # time budget: stop (after validating) once it is spent
    # Transfer learning (archlab.train._init_from): start from a run's or a file's weights.
    init_from: str | None = None    # a run id or a .safetensors file (recorded resolved)
    map: tuple[str, ...] = ()       # source renames 'old=new' (glob; 'old=' drops), or a converter (hf-gpt2)
    partial: bool = False           # load what matches; unused names and shape mismatches are skipped
    freeze: tuple[str, ...] = ()    # globs on parameter names: requires_grad False, not optimized
    bn: str = "train"               # train | frozen (batch-norm layers stay in eval mode)
    accumulate: int = 1             # micro-batches per optimizer step (batch_size is the whole step's)
    strategy: str | None = None     # on several processes: ddp (default) or fsdp
    activation_checkpointing: bool = False  # every repeat copy recomputes its forward in backward
    # Knowledge distillation (archlab.train._distill_task): the teacher's run id; T and alpha
    # (the weight of the KD term) default to KD_TEMPERATURE and KD_ALPHA when a teacher is set.
    teacher: str | None = None
    kd_temperature: float | None = None
    kd_alpha: float | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str = "train") -> TrainSettings:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if value is None:
                continue
            if key not in fields:
                import difflib

                close = difflib.get_close_matches(key, list(fields), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise SpecError(f"{where}: unknown setting {key!r}.{hint} Settings: {', '.join(fields)}")
            kwargs[key] = _convert(key, value, fields[key].type, where)
        settings = cls(**kwargs)
        settings.validate(where)
        return settings

    def validate(self, where: str = "train") -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise SpecError(f"{where}: {what}")

        need(0 <= self.seed <= MAX_SEED, f"seed must be between 0 and {MAX_SEED}. Received: {self.seed}")
        need(self.epochs >= 1, f"epochs must be >= 1. Received: {self.epochs}")
        need(self.batch_size >= 1, f"batch_size must be >= 1. Received: {self.batch_size}")
        need(self.lr > 0, f"lr must be > 0. Received: {self.lr}")
        need(self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}. Received: {self.optimizer!r}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}. Received: {self.schedule!r}")
        need(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}. Received: {self.precision!r}")
        need(self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}. Received: {self.device!r}")
        need(self.warmup >= 0, f"warmup must be >= 0 steps. Received: {self.warmup}")
        need(self.step_size >= 1, f"step_size must be >= 1 epoch. Received: {self.step_size}")
        need(self.gamma > 0, f"gamma must be > 0. Received: {self.gamma}")
        need(self.momentum >= 0, f"momentum must be >= 0. Received: {self.momentum}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0. Received: {self.weight_decay}")
        need(self.crop_padding >= 0, f"crop_padding must be >= 0. Received: {self.crop_padding}")
        need(self.eval_batch_size is None or self.eval_batch_size >= 1,
             f"eval_batch_size must be >= 1. Received: {self.eval_batch_size}")
        need(self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0. Received: {self.grad_clip}")
        need(self.early_stop is None or self.early_stop >= 1, f"early_stop must be >= 1 epoch. Received: {self.early_stop}")
        need(self.workers is None or self.workers >= 0, f"workers must be >= 0. Received: {self.workers}")
        need(self.max_minutes is None or self.max_minutes > 0, f"max_minutes must be > 0. Received: {self.max_minutes}")
        need(self.accumulate >= 1, f"accumulate must be >= 1 micro-batch per step. Received: {self.accumulate}")
        need(self.strategy is None or self.strategy in STRATEGIES,
             f"strategy must be one of {', '.join(STRATEGIES)}. Received: {self.strategy!r}")
        need(self.kd_temperature is None or self.kd_temperature > 0,
             f"kd_temperature must be > 0. Received: {self.kd_temperature}")
        need(self.kd_alpha is None or 0 <= self.kd_alpha <= 1, f"kd_alpha must be in [0, 1]. Received: {self.kd_alpha}")
        need(self.teacher is not None or (self.kd_temperature is None and self.kd_alpha is None),
             "kd_temperature and kd_alpha set how a student learns from a teacher run; give the teacher "
             "too (teacher=RUN_ID, or `archlab distill TEACHER_RUN SPEC`)")
        need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1). Received: {self.label_smoothing}")
        need(self.bn in BN_MODES, f"bn must be one of {', '.join(BN_MODES)}. Received: {self.bn!r}")
        need(not (self.map or self.partial) or self.init_from is not None,
             "map and partial say how init_from's weights load; give init_from too")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def eval_batch(self, device: torch.device | str) -> int:
        """The batch size for validation and test passes. Unset, it is the training batch size on
        CPU, where big evaluation batches fall out of cache and run ~2x slower (1024 vs 64 on
        28x28 images, bench/fit_overhead.md), and 1024 on accelerators, which want big batches."""
        if self.eval_batch_size is not None:
            return self.eval_batch_size
        return self.batch_size if torch.device(device).type == "cpu" else max(1024, self.batch_size)


def _convert(key: str, value: Any, tp: Any, where: str) -> Any:
    text = str(tp)
    try:
        if isinstance(value, bool) and ("int" in text or "float" in text):
            raise ValueError
        if text.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if text.startswith("float"):
            return float(value)
        if text.startswith("tuple[str"):  # one string, or a list of them (JSON has no tuples)
            values = [value] if isinstance(value, str) else list(value)
            if not all(isinstance(v, str) for v in values):
                raise ValueError
            return tuple(values)
        if text == "bool":
            if isinstance(value, str):
                return {"true": True, "false": False, "1": True, "0": False}[value.lower()]
            if not isinstance(value, bool):
                raise ValueError
            return value
        return str(value) if text.startswith("str") else value
    except (ValueError, TypeError, KeyError):
        raise SpecError(f"{where}.{key}: expected {text.replace(' | None', '')}. Received: {value!r}") from None


def resolve_settings(spec: Spec, overrides: Mapping[str, Any]) -> TrainSettings:
    """The spec's `train:` section under explicit overrides. A search-space marker there
    (`lr: {float: [1e-4, 1e-2], default: 2e-3}`) trains at its default unless overridden."""
    given = {k: v for k, v in overrides.items() if v is not None}
    section = {}
    for key, value in thaw(spec.train).items():
        if is_search_marker(value) and key not in given:
            if value.get("default") is None:
                raise SpecError(f"train.{key}: is a search space {value} with no default; give it one, "
                                f"or pass --{key.replace('_', '-')} VALUE")
            value = value["default"]
        section[key] = value
    return TrainSettings.from_mapping({**section, **given})
