"""Encoder-decoder specs, teacher forcing, greedy and beam decoding, the seq2seq task."""

from __future__ import annotations

import pytest
import torch

from archlab import build, inspect, load_spec
from archlab.core import SpecError
from archlab.data import DataInfo, Dataset, Split
from archlab.model import BOS, EOS, PAD, Seq2SeqNetwork
from archlab.runs import open_store
from archlab.train import Seq2Seq, Trainer, TrainSettings

TINY = {
    "name": "tiny-s2s",
    "input": {"shape": [7], "dtype": "long"},
    "vars": {"vocab_size": 9, "dim": 32, "target_len": 7},
    "encoder": [{"embedding": {"vocab": "$vocab_size", "dim": "$dim"}},
                {"gru": {"hidden": 32, "returns": "sequence"}}],
    "decoder": [{"embedding": {"vocab": "$vocab_size", "dim": "$dim"}},
                {"additive_decoder": {"hidden": 32}},
                {"linear": "$vocab_size"}],
}


def reverse_data(n: int, seed: int, length: int = 5, symbols: int = 6) -> Split:
    """Sources of `length` symbols + <eos>; targets <bos> + reversed + <eos>."""
    g = torch.Generator().manual_seed(seed)
    sym = torch.randint(3, 3 + symbols, (n, length), generator=g)
    x = torch.cat([sym, torch.full((n, 1), EOS)], dim=1)
    y = torch.cat([torch.full((n, 1), BOS), sym.flip(1), torch.full((n, 1), EOS)], dim=1)
    return Split(x, y)


def test_build_and_shapes():
    net = build(TINY)
    assert isinstance(net, Seq2SeqNetwork)
    src = torch.randint(3, 9, (4, 7))
    tgt = torch.randint(3, 9, (4, 7))
    assert net(src, tgt).shape == (4, 7, 9)
    assert net.greedy(src, 7).shape == (4, 7)
    assert net.beam(src, 7, width=3).shape == (4, 7)
    keys = list(net.state_dict())
    assert any(k.startswith("encoder.0.") for k in keys) and any(k.startswith("decoder.1.") for k in keys)
    assert load_spec(TINY).to_dict()["encoder"] and inspect(TINY).params == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("zoo", [None, "zoo:seq2seq-transformer"])
def test_memory_at_padded_source_positions_is_ignored(zoo):
    net = (build(TINY) if zoo is None else build(zoo, vars={"target_len": 7}, input_shape=(7,))).eval()
    src = torch.tensor([[3, 4, 5, EOS, PAD, PAD, PAD]])
    tgt = torch.tensor([[BOS, 5, 4, 3, EOS, PAD, PAD]])
    with torch.no_grad():
        memory, mask = net.encode(src)
        assert mask.tolist() == [[True] * 4 + [False] * 3]
        noisy = memory.clone()
        noisy[:, 4:] = torch.randn_like(noisy[:, 4:]) * 100
        assert torch.allclose(net.decode(tgt, memory, mask), net.decode(tgt, noisy, mask), atol=1e-5)
        real = memory.clone()
        real[:, 1] += 1.0  # a real position does matter
        assert not torch.allclose(net.decode(tgt, memory, mask), net.decode(tgt, real, mask))


def test_a_decoder_that_ignores_the_encoder_is_refused():
    spec = {**TINY, "decoder": [{"embedding": {"vocab": 9, "dim": 8}}, {"linear": 9}]}
    with pytest.raises(SpecError, match="no layer reads the encoder"):
        build(spec)


def test_cross_layers_outside_a_decoder_are_refused():
    spec = {"input": {"shape": [5], "dtype": "long"},
            "model": [{"embedding": {"vocab": 9, "dim": 8}}, {"cross_attention": {"heads": 2}}]}
    with pytest.raises(SpecError, match="decoder"):
        build(spec)


def test_an_encoder_that_does_not_output_a_sequence_is_refused():
    spec = {**TINY, "encoder": [{"embedding": {"vocab": 9, "dim": 8}}, {"gru": 8}]}
    with pytest.raises(SpecError, match="encoder: must output a sequence"):
        build(spec)


def test_task_loss_ignores_padding_and_exact_match_needs_every_token():
    task = Seq2Seq(vocab_size=5)
    y = torch.tensor([[BOS, 3, 4, EOS, PAD], [BOS, 4, EOS, PAD, PAD]])
    perfect = torch.full((2, 4, 5), -10.0)
    for i in range(2):
        for t in range(4):
            perfect[i, t, y[i, t + 1]] = 10.0
    loss = task.loss(perfect, y)
    assert loss < 1e-3
    garbage_on_pads = perfect.clone()
    garbage_on_pads[1, 2:, :] = 0.0   # positions whose target is <pad>
    assert torch.isclose(task.loss(garbage_on_pads, y), loss)
    decoded = torch.tensor([[3, 4, EOS, PAD], [4, EOS, PAD, PAD]])
    metrics = task.summarize(task.stats(perfect, y, loss, decoded), 2)
    assert metrics["exact"] == 1.0 and metrics["token_acc"] == 1.0
    wrong = decoded.clone()
    wrong[1, 0] = 3
    assert task.summarize(task.stats(perfect, y, loss, wrong), 2)["exact"] == 0.5


@pytest.mark.parametrize("zoo", ["zoo:seq2seq-additive", "zoo:seq2seq-transformer"])
def test_zoo_seq2seq_specs_build_and_decode(zoo):
    net = build(zoo, vars={"target_len": 13}).eval()
    src = torch.randint(3, 13, (3, 13))
    assert net.greedy(src, 13).shape == (3, 13)


def test_training_learns_to_reverse_and_beam_is_at_least_as_good_as_greedy():
    info = DataInfo("reverse", (6,), "long", "seq2seq", None, vocab_size=9)
    data = Dataset(info, reverse_data(3000, 0), reverse_data(300, 1), reverse_data(300, 2))
    spec = load_spec({**TINY, "input": {"shape": [6], "dtype": "long"}})
    settings = TrainSettings(epochs=8, batch_size=64, lr=5e-3, task="seq2seq", grad_clip=1.0)
    trainer = Trainer(spec, data, settings, open_store(), data_uri="reverse", quiet=True)
    run = trainer.run()
    assert run.history[-1]["val_exact"] > 0.6, run.history[-1]
    assert run.history[0]["train_loss"] > run.history[-1]["train_loss"]
    assert "exact" in run.test_metrics
    net = run.model.eval()
    x, y = data.test.x, data.test.y
    greedy = ((net.greedy(x, 6) == y[:, 1:]) | (y[:, 1:] == PAD)).all(-1).float().mean()
    beam = ((net.beam(x, 6, width=4) == y[:, 1:]) | (y[:, 1:] == PAD)).all(-1).float().mean()
    assert abs(greedy.item() - run.test_metrics["exact"]) < 1e-6
    assert beam >= greedy - 0.02
