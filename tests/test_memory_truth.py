"""The inspector's training memory held against a real training step on this CPU.

Method: the real step builds the network with real weights, runs the forward pass and the
loss the trainer computes (cross-entropy on fp32 logits) under a saved-tensor hook, and sums
the storages autograd still holds for backward once the loss exists (each once, weights and
buffers excluded; tests/savedbytes.py). That is
the same quantity the inspector measures on the meta device, so the two must agree: exactly,
where the inspector runs the same kernels (the fused or the math attention path, whichever
PyTorch picks for the dropout), and within the issue's 10% in every case tested here.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from savedbytes import real_saved_bytes
from torch import nn

from archlab import build, inspect
from archlab.layers import (
    LAYERS,
    TensorType,
    attention_kernel,
    cross_attention_kernel,
    register_layer,
)
from archlab.model._autocast import MetaAutocast


def _real_saved_bytes(spec: str | dict, batch: int, vars: dict | None = None, autocast=None) -> int:
    return real_saved_bytes(build(spec, seed=0, vars=vars), batch, autocast)


# Two-input networks too: the step's saved tensors include what each tower and the merge keep.
SMALL_BERT = {"vocab": 200, "dim": 32, "heads": 4, "depth": 2, "context": 16}
# Question tokens attend to image patches (cross-attention to a named sequence, no mask).
PATCH_ATTENTION = {
    "inputs": {"image": {"shape": [1, 8, 8]}, "question": {"shape": [2], "dtype": "long", "vocab": 14}},
    "model": [{"conv2d": {"out": 32, "kernel": 2, "stride": 2}, "from": "image"},
              {"reshape": {"shape": [32, 16], "layout": "channels"}},
              {"permute": {"dims": [1, 0], "layout": "sequence"}},
              {"layernorm": None, "name": "patches"},
              {"embedding": {"vocab": 14, "dim": 32}, "from": "question"},
              {"cross_attention": {"heads": 4, "memory": "patches"}},
              {"seq_pool": "mean"}, {"linear": 64}, "relu", {"linear": 10}]}
# An encoder-decoder: cross-attention under the source's padding mask, and the seq2seq loss.
CASES = [("zoo:cnn", None), ("zoo:gpt-mini", None), ("zoo:gpt-mini", {"dropout": 0.0}),
         ("zoo:digits-qa", None), ("zoo:bert-base", SMALL_BERT), (PATCH_ATTENTION, None),
         ("zoo:seq2seq-transformer", None)]
IDS = ["cnn", "gpt-mini-dropout", "gpt-mini-no-dropout", "digits-qa", "bert-small", "patch-attention",
       "seq2seq-transformer"]


@pytest.mark.parametrize("spec, vars", CASES, ids=IDS)
def test_fp32_activations_equal_a_real_cpu_step(spec: str | dict, vars: dict | None) -> None:
    for batch in (1, 3):
        real = _real_saved_bytes(spec, batch, vars)
        priced = inspect(spec, batch=batch, vars=vars, device="cpu").memory.activations
        assert abs(priced - real) <= 0.1 * real  # the bound ...
        assert priced == real  # ... and in fact exact: the same kernels, the same saved tensors


@pytest.mark.parametrize("spec, vars", CASES, ids=IDS)
def test_bf16_activations_equal_a_real_cpu_autocast_step(spec: str | dict, vars: dict | None) -> None:
    real = _real_saved_bytes(spec, 2, vars, autocast=torch.autocast("cpu", dtype=torch.bfloat16))
    # The emulation on real tensors saves what torch.autocast saves ...
    assert _real_saved_bytes(spec, 2, vars, autocast=MetaAutocast(torch.bfloat16, "cpu")) == real
    # ... and so does the inspector on the meta device, where torch.autocast cannot run.
    assert inspect(spec, batch=2, vars=vars, dtype="bf16", device="cpu").memory.activations == real


def test_dropout_makes_cpu_attention_save_the_t_by_t_matrices() -> None:
    with_dropout = inspect("zoo:gpt-mini", batch=4, device="cpu").memory
    without = inspect("zoo:gpt-mini", batch=4, device="cpu", vars={"dropout": 0.0}).memory
    assert with_dropout.attention == "math (dropout 0.1, fp32 on cpu)"
    assert without.attention == "flash (no dropout, fp32 on cpu)"
    # 4 layers x 4 heads x 128 x 128 per sample: the probabilities, the dropout mask and the
    # dropped copy are what the math path adds; the fused kernel keeps a log-sum-exp instead.
    assert with_dropout.activations_per_sample - without.activations_per_sample >= 4 * 4 * 128 * 128 * (4 + 1 + 4)
    # On a GPU the fused kernels take dropout: nothing T x T is saved.
    cuda = inspect("zoo:gpt-mini", batch=4, device="cuda").memory
    assert cuda.attention == "efficient (dropout 0.1, fp32 on cuda)"
    assert cuda.activations_per_sample < with_dropout.activations_per_sample


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_attention_kernel_names_the_kernel_pytorch_runs_on_cpu(dropout: float) -> None:
    q = torch.randn(1, 2, 8, 4, requires_grad=True)
    y = F.scaled_dot_product_attention(q, q, q, dropout_p=dropout, is_causal=True)
    fused = y.grad_fn.name().startswith("ScaledDotProductFlashAttention")
    assert attention_kernel("cpu", torch.float32, dropout, 4) == ("flash" if fused else "math")


@pytest.mark.parametrize("masked", [False, True])
def test_cross_attention_kernel_names_the_kernel_pytorch_runs_on_cpu(masked: bool) -> None:
    q = torch.randn(2, 2, 3, 4, requires_grad=True)
    kv = torch.randn(2, 2, 5, 4, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])[:, None, None, :] if masked else None
    y = F.scaled_dot_product_attention(q, kv, kv, attn_mask=mask)
    fused = y.grad_fn.name().startswith("ScaledDotProductFlashAttention")
    assert cross_attention_kernel("cpu", torch.float32, 4, masked) == ("flash" if fused else "math")


def test_the_report_names_the_cross_attention_kernel() -> None:
    # Before, the meta device ran PyTorch's math path for cross-attention (it has no kernel to
    # choose), which saves the T x S matrices a CPU step does not: 12,356 B against 9,828 B.
    m = inspect(PATCH_ATTENTION, device="cpu").memory
    assert m.attention == "cross-attention flash (no mask, fp32 on cpu)"
    assert m.activations == _real_saved_bytes(PATCH_ATTENTION, 1) == 9828
    s2s = inspect("zoo:seq2seq-transformer", device="cpu").memory
    assert s2s.attention == "flash (no dropout, fp32 on cpu); cross-attention flash (padding mask, fp32 on cpu)"
    assert s2s.loss == "cross-entropy over 13 at each of 13 positions"
    # On CUDA flash attention takes no mask: a padded source goes to the memory-efficient kernel.
    cuda = inspect("zoo:seq2seq-transformer", device="cuda", dtype="bf16").memory
    assert cuda.attention == "flash (no dropout, bf16 on cuda); cross-attention efficient (padding mask, bf16 on cuda)"


def test_the_loss_and_its_fp32_logits_are_part_of_the_step() -> None:
    # A language model's cross-entropy keeps the fp32 log-softmax over the vocabulary at every
    # position (for GPT-2 small 1024 x 50,257 x 4 bytes = 206 MB a sample).
    m = inspect("zoo:gpt-mini", batch=2, device="cpu", dtype="bf16").memory
    assert m.loss == "cross-entropy over 96 at each of 128 positions"
    spec = {"input": {"shape": [16]}, "model": [{"linear": 1000}]}
    per_sample = inspect(spec, device="cpu").memory.activations_per_sample
    assert per_sample == 16 * 4 + 1000 * 4 + 8  # the layer's input, the log-softmax, the target


def test_cuda_autocast_keeps_layer_norms_in_fp32() -> None:
    # Under CUDA's rules a layer norm runs in fp32 and saves an fp32 copy of its input; CPU's
    # rules leave it in bf16. The same spec therefore costs more priced for cuda.
    spec = {"input": {"shape": [32, 64]}, "model": [{"reshape": {"shape": [32, 64], "layout": "sequence"}},
                                                     {"linear": 64}, "layernorm", {"linear": 64}]}
    cpu = inspect(spec, dtype="bf16", device="cpu").memory.activations_per_sample
    cuda = inspect(spec, dtype="bf16", device="cuda").memory.activations_per_sample
    assert cuda - cpu >= 32 * 64 * (4 - 2)


def test_a_recurrent_layer_says_its_kernel_workspace_is_left_out() -> None:
    # Measured, not hidden: PyTorch's CPU LSTM kernel keeps a workspace the meta device's
    # step-by-step decomposition does not, and the report says so.
    priced = inspect("zoo:lstm-classifier", batch=8, device="cpu").memory
    real = _real_saved_bytes("zoo:lstm-classifier", 8)
    assert 1.5 <= real / priced.activations <= 2.5
    assert "recurrent kernels' workspace" in priced.left_out
    assert "recurrent" not in inspect("zoo:cnn").memory.left_out


# --------------------------------------------- a graph that frees what it saved, mid-forward


class _Probed(nn.Module):
    """A linear layer that also computes a probe of its input and never reads it. The probe's
    graph, and what its ops saved (relu's and sigmoid's outputs), is freed before the layer
    returns: a real step does not hold it, and its storages' ids go to later tensors."""

    def __init__(self, features: int, out: int):
        super().__init__()
        self.linear = nn.Linear(features, out)
        self.probe = nn.Linear(features, 8 * features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.sigmoid(torch.relu(self.probe(x)) * 2.0)  # computed, never read
        return self.linear(x)


@pytest.fixture
def probed_layer():
    # A registered layer: a spec the builder accepts whatever it comes to refuse about nodes
    # whose output nothing reads (the probe lives inside one leaf).
    @register_layer("test_probed")
    def test_probed(x: TensorType, out: int) -> tuple[nn.Module, TensorType]:
        """A linear layer that computes and drops a probe of its input (a test layer)."""
        (features,) = x.expect(rank=1)
        return _Probed(features, out), x.derive((out,))

    yield
    del LAYERS._items["test_probed"]


def test_what_a_dead_part_of_the_graph_saved_is_not_held(probed_layer: None) -> None:
    # Two probed layers in a row: the second is priced from the first's cached cost (a replay).
    probed = {"input": {"shape": [16]}, "model": [{"linear": 16}, {"test_probed": {"out": 16}},
                                                  {"test_probed": {"out": 16}}, {"linear": 10}]}
    plain = {"input": {"shape": [16]}, "model": [{"linear": 16}, {"linear": 16}, {"linear": 16}, {"linear": 10}]}
    for batch in (1, 3):
        real = {_real_saved_bytes(probed, batch) for _ in range(3)}
        priced = {inspect(probed, batch=batch, device="cpu").memory.activations for _ in range(3)}
        # The same number every run, the inspector's and the real step's; and the probes add
        # nothing: the step holds what the same network without them holds.
        assert real == priced == {_real_saved_bytes(plain, batch)} == {inspect(plain, batch=batch).memory.activations}
    m = inspect(probed, device="cpu").memory
    # Per sample: each linear's input (4 x 16 x 4 bytes), the log-softmax (10 x 4) and the target;
    # fixed: the loss's total weight (one fp32 value).
    assert (m.activations_per_sample, m.activations_fixed) == (4 * 16 * 4 + 10 * 4 + 8, 4)
