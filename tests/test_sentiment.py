"""The sentiment zoo models learn on a small aclImdb-shaped folder the test writes."""

from __future__ import annotations

import random

import pytest

from archlab.train import fit

POSITIVE = ["great", "wonderful", "brilliant", "moving", "superb", "delightful", "best", "loved"]
NEGATIVE = ["awful", "boring", "terrible", "worst", "dull", "waste", "hated", "poor"]
FILLER = ["the", "film", "movie", "plot", "actors", "was", "and", "a", "it", "story", "this", "of"]


def review(rng: random.Random, words: list[str]) -> str:
    body = [rng.choice(FILLER) for _ in range(rng.randint(12, 30))]
    for _ in range(3):
        body.insert(rng.randrange(len(body)), rng.choice(words))
    return " ".join(body).capitalize() + ".<br /><br />" + rng.choice(FILLER) + "!"


@pytest.fixture(scope="module")
def imdb_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("aclImdb")
    rng = random.Random(0)
    for split, n in (("train", 160), ("test", 60)):
        for label, words in (("pos", POSITIVE), ("neg", NEGATIVE)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i}_{rng.randint(1, 10)}.txt").write_text(review(rng, words))
    return root


@pytest.mark.parametrize("zoo, vars_, lr", [
    ("zoo:rnn-imdb", {}, 1e-3),   # a plain tanh RNN diverges from the signal at 3e-3
    ("zoo:lstm-classifier", {"dim": 32, "hidden": 32}, 3e-3),
    ("zoo:transformer-classifier", {"dim": 32, "heads": 2, "depth": 1}, 3e-3),
])
def test_sentiment_models_learn_on_a_separable_fixture(imdb_folder, zoo, vars_, lr):
    run = fit(zoo, data=f"imdb:{imdb_folder}?vocab=200&max_len=48", epochs=12, batch_size=16, lr=lr,
              warmup=0, vars=vars_ or None, quiet=True)
    assert run.data.input_shape == (48,) and run.data.num_classes == 2
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    assert run.test_metrics["acc"] > 0.75, (zoo, run.history[-1], run.test_metrics)
