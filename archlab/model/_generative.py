"""The generative networks: a VAE and a GAN, each made of two halves written as specs.

Their training lives in archlab.train (the VAE and GAN tasks).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..core import FrozenDict, SpecError
from ..layers import TensorType
from ..spec import InputSpec, Spec, check_shape
from ._builder import Network, _Builder
from ._network import BuiltNetwork, LeafInfo, is_meta

GENERATIVE_TASKS = ("vae", "gan")
GAN_BETAS = (0.5, 0.999)  # DCGAN's: a short momentum memory keeps up with the moving target
# Layers that only rearrange values: a VAE decoder may put them after its final sigmoid.
_SHAPE_ONLY = ("reshape", "flatten", "identity", "permute")


def generative_task(spec: Spec, task: str | None = None) -> str | None:
    """"vae" or "gan" if `spec` (with an optional `--task` override) is a generative model."""
    task = task or spec.train.get("task")
    if spec.generator is not None:
        if task not in (None, "gan"):
            raise SpecError(f"train.task: a spec with generator and discriminator trains as task gan. "
                            f"Received: task={task!r}")
        return "gan"
    return task if task in GENERATIVE_TASKS else None


# ------------------------------------------------------------------------ networks


class VAENetwork(BuiltNetwork, nn.Module):
    """encoder(x) -> [mu, logvar]; z = mu + sigma * eps; decoder(z) -> pixels in [0, 1].

    `forward` returns (reconstruction, mu, logvar). A plain nn.Module.
    """

    kind = "vae"

    def __init__(self, encoder: Network, decoder: Network, spec: Spec, latent: int, layers: list[LeafInfo]):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        # Plain attributes, not submodules (as in Network).
        self.spec, self.latent, self.layers = spec, latent, layers
        self.input_type, self.output_type = encoder.input_type, decoder.output_type
        self.sections = (*encoder.sections, *decoder.sections)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)  # (B, 2L)
        return h[:, :self.latent], h[:, self.latent:]  # mu, logvar: (B, L) each

    def reparameterise(self, mu: torch.Tensor, logvar: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mu + exp(logvar / 2) * eps with eps ~ N(0, I) drawn from `generator`."""
        eps = _normal(mu.shape, generator, mu)
        return mu + torch.exp(0.5 * logvar) * eps  # (B, L)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = self.reparameterise(mu, logvar, generator)
        return self.decoder(z), mu, logvar  # (B, C, H, W), (B, L), (B, L)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images decoded from z ~ N(0, I) (eval mode): (n, C, H, W) in [0, 1]."""
        device = next(self.parameters()).device
        with _eval(self):
            return self.decoder(_normal((n, self.latent), generator, torch.empty(0, device=device)))

    def example_input(self, batch: int = 2, device: Any = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        shape = (batch, *self.input_shape)
        if is_meta(device):
            return torch.empty(shape, device=device, dtype=dtype)
        return torch.rand(shape, device=device, dtype=dtype)  # pixels in [0, 1]


class GANNetwork(BuiltNetwork, nn.Module):
    """generator(z) -> image; discriminator(image) -> one logit. A plain nn.Module.

    `forward(z)` is the generator step's forward, D(G(z)) logits, so `inspect` prices both
    halves; `sample(n)` draws images.
    """

    kind = "gan"

    def __init__(self, generator: Network, discriminator: Network, spec: Spec, latent: int,
                 layers: list[LeafInfo]):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.spec, self.latent, self.layers = spec, latent, layers
        self.input_type, self.output_type = generator.input_type, discriminator.output_type
        self.sections = (*generator.sections, *discriminator.sections)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.discriminator.input_type.shape

    @property
    def data_shape(self) -> tuple[int, ...]:
        """A GAN learns from images; its own input is the latent code."""
        return self.image_shape

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.discriminator(self.generator(z))  # (B, L) -> (B, C, H, W) -> (B, 1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images G(z), z ~ N(0, I) (eval mode): (n, C, H, W)."""
        device = next(self.parameters()).device
        with _eval(self):
            return self.generator(_normal((n, self.latent), generator, torch.empty(0, device=device)))

    def example_input(self, batch: int = 2, device: Any = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        shape = (batch, self.latent)
        if is_meta(device):
            return torch.empty(shape, device=device, dtype=dtype)
        return torch.randn(shape, device=device, dtype=dtype)


def _normal(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """N(0, 1) noise from `generator` (on its own device), placed like `like`."""
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype if like.is_floating_point() else None)
    eps = torch.randn(shape, generator=generator, device=generator.device)
    return eps.to(like.device, like.dtype if like.is_floating_point() else torch.float32)


class _eval:  # noqa: N801 - used as a context manager, like torch.no_grad
    """Eval mode inside the block, the previous mode after it."""

    def __init__(self, module: nn.Module):
        self.module, self.was_training = module, module.training

    def __enter__(self) -> None:
        self.module.eval()

    def __exit__(self, *exc: Any) -> None:
        self.module.train(self.was_training)


# ------------------------------------------------------------------------ building


def _prelude(spec: Spec, x: TensorType, env: Mapping[str, Any], task: str) -> tuple[TensorType, int]:
    """Checks both kinds share; returns the latent type and size."""
    generative_task(spec)  # refuses a GAN spec with another task
    if x.dtype != "float":
        raise SpecError(f"input: a {task.upper()} learns images (float input). Received: {x.describe()}")
    latent = env.get("latent")
    if latent is None:
        raise SpecError(f"vars.latent: a {task.upper()} spec needs the latent size as a var, "
                        f"e.g. vars: {{latent: 16}}")
    check_shape([latent], "vars.latent")
    return TensorType((int(latent),), "float", "flat", "latent"), int(latent)


def build_vae(spec: Spec, x: TensorType, env: Mapping[str, Any], device: Any, seed: int) -> VAENetwork:
    """Both halves with shape inference; errors name the section (`decoder: ...`).

    The `vae` network kind: a spec with `encoder:`, `decoder:` and `train: {task: vae}`.
    """
    z, latent = _prelude(spec, x, env, "vae")
    if spec.encoder is None or spec.decoder is None:
        raise SpecError("spec: a VAE (train: {task: vae}) has 'encoder' and 'decoder' sections")
    builder = _Builder(spec)
    env = FrozenDict(dict(env))
    with torch.device(device), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = _half(builder, spec, "encoder", x, env)
        if encoder.output_shape != (2 * latent,):
            raise SpecError(f"encoder: outputs {encoder.output_shape} but a VAE's encoder must output "
                            f"(2 * latent,) = ({2 * latent},), the mean and log-variance of z; "
                            f"end with linear: ${{2 * latent}}")
        decoder = _half(builder, spec, "decoder", z, env)
        _check_image(decoder, "decoder", x.shape)
        last = [leaf.kind for leaf in decoder.layers if leaf.kind not in _SHAPE_ONLY]
        if not last or last[-1] != "sigmoid":
            raise SpecError(f"decoder: must end with sigmoid (pixel probabilities in [0, 1] for the "
                            f"reconstruction loss); its last layer is {last[-1] if last else 'missing'}")
    return VAENetwork(encoder, decoder, spec, latent, builder.leaves)


def build_gan(spec: Spec, x: TensorType, env: Mapping[str, Any], device: Any, seed: int) -> GANNetwork:
    """Both halves with shape inference; errors name the section (`generator: ...`).

    The `gan` network kind: a spec with `generator:` and `discriminator:` (or `task: gan`).
    """
    z, latent = _prelude(spec, x, env, "gan")
    if spec.generator is None or spec.discriminator is None:
        raise SpecError("spec: a GAN (train: {task: gan}) has 'generator' and 'discriminator' sections")
    builder = _Builder(spec)
    env = FrozenDict(dict(env))
    with torch.device(device), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = _half(builder, spec, "generator", z, env)
        _check_image(generator, "generator", x.shape)
        discriminator = _half(builder, spec, "discriminator", x, env)
        if discriminator.output_shape != (1,):
            raise SpecError(f"discriminator: outputs {discriminator.output_shape} but must output one "
                            f"logit (1,) per image; end with linear: 1")
    return GANNetwork(generator, discriminator, spec, latent, builder.leaves)


def _half(builder: _Builder, spec: Spec, section: str, x: TensorType, env: Mapping[str, Any]) -> Network:
    """One section as a Network; its layers' paths start `section[i]`, modules `section.model.i`."""
    nodes = {"encoder": spec.encoder, "decoder": spec.decoder, "generator": spec.generator,
             "discriminator": spec.discriminator}[section]
    nodes = nodes if isinstance(nodes, list | tuple) else (nodes,)
    first = len(builder.leaves)
    model, out, tree = builder.section(nodes, x, section, f"{section}.model", env)
    own = [dataclasses.replace(leaf, module_name=leaf.module_name[len(section) + 1:])
           for leaf in builder.leaves[first:]]
    half = Spec(name=f"{spec.name}.{section}", input=InputSpec(x.shape, x.dtype), model=nodes,
                vars=spec.vars, blocks=spec.blocks)
    return Network(model, half, x, out, own, tree, section)


def _check_image(net: Network, section: str, image: tuple[int, ...]) -> None:
    out = net.output_shape
    if out == tuple(image):
        return
    fix = (f"reshape: {list(image)}" if math.prod(out) == math.prod(image)
           else f"linear: {math.prod(image)}, then sigmoid and reshape: {list(image)}")
    raise SpecError(f"{section}: outputs {out} but the data's images are {tuple(image)}; end with {fix}")


