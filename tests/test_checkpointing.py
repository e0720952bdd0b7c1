"""Activation checkpointing: `checkpoint: true` in a spec (repeat, residual, block reference)
and `--activation-checkpointing` (every repeat copy), through torch.utils.checkpoint
(non-reentrant).

What a real CPU step saves is measured as in tests/test_memory_truth.py: a saved-tensor hook
around the forward and the loss. The hooks nest: inside a checkpointed segment torch installs
its own pair, and the innermost pair is the one autograd calls, so the outer hook never sees
what the segment saves (nor its recomputation during backward); the segment's input is saved
by torch under the outer hook (its no-op autograd function that keeps the inputs). The outer
hook therefore sees exactly what a checkpointed step keeps between forward and backward.
"""

from __future__ import annotations

import re

import pytest
import torch
from interrupts import interrupt_at
from safetensors.torch import load_file
from savedbytes import real_saved_bytes
from typer.testing import CliRunner

import archlab.model._builder as builder_module
import archlab.train._trainer as trainer_module
from archlab import build, inspect
from archlab.cli import app
from archlab.core import SpecError
from archlab.model import Repeat, checkpoint_repeats, is_checkpointed
from archlab.runs import open_store
from archlab.train import fit, resume

# A residual MLP with dropout in every copy: checkpointing must replay the dropout masks.
RESIDUAL_MLP = {"name": "resmlp", "model": [
    "flatten", {"linear": 32},
    {"repeat": 3, "block": {"residual": [{"linear": 32}, "relu", {"dropout": 0.2}]}},
    {"linear": "$num_classes"}]}
# The three places a spec says `checkpoint: true`.
MARKED = {"name": "marked", "input": {"shape": [16]},
          "blocks": {"mlp": [{"linear": "$width"}, "gelu", {"linear": 16}]},
          "model": [{"linear": 16},
                    {"repeat": 2, "checkpoint": True, "block": [{"linear": 64}, "tanh", {"linear": 16}]},
                    {"residual": [{"linear": 48}, "relu", {"linear": 16}], "checkpoint": True},
                    {"mlp": {"width": 40, "checkpoint": True}},
                    {"linear": 10}]}


def _last_weights(run) -> dict[str, torch.Tensor]:
    return load_file(run.directory / "checkpoint.safetensors")


@pytest.mark.parametrize("vars", [None, {"dropout": 0.0}], ids=["dropout", "no-dropout"])
def test_checkpointed_gpt_saves_less_and_the_inspector_prices_what_a_real_step_saves(vars) -> None:
    plain = inspect("zoo:gpt-mini", batch=2, vars=vars, device="cpu").memory
    priced = inspect("zoo:gpt-mini", batch=2, vars=vars, device="cpu", activation_checkpointing=True).memory
    net = build("zoo:gpt-mini", seed=0, vars=vars)
    assert checkpoint_repeats(net) == 4
    real = real_saved_bytes(net, 2)
    assert priced.activations == real  # exact, as without checkpointing
    assert priced.checkpointed == 4 and plain.checkpointed == 0 and plain.recompute == 0
    assert priced.activations < plain.activations / 4  # the four blocks keep only their inputs
    # During backward one block at a time saves its activations again: in the total.
    assert 0 < priced.recompute < plain.activations
    assert priced.total == priced.weights + priced.gradients + priced.optimizer + priced.activations + priced.recompute
    assert priced.total < plain.total


def _real_recompute_bytes(vars: dict | None, batch: int) -> int:
    """What the largest block saves when it runs without checkpointing (its input aside, which
    is kept anyway): what its recomputation saves again during backward, on real tensors."""
    net = build("zoo:gpt-mini", seed=0, vars=vars).train()
    weights = {t.untyped_storage()._cdata for t in [*net.parameters(), *net.buffers()]}
    outside: set[int] = set()
    inside: list[dict[int, int]] = []
    largest = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        c = t.untyped_storage()._cdata
        if c not in weights:
            if inside:
                inside[-1][c] = t.untyped_storage().nbytes()
            else:
                outside.add(c)
        return t

    def enter(_m, args) -> None:
        outside.add(args[0].untyped_storage()._cdata)  # checkpoint keeps the input
        inside.append({})

    def leave(_m, _a, _o) -> None:
        saves = inside.pop()
        largest[0] = max(largest[0], sum(n for c, n in saves.items() if c not in outside))

    blocks = next(m for m in net.modules() if isinstance(m, Repeat)).repeat
    for block in blocks:
        block.register_forward_pre_hook(enter)
        block.register_forward_hook(leave)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(net.example_input(batch))
    return largest[0]


@pytest.mark.parametrize("vars", [None, {"dropout": 0.0}], ids=["dropout", "no-dropout"])
def test_the_recompute_is_what_one_block_saves(vars) -> None:
    priced = inspect("zoo:gpt-mini", batch=2, vars=vars, device="cpu", activation_checkpointing=True).memory
    assert priced.recompute == _real_recompute_bytes(vars, 2)


def test_bf16_checkpointed_activations_equal_a_real_cpu_autocast_step() -> None:
    net = build("zoo:gpt-mini", seed=0)
    checkpoint_repeats(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        real = real_saved_bytes(net, 2)
    assert inspect("zoo:gpt-mini", batch=2, dtype="bf16", device="cpu",
                   activation_checkpointing=True).memory.activations == real


def test_checkpoint_true_on_a_repeat_a_residual_and_a_block_reference() -> None:
    net = build(MARKED, seed=0)
    marked = [name for name, m in net.named_modules() if is_checkpointed(m)]
    assert marked == ["model.1.repeat.0", "model.1.repeat.1", "model.2", "model.3"]
    unmarked = {k: v for k, v in MARKED.items() if k != "model"}
    unmarked["model"] = [{k: v for k, v in n.items() if k != "checkpoint"} if isinstance(n, dict) else n
                         for n in MARKED["model"]]
    unmarked["model"][3] = {"mlp": {"width": 40}}
    plain = build(unmarked, seed=0)
    assert net.state_dict().keys() == plain.state_dict().keys()  # the mark is no module of its own
    for a, b in zip(net.state_dict().values(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    real, real_plain = real_saved_bytes(net, 3), real_saved_bytes(plain, 3)
    assert real < real_plain
    assert inspect(MARKED, batch=3, device="cpu").memory.activations == real
    assert inspect(unmarked, batch=3, device="cpu").memory.activations == real_plain


@pytest.mark.parametrize("node, where", [
    ({"repeat": 2, "checkpoint": "yes", "block": [{"linear": 4}]}, "model[0].repeat"),
    ({"residual": [{"linear": 4}], "checkpoint": 1}, "model[0].residual"),
])
def test_checkpoint_must_be_true_or_false(node, where) -> None:
    with pytest.raises(SpecError, match=re.escape(f"{where}.checkpoint: expected true or false. Received: ")):
        build({"input": {"shape": [4]}, "model": [node]})


def test_checkpointed_training_ends_with_the_same_weights(tmp_path, monkeypatch) -> None:
    store = open_store(tmp_path / "store")
    settings = dict(data="digits", epochs=1, batch_size=64, seed=5, store=store, quiet=True)
    plain = fit(RESIDUAL_MLP, **settings)
    calls = [0]

    def counted(*args, **kwargs):
        calls[0] += 1
        return real_checkpoint(*args, **kwargs)

    real_checkpoint = builder_module._torch_checkpoint
    monkeypatch.setattr(builder_module, "_torch_checkpoint", counted)
    checkpointed = fit(RESIDUAL_MLP, activation_checkpointing=True, **settings)
    assert calls[0] == 3 * 20  # every copy, at each of the 20 steps (none in evaluation)
    assert store.get_run(checkpointed.run_id).settings["activation_checkpointing"] is True
    a, b = _last_weights(plain), _last_weights(checkpointed)
    for key in a:  # in fact bit-for-bit on CPU: the recomputation runs the same kernels
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)
    assert checkpointed.history[0]["train_loss"] == pytest.approx(plain.history[0]["train_loss"], rel=1e-6)


def test_checkpointed_batch_norm_updates_its_running_statistics_once_per_step(tmp_path) -> None:
    # The recomputation in backward runs the forward again in training mode: batch norm's
    # running statistics (and batch count) must be those of one forward, as without checkpointing.
    spec = {"name": "bn", "input": {"shape": [1, 8, 8]}, "model": [
        {"conv2d": {"out": 8, "kernel": 3, "padding": 1}},
        {"repeat": 2, "block": [{"conv2d": {"out": 8, "kernel": 3, "padding": 1}}, "batchnorm", "relu"]},
        "global_avgpool", {"linear": 10}]}
    store = open_store(tmp_path / "store")
    settings = dict(data="digits", epochs=1, batch_size=64, seed=5, store=store, quiet=True)
    a = _last_weights(fit(spec, **settings))
    b = _last_weights(fit(spec, activation_checkpointing=True, **settings))
    assert [k for k in a if "num_batches_tracked" in k]  # the batch norms' buffers are in the checkpoint
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)


def test_resume_keeps_activation_checkpointing(tmp_path, monkeypatch) -> None:
    store = open_store(tmp_path / "store")
    settings = dict(data="digits", epochs=2, batch_size=64, seed=5, store=store, quiet=True,
                    activation_checkpointing=True)
    reference = fit(RESIDUAL_MLP, **settings)
    calls = []
    real = trainer_module.checkpoint_repeats
    monkeypatch.setattr(trainer_module, "checkpoint_repeats", lambda net: calls.append(real(net)))
    interrupt_at(monkeypatch, 27)
    with pytest.raises(KeyboardInterrupt):
        fit(RESIDUAL_MLP, **settings)
    [record] = store.list_runs(status="interrupted")
    resumed = resume(record.run_id, store=store, quiet=True)
    # the interrupted run and its resumption both checkpoint the 3 copies (each marks the meta
    # network it checks first, then the real one)
    assert calls == [3, 3, 3, 3]
    a, b = _last_weights(reference), _last_weights(resumed)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)


def test_cli_inspect_prices_activation_checkpointing() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["inspect", "zoo:gpt-mini", "--batch", "2", "--device", "cpu",
                                 "--activation-checkpointing"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "activation checkpointing: 4 segments keep only their input" in result.stdout
    assert "+ recompute" in result.stdout


def test_checkpointed_decoder_blocks_get_the_encoder_memory_back_in_backward() -> None:
    # A cross-attention block reads the encoder's output from an attribute set only for the
    # forward; its recomputation during backward must see the same memory.
    def gradients(checkpointed: bool) -> dict[str, torch.Tensor]:
        net = build("zoo:seq2seq-transformer", seed=0).train()
        if checkpointed:
            assert checkpoint_repeats(net) == 4  # 2 encoder and 2 decoder blocks
        g = torch.Generator().manual_seed(1)
        src, tgt = torch.randint(3, 13, (4, 13), generator=g), torch.randint(3, 13, (4, 13), generator=g)
        net(src, tgt).float().square().mean().backward()
        return {n: p.grad for n, p in net.named_parameters()}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys()
    for key in plain:
        torch.testing.assert_close(plain[key], checkpointed[key], rtol=1e-6, atol=1e-8)


def test_activation_checkpointing_with_nothing_to_checkpoint_is_one_line_and_records_nothing(tmp_path) -> None:
    store = open_store(tmp_path / "store")
    with pytest.raises(SpecError, match="the spec has nothing to checkpoint"):
        fit("zoo:cnn", data="digits", epochs=1, activation_checkpointing=True, store=store, quiet=True)
    assert store.list_runs() == []
    with pytest.raises(SpecError, match="the spec has nothing to checkpoint"):
        inspect("zoo:cnn", activation_checkpointing=True)
