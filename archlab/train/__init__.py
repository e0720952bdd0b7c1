"""Training: settings, tasks, the loop, checkpoints and progress."""

from ._checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from ._generative import (
    evaluate_vae,
    fit_generative,
    gan_step,
    image_grid,
    kl_divergence,
    sample_run,
    save_grid,
    vae_loss,
)
from ._progress import EpochProgress, TaskProgress
from ._settings import TrainSettings, resolve_settings
from ._tasks import TASKS, LanguageModel, Seq2Seq, make_task
from ._tensorboard import TensorBoardLog
from ._trainer import (
    Run,
    StopRun,
    Trainer,
    absolute_data_uri,
    batches,
    epoch_order,
    evaluate,
    evaluate_split,
    fit,
    is_alive,
    load_run_model,
    make_optimizer,
    make_schedule,
    resume,
    run_lock,
    save_weights,
)

__all__ = [
    "EpochProgress",
    "LanguageModel",
    "Run",
    "Seq2Seq",
    "StopRun",
    "TASKS",
    "TaskProgress",
    "TensorBoardLog",
    "TrainSettings",
    "Trainer",
    "absolute_data_uri",
    "batches",
    "epoch_order",
    "evaluate",
    "evaluate_split",
    "evaluate_vae",
    "fit",
    "fit_generative",
    "gan_step",
    "has_checkpoint",
    "image_grid",
    "is_alive",
    "kl_divergence",
    "load_checkpoint",
    "load_run_model",
    "make_optimizer",
    "make_schedule",
    "make_task",
    "resolve_settings",
    "resume",
    "run_lock",
    "sample_run",
    "save_checkpoint",
    "save_grid",
    "save_weights",
    "vae_loss",
]
