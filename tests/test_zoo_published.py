"""Published architectures written in the spec language, each held against the same network
written by hand in plain torch.nn: the same parameter shapes (so the same count), and for the
blocks the spec language adds for them (post-norm, depthwise, the class token, Keras's single
recurrent bias) the same function."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from archlab import build, inspect
from archlab.core import SpecError


def _shapes(module: nn.Module) -> list[tuple[int, ...]]:
    return sorted(tuple(p.shape) for p in module.parameters())


def _vgg16() -> nn.Module:
    layers: list[nn.Module] = []
    cin = 3
    for width, depth in zip((64, 128, 256, 512, 512), (2, 2, 3, 3, 3), strict=True):
        for _ in range(depth):
            layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU()]
            cin = width
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(512 * 49, 4096), nn.ReLU(),
                         nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1000))


class _Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5: the stride sits on the 3x3 conv)."""

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        out = 4 * width
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out))
        self.down = (nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                     if stride != 1 or cin != out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + (x if self.down is None else self.down(x)))


def _resnet50() -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                               nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for stage, blocks in enumerate((3, 4, 6, 3)):
        width = 64 * 2 ** stage
        for b in range(blocks):
            layers.append(_Bottleneck(cin, width, 2 if stage and b == 0 else 1))
            cin = 4 * width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000))


def _mobilenet_v1() -> nn.Module:
    def bn_relu(c: int) -> list[nn.Module]:
        return [nn.BatchNorm2d(c), nn.ReLU()]

    layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), *bn_relu(32)]
    cin = 32
    for out, stride in zip((64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024),
                           (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1), strict=True):
        layers += [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), *bn_relu(cin),
                   nn.Conv2d(cin, out, 1, bias=False), *bn_relu(out)]
        cin = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, 1000))


class _ViT(nn.Module):
    """ViT-B/16 as in the paper: patch embedding, class token, learned positions, 12 pre-norm
    encoder layers, final layer norm, a linear head on the class token."""

    def __init__(self, d: int = 768, depth: int = 12, heads: int = 12, patches: int = 196):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 16, 16)
        self.cls = nn.Parameter(torch.zeros(1, d))  # stored without the batch dim, as archlab does
        self.pos = nn.Parameter(torch.zeros(patches + 1, d))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True, layer_norm_eps=1e-6) for _ in range(depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, 1000)


# The fused q/k/v projection is one (3d, d) matrix in archlab and in_proj_weight in torch, so
# shapes compare as a multiset over the same tensors.
@pytest.mark.parametrize("name, reference", [("vgg16", _vgg16), ("resnet50", _resnet50),
                                             ("mobilenet-v1", _mobilenet_v1), ("vit-b16", _ViT)])
def test_published_specs_match_hand_written_torch_models(name: str, reference) -> None:
    with torch.device("meta"):
        ref = reference()
    net = build(f"zoo:{name}", device="meta")
    assert _shapes(net) == _shapes(ref)
    assert inspect(f"zoo:{name}").params == sum(p.numel() for p in ref.parameters())


def test_resnet50_computes_the_same_function_as_the_reference() -> None:
    ref = _resnet50().eval()
    net = build("zoo:resnet50", seed=1).eval()
    # Both list each block's body before its projection, so parameters line up in order.
    ref_params, net_params = list(ref.parameters()), list(net.parameters())
    assert [p.shape for p in ref_params] == [p.shape for p in net_params]
    with torch.no_grad():
        for src, dst in zip(ref_params, net_params, strict=True):
            dst.copy_(src)
        x = torch.randn(1, 3, 64, 64)
        torch.testing.assert_close(net(x), ref(x), rtol=1e-4, atol=1e-4)


def test_mobilenet_v1_computes_the_same_function_as_the_reference() -> None:
    ref = _mobilenet_v1().eval()
    net = build("zoo:mobilenet-v1", seed=1).eval()
    with torch.no_grad():
        for src, dst in zip(ref.parameters(), net.parameters(), strict=True):
            dst.copy_(src)
        x = torch.randn(2, 3, 64, 64)
        torch.testing.assert_close(net(x), ref(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("position, mlp", [("pre", "relu"), ("post", "relu"), ("pre", "gelu_exact")])
def test_encoder_block_norm_position_matches_torch(position: str, mlp: str) -> None:
    d, heads = 16, 4
    net = build({"name": "enc", "input": {"shape": [5, d]},
                 "model": [{"encoder_block": {"heads": heads, "mlp": mlp, "norm_position": position}}]},
                seed=0).eval()
    ref = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=position == "pre",
                                     activation="relu" if mlp == "relu" else "gelu").eval()
    block = net.model[0]
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(block.attn.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(block.attn.qkv.bias)
        ref.self_attn.out_proj.weight.copy_(block.attn.proj.weight)
        ref.self_attn.out_proj.bias.copy_(block.attn.proj.bias)
        for mine, theirs in ((block.mlp.fc, ref.linear1), (block.mlp.proj, ref.linear2),
                             (block.norm1, ref.norm1), (block.norm2, ref.norm2)):
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)
        x = torch.randn(3, 5, d)
        torch.testing.assert_close(net(x), ref(x), rtol=1e-5, atol=1e-5)
    assert "post-norm" in repr(block) if position == "post" else "pre-norm" in repr(block)


def test_prepend_puts_learned_tokens_first_and_seq_pool_first_reads_them() -> None:
    spec = {"name": "cls", "input": {"shape": [4, 8]}, "model": [
        {"reshape": {"shape": [4, 8], "layout": "sequence"}}, {"prepend": {"tokens": 2}}]}
    net = build(spec, seed=0)
    assert net.output_shape == (6, 8) and sum(p.numel() for p in net.parameters()) == 16
    x = torch.randn(3, 4, 8)
    y = net(x)
    torch.testing.assert_close(y[:, 2:], x)
    torch.testing.assert_close(y[:, :2], net.model[1].weight.expand(3, -1, -1))
    pooled = build({**spec, "model": [*spec["model"], {"seq_pool": "first"}]}, seed=0)
    torch.testing.assert_close(pooled(x), net.model[1].weight[0].expand(3, -1))
    with pytest.raises(SpecError, match="'tokens' must be a positive integer"):
        build({**spec, "model": [spec["model"][0], {"prepend": {"tokens": 0}}]})


def test_depthwise_groups_need_no_channel_count() -> None:
    net = build({"name": "dw", "input": {"shape": [6, 5, 5]},
                 "model": [{"conv2d": {"groups": "depthwise", "kernel": 3, "padding": 1, "bias": False}},
                           {"conv2d": {"out": 12, "groups": "depthwise", "kernel": 1}}]}, seed=0)
    first, second = net.model[0], net.model[1]
    assert (first.groups, first.out_channels, second.groups, second.out_channels) == (6, 6, 6, 12)
    assert net.output_shape == (12, 5, 5)
    with pytest.raises(SpecError, match="missing required argument 'out'.*groups: depthwise"):
        build({"name": "c", "input": {"shape": [6, 5, 5]}, "model": [{"conv2d": {"kernel": 3}}]})
    with pytest.raises(SpecError, match="'groups'=6 must divide both in channels 6 and out 8"):
        build({"name": "c", "input": {"shape": [6, 5, 5]},
               "model": [{"conv2d": {"out": 8, "groups": "depthwise"}}]})
    with pytest.raises(SpecError, match="argument 'groups' expected an integer or one of 'depthwise'"):
        build({"name": "c", "input": {"shape": [6, 5, 5]}, "model": [{"conv2d": {"out": 6, "groups": "dw"}}]})


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_single_bias_counts_as_keras_and_computes_torchs_function_with_b_hh_zero(kind: str) -> None:
    spec = {"name": "r", "input": {"shape": [7, 3]},
            "model": [{kind: {"hidden": 5, "bias": "single", "layers": 2, "bidirectional": True}}]}
    net = build(spec, seed=0).eval()
    gates = 4 if kind == "lstm" else 1
    ref = (nn.LSTM if kind == "lstm" else nn.RNN)(3, 5, num_layers=2, bidirectional=True, batch_first=True)
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in ref.parameters()) - 4 * gates * 5
    assert not [k for k in net.state_dict() if "bias_hh" in k]  # nothing to save: the zeros are fixed
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_(getattr(net.model[0].rnn, name) if not name.startswith("bias_hh") else torch.zeros_like(p))
        x = torch.randn(2, 7, 3)
        out, (h, _) = ref(x) if kind == "lstm" else (lambda o: (o[0], (o[1], None)))(ref(x))
        torch.testing.assert_close(net(x), torch.cat([h[-2], h[-1]], dim=-1))
    # The rest of the pipeline sees an ordinary layer: it trains, saves and reloads.
    again = build(spec, seed=1)
    again.load_state_dict(net.state_dict())
    torch.testing.assert_close(again.eval()(x), net(x))


def test_single_bias_is_refused_for_gru_with_the_reason() -> None:
    with pytest.raises(SpecError, match="gru cannot have bias: single: its b_hn"):
        build({"name": "g", "input": {"shape": [4, 3]}, "model": [{"gru": {"hidden": 2, "bias": "single"}}]})


def test_rnn_imdb_counts_as_the_seed_articles_keras_model() -> None:
    assert inspect("zoo:rnn-imdb").params == 1_313_025  # Keras: Embedding 1,280,000 + SimpleRNN 32,896 + Dense 129


def test_a_block_drops_its_mlp_output_once() -> None:
    net = build({"name": "b", "input": {"shape": [4, 8]},
                 "model": [{"reshape": {"shape": [4, 8], "layout": "sequence"}},
                           {"decoder_block": {"heads": 2, "dropout": 0.1}}]})
    block = net.model[1]
    drops = [m.p for m in block.mlp.modules() if isinstance(m, nn.Dropout)]
    assert all(p == 0.0 for p in drops) and block.drop.p == 0.1


# ------------------------------------------------------------------ BERT (two named inputs)

def _hf_bert(**config):
    if os.environ.get("CI"):  # the reference is in the test extra: under CI its absence is a failure
        import transformers
    else:
        transformers = pytest.importorskip("transformers")
    return transformers.BertModel(transformers.BertConfig(**config), add_pooling_layer=True)


def test_bert_base_counts_as_the_reference_model() -> None:
    with torch.device("meta"):
        ref = _hf_bert()
    assert sum(p.numel() for p in ref.parameters()) == 109_482_240
    assert inspect("zoo:bert-base").params == 109_482_240
    net = build("zoo:bert-base", device="meta")
    # the fused q/k/v matrix of archlab is HF's three, stacked
    ours = sorted(tuple(p.shape) for p in net.parameters())
    theirs = [tuple(p.shape) for n, p in ref.named_parameters() if not any(k in n for k in (".query.", ".key.", ".value."))]
    theirs += [(3 * 768, 768), (3 * 768,)] * 12
    assert ours == sorted(theirs)


def test_bert_computes_the_reference_function_from_two_inputs() -> None:
    """A small BERT (same code path as bert-base, fewer and narrower layers) with the reference's
    weights copied in gives the reference's pooled output for tokens and token types."""
    small = dict(vocab=100, dim=32, heads=4, depth=2, context=16)
    ref = _hf_bert(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=128, max_position_embeddings=16, type_vocab_size=2).eval()
    net = build("zoo:bert-base", vars=small).eval()
    m, e = net.model, ref.embeddings
    with torch.no_grad():
        m[0].weight.copy_(e.word_embeddings.weight)
        m[1].weight.copy_(e.token_type_embeddings.weight)
        m[3].weight.copy_(e.position_embeddings.weight)
        m[4].load_state_dict(e.LayerNorm.state_dict())
        for copy, layer in zip(m[6].repeat, ref.encoder.layer, strict=True):
            block, att = copy[0], layer.attention
            q, k, v = att.self.query, att.self.key, att.self.value
            block.attn.qkv.weight.copy_(torch.cat([q.weight, k.weight, v.weight]))
            block.attn.qkv.bias.copy_(torch.cat([q.bias, k.bias, v.bias]))
            block.attn.proj.load_state_dict(att.output.dense.state_dict())
            block.norm1.load_state_dict(att.output.LayerNorm.state_dict())
            block.mlp.fc.load_state_dict(layer.intermediate.dense.state_dict())
            block.mlp.proj.load_state_dict(layer.output.dense.state_dict())
            block.norm2.load_state_dict(layer.output.LayerNorm.state_dict())
        m[8].load_state_dict(ref.pooler.dense.state_dict())
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 100, (3, 16), generator=g)
    segments = (torch.arange(16) >= 9).long().expand(3, 16)  # sentence A, then B
    want = ref(input_ids=tokens, token_type_ids=segments).pooler_output
    torch.testing.assert_close(net(tokens=tokens, segments=segments), want, rtol=1e-5, atol=1e-5)
    # the token types matter: the same tokens as one sentence give another output
    assert not torch.allclose(net(tokens=tokens, segments=torch.zeros_like(segments)), want, atol=1e-4)
