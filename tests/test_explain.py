"""archlab.explain: the weights-returning attention path, attributions on Captum, the checks
(completeness, model randomisation, deletion), the offline HTML section, the CLI and its
one-line errors. Every run here is a tiny model trained for a few epochs on digits or a
small table written by the test."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from clirun import run_main as _main
from torch import nn
from typer.testing import CliRunner

import archlab
from archlab.cli import app
from archlab.compare import explanation_section, write_explanation
from archlab.core import ArchlabError, SpecError
from archlab.explain import (
    attention_maps,
    attention_modules,
    completeness_error,
    curve_area,
    deletion_curves,
    explain,
    gradcam,
    head_entropy,
    integrated_gradients,
    last_conv,
    parse_methods,
    rank_correlation,
    recording,
)
from archlab.layers import AdditiveAttention, SelfAttention, math_attention
from archlab.train import fit

runner = CliRunner()

CNN = {"name": "tiny-cnn", "input": {"shape": [1, 8, 8]}, "vars": {"num_classes": 10},
       "model": [{"conv2d": {"out": 8, "kernel": 3, "padding": "same"}}, "relu", {"maxpool": 2}, "flatten",
                 {"linear": "$num_classes"}],
       "train": {"epochs": 4, "batch_size": 64, "optimizer": "adamw", "lr": 5e-3}}
# Pixel rows as a sequence of 8 tokens of 8 features: attention on float inputs, so the same
# run has attributions and attention maps.
ATTN = {"name": "tiny-attn", "input": {"shape": [1, 8, 8]}, "vars": {"num_classes": 10},
        "model": [{"reshape": {"shape": [8, 8], "layout": "sequence"}}, {"linear": 16},
                  {"attention": {"heads": 2}}, {"seq_pool": "mean"}, {"linear": "$num_classes"}],
        "train": {"epochs": 3, "batch_size": 64, "optimizer": "adamw", "lr": 5e-3}}
MLP = {"name": "tiny-mlp", "input": {"shape": [4]}, "vars": {"num_classes": 2},
       "model": [{"linear": 16}, "relu", {"linear": "$num_classes"}],
       "train": {"epochs": 10, "batch_size": 16, "optimizer": "adamw", "lr": 1e-2}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("explain-store")


@pytest.fixture(scope="module")
def cnn_run(store) -> str:
    return fit(CNN, data="digits", store=store, quiet=True).run_id


@pytest.fixture(scope="module")
def attn_run(store) -> str:
    return fit(ATTN, data="digits", store=store, quiet=True).run_id


@pytest.fixture(scope="module")
def table_run(store, tmp_path_factory) -> str:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("table") / "loans.csv"
    lines = ["income,age,noise,region,approved"]
    for _ in range(160):
        income, age, noise = rng.normal(), rng.normal(), rng.normal()
        region = rng.choice(["north", "south"])
        lines.append(f"{income:.3f},{age:.3f},{noise:.3f},{region},{int(income + 0.3 * age > 0)}")
    path.write_text("\n".join(lines) + "\n")
    return fit(MLP, data=f"csv:{path}", store=store, quiet=True).run_id


@pytest.fixture(scope="module")
def cnn_expl(store, cnn_run):
    return explain(cnn_run, samples=12, store=store)


# ---------------------------------------------------------------- attention weights path


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv_heads,rope", [(4, False), (2, True), (1, False)])
def test_weights_path_reproduces_the_fused_kernel(causal, kv_heads, rope):
    torch.manual_seed(0)
    m = SelfAttention(32, 4, kv_heads, 8, causal, rope, 0.0, True, 12).eval()
    x = torch.randn(3, 12, 32)
    with torch.no_grad():
        fused = m(x)
        out, w = m.forward_with_weights(x)
    assert (out - fused).abs().max() <= 1e-6
    assert w.shape == (3, 4, 12, 12)
    assert torch.allclose(w.sum(-1), torch.ones(3, 4, 12), atol=1e-6)
    if causal:
        assert (w.triu(1) == 0).all()  # no query sees a later key


def test_math_attention_is_sdpa():
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 4)
    y, w = math_attention(q, k, v, causal=False)
    assert (y - torch.nn.functional.scaled_dot_product_attention(q, k, v)).abs().max() <= 1e-6
    assert w.shape == (2, 3, 5, 7)


def test_additive_attention_weights_path():
    torch.manual_seed(2)
    for query in ("learned", "last", "mean"):
        m = AdditiveAttention(6, 6, 5, query)
        h = torch.randn(4, 9, 6)
        out, w = m.forward_with_weights(h)
        assert (out - m(h)).abs().max() <= 1e-6 and w.shape == (4, 1, 1, 9)


def test_weights_path_refuses_a_kv_cache():
    from archlab.layers import LayerCache

    m = SelfAttention(8, 2, 2, 4, True, False, 0.0, True, 4)
    m.cache = LayerCache()
    with pytest.raises(RuntimeError, match="does not decode"):
        m.forward_with_weights(torch.randn(1, 3, 8))


def _transformer(causal: bool = False):
    block = "decoder_block" if causal else "encoder_block"
    return archlab.build({"input": {"shape": [6], "dtype": "long"},
                          "model": [{"embedding": {"vocab": 11, "dim": 16}},
                                    {"repeat": 2, "block": [{block: {"heads": 4}}]},
                                    {"seq_pool": "mean"}, {"linear": 3}]}, seed=0).eval()


def test_recording_reads_every_block_and_puts_the_fused_forward_back():
    net = _transformer()
    x = torch.randint(0, 11, (5, 6))
    maps, diff = attention_maps(net, net.layers, x)
    assert [a.layer for a in maps] == ["model[1].repeat[0][0].encoder_block.attn",
                                       "model[1].repeat[1][0].encoder_block.attn"]
    assert diff <= 1e-6 and all(a.difference <= 1e-6 for a in maps)
    assert all(a.weights.shape == (5, 4, 6, 6) and a.entropy.shape == (4,) for a in maps)
    for _, module in attention_modules(net, net.layers):
        assert "forward" not in module.__dict__  # the class's fused forward again
    with pytest.raises(ZeroDivisionError):  # put back even when the forward fails
        with recording(attention_modules(net, net.layers)):
            raise ZeroDivisionError
    assert all("forward" not in m.__dict__ for _, m in attention_modules(net, net.layers))


def test_entropy_of_uniform_and_one_hot_weights():
    net = _transformer(causal=True)
    for _, m in attention_modules(net, net.layers):  # zero queries and keys: every key weighs the same
        with torch.no_grad():
            m.qkv.weight[: 2 * 16].zero_()
            if m.qkv.bias is not None:
                m.qkv.bias[: 2 * 16].zero_()
    maps, _ = attention_maps(net, net.layers, torch.randint(0, 11, (2, 6)))
    expected = np.mean([math.log(t) for t in range(1, 7)])  # causal: query t sees t keys
    for a in maps:
        assert np.allclose(a.entropy, expected, atol=1e-5) and a.uniform == pytest.approx(expected, abs=1e-6)
    one_hot = torch.zeros(1, 2, 3, 3)
    one_hot[..., 0] = 1
    entropy, _ = head_entropy(one_hot)
    assert np.allclose(entropy, 0)


# ------------------------------------------------------------------------- the checks


def test_rank_correlation_is_spearman():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 30)), rng.normal(size=(5, 30))
    b[:, :10] = 0  # ties
    rho = rank_correlation(a, b)
    assert np.allclose(rho, [spearmanr(a[i], b[i]).statistic for i in range(5)])
    assert np.allclose(rank_correlation(a, a), 1) and np.allclose(rank_correlation(a, -a), -1)
    assert np.isnan(rank_correlation(a, np.zeros_like(a))).all()


class _Linear(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = torch.tensor(w)

    def forward(self, x):
        return (x * self.w).sum(1, keepdim=True)


def test_deletion_curve_values_on_a_linear_model():
    model = _Linear([3.0, 1.0, 2.0, 0.5])
    x = torch.ones(1, 4)
    order = torch.tensor([[0, 2, 1, 3]])  # largest contribution first
    fractions, scores = deletion_curves(model, x, torch.zeros(1, dtype=torch.long), order, torch.zeros_like(x),
                                        image_like=False, probability=False)
    assert np.allclose(fractions, [0, 0.25, 0.5, 0.75, 1])
    assert np.allclose(scores, [[6.5, 3.5, 1.5, 0.5, 0]])
    worst = deletion_curves(model, x, torch.zeros(1, dtype=torch.long), order.flip(1), torch.zeros_like(x),
                            image_like=False, probability=False)[1]
    assert curve_area(fractions, scores)[0] < curve_area(fractions, worst)[0]
    assert curve_area(np.array([0, 0.5, 1.0]), np.ones((1, 3)))[0] == pytest.approx(1.0)


def test_deletion_removes_every_channel_of_a_pixel():
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 2 * 2, 1, bias=False))
    with torch.no_grad():
        model[1].weight.fill_(1.0)
    x = torch.ones(1, 2, 2, 2)
    _, scores = deletion_curves(model, x, torch.zeros(1, dtype=torch.long), torch.tensor([[0, 1, 2, 3]]),
                                torch.zeros_like(x), image_like=True, probability=False)
    assert np.allclose(scores, [[8, 6, 4, 2, 0]])


def test_integrated_gradients_steps_up_until_complete():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3)).eval()
    x = torch.randn(10, 6) * 2
    target = model(x).argmax(1)
    r = integrated_gradients(model, x, target, torch.zeros_like(x), tolerance=1e-4, max_steps=8192)
    assert (r.error <= 1e-4).all() and r.steps.max() > 64   # some needed more than the first try
    # (batch size changes float32 rounding of the forward: ~1e-8)
    assert np.allclose(r.error, completeness_error(model, x, torch.zeros_like(x), target, r.attributions), atol=1e-6)
    # Our completeness error is Captum's convergence delta.
    from captum.attr import IntegratedGradients

    _, delta = IntegratedGradients(model).attribute(x[:1], baselines=x[:1] * 0, target=target[:1], n_steps=64,
                                                    method="riemann_middle", return_convergence_delta=True)
    a64 = IntegratedGradients(model).attribute(x[:1], baselines=x[:1] * 0, target=target[:1], n_steps=64,
                                               method="riemann_middle")
    ours = completeness_error(model, x[:1], x[:1] * 0, target[:1], a64)
    assert ours[0] == pytest.approx(abs(float(delta[0])), abs=1e-5)


def test_gradcam_uses_the_last_conv_and_has_the_input_shape():
    net = archlab.build({"input": {"shape": [1, 8, 8]}, "model": [
        {"conv2d": {"out": 4, "kernel": 3, "padding": "same"}}, "relu",
        {"conv2d": {"out": 6, "kernel": 3, "stride": 2, "padding": 1}}, "relu", "flatten", {"linear": 3}]}).eval()
    leaf, module = last_conv(net, net.layers)
    assert leaf.path == "model[2].conv2d" and module.out_channels == 6
    x = torch.rand(2, 1, 8, 8)
    cam = gradcam(net, module, x, torch.tensor([0, 1]))
    assert cam.shape == x.shape and (cam >= 0).all()
    mlp = archlab.build(MLP)
    assert last_conv(mlp, mlp.layers) is None


def test_parse_methods():
    assert parse_methods("saliency, IG,ig") == ("saliency", "ig")
    assert parse_methods(None) is None
    with pytest.raises(ArchlabError, match=r"expected a comma-separated list of saliency, ig, gradcam, "
                                           r"attention\. Received: lime"):
        parse_methods("ig,lime")


# -------------------------------------------------------------- explain on stored runs


def test_explain_an_image_model(cnn_expl):
    e = cnn_expl
    assert e.method_names == ("saliency", "ig", "gradcam") and e.kind == "image"
    assert e.inputs.shape == (12, 1, 8, 8) and sorted(set(e.labels.tolist())) == list(range(10))
    assert e.per_class_examples() and len(e.per_class_examples()) == 10
    s = e.summary()
    assert s["ig"]["completeness_max"] <= 1e-3 and s["ig"]["completeness_pass"]
    for m in e.methods:
        assert m.attributions.shape == m.randomised.shape == (12, 1, 8, 8)
        assert m.rank_corr.shape == (12,) and m.deletion.shape[0] == 12
    assert e.fractions[0] == 0 and e.fractions[-1] == 1 and e.random_auc.shape == (12,)
    # Deleting by integrated gradients beats random deletion for most samples of a trained model.
    assert s["ig"]["deletion_wins"] >= 0.75
    assert np.isfinite(s["saliency"]["rank_corr_mean"])


def test_explain_attention_on_float_inputs(store, attn_run):
    e = explain(attn_run, samples=6, store=store)
    assert e.method_names == ("saliency", "ig", "attention")   # no conv layer: no Grad-CAM by default
    (a,) = e.attention
    assert a.layer == "model[2].attention" and a.weights.shape == (6, 2, 8, 8)
    # The layer's math-path output equals its fused kernel's on the same input, to float32
    # rounding of the output's scale (a trained layer's outputs reach ~10: 1 ulp is ~1e-6).
    assert e.attention_error <= 1e-6 and a.difference <= 1e-6 * a.scale
    assert np.all(a.entropy <= a.uniform + 1e-6) and a.uniform == pytest.approx(math.log(8), abs=1e-6)
    only = explain(attn_run, methods="attention", samples=3, store=store)
    assert only.methods == () and only.method_names == ("attention",)


def test_explain_a_language_model_has_attention_only(store, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    spec = {"name": "tiny-lm", "input": {"shape": [16], "dtype": "long"}, "vars": {"vocab_size": 100},
            "model": [{"embedding": {"vocab": "$vocab_size", "dim": 16}}, {"decoder_block": {"heads": 2}}, "unembed"],
            "train": {"task": "language_model", "epochs": 1, "batch_size": 32}}
    run = fit(spec, data=f"text:{text}?context=16", store=store, quiet=True).run_id
    e = explain(run, samples=4, store=store)
    (a,) = e.attention
    assert e.method_names == ("attention",) and e.kind == "tokens"
    assert a.layer == "model[1].decoder_block.attn" and a.weights.shape == (4, 2, 16, 16)
    assert (np.triu(a.weights, 1) == 0).all()   # causal
    with pytest.raises(SpecError, match=r"--methods ig needs float inputs; this model takes token ids .*"
                                        r"use --methods attention$"):
        explain(run, methods="ig", store=store)


def test_explain_a_table_names_its_features(store, table_run, tmp_path):
    e = explain(table_run, methods="ig,saliency", samples=20, store=store)
    assert e.kind == "table"
    assert e.feature_names == ("income", "age", "noise", "region=north", "region=south")
    importance = np.abs(e.method("ig").attributions).mean(0)
    assert e.feature_names[int(importance.argmax())] == "income"
    page = write_explanation(e, tmp_path / "t.html").read_text()
    assert 'id="explain-features"' in page and "<!-- income -->" in page and 'id="explain-classes"' in page


def test_explain_errors_are_one_line(store, cnn_run, table_run):
    with pytest.raises(SpecError, match=r"--methods attention needs an attention layer .*the model has none "
                                        r"\(it has conv2d, relu, maxpool, flatten, linear\)\. .*use --methods "
                                        r"saliency,ig,gradcam") as info:
        explain(cnn_run, methods="attention", store=store)
    assert "\n" not in str(info.value)
    with pytest.raises(SpecError, match=r"--methods gradcam needs a conv1d or conv2d layer; the model has none "
                                        r"\(it has linear, relu\)") as info:
        explain(table_run, methods="gradcam", store=store)
    assert "\n" not in str(info.value)
    with pytest.raises(ArchlabError, match=r"--samples: expected between 1 and 10000\. Received: 0"):
        explain(cnn_run, samples=0, store=store)


# --------------------------------------------------------------------------- the page


def _self_contained(page: str) -> None:
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    assert "<iframe" not in page and "<img" not in page and "url(http" not in page


def test_section_is_offline_and_shows_the_checks(cnn_expl, tmp_path):
    page = write_explanation(cnn_expl, tmp_path / "e.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    _self_contained(page)
    section = re.search(r'<section id="explanations">.*</section>', page, re.S).group(0)
    assert section.count("<section") == 1 and section == explanation_section(cnn_expl)
    assert 'data:image/png;base64,' in section          # heat maps: pixels inline, nothing fetched
    for row in ("check-saliency", "check-ig", "check-gradcam"):
        assert f'<tr id="{row}">' in section
    ig = re.search(r'<tr id="check-ig">(.*?)</tr>', section, re.S).group(1)
    assert f"{cnn_expl.method('ig').completeness.max():.1e}" in ig and 'class="pass"' in ig
    for chart in ("explain-examples", "explain-deletion"):
        assert f'<figure class="chart" id="{chart}">' in section
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_explanation_page_renders_in_chromium(store, attn_run, tmp_path):
    from test_report import _ink, _run_chromium, render_errors

    path = write_explanation(explain(attn_run, samples=6, store=store), tmp_path / "attn.html")
    _self_contained(path.read_text())
    errors, dom = render_errors(path, tmp_path)
    assert errors == []
    for chart in ("explain-examples", "explain-deletion", "explain-attention"):
        assert re.search(rf'<figure class="chart" id="{chart}">\s*<svg', dom), chart
    assert 'id="explain-entropy"' in dom
    shot = tmp_path / "attn.png"
    result = _run_chromium(path.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1300,2600")
    assert result.returncode == 0 and shot.exists(), result.stderr[-3000:]
    width, height, ink = _ink(shot)
    assert (width, height) == (1300, 2600) and ink > 0.05


# ----------------------------------------------------------------------------- the CLI


def test_cli_explain_prints_the_checks_and_writes_the_page(monkeypatch, store, cnn_run, tmp_path):
    monkeypatch.setenv("ARCHLAB_HOME", str(store))
    result = runner.invoke(app, ["explain", cnn_run, "--methods", "ig,saliency", "--samples", "10",
                                 "--report", str(tmp_path / "x.html")])
    assert result.exit_code == 0, result.output
    assert "integrated" in result.stdout and "saliency" in result.stdout and "checks" in result.stdout
    assert (tmp_path / "x.html").exists()
    result = runner.invoke(app, ["explain", cnn_run, "--methods", "ig", "--samples", "4", "--json"])
    import json

    d = json.loads(result.stdout)
    assert d["samples"] == 4 and d["ig"]["completeness_max"] <= 1e-3


@pytest.mark.parametrize("args,expected", [
    (("--methods", "lime"), r"^error: --methods: expected a comma-separated list of saliency, ig, gradcam, "
                            r"attention\. Received: lime$"),
    (("--methods", "attention"), r"^error: explain run \w+: --methods attention needs an attention layer .*"
                                 r"\(it has conv2d, relu, maxpool, flatten, linear\)"),
])
def test_cli_explain_errors(monkeypatch, capsys, store, cnn_run, args, expected):
    monkeypatch.setenv("ARCHLAB_HOME", str(store))
    code, out, err = _main(monkeypatch, capsys, "explain", cnn_run, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and re.search(expected, err.strip()), err


def test_cli_explain_gradcam_without_conv(monkeypatch, capsys, store, table_run):
    monkeypatch.setenv("ARCHLAB_HOME", str(store))
    code, _, err = _main(monkeypatch, capsys, "explain", table_run, "--methods", "gradcam")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "needs a conv1d or conv2d layer; the model has none (it has linear, relu)" in err


def test_compare_adds_the_section_for_the_recommended_model(tmp_path):
    spec = {**CNN, "train": {**CNN["train"], "epochs": 1}}
    from archlab.compare import compare

    result = compare([spec], data="digits", cv=2, report=tmp_path / "r.html", quiet=True,
                             explain="ig")
    page = (tmp_path / "r.html").read_text()
    assert '<section id="explanations">' in page and result.final_run_id in page
    assert '<tr id="check-ig">' in page and 'id="confusion"' in page
    _self_contained(page)
