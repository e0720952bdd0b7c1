"""Generative models of images: a VAE and a GAN, each made of two halves written as specs.

A VAE is an encoder-decoder spec whose `train:` says `task: vae`; a GAN has `generator:` and
`discriminator:` sections. The latent size is the var `latent`; the input is the data's image
shape (given by the data set at train time).

    name: vae                                  name: gan
    input: {shape: [1, 8, 8]}                  input: {shape: [1, 8, 8]}
    vars: {latent: 16}                         vars: {latent: 32}
    encoder: [flatten, linear: 256, relu,      generator: [linear: 256, leaky_relu,
              linear: "${2 * latent}"]                     linear: 64, sigmoid, reshape: [1, 8, 8]]
    decoder: [linear: 256, relu, linear: 64,   discriminator: [flatten, linear: 256, leaky_relu,
              sigmoid, reshape: [1, 8, 8]]                     linear: 1]
    train: {task: vae}                         train: {task: gan}

- VAE: the encoder maps an image to (2 * latent,) = [mu, logvar]; z = mu + exp(logvar / 2) * eps
  (the reparameterisation trick, so gradients reach the encoder); the decoder maps z back to
  pixels in [0, 1]. Training minimises the negative ELBO per image, logged in its two parts:
  `recon` (Bernoulli cross-entropy summed over pixels) + `kl` (KL(q(z|x) || N(0, I))) = `loss`.
- GAN: the generator maps z ~ N(0, I) to an image, the discriminator an image to one logit.
  Each step updates D on real and generated images, then G with the non-saturating loss
  -log D(G(z)); Adam's betas default to (0.5, 0.999). `label_smoothing` is one-sided: D's
  target for real images is 1 - label_smoothing.

    run = fit_generative("zoo:gan", data="digits", epochs=200)
    images = run.model.sample(64, generator=torch.Generator().manual_seed(0))  # (64, 1, 8, 8)

Both networks are plain nn.Modules whose halves are `Network`s (state_dict keys such as
`encoder.model.0.weight`). `archlab train zoo:vae` routes here; `archlab sample RUN_ID` writes
an image grid.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core import ArchlabError, DataError, SpecError, TrainingError, thaw
from ..data import Dataset, Split, describe_data_path, load_dataset
from ..model import GAN_BETAS, GENERATIVE_TASKS, GANNetwork, VAENetwork, build, generative_task
from ..model._generative import _eval, _normal
from ..runs import SQLiteRunStorage, open_store
from ..spec import Spec, load_spec
from ._checkpoint import load_checkpoint, save_checkpoint
from ._tensorboard import TensorBoardLog
from ._trainer import (
    Run,
    StopRun,
    TrainSettings,
    absolute_data_uri,
    batches,
    environment,
    epoch_order,
    load_run_model,
    load_weights,
    make_optimizer,
    make_schedule,
    pick_device,
    resolve_settings,
    run_lock,
    save_weights,
)

# -------------------------------------------------------------------------- losses


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, summed over latent dims: (B,)."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction, KL), each averaged over the batch; the negative ELBO is their sum.

    Reconstruction is the Bernoulli cross-entropy summed over an image's pixels.
    """
    rec = F.binary_cross_entropy(recon.float(), x.float(), reduction="none").flatten(1).sum(dim=1)  # (B,)
    return rec.mean(), kl_divergence(mu.float(), logvar.float()).mean()


def gan_step(net: GANNetwork, x: torch.Tensor, z: torch.Tensor, opt_g: torch.optim.Optimizer,
             opt_d: torch.optim.Optimizer, real_target: float = 1.0, grad_clip: float | None = None
             ) -> dict[str, torch.Tensor]:
    """One alternating update: D on real and generated images, then G (non-saturating loss).

    Returns detached d_loss, g_loss, d_real (mean D(x)) and d_fake (mean D(G(z)), before D's update).
    """
    fake = net.generator(z)  # (B, C, H, W)
    # D step: real -> 1 (or 1 - smoothing), generated -> 0; the fake is detached so G is untouched.
    real_logits = net.discriminator(x)
    fake_logits = net.discriminator(fake.detach())
    d_loss = (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_target))
              + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(net.discriminator.parameters(), grad_clip)
    opt_d.step()
    # G step: maximise log D(G(z)) (stronger gradients early than minimising log(1 - D(G(z)))).
    # Backward also fills D's .grad, but only opt_g steps here; opt_d clears them next time.
    g_logits = net.discriminator(fake)
    g_loss = F.binary_cross_entropy_with_logits(g_logits, torch.ones_like(g_logits))
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(net.generator.parameters(), grad_clip)
    opt_g.step()
    return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
            "d_real": torch.sigmoid(real_logits.detach()).mean(), "d_fake": torch.sigmoid(fake_logits.detach()).mean()}


@torch.no_grad()
def evaluate_vae(net: VAENetwork, split: Split, *, seed: int = 0, batch_size: int = 1024) -> dict[str, float]:
    """Negative ELBO (`loss`) and its parts `recon` and `kl` per image, in eval mode with fixed noise."""
    if len(split) == 0:
        return {}
    g = torch.Generator().manual_seed(seed)
    device = next(net.parameters()).device
    total = torch.zeros(2, dtype=torch.float64)
    with _eval(net):
        for start in range(0, len(split), batch_size):
            x = split.slice(start, start + batch_size)[0].to(device)
            rec, kl = _vae_batch(net, x, g)
            total += torch.stack([rec, kl]).double().cpu() * len(x)
    rec, kl = (total / len(split)).tolist()
    return {"loss": rec + kl, "recon": rec, "kl": kl}


def _vae_batch(net: VAENetwork, x: torch.Tensor, g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    recon, mu, logvar = net(x, generator=g)
    return vae_loss(recon, x, mu, logvar)


@torch.no_grad()
def evaluate_gan(net: GANNetwork, split: Split, *, seed: int = 0, batch_size: int = 1024) -> dict[str, float]:
    """Mean D(x) on the split's images and mean D(G(z)) on as many samples, in eval mode."""
    if len(split) == 0:
        return {}
    g = torch.Generator().manual_seed(seed)
    device = next(net.parameters()).device
    real = fake = 0.0
    with _eval(net):
        for start in range(0, len(split), batch_size):
            x = split.slice(start, start + batch_size)[0].to(device)
            real += torch.sigmoid(net.discriminator(x)).sum().item()
            fake += torch.sigmoid(net.discriminator(net.sample(len(x), g))).sum().item()
    return {"d_real": real / len(split), "d_fake": fake / len(split)}


# -------------------------------------------------------------------------- training


class _GenerativeTrainer:
    """What the VAE and GAN loops share: the run record, checkpoints, progress, stopping.

    Checkpoints are taken at each epoch's end, with the RNG states; each epoch's order and
    noise come from a generator seeded by (seed, epoch), so a resumed run computes what an
    uninterrupted one does. Ctrl-C keeps the last epoch's checkpoint.
    """

    task = ""
    primary = "loss"

    def __init__(self, spec: Spec, dataset: Dataset, settings: TrainSettings, store: SQLiteRunStorage, *,
                 data_uri: str, quiet: bool = False, tags: Mapping[str, str] | None = None,
                 run_id: str | None = None, on_epoch: Callable[[dict[str, float]], None] | None = None):
        self.settings = s = settings
        info = dataset.info
        if info.input_dtype != "float":
            raise DataError(f"{data_uri}: a {self.task.upper()} learns images (float input); this data set "
                            f"has {info.input_dtype} input {info.input_shape}")
        if s.precision != "fp32" or s.compile:
            raise SpecError(f"train: {self.task} runs train in fp32 without torch.compile "
                            f"(precision={s.precision!r}, compile={s.compile})")
        if s.crop_padding or s.hflip:
            raise SpecError(f"train: crop_padding/hflip are not applied to {self.task} runs; remove them")
        self.spec = spec.with_input(info.input_shape, "float").with_train(task=self.task)
        self.dataset, self.store, self.quiet, self.on_epoch = dataset, store, quiet, on_epoch
        self.device = pick_device(s.device)
        torch.manual_seed(s.seed)
        self.net = build(self.spec, seed=s.seed).to(self.device)
        self.steps_per_epoch = math.ceil(len(dataset.train) / s.batch_size)
        self.setup_optimizers()
        self.train_split = dataset.train.to(self.device)
        self.val_split = dataset.val.to(self.device)
        self.epoch, self.elapsed = 0, 0.0
        self.history: list[dict[str, float]] = []
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.stale = 0
        if run_id is None:
            params = sum(p.numel() for p in self.net.parameters())
            run_id = store.create_run(name=self.spec.name, data=data_uri, spec=self.spec.to_dict(),
                                      settings=s.to_dict(), env=environment(self.device), params=params,
                                      tags={"task": self.task, **dict(tags or {})})
            (store.run_dir(run_id) / "spec.yaml").write_text(self.spec.to_yaml())
        self.run_id, self.dir = run_id, store.run_dir(run_id)

    # -- per task
    def setup_optimizers(self) -> None:
        raise NotImplementedError

    def train_epoch(self, progress: Any) -> dict[str, float]:
        raise NotImplementedError

    def test_metrics(self) -> dict[str, float]:
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        pass

    # -- checkpoints
    def save(self) -> None:
        state = {"epoch": self.epoch, "history": self.history, "best": self.best, "best_epoch": self.best_epoch,
                 "stale": self.stale, "elapsed": self.elapsed, **self.extra_state()}
        save_checkpoint(self.dir, model=self.net, optimizer=self.optimizer, scheduler=self.scheduler, state=state)

    def restore(self) -> None:
        state = load_checkpoint(self.dir, model=self.net, optimizer=self.optimizer, scheduler=self.scheduler)
        self.epoch, self.history = state["epoch"], list(state["history"])
        self.best, self.best_epoch, self.stale = state["best"], state["best_epoch"], state["stale"]
        self.elapsed = state.get("elapsed", 0.0)
        self.load_extra_state(state)

    # -- the loop
    def run(self) -> Run:
        with run_lock(self.dir, self.run_id):
            return self._run()

    def _run(self) -> Run:
        from ._progress import EpochProgress

        s = self.settings
        started = time.perf_counter() - self.elapsed
        try:
            with EpochProgress(total_epochs=s.epochs, steps=self.steps_per_epoch, quiet=self.quiet,
                               batch_size=s.batch_size, primary=self.primary) as progress, \
                    TensorBoardLog(self.dir, first_epoch=self.epoch + 1, spec=self.spec.to_yaml(),
                                   settings=s.to_dict(), note=progress.note) as board:
                if note := describe_data_path(self.dataset):
                    progress.note(note)
                # The budget counts from the run's first start; it is checked at epoch ends (the
                # generative loops checkpoint there only).
                deadline = started + 60 * s.max_minutes if s.max_minutes else None
                while self.epoch < s.epochs:
                    if s.early_stop and self.stale >= s.early_stop:
                        progress.note(f"early stop: val_{self.primary} has not improved for {self.stale} epochs")
                        break
                    record = self.train_epoch(progress)
                    self.elapsed = time.perf_counter() - started
                    self.store.log_epoch(self.run_id, record["epoch"], record)
                    board.epoch(record)
                    self.save()
                    progress.epoch_done(record)
                    if self.on_epoch is not None:
                        self.on_epoch(record)
                    if deadline is not None and time.perf_counter() >= deadline and self.epoch < s.epochs:
                        progress.note(f"time budget of {s.max_minutes:g} min spent after epoch {self.epoch}")
                        break
        except KeyboardInterrupt:
            message = (f"interrupted by the user after epoch {self.epoch}; resume with "
                       f"`archlab train --resume {self.run_id}`")
            self.store.set_status(self.run_id, "interrupted", message=message,
                                  duration_s=time.perf_counter() - started)
            raise KeyboardInterrupt(message) from None
        except StopRun as e:  # from on_epoch, e.g. a search's pruner
            self.store.set_status(self.run_id, e.status, message=e.message, duration_s=time.perf_counter() - started)
            raise
        except BaseException as e:
            self.store.set_status(self.run_id, "failed", message=f"{type(e).__name__}: {e}",
                                  duration_s=time.perf_counter() - started)
            raise
        best = self.dir / "best.safetensors"
        if best.exists():
            load_weights(best, self.net)
        test = self.test_metrics()
        self.store.set_status(self.run_id, "finished", test_metrics=test,
                              duration_s=time.perf_counter() - started)
        # A GAN keeps its last weights: that epoch is the one reported.
        best_epoch = self.best_epoch if self.task == "vae" else self.epoch
        return Run(self.run_id, self.net, self.spec, s, self.dataset.info, self.history, test,
                   status="finished", best_epoch=best_epoch, directory=self.dir)

    def _check_finite(self, loss: torch.Tensor, step: int, what: str = "loss") -> None:
        if not torch.isfinite(loss):
            lr = self.settings.lr
            raise TrainingError(f"{what} became {loss.item()} at epoch {self.epoch + 1}, step {step + 1}; "
                                f"the checkpoint of epoch {self.epoch} is intact in {self.dir}. Try a lower "
                                f"learning rate (--lr {lr / 10:g}) or gradient clipping (--grad-clip 1.0)")

    def _record(self, train: Mapping[str, float], val: Mapping[str, float], seconds: float) -> dict[str, float]:
        record = {"epoch": self.epoch, **{f"train_{k}": v for k, v in train.items()},
                  **{f"val_{k}": v for k, v in val.items()}, "lr": self.optimizer.param_groups[0]["lr"],
                  "seconds": seconds, "samples_per_s": len(self.train_split) / max(seconds, 1e-9)}
        self.history.append(record)
        return record


class VAETrainer(_GenerativeTrainer):
    """Minimises the negative ELBO; keeps the weights of the best validation ELBO."""

    task, primary = "vae", "loss"

    def setup_optimizers(self) -> None:
        if self.settings.label_smoothing:
            raise SpecError("train: label_smoothing is a GAN setting (one-sided, for D's real targets); remove it")
        self.optimizer = make_optimizer(self.net, self.settings)
        self.scheduler = make_schedule(self.optimizer, self.settings, self.steps_per_epoch)

    def train_epoch(self, progress: Any) -> dict[str, float]:
        s, net = self.settings, self.net
        net.train()
        order, g = epoch_order(len(self.train_split), s.seed, self.epoch)
        sums = torch.zeros(2, device=self.device)  # recon, kl summed over images (no sync per step)
        t0 = time.perf_counter()
        progress.start_epoch(self.epoch, 0)
        for step, x, _ in batches(self.train_split, order, s.batch_size, 0, None, g, device=self.device,
                                  workers=s.workers):
            rec, kl = _vae_batch(net, x, g)
            loss = rec + kl
            self._check_finite(loss, step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if s.grad_clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), s.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            sums += torch.stack([rec, kl]).detach() * len(x)
            progress.step(step + 1, loss)
        rec, kl = (sums / len(self.train_split)).tolist()
        val = evaluate_vae(net, self.val_split, seed=s.seed, batch_size=s.eval_batch(self.device))
        self.epoch += 1
        if val:
            if self.best is None or val["loss"] < self.best:
                self.best, self.best_epoch, self.stale = val["loss"], self.epoch, 0
                save_weights(self.dir / "best.safetensors", net)
            else:
                self.stale += 1
        return self._record({"loss": rec + kl, "recon": rec, "kl": kl}, val, time.perf_counter() - t0)

    def test_metrics(self) -> dict[str, float]:
        test = self.dataset.test.to(self.device)
        return evaluate_vae(self.net, test, seed=self.settings.seed, batch_size=self.settings.eval_batch(self.device))


class GANTrainer(_GenerativeTrainer):
    """Alternating D and G updates; the last weights are kept (a GAN has no validation loss)."""

    task, primary = "gan", "g_loss"

    def setup_optimizers(self) -> None:
        s, net = self.settings, self.net
        if s.early_stop:
            raise SpecError("train: early_stop needs a validation loss, which a GAN does not have; remove it")
        self.optimizer = _gan_optimizer(net.generator, s)  # the checkpoint's main optimizer
        self.d_optimizer = _gan_optimizer(net.discriminator, s)
        self.scheduler = make_schedule(self.optimizer, s, self.steps_per_epoch)
        self.d_scheduler = make_schedule(self.d_optimizer, s, self.steps_per_epoch)

    def extra_state(self) -> dict[str, Any]:
        return {"d_optimizer": self.d_optimizer.state_dict(), "d_scheduler": self.d_scheduler.state_dict()}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.d_scheduler.load_state_dict(state["d_scheduler"])

    def train_epoch(self, progress: Any) -> dict[str, float]:
        s, net = self.settings, self.net
        net.train()
        order, g = epoch_order(len(self.train_split), s.seed, self.epoch)
        sums = torch.zeros(4, device=self.device)
        t0 = time.perf_counter()
        progress.start_epoch(self.epoch, 0)
        for step, x, _ in batches(self.train_split, order, s.batch_size, 0, None, g, device=self.device,
                                  workers=s.workers):
            z = _normal((len(x), net.latent), g, x)
            out = gan_step(net, x, z, self.optimizer, self.d_optimizer, 1.0 - s.label_smoothing, s.grad_clip)
            self._check_finite(out["d_loss"] + out["g_loss"], step, "the GAN loss")
            self.scheduler.step()
            self.d_scheduler.step()
            sums += torch.stack([out["d_loss"], out["g_loss"], out["d_real"], out["d_fake"]]) * len(x)
            progress.step(step + 1, out["g_loss"])
        d_loss, g_loss, d_real, d_fake = (sums / len(self.train_split)).tolist()
        self.epoch += 1
        return self._record({"d_loss": d_loss, "g_loss": g_loss, "d_real": d_real, "d_fake": d_fake}, {},
                            time.perf_counter() - t0)

    def test_metrics(self) -> dict[str, float]:
        test = self.dataset.test.to(self.device)
        return evaluate_gan(self.net, test, seed=self.settings.seed, batch_size=self.settings.eval_batch(self.device))


def _gan_optimizer(module: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("a GAN half has no trainable parameters (every layer is frozen)")
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    cls = torch.optim.Adam if s.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=s.lr, betas=GAN_BETAS, weight_decay=s.weight_decay)


TRAINERS: dict[str, type[_GenerativeTrainer]] = {"vae": VAETrainer, "gan": GANTrainer}


# ------------------------------------------------------------------------ the API


def fit_generative(spec: Spec | str | Mapping[str, Any], data: str = "digits", *,
                   store: SQLiteRunStorage | str | Path | None = None, quiet: bool = False,
                   tags: Mapping[str, str] | None = None, data_root: str | Path | None = None,
                   target: str | None = None, vars: Mapping[str, Any] | None = None,
                   on_epoch: Callable[[dict[str, float]], None] | None = None, **settings: Any) -> Run:
    """Train a VAE or GAN spec on images and record the run (`archlab.train.fit` routes here).

    >>> run = fit_generative("zoo:vae", data="digits", epochs=1, quiet=True)   # doctest: +SKIP
    >>> run.history[-1]["val_recon"], run.history[-1]["val_kl"]                 # doctest: +SKIP
    """
    spec = load_spec(spec)
    if vars:
        spec = spec.with_vars(vars)
    task = generative_task(spec, settings.get("task"))
    if task is None:
        raise SpecError("train.task: fit_generative trains task vae (encoder + decoder) or gan (generator + "
                        "discriminator)")
    if target is not None:
        raise SpecError(f"--target: a {task} learns images without targets; remove it")
    s = resolve_settings(spec, {**settings, "task": task})
    dataset = load_dataset(data, seed=s.seed, root=data_root, stream=s.stream)
    st = store if isinstance(store, SQLiteRunStorage) else open_store(store)
    trainer = TRAINERS[task](spec, dataset, s, st, data_uri=absolute_data_uri(data), quiet=quiet, tags=tags,
                             on_epoch=on_epoch)
    return trainer.run()


def resume_generative(record: Any, store: SQLiteRunStorage, *, quiet: bool = False,
                      data_root: str | Path | None = None, **io: Any) -> Run:
    """Continue a stopped VAE or GAN run from its last epoch-end checkpoint (`archlab train --resume`);
    `io` may change how data is read (stream, workers)."""
    spec = Spec.from_dict(thaw(record.spec))
    s = dataclasses.replace(TrainSettings.from_mapping(thaw(record.settings)), **io)
    task = generative_task(spec, s.task)
    if task is None:
        raise TrainingError(f"run {record.run_id} is not a vae or gan run")
    dataset = load_dataset(record.data, seed=s.seed, root=data_root, stream=s.stream)
    trainer = TRAINERS[task](spec, dataset, s, store, data_uri=record.data, quiet=quiet, run_id=record.run_id)
    trainer.restore()
    store.set_status(record.run_id, "running", message="resumed")
    return trainer.run()


def sample_run(run_id: str, n: int = 64, *, seed: int = 0, store: SQLiteRunStorage | str | Path | None = None
               ) -> torch.Tensor:
    """n images (n, C, H, W) from a stored VAE or GAN run, drawn with a seeded generator."""
    if not 1 <= n <= 100_000:
        raise ArchlabError(f"--n: expected between 1 and 100000 samples. Received: {n}")
    st = store if isinstance(store, SQLiteRunStorage) else open_store(store)
    record = st.get_run(run_id)
    task = record.tags.get("task")
    if task not in GENERATIVE_TASKS:
        raise ArchlabError(f"run {record.run_id} is a {task or 'non-generative'} run; `archlab sample` draws "
                           f"images from vae or gan runs")
    net, _ = load_run_model(record.run_id, store=st)
    return net.sample(n, generator=torch.Generator().manual_seed(seed))


def image_grid(images: torch.Tensor, *, columns: int | None = None, scale: int = 4, pad: int = 1) -> Any:
    """(N, C, H, W) in [0, 1] -> one (rows*(H*scale+pad)+pad, cols*(W*scale+pad)+pad[, 3]) array.

    Each pixel becomes a scale x scale block; tiles are separated by `pad` pixels of mid-grey.
    """
    import numpy as np

    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ArchlabError(f"an image grid needs (N, 1 or 3, H, W) images. Received: {tuple(images.shape)}")
    n, c, h, w = images.shape
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    tiles = images.detach().float().clamp(0, 1).cpu().numpy()
    tiles = tiles.repeat(scale, axis=2).repeat(scale, axis=3)  # (N, C, H*s, W*s)
    th, tw = h * scale, w * scale
    grid = np.full((c, rows * (th + pad) + pad, cols * (tw + pad) + pad), 0.5, dtype=np.float32)
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = pad + r * (th + pad), pad + k * (tw + pad)
        grid[:, top:top + th, left:left + tw] = tiles[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_grid(images: torch.Tensor, path: str | Path, *, columns: int | None = None, scale: int = 4) -> Path:
    """Write images as a PNG grid (grayscale for one channel), without pyplot's global state."""
    from matplotlib.image import imsave

    grid = image_grid(images, columns=columns, scale=scale)
    path = Path(path)
    if grid.ndim == 2:
        imsave(path, grid, cmap="gray", vmin=0.0, vmax=1.0, format="png")
    else:
        imsave(path, grid, format="png")
    return path
