"""Training: settings, tasks (each owns its step and optimizers), the one loop and its state
record, optimizers and schedules, checkpoints and progress."""

from ._api import evaluate, fit, fit_generative, load_run_model, resume, sample_run
from ._checkpoint import CheckpointWriter, has_checkpoint, load_checkpoint, save_checkpoint
from ._distill_task import KD_ALPHA, KD_TEMPERATURE, Distill, distillation_loss
from ._generative import (
    GANTask,
    GenerativeTask,
    VAETask,
    evaluate_gan,
    evaluate_vae,
    gan_step,
    image_grid,
    kl_divergence,
    save_grid,
    vae_loss,
)
from ._optim import StepContext, autocast, make_optimizer, make_schedule
from ._progress import EpochProgress, TaskProgress
from ._runinfo import (
    RunState,
    check_resumable,
    kept_epoch,
    primary_metric,
    read_test_report,
    run_state,
)
from ._settings import TrainSettings, resolve_settings
from ._state import LoopState
from ._tasks import TASKS, LanguageModel, Seq2Seq, Task, make_task, task_for
from ._tensorboard import TensorBoardLog
from ._trainer import (
    DIVERGED_FACTOR,
    Run,
    StopRun,
    Trainer,
    absolute_data_uri,
    batches,
    divergence_rule,
    epoch_order,
    evaluate_split,
    save_weights,
)

__all__ = [
    "CheckpointWriter",
    "DIVERGED_FACTOR",
    "Distill",
    "EpochProgress",
    "GANTask",
    "KD_ALPHA",
    "KD_TEMPERATURE",
    "GenerativeTask",
    "LanguageModel",
    "LoopState",
    "Run",
    "RunState",
    "Seq2Seq",
    "StepContext",
    "StopRun",
    "TASKS",
    "Task",
    "TaskProgress",
    "TensorBoardLog",
    "TrainSettings",
    "Trainer",
    "VAETask",
    "absolute_data_uri",
    "autocast",
    "batches",
    "distillation_loss",
    "divergence_rule",
    "check_resumable",
    "epoch_order",
    "evaluate",
    "evaluate_gan",
    "evaluate_split",
    "evaluate_vae",
    "fit",
    "fit_generative",
    "gan_step",
    "has_checkpoint",
    "image_grid",
    "kept_epoch",
    "kl_divergence",
    "load_checkpoint",
    "load_run_model",
    "make_optimizer",
    "make_schedule",
    "make_task",
    "primary_metric",
    "read_test_report",
    "resolve_settings",
    "resume",
    "run_state",
    "sample_run",
    "save_checkpoint",
    "save_grid",
    "save_weights",
    "task_for",
    "vae_loss",
]
