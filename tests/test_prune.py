"""Structured pruning on the spec (archlab.compress.prune) and unstructured magnitude pruning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from archlab import SpecError, build, zoo_names
from archlab.compress import count_macs, latency, magnitude_prune, prune, sparsity_of, taylor_scores
from archlab.spec import Spec

# Specs too large to hold real weights in a test are pruned and built on the meta device.
HUGE_PARAMS = 3_000_000


def _is_huge(name: str) -> bool:
    return sum(p.numel() for p in build(f"zoo:{name}", device="meta").parameters()) > HUGE_PARAMS


def _out(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = net(x)
    return y[0] if isinstance(y, tuple) else y


@pytest.mark.parametrize("name", zoo_names())
def test_every_zoo_spec_prunes_to_a_plain_spec_with_the_parents_output_shape(name):
    meta = _is_huge(name)
    net = build(f"zoo:{name}", device="meta" if meta else "cpu")
    if len(net.input_names) > 1:  # bert-base: structured pruning takes one input so far, and says so
        with pytest.raises(SpecError, match="prune: the model reads 2 named inputs"):
            prune(net, 0.5, round_to=8)
        return
    pruned = prune(net, 0.5, round_to=8)
    assert any(g.after < g.before for g in pruned.groups), "every zoo spec has prunable layers"
    text = pruned.spec.to_yaml()
    assert "repeat" not in text and "$" not in text  # widths written out
    again = Spec.from_dict(pruned.spec.to_dict())  # plain data that round-trips
    assert again == pruned.spec
    small = pruned.model
    assert tuple(small.output_shape) == tuple(net.output_shape)
    assert tuple(small.input_shape) == tuple(net.input_shape)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in net.parameters())
    if not meta:
        net.eval()
        small.eval()
        x = net.example_input(2)
        torch.manual_seed(0)
        assert _out(small, x).shape == _out(net, x).shape
        # the weights are the parent's own, not a fresh initialisation
        rebuilt = build(pruned.spec)
        assert any(not torch.equal(a, b) for a, b in zip(small.state_dict().values(),
                                                           rebuilt.state_dict().values(), strict=True))


@pytest.mark.parametrize("name", ["resnet-mini", "inception-mini", "gpt-mini", "search-digits", "cnn-cifar",
                                  "transformer-classifier", "lstm-classifier"])
def test_ratio_zero_reproduces_the_parents_logits_exactly(name):
    net = build(f"zoo:{name}", seed=3)
    for m in net.modules():  # batch norm with statistics of its own
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    net.eval()
    same = prune(net, 0.0)
    same.model.eval()
    x = net.example_input(3)
    with torch.no_grad():
        assert torch.equal(net(x), same.model(x))


def _zero_upper_half(net: nn.Module, final: str) -> None:
    """Give every conv/linear output channel in the upper half of its layer zero weights:
    those channels carry exact zeros, so l1 pruning at 0.5 removes them and nothing else."""
    with torch.no_grad():
        for name, m in net.named_modules():
            if isinstance(m, nn.Conv2d | nn.Linear) and name != final:
                n = m.weight.shape[0]
                m.weight[n // 2:] = 0
                if m.bias is not None:
                    m.bias[n // 2:] = 0
                if isinstance(m, nn.Conv2d) and m.groups > 1:  # depthwise: its channels are its input's
                    m.weight[n // 2:] = 0


COUPLINGS = {
    "input": {"shape": [3, 8, 8]},
    "model": [
        {"conv2d": {"out": 16, "kernel": 3, "padding": "same"}},
        "batchnorm",
        "relu",
        {"conv2d": {"out": 16, "kernel": 3, "padding": "same", "groups": 16}},    # depthwise
        {"residual": [{"conv2d": {"out": 16, "kernel": 3, "padding": "same"}}, "relu",
                      {"conv2d": {"out": 16, "kernel": 1}}]},                     # x + f(x)
        {"parallel": [[{"conv2d": {"out": 16, "kernel": 1}}],
                      [{"conv2d": {"out": 8, "kernel": 3, "padding": "same"}}, "relu",
                       {"conv2d": {"out": 16, "kernel": 1}}]], "merge": "mean"},  # mean merge
        "relu",
        {"parallel": [[{"conv2d": {"out": 8, "kernel": 1}}],
                      [{"conv2d": {"out": 24, "kernel": 3, "padding": "same"}}]], "merge": "concat"},
        "batchnorm",
        {"residual": {"body": [{"conv2d": {"out": 64, "kernel": 3, "stride": 2, "padding": 1}}, "batchnorm"],
                      "projection": "auto"}},                                      # 1x1 conv + bn
        "relu",
        "maxpool",
        "flatten",                                                                 # each channel: 4 features
        {"linear": 32},
        "relu",
        {"residual": [{"linear": 32}, "relu", {"linear": 32}]},
        {"linear": 5},
    ],
}


def test_pruning_follows_every_coupling_channels_carrying_zeros_are_the_ones_removed():
    net = build(COUPLINGS, seed=1)
    final = net.layers[-1].module_name
    _zero_upper_half(net, final)
    # a batch norm's zero channels stay zero only if it adds nothing there
    net.eval()
    pruned = prune(net, 0.5)
    small = pruned.model.eval()
    for g in pruned.groups:
        assert g.after == g.before // 2 and g.keep == tuple(range(g.after)), g
    # one group per coupling: the stem with the depthwise conv and the residual's last conv,
    # the two mean-merged branches, each concat branch on its own, the strided residual with
    # its projection, the linear layer with the residual it feeds
    assert [g.where for g in pruned.groups] == [
        "model[0].conv2d", "model[4].residual[0].conv2d", "model[5].parallel[0][0].conv2d",
        "model[5].parallel[1][0].conv2d", "model[7].parallel[0][0].conv2d", "model[7].parallel[1][0].conv2d",
        "model[9].residual[0].conv2d", "model[13].linear", "model[15].residual[0].linear"]
    widths = [leaf.output.shape[0] for leaf in small.layers if leaf.kind in ("conv2d", "linear")]
    assert widths == [8, 8, 8, 8, 8, 4, 8, 4, 12, 32, 16, 16, 16, 5]
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(small(x), net(x), rtol=1e-5, atol=1e-5)
    assert count_macs(small, x) < count_macs(net, x) / 3


def test_joined_channels_are_ranked_together_across_a_residual_add():
    spec = {"input": {"shape": [2, 4, 4]},
            "model": [{"conv2d": {"out": 8, "kernel": 1}}, {"residual": [{"conv2d": {"out": 8, "kernel": 1}}]},
                      "global_avgpool", {"linear": 2}]}
    net = build(spec)
    with torch.no_grad():
        for p in net.parameters():  # no weight can tell the channels apart ...
            p.fill_(0.01)
        branch = net.get_submodule("model.1.residual.0").weight
        branch[[1, 3, 5, 7]] = 1.0  # ... but the branch's: the add keeps its odd channels on both sides
    pruned = prune(net, 0.5)
    assert [g.keep for g in pruned.groups] == [(1, 3, 5, 7)]  # one group: the classes are not pruned
    small = pruned.model
    torch.testing.assert_close(small.get_submodule("model.0").weight, net.get_submodule("model.0").weight[[1, 3, 5, 7]])


def test_round_to_keeps_widths_multiples_of_eight_and_never_prunes_the_classes():
    net = build({"input": {"shape": [20]}, "model": [{"linear": 100}, "relu", {"linear": 60}, "relu", {"linear": 7}]})
    pruned = prune(net, 0.3, round_to=8)
    model = pruned.spec.to_dict()["model"]
    assert [m["linear"]["out"] for m in model if isinstance(m, dict)] == [72, 40, 7]
    assert pruned.model(torch.randn(2, 20)).shape == (2, 7)
    assert prune(net, 0.3).spec.to_dict()["model"][0] == {"linear": {"out": 70}}


def test_attention_heads_go_whole_and_the_tied_embedding_shrinks_with_the_stream():
    net = build("zoo:gpt-mini")
    pruned = prune(net, 0.5)
    model = pruned.spec.to_dict()["model"]
    blocks = [m["decoder_block"] for m in model if isinstance(m, dict) and "decoder_block" in m]
    assert len(blocks) == 4 and all(b["heads"] == 2 and b["head_dim"] == 32 and b["hidden"] == 256 for b in blocks)
    assert model[0] == {"embedding": {"vocab": 96, "dim": 64}}
    small = pruned.model
    tied = [m for m in small.modules() if hasattr(m, "tied_to")]
    assert tied and tied[0]._embedding[0].weight is small.get_submodule("model.0").weight
    heads = [g for g in pruned.groups if g.kind == "heads"]
    assert len(heads) == 4 and all(g.before == 4 and g.after == 2 for g in heads)
    x = net.example_input(2)
    assert small(x).shape == net(x).shape


def test_attention_heads_removed_are_the_ones_that_add_nothing():
    spec = {"input": {"shape": [6, 16]},
            "model": [{"permute": {"dims": [0, 1], "layout": "sequence"}}, {"attention": {"heads": 4}}, "seq_pool",
                      {"linear": 3}]}
    net = build(spec, seed=2).eval()
    attn = net.get_submodule("model.1")
    with torch.no_grad():  # heads 2 and 3 write nothing: zero output-projection columns and q/k/v rows
        for part in range(3):
            attn.qkv.weight[part * 16 + 8: part * 16 + 16] = 0
            attn.qkv.bias[part * 16 + 8: part * 16 + 16] = 0
        attn.proj.weight[:, 8:] = 0
    pruned = prune(net, 0.5)
    heads = next(g for g in pruned.groups if g.kind == "heads")
    assert heads.keep == (0, 1)
    assert pruned.spec.to_dict()["model"][1] == {"attention": {"heads": 2, "head_dim": 4}}
    x = torch.randn(3, 6, 16)
    # the stream (16 features) is the spec's input here: never pruned
    torch.testing.assert_close(pruned.model.eval()(x), net(x), rtol=1e-5, atol=1e-5)


def test_repeats_and_named_blocks_are_written_out_copy_by_copy():
    spec = {"input": {"shape": [8]}, "vars": {"w": 32},
            "blocks": {"dense": [{"linear": "$w"}, "relu"]},
            "model": [{"repeat": 3, "block": ["dense"]}, {"linear": 2}]}
    pruned = prune(build(spec), 0.5)
    assert pruned.spec.to_dict()["model"] == [{"linear": {"out": 16}}, "relu"] * 3 + [{"linear": {"out": 2}}]
    assert not pruned.spec.blocks and "w" not in pruned.spec.vars


@pytest.mark.parametrize("method", ["l1", "l2", "taylor"])
def test_methods_rank_channels(method):
    net = build({"input": {"shape": [4]}, "model": [{"linear": 6}, "relu", {"linear": 3}]}, seed=0)
    with torch.no_grad():
        net.get_submodule("model.0").weight[[1, 4]] *= 100  # units 1 and 4 matter most by any measure
    scores = None
    if method == "taylor":
        batches = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(3)]
        scores = taylor_scores(net, batches, nn.functional.cross_entropy)
        assert set(scores) == {k for k, _ in net.named_parameters()}
    pruned = prune(net, 0.67, method=method, scores=scores)
    assert pruned.groups[0].keep == (1, 4)


def test_bad_arguments_are_one_line_errors():
    net = build("zoo:mlp")
    for ratio in (1.5, -0.1, 1.0, "half"):
        with pytest.raises(SpecError, match="Received"):
            prune(net, ratio)
    with pytest.raises(SpecError, match="method"):
        prune(net, 0.5, method="l3")
    with pytest.raises(SpecError, match="taylor_scores"):
        prune(net, 0.5, method="taylor")
    with pytest.raises(SpecError, match="round-to"):
        prune(net, 0.5, round_to=0)
    with pytest.raises(SpecError, match="built by archlab"):
        prune(nn.Linear(3, 3), 0.5)


def test_unstructured_magnitude_pruning_reports_sparsity_and_keeps_the_shapes():
    net = build("zoo:cnn-cifar")
    before = sparsity_of(net)
    assert before.sparsity == 0
    sparse, report = magnitude_prune(net, 0.6)
    assert abs(report.sparsity - 0.6) < 0.01 and report.scope == "global"
    assert sparsity_of(net).sparsity == 0  # the parent is untouched
    assert [p.shape for p in sparse.parameters()] == [p.shape for p in net.parameters()]
    x = net.example_input(1)
    assert count_macs(sparse, x) == count_macs(net, x)  # dense tensors: the same work
    _, per_layer = magnitude_prune(net, 0.5, scope="layer")
    assert all(abs(s - 0.5) < 0.01 for _, s in per_layer.layers)
    assert "do not change" in report.summary()
    timing = latency(sparse, x, batches=(1,), repeats=2, warmup=1)
    assert timing["1"]["median"] > 0
    with pytest.raises(SpecError, match="scope"):
        magnitude_prune(net, 0.5, scope="block")


def test_a_branch_never_shrinks_to_its_inputs_width_and_loses_its_projection():
    # 16 -> 8 and 12 -> 8 (round_to 8) would make the skip an identity: the branch keeps more.
    spec = {"input": {"shape": [3, 6, 6]},
            "model": [{"conv2d": {"out": 16, "kernel": 3, "padding": 1}}, "relu",
                      {"residual": [{"conv2d": {"out": 12, "kernel": 1}}, "batchnorm"]}, "relu", "global_avgpool",
                      {"linear": 4}]}
    pruned = prune(build(spec), 0.5, round_to=8)
    assert [(g.before, g.after) for g in pruned.groups] == [(16, 8), (12, 12)]
    assert pruned.spec.to_dict()["model"][2]["residual"]["projection"] == "auto"
    assert pruned.model(torch.randn(2, 3, 6, 6)).shape == (2, 4)


def test_recalibrate_batchnorm_re_estimates_the_statistics_on_batches():
    from archlab.compress import recalibrate_batchnorm

    net = build({"input": {"shape": [4]}, "model": [{"linear": 3}, "batchnorm", {"linear": 2}]}, seed=0)
    bn = net.get_submodule("model.1")
    bn.running_mean.fill_(5.0)
    x = [torch.randn(32, 4), torch.randn(32, 4)]
    assert recalibrate_batchnorm(net.eval(), x) == 1
    with torch.no_grad():
        pre = net.get_submodule("model.0")(torch.cat(x))
    torch.testing.assert_close(bn.running_mean, pre.mean(0), rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.1 and not net.training  # restored
