"""The inspector: exact FLOPs for hand-computable specs (priced as measure.py documents:
2 FLOPs per multiply-accumulate, +1 per bias add, 1 per pointwise output, 3 per softmax
element, 5 per norm element, 1 per element read by reductions and pooling windows),
parameters, training memory, device fit, unknown ops, and that nothing is allocated."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from archlab import build, inspect
from archlab.core import DataError, SpecError, format_size, parse_size
from archlab.layers import LAYERS, TensorType, register_layer
from archlab.model import OPTIMIZER_STATES, count_params, group_by_kind

MLP = {"input": {"shape": [4]}, "model": [{"linear": 8}, "relu", {"linear": 2}]}


# --------------------------------------------------------------------------- FLOPs


def test_linear_flops_by_hand() -> None:
    r = inspect(MLP)
    # linear 4->8: 2*4*8 MAC-FLOPs + 8 bias adds; relu: 8; linear 8->2: 2*8*2 + 2
    assert [row.flops for row in r.layers] == [2 * 4 * 8 + 8, 8, 2 * 8 * 2 + 2]
    assert r.flops_per_sample == 114 and r.macs_per_sample == 4 * 8 + 8 * 2   # MACs: matmuls only
    no_bias = inspect({"input": {"shape": [4]}, "model": [{"linear": {"out": 8, "bias": False}}]})
    assert no_bias.flops_per_sample == 2 * 4 * 8


def test_linear_on_a_sequence_counts_every_step() -> None:
    r = inspect({"input": {"shape": [5, 4]}, "model": [{"linear": 3}]})
    assert r.flops_per_sample == 5 * (2 * 4 * 3 + 3)


def test_conv_and_pool_flops_by_hand() -> None:
    r = inspect({"input": {"shape": [3, 8, 8]}, "model": [{"conv2d": {"out": 4, "kernel": 3, "padding": 1}},
                                                         {"maxpool": 2}]})
    conv_out = 4 * 8 * 8
    assert r.layers[0].flops == 2 * conv_out * (3 * 3 * 3) + conv_out  # MACs per output: C_in * k * k
    assert r.layers[1].flops == (4 * 4 * 4) * (2 * 2)  # each output reads a 2x2 window
    grouped = inspect({"input": {"shape": [4, 8, 8]},
                       "model": [{"conv2d": {"out": 6, "kernel": 3, "groups": 2, "bias": False}}]})
    assert grouped.flops_per_sample == 2 * (6 * 6 * 6) * ((4 // 2) * 3 * 3)
    conv1d = inspect({"input": {"shape": [2, 10]}, "model": [{"conv1d": {"out": 3, "kernel": 5, "stride": 2}}]})
    assert conv1d.flops_per_sample == 2 * (3 * 3) * (2 * 5) + 3 * 3


@pytest.mark.parametrize("causal", [False, True])
def test_attention_flops_by_hand(causal: bool) -> None:
    t, d, h = 8, 16, 4
    hd = d // h
    r = inspect({"input": {"shape": [t, d]},
                 "model": [{"attention": {"heads": h, "bias": False, "causal": causal}}]})
    qkv = 2 * t * d * (3 * d)
    scores_and_mix = 4 * h * t * t * hd  # q k^T and a v: two (t x t x hd) products per head
    softmax = 3 * h * t * t
    proj = 2 * t * d * d
    assert r.flops_per_sample == qkv + scores_and_mix + softmax + proj
    with_bias = inspect({"input": {"shape": [t, d]}, "model": [{"attention": {"heads": h}}]})
    assert with_bias.flops_per_sample == r.flops_per_sample + t * 3 * d + t * d


def test_grouped_query_and_rope_flops() -> None:
    t, d, h, kv, hd = 8, 16, 4, 2, 4
    gqa = inspect({"input": {"shape": [t, d]},
                   "model": [{"attention": {"heads": h, "kv_heads": kv, "bias": False}}]})
    assert gqa.flops_per_sample == 2 * t * d * (h + 2 * kv) * hd + 4 * h * t * t * hd + 3 * h * t * t + 2 * t * d * d
    plain = inspect({"input": {"shape": [t, d]}, "model": [{"attention": {"heads": h, "bias": False}}]})
    rope = inspect({"input": {"shape": [t, d]}, "model": [{"attention": {"heads": h, "bias": False, "rope": True}}]})
    # rotating q and k: 6 pointwise ops on each half, for q and k
    assert rope.flops_per_sample - plain.flops_per_sample == 2 * 6 * (h * t * hd // 2)


def test_norm_softmax_and_pointwise_prices() -> None:
    r = inspect({"input": {"shape": [8, 16]}, "model": ["layernorm", "softmax", "gelu", "global_avgpool"]})
    n = 8 * 16
    assert [row.flops for row in r.layers] == [5 * n, 3 * n, n, n]


def test_residual_adds_are_charged_outside_the_layers() -> None:
    r = inspect({"input": {"shape": [8]}, "model": [{"residual": [{"linear": 8}]}]})
    assert r.layers[-1].path == "(merges and skip adds)"
    assert r.layers[-1].flops == 8 and r.flops_per_sample == 2 * 8 * 8 + 8 + 8


def test_an_auto_projection_is_a_row_of_its_own_after_its_branch() -> None:
    spec = {"input": {"shape": [4, 8, 8]}, "model": [
        {"residual": [{"conv2d": {"out": 8, "kernel": 3, "stride": 2, "padding": 1, "bias": False}}, "batchnorm"]},
        "relu"]}
    r = inspect(spec)
    paths = [row.path for row in r.layers]
    assert paths == ["model[0].residual[0].conv2d", "model[0].residual[1].batchnorm", "model[0].residual.projection",
                     "model[1].relu", "(merges and skip adds)"]
    proj = r.layers[2]
    assert (proj.kind, proj.note, proj.output_shape) == ("projection", "1×1 conv, stride 2 + batchnorm", (8, 4, 4))
    assert proj.params == 4 * 8 + 2 * 8  # the 1x1 conv (no bias: batchnorm follows) and the batchnorm
    assert proj.flops >= 2 * 4 * 8 * 16  # the 1x1 conv's MACs at 4x4, plus the batchnorm
    outside = r.layers[-1]
    assert outside.params == 0 and outside.flops == 8 * 16  # only the skip add is left outside
    assert sum(row.params for row in r.layers) == r.params
    assert sum(row.flops for row in r.layers) == r.flops_per_sample


def test_flops_do_not_depend_on_the_batch_or_dtype() -> None:
    base = inspect("zoo:cnn").flops_per_sample
    assert inspect("zoo:cnn", batch=7).flops_per_sample == base
    assert inspect("zoo:cnn", dtype="bf16").flops_per_sample == base


# ------------------------------------------------------------------------- params


def test_trainable_and_frozen_params() -> None:
    r = inspect({"input": {"shape": [4]}, "model": [{"linear": {"out": 8, "freeze": True}}, {"linear": 2}]})
    assert r.params == 40 + 18 and r.trainable == 18 and r.frozen == 40
    assert r.layers[0].note == "frozen" and r.layers[1].note == ""
    assert r.memory.gradients == 4 * 18 and r.memory.optimizer == 2 * 4 * 18
    assert r.memory.weights == 4 * 58


def test_tied_params_are_counted_once() -> None:
    spec = {"input": {"shape": [6], "dtype": "long"},
            "model": [{"embedding": {"vocab": 50, "dim": 8}}, "layernorm", "unembed"]}
    r = inspect(spec)
    assert r.params == 50 * 8 + 16 == sum(row.params for row in r.layers)
    assert count_params(build(spec)) == r.params
    assert r.layers[2].flops == 6 * 2 * 8 * 50  # the tied projection is still priced


def test_auto_projection_params_are_reported() -> None:
    r = inspect({"input": {"shape": [8]}, "model": [{"residual": [{"linear": 4}]}]})
    assert r.params == (8 * 4 + 4) * 2
    assert (r.layers[1].path, r.layers[1].note, r.layers[1].params) == ("model[0].residual.projection", "linear", 8 * 4 + 4)
    assert r.layers[-1].params == 0  # nothing is left to the merges row


def test_group_by_kind() -> None:
    groups = group_by_kind(inspect(MLP))
    assert groups["linear"] == {"params": 58, "flops": 106, "count": 2}
    assert groups["relu"]["count"] == 1


# ------------------------------------------------------------------------- memory


def test_activation_bytes_by_hand() -> None:
    # Saved for backward per sample: the input of linear 1 (4 floats) and relu's output
    # (8 floats, which linear 2 saves too: one storage, counted once). Weights excluded. The
    # loss: cross-entropy saves its fp32 log-softmax (2 floats) and the int64 target.
    loss = 2 * 4 + 8
    assert inspect(MLP).memory.activations_per_sample == (4 + 8) * 4 + loss
    # Under autocast the activations are bf16 (the loss stays fp32), and so is the copy of the
    # second layer's weight that its backward needs for the input gradient (once per step, not
    # per sample; the first layer's input needs no gradient, so its weight copy is not kept).
    m = inspect(MLP, dtype="bf16", device="cpu").memory
    assert m.activations_per_sample == (4 + 8) * 2 + loss
    assert m.activations_fixed == inspect(MLP).memory.activations_fixed + 2 * 8 * 2


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet-mini", "inception-mini", "gpt-mini",
                                  "transformer-classifier"])
def test_activations_grow_linearly_in_batch(name: str) -> None:
    for b in (1, 2, 5):
        m = inspect(f"zoo:{name}", batch=b).memory
        assert m.batch == b
        if b > 1:
            assert m.activations_per_sample * b + m.activations_fixed == m.activations
        else:  # batch 1 is measured, not read off the line: size-1 dims change which copies
            # PyTorch makes (fewer for most ops, more in math attention), a real step's too
            assert abs(m.activations - (m.activations_per_sample + m.activations_fixed)) <= 0.1 * m.activations
        assert m.at_batch(b) >= m.total


def test_recurrent_activation_line_uses_batches_above_one() -> None:
    # At batch 1 a bidirectional LSTM saves one copy fewer; the fitted line must not be
    # skewed by it (it used to give a negative fixed term).
    spec = {"input": {"shape": [20], "dtype": "long"},
            "model": [{"embedding": {"vocab": 10, "dim": 8}},
                      {"lstm": {"hidden": 4, "bidirectional": True, "returns": "sequence"}},
                      {"additive_attention": {"units": 4}}]}
    m = inspect(spec, batch=4).memory
    assert m.activations_fixed >= 0
    assert m.activations == m.activations_per_sample * 4 + m.activations_fixed


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_precision_activations_are_smaller(dtype: str) -> None:
    full = inspect("zoo:gpt-mini", batch=4)
    half = inspect("zoo:gpt-mini", batch=4, dtype=dtype)
    assert half.memory.activations < full.memory.activations
    assert half.memory.activations >= full.memory.activations // 2 - 4 * 128 * 8  # ~half, not less
    assert half.memory.weights == full.memory.weights  # fp32 master weights either way
    assert half.params == full.params


def test_optimizer_state_bytes() -> None:
    for opt, copies in (("sgd", 1), ("adam", 2), ("adamw", 2)):
        r = inspect(MLP, optimizer=opt)
        assert OPTIMIZER_STATES[opt] == copies
        assert r.memory.optimizer == copies * 4 * r.trainable
        assert r.memory.gradients == 4 * r.trainable
        m = r.memory
        assert m.total == m.weights + m.gradients + m.optimizer + m.activations


def test_buffers_count_as_weights() -> None:
    r = inspect({"input": {"shape": [3, 4, 4]}, "model": ["batchnorm"]})
    # weight, bias (6 params) + running mean/var (6) + num_batches_tracked (1), 4 bytes each
    assert r.memory.weights == 4 * (6 + 6 + 1)


def test_device_fit_and_max_batch_agree() -> None:
    base = inspect("zoo:cnn")
    m = base.memory
    device = int(m.at_batch(0) + 37.5 * m.activations_per_sample)
    r = inspect("zoo:cnn", device_memory=device)
    assert r.device_memory == device and r.max_batch == 37
    assert r.memory.at_batch(r.max_batch) <= device < r.memory.at_batch(r.max_batch + 1)
    assert r.fits is True
    assert inspect("zoo:cnn", batch=38, device_memory=device).fits is False
    assert inspect("zoo:cnn", batch=37, device_memory=device).fits is True
    tiny = inspect("zoo:cnn", device_memory="1MB")
    assert tiny.max_batch == 0 and tiny.fits is False
    assert base.fits is None and base.max_batch is None


def test_llama_7b_fits_an_80gb_gpu_only_at_small_batches() -> None:
    r = inspect("zoo:llama-7b", device_memory="80GB", optimizer="adamw", dtype="bf16")
    static = 4 * r.params * (1 + 1 + 2)  # weights, gradients, Adam's two moments
    assert r.memory.weights + r.memory.gradients + r.memory.optimizer == static + r.memory.weights - 4 * r.params
    assert static > 80e9  # 107.8 GB: does not fit without sharding
    assert r.max_batch == 0 and r.fits is False
    sgd = inspect("zoo:gpt2", device_memory="80GB", optimizer="sgd", dtype="bf16")
    assert sgd.max_batch is not None and sgd.max_batch > 0
    assert sgd.memory.at_batch(sgd.max_batch) <= 80e9 < sgd.memory.at_batch(sgd.max_batch + 1)


def parse_bytes(text: str | int) -> int:
    return parse_size(text, "--device-memory", require_unit=True)


@pytest.mark.parametrize(
    "text, value",
    [("80GB", 80 * 10**9), ("80 GB", 80 * 10**9), ("80GiB", 80 * 2**30), ("24gib", 24 * 2**30),
     ("16G", 16 * 10**9), ("16Gi", 16 * 2**30), ("512M", 512 * 10**6), ("512Mi", 512 * 2**20), ("512MB", 512 * 10**6), ("512MiB", 512 * 2**20), ("1.5TB", 1_500_000_000_000),
     ("2KB", 2000), ("2KiB", 2048), ("1000B", 1000), (".5GB", 500_000_000), (4096, 4096)],
)
def test_parse_bytes_units(text: str | int, value: int) -> None:
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "GB", "80XB", "-1GB", ".", "1.2.3GB", "eighty", "80 G B"])
def test_parse_bytes_errors(text: str) -> None:
    with pytest.raises(SpecError, match="--device-memory: expected a size"):
        parse_bytes(text)


def test_option_errors() -> None:
    with pytest.raises(SpecError, match="--dtype: expected one of fp32, bf16, fp16"):
        inspect(MLP, dtype="fp8")
    with pytest.raises(SpecError, match="--optimizer: expected one of sgd, adam, adamw"):
        inspect(MLP, optimizer="lion")
    with pytest.raises(SpecError, match="--batch: expected a positive integer"):
        inspect(MLP, batch=0)
    with pytest.raises(SpecError, match="--set widht"):
        inspect({"vars": {"width": 3}, **MLP}, vars={"widht": 4})


# ----------------------------------------------------------------- unknown ops


class _Cumsum(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x * self.scale, dim=-1)


def test_an_unknown_op_is_reported_not_priced() -> None:
    @register_layer("test_cumsum")
    def test_cumsum(x: TensorType) -> tuple[nn.Module, TensorType]:
        """Running sum over the last dim (a test layer)."""
        shape = x.expect(min_rank=1)
        return _Cumsum(shape[-1]), x.derive(shape)

    try:
        r = inspect({"input": {"shape": [4]}, "model": [{"linear": 6}, "test_cumsum", "test_cumsum"]})
        ops = {u.op: u for u in r.uncounted}
        assert "cumsum" in ops
        assert ops["cumsum"].calls == 2 and ops["cumsum"].first_seen_in == "model[1].test_cumsum"
        assert r.layers[1].flops == 6  # its known op (the scale multiply) is still priced
        assert r.to_dict()["uncounted"][0]["op"] == "cumsum"
    finally:
        del LAYERS._items["test_cumsum"]
    assert "test_cumsum" not in LAYERS


def test_zoo_specs_have_no_unpriced_ops() -> None:
    for name in ("cnn", "resnet-mini", "inception-mini", "gpt-mini", "transformer-classifier"):
        assert inspect(f"zoo:{name}").uncounted == (), name


# ----------------------------------------------------------------------- reports


def test_to_dict_is_json_and_complete() -> None:
    r = inspect({"input": {"shape": [4]}, "vars": {"cfg": {"a": [1, 2]}, "w": 8},
                 "model": [{"linear": "$w"}]}, device_memory="1GB")
    d = json.loads(json.dumps(r.to_dict()))
    assert d["params"] == 40 and d["vars"] == {"cfg": {"a": [1, 2]}, "w": 8}
    assert d["memory"]["total"] == r.memory.total and d["max_batch"] == r.max_batch
    assert d["training_flops_per_sample_approx"] == 3 * r.flops_per_sample
    assert d["layers"][0]["path"] == "model[0].linear"


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def test_inspecting_a_7b_model_allocates_no_weights() -> None:
    before = _rss_kib("VmRSS")
    try:  # reset the high-water mark so it measures this call alone (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
        peak_field = "VmHWM"
    except OSError:
        peak_field = ""
    r = inspect("zoo:llama-7b", batch=1)
    peak = _rss_kib(peak_field) if peak_field else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert r.params == 6_738_415_616  # 27 GB of fp32 weights, had they been allocated
    assert (peak - before) * 1024 < 1 << 30, f"RSS grew by {(peak - before) / 1024:.0f} MiB"


def test_a_size_without_a_unit_is_refused():
    with pytest.raises(SpecError, match="no unit; write e.g. 80GB .* or 80B \\(bytes\\)"):
        parse_bytes("80")
    assert parse_bytes("1000000B") == 1_000_000  # bytes, said so


def test_one_size_grammar_everywhere() -> None:
    # GB = 10**9 and GiB = 2**30 wherever a size is read; the letter alone is decimal (8G = 8GB);
    # a bare number is bytes unless a unit is required.
    assert parse_size("8G") == parse_size("8GB") == inspect(MLP, device_memory="8G").device_memory == 8 * 10**9
    assert parse_size("8Gi") == parse_size("8 GiB") == 8 << 30
    assert parse_size("1000") == 1000 and parse_size("1.5k") == 1500 and parse_size("2T") == 2 * 10**12
    with pytest.raises(DataError, match=r"^ARCHLAB_MEMORY_LIMIT: expected a size such as 80GB"):
        parse_size("lots", "ARCHLAB_MEMORY_LIMIT", error=DataError)
    with pytest.raises(SpecError, match="larger than any memory"):
        parse_size("9" * 30 + "TB")
    assert format_size(3 << 29) == "1.5 GiB" and format_size(12) == "12 B" and format_size(2 << 40) == "2 TiB"


# ------------------------------------------------------ batch norm at one value per channel


def test_batchnorm_with_one_value_per_channel_is_measured_off_the_line() -> None:
    # At batch 1 a training-mode batch norm after a linear sees one value per channel:
    # PyTorch raises "Expected more than 1 value per channel when training".
    spec = {"input": {"shape": [1, 8, 8]}, "model": ["flatten", {"linear": 64}, "batchnorm", "relu", {"linear": 10}]}
    r = inspect(spec)
    m = r.memory
    assert m.activations == int(m.activations_fixed + m.activations_per_sample)
    assert "batch norm cannot train on one value per channel" in m.note
    assert inspect(spec, batch=2).memory.note == ""  # measured where it can be
    assert r.flops_per_sample == inspect(spec, batch=2).flops_per_sample


def test_resnet18_on_small_images_inspects() -> None:
    # Its last feature map is 1x1 at 32x32 input: batch norm there sees one value per channel.
    r = inspect("zoo:resnet18", input_shape=(3, 32, 32))
    assert r.params > 11_000_000 and r.memory.note
    assert inspect(MLP).memory.note == ""


# ------------------------------------------------------------- large specs inspect fast


@pytest.mark.parametrize("name", ["zoo:mlp", "zoo:resnet-mini", "zoo:gpt-mini", "zoo:vae", "zoo:seq2seq-transformer",
                                  "REPEATS"])
def test_pricing_each_distinct_leaf_once_changes_no_figure(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import archlab.model._inspect as inspect_module

    spec = name if name != "REPEATS" else {
        "input": {"shape": [16]},
        "model": [{"repeat": 6, "block": [{"linear": 16}, "relu", {"dropout": 0.1}, {"reshape": [4, 4]}, "flatten",
                                          {"residual": [{"linear": 16}, "layernorm"]}]}]}
    for batch in (1, 4):
        cached = inspect(spec, batch=batch).to_dict()
        monkeypatch.setattr(inspect_module, "_CACHE_LEAVES", False)
        assert inspect(spec, batch=batch).to_dict() == cached
        monkeypatch.setattr(inspect_module, "_CACHE_LEAVES", True)


def test_a_long_spec_runs_each_distinct_leaf_once_per_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2,000 identical linear layers: 20,000 used to take 96 s to inspect.
    calls = []
    forward = nn.Linear.forward
    monkeypatch.setattr(nn.Linear, "forward", lambda self, x: calls.append(1) or forward(self, x))
    r = inspect({"input": {"shape": [16]}, "model": [{"linear": 16}] * 2000})
    assert r.params == 2000 * 272 and r.flops_per_sample == 2000 * 528
    # Each layer saves its input; the loss its fp32 log-softmax (16 floats) and the int64 target.
    assert r.memory.activations_per_sample == 2000 * 16 * 4 + 16 * 4 + 8
    # per pass: the first layer (its input needs no gradient) and the one shape after it
    assert len(calls) <= 8


@pytest.mark.parametrize("spec", [
    "zoo:lstm-classifier",
    {"input": {"shape": [40, 6]}, "model": [{"gru": {"hidden": 5, "layers": 2, "dropout": 0.2, "returns": "sequence"}},
                                            {"lstm": {"hidden": 3, "bidirectional": True}}, {"linear": 2}]},
    {"input": {"shape": [30, 4]}, "model": [{"rnn": {"hidden": 7, "returns": "sequence", "bidirectional": True}},
                                            "flatten", {"linear": 2}]},
])
def test_recurrent_layers_priced_on_a_few_steps_match_the_full_run(spec: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The meta device runs an LSTM one step at a time: lstm-classifier took 27.7 s to inspect.
    import archlab.model._inspect as inspect_module

    for batch in (1, 3):
        fast = inspect(spec, batch=batch).to_dict()
        monkeypatch.setattr(inspect_module, "_CACHE_LEAVES", False)
        assert inspect(spec, batch=batch).to_dict() == fast
        monkeypatch.setattr(inspect_module, "_CACHE_LEAVES", True)


def test_the_cli_says_how_batch_1_activations_were_found(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from archlab.cli import app

    path = tmp_path / "bn.yaml"
    path.write_text("input: [1, 8, 8]\nmodel: [flatten, linear: 64, batchnorm, relu, linear: 10]\n")
    result = CliRunner().invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert "batch norm cannot train on one value per channel" in " ".join(result.output.split())
