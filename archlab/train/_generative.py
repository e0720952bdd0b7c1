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

    run = fit("zoo:gan", data="digits", epochs=200)
    images = run.model.sample(64, generator=torch.Generator().manual_seed(0))  # (64, 1, 8, 8)

Both networks are plain nn.Modules whose halves are `Network`s (state_dict keys such as
`encoder.model.0.weight`). Both are tasks of the one training loop (`Trainer`), registered
in `TASKS` as "vae" and "gan": each owns its step (`train_step`) and its optimizers (one
for a VAE; D's and G's for a GAN), so they checkpoint mid-epoch, resume bit-exactly, stop
on Ctrl-C, and honour the time budget and the per-epoch callback as every task does.
`archlab sample RUN_ID` writes an image grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..core import ArchlabError, DataError, SpecError
from ..data import DataInfo, Dataset, Split
from ..model import GAN_BETAS, GANNetwork, VAENetwork
from ..model import eval_mode as _eval
from ..model import normal_noise as _normal
from ..spec import Spec
from ._optim import StepContext, make_optimizer
from ._settings import TrainSettings
from ._tasks import TASKS, Task

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
             opt_d: torch.optim.Optimizer, real_target: float = 1.0, grad_clip: float | None = None,
             ctx: StepContext | None = None) -> dict[str, torch.Tensor]:
    """One alternating update: D on real and generated images, then G (non-saturating loss).

    Returns detached d_loss, g_loss, d_real (mean D(x)) and d_fake (mean D(G(z)), before D's update).
    Inside the trainer `ctx` does the updates (and its --grad-clip applies); alone, `grad_clip`.
    """
    if ctx is None:
        ctx = StepContext(net, net, torch.default_generator, x.device, grad_clip=grad_clip)
    fake = net.generator(z)  # (B, C, H, W)
    # D step: real -> 1 (or 1 - smoothing), generated -> 0; the fake is detached so G is untouched.
    real_logits = net.discriminator(x)
    fake_logits = net.discriminator(fake.detach())
    d_loss = (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_target))
              + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    ctx.update(d_loss, opt_d, net.discriminator.parameters())
    # G step: maximise log D(G(z)) (stronger gradients early than minimising log(1 - D(G(z)))).
    # Backward also fills D's .grad, but only opt_g steps here; opt_d clears them next time.
    g_logits = net.discriminator(fake)
    g_loss = F.binary_cross_entropy_with_logits(g_logits, torch.ones_like(g_logits))
    ctx.update(g_loss, opt_g, net.generator.parameters())
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


# -------------------------------------------------------------------------- the tasks


class GenerativeTask(Task):
    """What the VAE and GAN tasks share: image input, fp32, no augmentation, no output check."""

    mode = "min"

    def adapt_spec(self, spec: Spec, dataset: Dataset) -> Spec:
        info = dataset.info
        if info.input_dtype != "float":
            raise DataError(f"{info.name}: a {self.name.upper()} learns images (float input); this data set "
                            f"has {info.input_dtype} input {info.input_shape}")
        # The task goes into the recorded spec: `build` tells a VAE spec from it.
        return spec.with_input(info.input_shape, "float").with_train(task=self.name)

    def check_settings(self, s: TrainSettings, info: DataInfo) -> None:
        if s.precision != "fp32" or s.compile:
            raise SpecError(f"train: {self.name} runs train in fp32 without torch.compile "
                            f"(precision={s.precision!r}, compile={s.compile})")
        if s.crop_padding or s.hflip:
            raise SpecError(f"train: crop_padding/hflip are not applied to {self.name} runs; remove them")

    def check_output(self, shape: tuple[int, ...]) -> None:
        pass  # the builder checked both halves against the data's images

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"the {self.name} task computes its losses in train_step")

    def stats(self, out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"the {self.name} task sums its statistics in train_step")


@TASKS.register("vae")
class VAETask(GenerativeTask):
    """Minimises the negative ELBO (`loss` = `recon` + `kl`); keeps the weights of the best
    validation ELBO. One optimizer."""

    name, primary = "vae", "loss"

    def check_settings(self, s: TrainSettings, info: DataInfo) -> None:
        super().check_settings(s, info)
        if s.label_smoothing:
            raise SpecError("train: label_smoothing is a GAN setting (one-sided, for D's real targets); remove it")

    def train_step(self, ctx: StepContext, batch: tuple[torch.Tensor, torch.Tensor],
                   optimizers: Sequence[torch.optim.Optimizer]) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = batch
        rec, kl = _vae_batch(ctx.model, x, ctx.generator)  # eps drawn from the epoch's generator
        loss = rec + kl
        ctx.update(loss, optimizers[0])
        return loss, torch.stack([rec, kl]).detach() * len(x)  # recon, kl summed over images

    def summarize(self, sums: torch.Tensor, n: int) -> dict[str, float]:
        rec, kl = (sums / n).tolist()
        return {"loss": rec + kl, "recon": rec, "kl": kl}

    def evaluate(self, model: torch.nn.Module, split: Any, *, device: torch.device, precision: str = "fp32",
                 batch_size: int = 1024, seed: int = 0, report: bool = False) -> tuple[dict[str, float], dict[str, Any]]:
        return evaluate_vae(model, split, seed=seed, batch_size=batch_size), {}


@TASKS.register("gan")
class GANTask(GenerativeTask):
    """Alternating D and G updates, two optimizers (G's first; Adam betas (0.5, 0.999)).

    A GAN has no validation loss: there is no validation pass, the last weights are kept and
    early stopping is refused. `label_smoothing` is one-sided: D's target for real images is
    1 - label_smoothing."""

    name, primary = "gan", "g_loss"
    validates = False
    options = ("label_smoothing",)

    def __init__(self, num_classes: int | None = None, vocab_size: int | None = None,
                 label_smoothing: float = 0.0):
        super().__init__(num_classes, vocab_size)
        self.real_target = 1.0 - label_smoothing

    def check_settings(self, s: TrainSettings, info: DataInfo) -> None:
        super().check_settings(s, info)
        if s.early_stop:
            raise SpecError("train: early_stop needs a validation loss, which a GAN does not have; remove it")

    def configure_optimizers(self, net: torch.nn.Module, s: TrainSettings) -> list[torch.optim.Optimizer]:
        betas = GAN_BETAS if s.optimizer in ("adam", "adamw") else None
        return [make_optimizer(net.generator, s, betas=betas), make_optimizer(net.discriminator, s, betas=betas)]

    def train_step(self, ctx: StepContext, batch: tuple[torch.Tensor, torch.Tensor],
                   optimizers: Sequence[torch.optim.Optimizer]) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = batch
        net = ctx.net
        opt_g, opt_d = optimizers
        z = _normal((len(x), net.latent), ctx.generator, x)
        out = gan_step(net, x, z, opt_g, opt_d, self.real_target, ctx=ctx)
        sums = torch.stack([out["d_loss"], out["g_loss"], out["d_real"], out["d_fake"]]) * len(x)
        return out["d_loss"] + out["g_loss"], sums

    def summarize(self, sums: torch.Tensor, n: int) -> dict[str, float]:
        d_loss, g_loss, d_real, d_fake = (sums / n).tolist()
        return {"d_loss": d_loss, "g_loss": g_loss, "d_real": d_real, "d_fake": d_fake}

    def evaluate(self, model: torch.nn.Module, split: Any, *, device: torch.device, precision: str = "fp32",
                 batch_size: int = 1024, seed: int = 0, report: bool = False) -> tuple[dict[str, float], dict[str, Any]]:
        return evaluate_gan(model, split, seed=seed, batch_size=batch_size), {}


# ------------------------------------------------------------------------ images


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
