"""VAE and GAN: building (errors name the section), the losses, one alternating GAN step,
short fits recorded in the run store, resume, `archlab sample`, and spec round trips.
Tiny sizes throughout; the quality runs live in bench/generative_quality.py."""

from __future__ import annotations

import math
import struct

import pytest
import torch
from typer.testing import CliRunner

import archlab
from archlab import SpecError
from archlab.cli import app
from archlab.model import GANNetwork, VAENetwork
from archlab.runs import open_store
from archlab.spec import Spec, load_spec
from archlab.train import (
    evaluate,
    evaluate_vae,
    fit,
    fit_generative,
    gan_step,
    image_grid,
    kl_divergence,
    resume,
    vae_loss,
)

LATENT = 3
VAE = {
    "name": "tiny-vae",
    "input": {"shape": [1, 8, 8]},
    "vars": {"latent": LATENT, "hidden": 8},
    "encoder": ["flatten", {"linear": "$hidden"}, "relu", {"linear": "${2 * latent}"}],
    "decoder": [{"linear": "$hidden"}, "relu", {"linear": 64}, "sigmoid", {"reshape": [1, 8, 8]}],
    "train": {"task": "vae", "epochs": 2, "batch_size": 256},
}
GAN = {
    "name": "tiny-gan",
    "input": {"shape": [1, 8, 8]},
    "vars": {"latent": LATENT, "hidden": 8},
    "generator": [{"linear": "$hidden"}, {"leaky_relu": 0.2}, {"linear": 64}, "sigmoid", {"reshape": [1, 8, 8]}],
    "discriminator": ["flatten", {"linear": "$hidden"}, {"leaky_relu": 0.2}, {"dropout": 0.2}, {"linear": 1}],
    "train": {"epochs": 2, "batch_size": 256, "lr": 1e-3},
}
runner = CliRunner()


def _with(base: dict, **sections) -> dict:
    return {**base, **sections}


# ------------------------------------------------------------------------ building


@pytest.mark.parametrize("spec, message", [
    (_with(VAE, decoder=[{"linear": 64}, "sigmoid"]),
     "decoder: outputs (64,) but the data's images are (1, 8, 8); end with reshape: [1, 8, 8]"),
    (_with(VAE, decoder=[{"linear": 10}]),
     "decoder: outputs (10,) but the data's images are (1, 8, 8); end with linear: 64"),
    (_with(VAE, decoder=[{"linear": 64}, {"reshape": [1, 8, 8]}]), "decoder: must end with sigmoid"),
    (_with(VAE, encoder=["flatten", {"linear": 4}]), "encoder: outputs (4,) but a VAE's encoder must output"),
    (_with(VAE, encoder=["flatten", {"linear": 4}, {"conv2d": {"out": 2}}]), "encoder[2].conv2d:"),
    (_with(GAN, generator=[{"linear": 64}]), "generator: outputs (64,) but the data's images are (1, 8, 8)"),
    (_with(GAN, discriminator=["flatten", {"linear": 2}]),
     "discriminator: outputs (2,) but must output one logit (1,) per image; end with linear: 1"),
    (_with(GAN, discriminator=[{"lineer": 1}]), "discriminator[0]: unknown layer 'lineer'"),
    (_with(GAN, vars={"hidden": 8}), "vars.latent: a GAN spec needs the latent size"),
])
def test_build_errors_name_the_section(spec: dict, message: str) -> None:
    with pytest.raises(SpecError) as err:
        archlab.build(spec)
    assert message in str(err.value)


def test_gan_sections_come_in_pairs_without_a_model() -> None:
    with pytest.raises(SpecError, match="a GAN spec has both 'generator' and 'discriminator'"):
        Spec.from_dict({k: v for k, v in GAN.items() if k != "discriminator"})
    with pytest.raises(SpecError, match="a GAN spec has both"):
        Spec.from_dict({**GAN, "model": ["relu"]})
    with pytest.raises(SpecError, match="train.task: a spec with generator and discriminator trains as task gan"):
        archlab.build({**GAN, "train": {"task": "vae"}})


@pytest.mark.parametrize("data", [VAE, GAN, "zoo:vae", "zoo:gan"])
def test_specs_round_trip(data) -> None:
    spec = load_spec(data)
    assert Spec.from_dict(spec.to_dict()) == spec
    assert Spec.from_dict(load_spec(spec.to_yaml()).to_dict()) == spec


def test_vae_shapes_and_state_dict_keys() -> None:
    net = archlab.build(VAE, seed=0)
    assert isinstance(net, VAENetwork) and net.output_shape == (1, 8, 8)
    assert "encoder.model.1.weight" in net.state_dict() and "decoder.model.0.weight" in net.state_dict()
    assert [leaf.path for leaf in net.layers][:2] == ["encoder[0].flatten", "encoder[1].linear"]
    x = torch.rand(5, 1, 8, 8)
    recon, mu, logvar = net(x)
    assert recon.shape == x.shape and mu.shape == logvar.shape == (5, LATENT)
    assert 0 <= recon.min() and recon.max() <= 1
    assert net.sample(7).shape == (7, 1, 8, 8)
    # The same seed builds the same weights.
    again = archlab.build(VAE, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values(), strict=True))


def test_reparameterisation_draws_from_the_generator() -> None:
    net = archlab.build(VAE, seed=0)
    mu, logvar = torch.randn(4, LATENT), torch.randn(4, LATENT)
    z1 = net.reparameterise(mu, logvar, torch.Generator().manual_seed(1))
    z2 = net.reparameterise(mu, logvar, torch.Generator().manual_seed(1))
    z3 = net.reparameterise(mu, logvar, torch.Generator().manual_seed(2))
    eps = torch.randn(4, LATENT, generator=torch.Generator().manual_seed(1))
    assert torch.equal(z1, z2) and not torch.equal(z1, z3)
    assert torch.allclose(z1, mu + torch.exp(0.5 * logvar) * eps)
    # Gradients reach mu and logvar through the sample.
    mu.requires_grad_(True)
    net.reparameterise(mu, logvar).sum().backward()
    assert torch.equal(mu.grad, torch.ones_like(mu))


def test_kl_matches_a_hand_computation() -> None:
    mu = torch.tensor([[0.5, -1.0]])
    logvar = torch.tensor([[math.log(2.0), 0.0]])
    # KL(N(m, s^2) || N(0, 1)) = 0.5 (s^2 + m^2 - 1 - log s^2), per dim
    by_hand = 0.5 * (2.0 + 0.25 - 1 - math.log(2.0)) + 0.5 * (1 + 1 - 1 - 0)
    assert kl_divergence(mu, logvar).item() == pytest.approx(by_hand)
    assert kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)).tolist() == [0, 0, 0]


def test_vae_loss_is_reconstruction_plus_kl_per_image() -> None:
    x = torch.tensor([[1.0, 0.0]]).repeat(2, 1)
    recon = torch.tensor([[0.5, 0.5]]).repeat(2, 1)
    rec, kl = vae_loss(recon, x, torch.zeros(2, 1), torch.zeros(2, 1))
    assert rec.item() == pytest.approx(2 * math.log(2))  # summed over pixels, averaged over images
    assert kl.item() == 0


def test_evaluate_vae_reports_the_elbo_in_parts() -> None:
    net = archlab.build(VAE, seed=0)
    split = archlab.data.load_dataset("digits").val
    m = evaluate_vae(net, split, seed=0)
    assert set(m) == {"loss", "recon", "kl"} and m["loss"] == pytest.approx(m["recon"] + m["kl"])
    assert evaluate_vae(net, split, seed=0) == m  # fixed noise: the same number twice


def test_gan_network_forward_and_sample() -> None:
    net = archlab.build(GAN, seed=0)
    assert isinstance(net, GANNetwork) and net.input_shape == (LATENT,) and net.output_shape == (1,)
    assert net(torch.randn(4, LATENT)).shape == (4, 1)
    g = torch.Generator().manual_seed(0)
    images = net.sample(6, generator=g)
    assert images.shape == (6, 1, 8, 8) and net.training  # sample() leaves the mode as it was
    assert torch.equal(images, net.sample(6, generator=torch.Generator().manual_seed(0)))


def test_one_alternating_step_updates_d_and_g_separately() -> None:
    net = archlab.build(GAN, seed=0)
    opt_g = torch.optim.Adam(net.generator.parameters(), lr=1e-2)
    opt_d = torch.optim.Adam(net.discriminator.parameters(), lr=1e-2)
    g_before = [p.detach().clone() for p in net.generator.parameters()]
    d_before = [p.detach().clone() for p in net.discriminator.parameters()]
    steps: list[str] = []
    opt_d.register_step_post_hook(lambda *_: steps.append("d"))
    d_after_d_step: list[torch.Tensor] = []

    def after_g_step(*_):
        steps.append("g")
        d_after_g = [p.detach().clone() for p in net.discriminator.parameters()]
        # The G step leaves D exactly as D's own step left it.
        assert all(torch.equal(a, b) for a, b in zip(d_after_d_step, d_after_g, strict=True))

    opt_d.register_step_post_hook(lambda *_: d_after_d_step.extend(p.detach().clone() for p in net.discriminator.parameters()))
    opt_g.register_step_post_hook(after_g_step)
    x, z = torch.rand(8, 1, 8, 8), torch.randn(8, LATENT)
    g_mid: list[torch.Tensor] = []
    opt_d.register_step_post_hook(lambda *_: g_mid.extend(p.detach().clone() for p in net.generator.parameters()))
    out = gan_step(net, x, z, opt_g, opt_d)
    assert steps == ["d", "g"]
    # The D step leaves G untouched; each step changes its own half.
    assert all(torch.equal(a, b) for a, b in zip(g_before, g_mid, strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(d_before, d_after_d_step, strict=True))
    assert all(not torch.equal(a, p) for a, p in zip(g_before, net.generator.parameters(), strict=True))
    assert set(out) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in out.values())
    assert 0 < out["d_real"] < 1 and 0 < out["d_fake"] < 1


def test_generative_zoo_specs_inspect_and_draw() -> None:
    from archlab.compare import architecture_html

    for name, first in (("vae", "encoder[0].flatten"), ("gan", "generator[0].linear")):
        r = archlab.inspect(f"zoo:{name}")
        net = archlab.build(f"zoo:{name}", device="meta")
        assert r.params == sum(p.numel() for p in net.parameters()) and r.uncounted == ()
        assert r.layers[0].path == first
        page = architecture_html(f"zoo:{name}")
        for section in net.sections:
            assert f">{section.name}</div>" in page


# -------------------------------------------------------------------------- training


def test_vae_fit_records_elbo_parts_and_tags(archlab_home) -> None:
    run = fit(VAE, data="digits", quiet=True)  # archlab.fit routes task vae to fit_generative
    assert isinstance(run.model, VAENetwork) and len(run.history) == 2
    for record in run.history:
        for split in ("train", "val"):
            assert record[f"{split}_loss"] == pytest.approx(record[f"{split}_recon"] + record[f"{split}_kl"])
            assert record[f"{split}_kl"] >= 0
    assert set(run.test_metrics) == {"loss", "recon", "kl"}
    stored = open_store().get_run(run.run_id)
    assert stored.status == "finished" and stored.tags["task"] == "vae"
    assert [e.epoch for e in stored.history] == [1, 2]
    assert {"train_recon", "train_kl", "val_recon", "val_kl", "val_loss"} <= set(stored.history[0].metrics)
    assert stored.spec["train"]["task"] == "vae"
    assert (run.directory / "spec.yaml").exists() and (run.directory / "best.safetensors").exists()
    assert run.best_epoch == min(run.history, key=lambda r: r["val_loss"])["epoch"]


def test_gan_fit_logs_both_losses(archlab_home) -> None:
    run = fit_generative(GAN, data="digits", quiet=True, epochs=2)
    assert isinstance(run.model, GANNetwork)
    assert all({"train_d_loss", "train_g_loss", "train_d_real", "train_d_fake"} <= set(r) for r in run.history)
    stored = open_store().get_run(run.run_id)
    assert stored.tags["task"] == "gan" and stored.status == "finished" and len(stored.history) == 2
    assert set(stored.test_metrics) == {"d_real", "d_fake"}


@pytest.mark.parametrize("spec", [VAE, GAN])
def test_evaluate_scores_a_generative_run_by_its_own_metrics(archlab_home, spec) -> None:
    run = fit_generative(spec, data="digits", quiet=True, epochs=1)
    result = evaluate(run.run_id)
    # The best (VAE) or last (GAN) weights, re-scored on the test split: the stored numbers again.
    assert {k: result[k] for k in run.test_metrics} == pytest.approx(run.test_metrics, rel=1e-5)
    cli = runner.invoke(app, ["evaluate", run.run_id, "--split", "val"])
    assert cli.exit_code == 0, cli.output
    assert "(val)" in cli.output and ("loss (-ELBO)" in cli.output if spec is VAE else "d_fake" in cli.output)


def test_a_time_budget_stops_a_generative_run_after_an_epoch(archlab_home) -> None:
    run = fit_generative(GAN, data="digits", quiet=True, epochs=50, max_minutes=1e-6)
    assert len(run.history) == 1 and run.status == "finished"
    assert open_store().get_run(run.run_id).status == "finished"


@pytest.mark.parametrize("spec", [VAE, GAN])
def test_an_interrupted_run_resumes_to_the_same_weights(archlab_home, spec) -> None:
    straight = fit(spec, data="digits", quiet=True, epochs=3)

    def stop(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="resume with `archlab train --resume"):
        fit_generative(spec, data="digits", quiet=True, epochs=3, on_epoch=stop)
    stopped = open_store().list_runs(status="interrupted")[0]
    resumed = resume(stopped.run_id)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_generative_fit_refuses_token_data_and_bad_settings(archlab_home) -> None:
    with pytest.raises(archlab.DataError, match="a VAE learns images"):
        fit(VAE, data="seq:copy", quiet=True)
    with pytest.raises(SpecError, match="fp32"):
        fit_generative(VAE, data="digits", quiet=True, precision="bf16")
    with pytest.raises(SpecError, match="early_stop needs a validation loss"):
        fit_generative(GAN, data="digits", quiet=True, early_stop=2)
    assert open_store().list_runs() == []  # refused before a run was recorded


# ------------------------------------------------------------------------ sampling


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])  # width, height


def test_image_grid_layout() -> None:
    grid = image_grid(torch.ones(5, 1, 8, 8), scale=2, pad=1)
    assert grid.shape == (2 * 17 + 1, 3 * 17 + 1)  # 3 columns, 2 rows of 16-pixel tiles
    assert grid[1, 1] == 1.0 and grid[0, 0] == 0.5
    assert image_grid(torch.zeros(4, 3, 2, 2), scale=1).shape == (7, 7, 3)


@pytest.mark.parametrize("spec", [VAE, GAN])
def test_sample_command_writes_a_png_grid(archlab_home, tmp_path, spec) -> None:
    run = fit_generative(spec, data="digits", quiet=True, epochs=1)
    out = tmp_path / "grid.png"
    result = runner.invoke(app, ["sample", run.run_id, "--n", "10", "--out", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert _png_size(out) == (4 * 33 + 1, 3 * 33 + 1)  # 4 columns x 3 rows of 8x8 pixels at scale 4
    assert "wrote 10 samples" in result.output


def test_sample_refuses_a_classifier_run(archlab_home, tmp_path) -> None:
    run = fit({"input": {"shape": [1, 8, 8]}, "model": ["flatten", {"linear": 10}]}, data="digits",
              quiet=True, epochs=1)
    result = runner.invoke(app, ["sample", run.run_id, "--out", str(tmp_path / "x.png")])
    assert result.exit_code != 0 and "draws images from vae or gan runs" in str(result.exception)
