"""The zoo: every built-in spec builds and inspects; the published parameter counts hold and
are cross-checked against the same architectures written by hand in plain torch.nn; the
small specs run a real forward pass on CPU."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from archlab import build, inspect, load_spec, zoo_names

PINNED = {
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "vgg11": 132_863_336,
    "vgg16": 138_357_544,
    "mobilenet-v1": 4_231_976,
    "vit-b16": 86_567_656,
    "gpt2": 124_439_808,
    "rnn-imdb": 1_313_025,  # Keras's count: one bias vector (PyTorch's two would make 1,313,153)
    "llama-7b": 6_738_415_616,
}

# name -> (input override or None, expected output shape)
SMALL = {
    "mlp": (None, (10,)),
    "cnn": (None, (10,)),
    "resnet-mini": (None, (10,)),
    "inception-mini": (None, (10,)),
    "cnn-cifar": (None, (10,)),
    "gpt-mini": (None, (128, 96)),
    "lstm-classifier": (None, (2,)),
    "transformer-classifier": (None, (2,)),
    "rnn-imdb": ((40,), (1,)),
    "digits-qa": (None, (10,)),
}


def test_the_zoo_lists_every_file() -> None:
    names = zoo_names()
    assert set(PINNED) | set(SMALL) <= set(names)
    assert len(names) == len(set(names)) >= 13


@pytest.mark.parametrize("name", zoo_names())
def test_every_zoo_spec_builds_on_meta_and_inspects(name: str) -> None:
    spec = load_spec(f"zoo:{name}")
    assert spec.name == name and spec.description and spec.input_specs
    net = build(spec, device="meta")
    r = inspect(spec)
    assert r.params == sum(p.numel() for p in net.parameters()) > 0
    assert r.output_shape == net.output_shape
    assert r.flops_per_sample > 0 and r.uncounted == ()
    assert sum(row.params for row in r.layers) == r.params
    assert sum(row.flops for row in r.layers) == r.flops_per_sample
    # A count quoted in the description must be the real one.
    for quoted in re.findall(r"([\d,]{5,}) params", spec.description):
        assert int(quoted.replace(",", "")) == r.params


@pytest.mark.parametrize("name, params", sorted(PINNED.items()))
def test_pinned_param_counts(name: str, params: int) -> None:
    assert sum(p.numel() for p in build(f"zoo:{name}", device="meta").parameters()) == params


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_zoo_specs_run_on_cpu(name: str) -> None:
    shape, out = SMALL[name]
    net = build(f"zoo:{name}", input_shape=shape, seed=0)
    assert net.output_shape == out
    net.eval()
    x = net.example_input(2)
    with torch.no_grad():
        y = net(x)
    assert tuple(y.shape) == (2, *out) and torch.isfinite(y).all()
    if shape is not None:
        assert inspect(f"zoo:{name}", input_shape=shape).params == sum(p.numel() for p in net.parameters())


def test_vars_change_the_zoo_models() -> None:
    assert inspect("zoo:cnn-cifar", vars={"width": 16}).params < inspect("zoo:cnn-cifar").params
    assert inspect("zoo:gpt-mini", vars={"depth": 2}).params < inspect("zoo:gpt-mini").params
    assert build("zoo:mlp", vars={"num_classes": 3}).output_shape == (3,)


# ---------------------------------------------------- hand-written references


class _Basic(nn.Module):
    """torchvision's BasicBlock."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.down is None else self.down(x)))


def _resnet18() -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                               nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for i, cout in enumerate((64, 128, 256, 512)):
        layers += [_Basic(cin, cout, 1 if i == 0 else 2), _Basic(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000))


class _GPT2Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.attn_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)


class _GPT2(nn.Module):
    def __init__(self, vocab: int = 50257, ctx: int = 1024, d: int = 768, depth: int = 12):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.h = nn.ModuleList(_GPT2Block(d) for _ in range(depth))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied


def _shapes(module: nn.Module) -> list[tuple[int, ...]]:
    return sorted(tuple(p.shape) for p in module.parameters())


def test_resnet18_matches_a_hand_written_torch_model() -> None:
    with torch.device("meta"):
        ref = _resnet18()
        ref_out = ref(torch.empty(2, 3, 224, 224))
    net = build("zoo:resnet18", device="meta")
    assert sum(p.numel() for p in ref.parameters()) == 11_689_512
    assert _shapes(net) == _shapes(ref)
    assert tuple(ref_out.shape[1:]) == net.output_shape == (1000,)
    buffers = sorted(tuple(b.shape) for b in ref.buffers())
    assert sorted(tuple(b.shape) for b in net.buffers()) == buffers


def test_resnet18_computes_the_same_function_as_the_reference() -> None:
    # Copy the reference's weights in parameter order (both follow the same layer order);
    # equal outputs mean the skips, strides and projections are wired the same way.
    ref = _resnet18().eval()
    net = build("zoo:resnet18", seed=1).eval()
    ref_params = [p for _, p in sorted(_ordered(ref).items())]
    net_params = [p for _, p in sorted(_ordered(net).items())]
    assert [p.shape for p in ref_params] == [p.shape for p in net_params]
    with torch.no_grad():
        for src, dst in zip(ref_params, net_params, strict=True):
            dst.copy_(src)
        x = torch.randn(1, 3, 64, 64)
        torch.testing.assert_close(net(x), ref(x), rtol=1e-4, atol=1e-4)


def _ordered(module: nn.Module) -> dict[tuple[int, int], torch.Tensor]:
    """Parameters keyed by (order of their first conv/linear/bn, position in that module), with
    each residual's projection sorted after its body as torchvision's downsample is."""
    out: dict[tuple[int, int], torch.Tensor] = {}
    leaves = [m for m in module.modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d | nn.Linear)]
    # Projection (1x1 conv + its bn) must come after the block's conv2/bn2 in both models:
    # archlab registers `residual` before `proj` and the reference `conv*` before `down`.
    for i, m in enumerate(leaves):
        for j, p in enumerate(m.parameters(recurse=False)):
            out[(i, j)] = p
    return out


def test_gpt2_matches_a_hand_written_torch_model() -> None:
    with torch.device("meta"):
        ref = _GPT2()
    net = build("zoo:gpt2", device="meta")
    assert sum(p.numel() for p in ref.parameters()) == 124_439_808
    assert _shapes(net) == _shapes(ref)
    assert inspect("zoo:gpt2").params == 124_439_808


def test_llama_7b_matches_the_published_layout() -> None:
    d, hidden, vocab, depth = 4096, 11008, 32000, 32
    per_layer = 4 * d * d + 3 * d * hidden + 2 * d  # q, k, v, o; gate, up, down; two RMSNorms
    assert inspect("zoo:llama-7b").params == vocab * d + depth * per_layer + d + d * vocab == 6_738_415_616
