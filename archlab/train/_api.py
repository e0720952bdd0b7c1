"""The training API: fit, resume, evaluate, load a run's model, sample a generative run.

    run = fit("zoo:mlp", data="digits", epochs=5)
    resume(run_id)              # a stopped run, continued bit-exactly from its checkpoint
    evaluate(run_id, split="test")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..core import ArchlabError, SpecError, StoreError, TrainingError, thaw
from ..data import load_dataset
from ..model import Network, build, generative_task
from ..runs import BEST_WEIGHTS, SQLiteRunStorage, open_store
from ..spec import Spec, load_spec
from ._checkpoint import has_checkpoint, load_checkpoint
from ._distributed import has_any_checkpoint, load_distributed_weights, newest_checkpoint, rank_info
from ._generative import GenerativeTask
from ._inputs_fit import check_inputs_fit
from ._runinfo import check_resumable
from ._settings import IO_SETTINGS, TrainSettings, resolve_settings
from ._tasks import TASKS, task_for
from ._trainer import Run, Trainer, absolute_data_uri, load_weights

# Data-derived vars: where the data set sets one, a --set that disagrees is refused; where it
# does not (vocab_size of a table with two text columns, of images), the spec's var is the user's.
_DATA_VARS = ("num_classes", "vocab_size")


def _store(store: SQLiteRunStorage | str | Path | None) -> SQLiteRunStorage:
    return store if isinstance(store, SQLiteRunStorage) else open_store(store)


def fit(spec: Spec | str | Mapping[str, Any], data: str = "digits", *, store: SQLiteRunStorage | str | Path | None = None,
        quiet: bool = False, tags: Mapping[str, str] | None = None, data_root: str | Path | None = None,
        target: str | None = None, vars: Mapping[str, Any] | None = None,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
        on_start: Callable[[str], None] | None = None,
        initial_weights: Mapping[str, torch.Tensor] | None = None, **settings: Any) -> Run:
    """Train a spec on a data set and record the run; returns the model, history and test metrics.

    Any task trains here: a VAE or GAN spec (`archlab.train._generative`) as well as
    classify, regress, language_model and seq2seq. `on_start(run_id)` is called as soon as
    the run is recorded; `on_epoch(record)` after each epoch is logged and checkpointed (it
    may raise `StopRun` or KeyboardInterrupt). Transfer learning: `init_from=` a run id or a
    .safetensors file, with `map=`, `partial=`, `freeze=` and `bn="frozen"` (archlab.train._init_from).
    `initial_weights` (a state dict of the spec's network) replaces the fresh initialisation,
    e.g. to fine-tune a pruned network.

    >>> run = fit("zoo:mlp", data="digits", epochs=1, quiet=True)   # doctest: +SKIP
    >>> run.test_metrics["acc"]                                     # doctest: +SKIP
    """
    spec = load_spec(spec)
    if vars:
        spec = spec.with_vars(vars)
    s = resolve_settings(spec, {**settings, "target": target})
    generative = generative_task(spec, s.task)
    if generative and target is not None:
        raise SpecError(f"--target: a {generative} learns images without targets; remove it")
    dataset = load_dataset(data, seed=s.seed, root=data_root, target=s.target, stream=s.stream)
    for name in _DATA_VARS:
        given, found = (vars or {}).get(name), dataset.info.vars().get(name)
        if given is not None and found is not None and given != found:
            raise SpecError(f"--set {name}={given}: the data set sets {name} itself ({data} has {found}). "
                            f"Received: {name}={given!r}; drop --set {name}")
    trainer = Trainer(spec, dataset, s, _store(store), data_uri=absolute_data_uri(data), quiet=quiet, tags=tags,
                      on_epoch=on_epoch, on_start=on_start, initial_weights=initial_weights)
    return trainer.run()


def fit_generative(spec: Spec | str | Mapping[str, Any], data: str = "digits", **kwargs: Any) -> Run:
    """`fit` for a spec that must be a VAE or GAN (an error names what it is instead).

    >>> run = fit_generative("zoo:vae", data="digits", epochs=1, quiet=True)   # doctest: +SKIP
    >>> run.history[-1]["val_recon"], run.history[-1]["val_kl"]                 # doctest: +SKIP
    """
    spec = load_spec(spec)
    if generative_task(spec.with_vars(kwargs.get("vars") or {}), kwargs.get("task")) is None:
        raise SpecError("train.task: fit_generative trains task vae (encoder + decoder) or gan (generator + "
                        "discriminator)")
    return fit(spec, data, **kwargs)


def resume(run_id: str, *, store: SQLiteRunStorage | str | Path | None = None, quiet: bool = False,
           data_root: str | Path | None = None, on_epoch: Callable[[dict[str, float]], None] | None = None,
           **io: Any) -> Run:
    """Continue a stopped run from its last checkpoint; the result equals an uninterrupted run.
    A run stopped before its first checkpoint trains again from the start (same id and seed,
    so the same result).

    `io` may override `stream` and `workers` (both paths give the same batches)."""
    if unknown := sorted(set(io) - set(IO_SETTINGS)):
        raise TrainingError(f"resume: only {', '.join(IO_SETTINGS)} may change on a resumed run. Received: "
                            f"{', '.join(unknown)}")
    io = {k: v for k, v in io.items() if v is not None}
    st = _store(store)
    record = st.get_run(run_id)
    directory = st.run_dir(record.run_id)
    primary = rank_info().primary  # on several processes rank 0 checks and records
    if primary:
        check_resumable(record, directory)  # the rules `archlab runs` lists runs by (_runinfo)
    spec = Spec.from_dict(thaw(record.spec))
    s = dataclasses.replace(TrainSettings.from_mapping(thaw(record.settings)), **io)
    dataset = load_dataset(record.data, seed=s.seed, root=data_root, target=s.target, stream=s.stream)
    resuming = has_any_checkpoint(directory)  # then the checkpoint has the weights: init_from is not read again
    trainer = Trainer(spec, dataset, s, st, data_uri=record.data, quiet=quiet, run_id=record.run_id,
                      on_epoch=on_epoch, initialize=not resuming)
    if resuming:  # one process's, or several ranks' (DCP): either resumes on any number
        trainer.restore()  # a damaged checkpoint raises StoreError here, saying so
        if primary:
            st.set_status(record.run_id, "running", message="resumed")
    elif primary:  # stopped before its first checkpoint: nothing saved, so it starts over, same id and seed
        st.set_status(record.run_id, "running", message="started over (no checkpoint yet)")
    return trainer.run()



def load_run_model(run_id: str, *, store: SQLiteRunStorage | str | Path | None = None,
                   device: str = "cpu") -> tuple[Network, Any]:
    """Rebuild a stored run's model with its best (else last) weights."""
    st = _store(store)
    record = st.get_run(run_id)
    directory = st.run_dir(record.run_id)
    net = build(Spec.from_dict(thaw(record.spec)), seed=0)
    best = directory / BEST_WEIGHTS
    if best.exists():
        load_weights(best, net)
    elif newest_checkpoint(directory) == "distributed":
        load_distributed_weights(directory, net)
    elif has_checkpoint(directory):
        load_checkpoint(directory, model=net, restore_rng=False)
    else:
        raise StoreError(f"run {record.run_id} has no saved weights in {directory}")
    return net.to(device), record


def evaluate(run_id: str, data: str | None = None, *, store: SQLiteRunStorage | str | Path | None = None,
             split: str = "test", data_root: str | Path | None = None) -> dict[str, Any]:
    """Re-evaluate a saved model on a data set's split (default: the run's own data, test split).

    Each task scores by its own metrics: a classifier by loss and accuracy (label smoothing
    included, so the stored test loss is reproduced), a VAE by its ELBO, a GAN by its
    discriminator's view of real and generated images."""
    st = _store(store)
    net, record = load_run_model(run_id, store=st)
    settings = TrainSettings.from_mapping(thaw(record.settings))
    uri = data or record.data
    name, sep, _ = uri.partition(":")
    is_csv = name == "csv" or (not sep and uri.lower().endswith(".csv"))
    # The run's own target column; another table is read with the same column name.
    dataset = load_dataset(uri, seed=settings.seed, root=data_root, target=settings.target if is_csv else None,
                           stream=settings.stream)
    # Its inputs by name, shape and dtype, and its embeddings' vocabularies (a GAN: its images).
    check_inputs_fit(net, dataset.info, where=f"--data {uri}",
                     fix=f"evaluate on data with the inputs of the run's own ({record.data})")
    if split not in ("train", "val", "test"):
        raise ArchlabError(f"--split must be train, val or test. Received: {split!r}")
    task = task_for(Spec.from_dict(thaw(record.spec)), settings, dataset.info)
    task.check_output(net.output_shape)
    metrics, report = task.evaluate(net, getattr(dataset, split), device=torch.device("cpu"), seed=settings.seed,
                                    batch_size=settings.eval_batch("cpu"), report=True)
    return {"run_id": record.run_id, "data": data or record.data, "split": split, **metrics, **report}


def sample_run(run_id: str, n: int = 64, *, seed: int = 0, store: SQLiteRunStorage | str | Path | None = None
               ) -> torch.Tensor:
    """n images (n, C, H, W) from a stored VAE or GAN run, drawn with a seeded generator."""
    if not 1 <= n <= 100_000:
        raise ArchlabError(f"--n: expected between 1 and 100000 samples. Received: {n}")
    st = _store(store)
    record = st.get_run(run_id)
    task = record.tags.get("task")
    if task not in TASKS or not issubclass(TASKS.get(task), GenerativeTask):
        raise ArchlabError(f"run {record.run_id} is a {task or 'non-generative'} run; `archlab sample` draws "
                           f"images from vae or gan runs")
    net, _ = load_run_model(record.run_id, store=st)
    return net.sample(n, generator=torch.Generator().manual_seed(seed))
