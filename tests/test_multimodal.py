"""The bundled two-input example: the `digits-qa` data set (an 8x8 digit and a question such as
"plus three", answer (digit + 3) mod 10) and `zoo:digits-qa`, which reads both.

The loader tests check what its docstring promises: the shapes and dtypes, the digits split
reused image for image, fixed questions, and that the answer is a function of both inputs and
of neither alone. The training test trains the zoo spec and the same towers each alone through
`fit` and checks that only reading both learns the task.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from archlab import build, inspect
from archlab.core import DataError
from archlab.data import DataInfo, load_dataset, tokenizer_from_dict
from archlab.layers import Inputs
from archlab.train import fit

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg, msg
    return msg


def answers_from_text(digits: torch.Tensor, questions: list[str]) -> torch.Tensor:
    """The answer each decoded question asks for, worked out from its words (not qa_answer)."""
    out = []
    for d, text in zip(digits.tolist(), questions, strict=True):
        op, number = text.split()
        k = NUMBERS.index(number)
        out.append((d + k) % 10 if op == "plus" else (d - k) % 10)
    return torch.tensor(out)


# --------------------------------------------------------------------------- the data set


def test_digits_qa_shapes_dtypes_and_info():
    ds = load_dataset("digits-qa")
    info = ds.info
    assert info.name == "digits-qa" and info.task == "classify" and info.num_classes == 10
    assert info.class_names == tuple("0123456789") and info.vars() == {"num_classes": 10}
    assert info.inputs == {"image": {"shape": [1, 8, 8], "dtype": "float"},
                           "question": {"shape": [2], "dtype": "long", "vocab": 14}}
    assert info.input_shape == (1, 8, 8) and info.input_dtype == "float"  # the first input's
    assert DataInfo.from_dict(info.to_dict()) == info
    # 4 questions for each of digits' 1258 / 180 / 359 images
    assert (len(ds.train), len(ds.val), len(ds.test)) == (4 * 1258, 4 * 180, 4 * 359)
    for split in (ds.train, ds.val, ds.test):
        assert isinstance(split.x, Inputs) and split.x.names == ("image", "question")
        image, question = split.x["image"], split.x["question"]
        assert image.dtype == torch.float32 and image.shape[1:] == (1, 8, 8)
        assert 0 <= image.min() and image.max() <= 1
        assert question.dtype == torch.int64 and question.shape[1:] == (2,)
        assert 2 <= question.min() and question.max() < 14  # no <pad>/<unk> in a 2-word question
        assert split.y.dtype == torch.int64 and split.y.shape == (len(split),)
    assert set(ds.test.y.tolist()) == set(range(10))


def test_digits_qa_reuses_the_digits_split_image_for_image():
    qa, digits = load_dataset("digits-qa"), load_dataset("digits")
    for a, b in ((qa.train, digits.train), (qa.val, digits.val), (qa.test, digits.test)):
        # image-major: each digits image, in digits' order, once per question
        assert torch.equal(a.x["image"], b.x.repeat_interleave(4, dim=0))


def test_digits_qa_is_the_same_for_every_run_seed_and_every_load():
    a, b = load_dataset("digits-qa", seed=0), load_dataset("digits-qa", seed=123)
    for sa, sb in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(sa.x["image"], sb.x["image"]) and torch.equal(sa.x["question"], sb.x["question"])
        assert torch.equal(sa.y, sb.y)
    a.train.x["image"].zero_()  # callers own their tensors: digits' cache is untouched
    assert load_dataset("digits-qa").train.x["image"].max() == 1.0


def test_the_answer_is_the_digit_plus_or_minus_the_questions_number():
    qa, digits = load_dataset("digits-qa"), load_dataset("digits")
    tok = tokenizer_from_dict(qa.info.tokenizer)
    for a, b in ((qa.train, digits.train), (qa.test, digits.test)):
        texts = [tok.decode(q) for q in a.x["question"]]
        assert {t.split()[0] for t in texts} == {"plus", "minus"}
        assert {t.split()[1] for t in texts} == set(NUMBERS)
        assert torch.equal(a.y, answers_from_text(b.y.repeat_interleave(4), texts))
    assert tok.decode([2, 7]) == "plus three" and tok.pad_id == 0


def test_neither_input_alone_tells_the_answer():
    """The best any function of the digit alone, or of the question alone, can do: the train
    split's most common answer for each value, scored on test. Knowing both is exact."""
    qa, digits = load_dataset("digits-qa"), load_dataset("digits")
    digit = {"train": digits.train.y.repeat_interleave(4), "test": digits.test.y.repeat_interleave(4)}
    question = {part: getattr(qa, part).x["question"][:, 0] * 100 + getattr(qa, part).x["question"][:, 1]
                for part in ("train", "test")}
    for key in (digit, question):
        best = {}
        for value in key["train"].unique().tolist():
            best[value] = int(qa.train.y[key["train"] == value].bincount(minlength=10).argmax())
        guess = torch.tensor([best[v] for v in key["test"].tolist()])
        assert (guess == qa.test.y).float().mean() < 0.16  # chance is 0.10
    # Each image with all 20 questions: every answer twice (d + k and d - k run over all ten).
    full = load_dataset("digits-qa?n=20")
    per_image = full.test.y.reshape(-1, 20)
    assert all(torch.equal(row.bincount(minlength=10), torch.full((10,), 2)) for row in per_image)


def test_more_questions_per_image_keep_the_fewer_ones():
    four, eight = load_dataset("digits-qa"), load_dataset("digits-qa:?n=8")
    assert eight.info.name == "digits-qa?n=8" and len(eight.train) == 2 * len(four.train)
    q4, q8 = four.train.x["question"].reshape(-1, 4, 2), eight.train.x["question"].reshape(-1, 8, 2)
    assert torch.equal(q8[:, :4], q4)
    # n=20: every image gets each of the 20 questions once
    every = load_dataset("digits-qa?n=20").test.x["question"].reshape(-1, 20, 2)
    codes = np.sort((every[..., 0] * 100 + every[..., 1]).numpy(), axis=1)
    assert (codes == codes[0]).all() and len(set(codes[0].tolist())) == 20


@pytest.mark.parametrize("uri, expected", [
    ("digits-qa?n=0", "option n must be >= 1, got 0"),
    ("digits-qa?n=21", "option n must be <= 20"),
    ("digits-qa?m=2", "unknown option(s) m; known: n"),
    ("digits-qa:foo", "takes options only, e.g. digits-qa?n=8, got digits-qa:foo"),
])
def test_bad_digits_qa_options_are_one_line_errors(uri, expected):
    with pytest.raises(DataError) as e:
        load_dataset(uri)
    assert expected in one_line(e) and one_line(e).startswith("digits-qa:")


# --------------------------------------------------------------------------- the models

HEAD = [{"linear": 256}, "relu", {"linear": "$num_classes"}]
# zoo:digits-qa's towers, each alone, with the same head: each reads one input of the data set.
IMAGE_ONLY = {"name": "image-only", "vars": {"num_classes": 10},
              "inputs": {"image": {"shape": [1, 8, 8]}},
              "model": [{"flatten": None, "from": "image"}, {"linear": 128}, "relu", {"linear": 128}, *HEAD]}
QUESTION_ONLY = {"name": "question-only", "vars": {"num_classes": 10},
                 "inputs": {"question": {"shape": [2], "dtype": "long", "vocab": 14}},
                 "model": [{"embedding": {"vocab": 14, "dim": 32, "init_std": 1.0}, "from": "question"},
                           {"seq_pool": "mean"}, *HEAD]}


def test_the_one_input_models_are_the_zoo_models_towers():
    """Same layers (so the comparison is fair): the head's first layer reads 128 + 32 features
    in the zoo model and 128 or 32 alone, so the two alone hold the zoo model's parameters with
    the head's biases and last layer counted twice."""
    counted_twice = 256 + (256 * 10 + 10)
    assert inspect(IMAGE_ONLY).params + inspect(QUESTION_ONLY).params == inspect("zoo:digits-qa").params + counted_twice
    net = build("zoo:digits-qa", seed=0).eval()
    with torch.no_grad():
        assert net(net.example_input(3)).shape == (3, 10)


def test_the_two_input_model_beats_each_one_input_model(tmp_path):
    """Measured (5 epochs, the zoo spec's lr, seeds 0-5): both inputs 0.925-0.967 test accuracy,
    image only 0.101-0.107, question only 0.093-0.113 (chance: 0.10)."""
    acc = {}
    for key, spec in (("both", "zoo:digits-qa"), ("image", IMAGE_ONLY), ("question", QUESTION_ONLY)):
        run = fit(spec, data="digits-qa", epochs=5, lr=5e-3, seed=0, store=tmp_path, quiet=True)
        assert run.status == "finished"
        acc[key] = run.test_metrics["acc"]
    assert acc["image"] < 0.2 and acc["question"] < 0.2, acc
    assert acc["both"] > 0.75, acc
    assert acc["both"] - max(acc["image"], acc["question"]) > 0.6, acc
