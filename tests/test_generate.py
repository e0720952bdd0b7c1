"""Language modelling: the task, KV-cache generation, `archlab generate`."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from archlab import build
from archlab.cli import app
from archlab.core import ArchlabError
from archlab.model import KVCache, generate
from archlab.train import LanguageModel, fit

SMALL_GPT = {"dim": 32, "heads": 4, "depth": 2, "vocab_size": 20}


@pytest.mark.parametrize("spec, vars_", [
    ("zoo:gpt-mini", SMALL_GPT),
    ("zoo:llama-7b", {"dim": 32, "heads": 4, "depth": 2, "hidden": 64, "vocab_size": 20}),  # rope + swiglu + rmsnorm
])
def test_incremental_decoding_equals_full_recompute(spec, vars_):
    net = build(spec, input_shape=(24,), vars=vars_).eval()
    x = torch.randint(0, 20, (2, 24))
    with torch.no_grad():
        full = net(x)
        with KVCache(net) as cache:
            parts = [cache.forward(net, x[:, :9]), cache.forward(net, x[:, 9:10]), cache.forward(net, x[:, 10:])]
    assert torch.allclose(full, torch.cat(parts, dim=1), atol=1e-4)
    greedy_cached = list(generate(net, [1, 2, 3], 15, temperature=0, use_cache=True))
    greedy_full = list(generate(net, [1, 2, 3], 15, temperature=0, use_cache=False))
    assert greedy_cached == greedy_full


def test_sampling_is_seeded_and_top_k_restricts_the_choice():
    net = build("zoo:gpt-mini", input_shape=(16,), vars=SMALL_GPT).eval()
    # Untrained tied embeddings favour repeating a token; a high temperature flattens that.
    a = list(generate(net, [1], 30, temperature=20.0, seed=3))
    assert a == list(generate(net, [1], 30, temperature=20.0, seed=3))
    assert a != list(generate(net, [1], 30, temperature=20.0, seed=4))
    with torch.no_grad():
        top1 = list(generate(net, [1], 10, temperature=1.0, top_k=1, seed=5))
    assert top1 == list(generate(net, [1], 10, temperature=0))


def test_generation_past_the_context_window_keeps_going():
    net = build("zoo:gpt-mini", input_shape=(8,), vars=SMALL_GPT).eval()
    assert len(list(generate(net, [1, 2], 40, temperature=0.5))) == 40


def test_models_that_cannot_decode_incrementally_are_refused():
    bidirectional = build({"input": {"shape": [8], "dtype": "long"},
                           "model": [{"embedding": {"vocab": 10, "dim": 8}}, {"encoder_block": {"heads": 2}},
                                     {"linear": 10}]})
    with pytest.raises(ArchlabError, match="non-causal"):
        list(generate(bidirectional, [1], 3))
    rnn = build({"input": {"shape": [8], "dtype": "long"},
                 "model": [{"embedding": {"vocab": 10, "dim": 8}}, {"gru": {"hidden": 8, "returns": "sequence"}},
                           {"linear": 10}]})
    with pytest.raises(ArchlabError, match="--no-cache"):
        list(generate(rnn, [1], 3))
    assert len(list(generate(rnn, [1], 3, use_cache=False))) == 3
    classifier = build("zoo:mlp")
    with pytest.raises(ArchlabError):
        list(generate(classifier, [1], 3))


def test_language_model_metrics():
    task = LanguageModel(vocab_size=4)
    y = torch.tensor([[1, 2, 3]])
    uniform = torch.zeros(1, 3, 4)
    loss = task.loss(uniform, y)
    m = task.summarize(task.stats(uniform, y, loss), 1)
    assert math.isclose(m["loss"], math.log(4), rel_tol=1e-6)
    assert math.isclose(m["ppl"], 4.0, rel_tol=1e-5) and math.isclose(m["bits"], 2.0, rel_tol=1e-6)


def test_train_a_char_lm_then_generate_from_the_cli(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 300)
    run = fit("zoo:gpt-mini", data=f"text:{corpus}?context=32", epochs=8, batch_size=32, lr=5e-3, warmup=0,
              vars={"dim": 32, "heads": 2, "depth": 1}, quiet=True)
    assert run.history[-1]["val_loss"] < run.history[0]["train_loss"]
    assert run.history[-1]["val_loss"] < math.log(run.data.vocab_size) / 2   # far better than uniform
    assert (run.directory / "tokenizer.json").exists()
    result = CliRunner().invoke(app, ["generate", run.run_id, "--prompt", "the quick", "--max-tokens", "40",
                                      "--temperature", "0"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("the quick") and len(result.output.strip()) >= 40
    assert "brown" in result.output   # it learned the (very repetitive) text


def test_generate_from_a_run_without_a_tokenizer_is_a_clear_error():
    run = fit("zoo:mlp", data="digits", epochs=1, quiet=True)
    result = CliRunner().invoke(app, ["generate", run.run_id])
    assert result.exit_code != 0
