"""A data set with two inputs, an image and a question, whose answer needs both: `digits-qa`.

    digits-qa[?n=4]

Built only from bundled data (no files, nothing downloaded), in four steps:

1. The images are scikit-learn's 8x8 digits, scaled to [0, 1] and split into train, val and
   test exactly as the `digits` loader splits them (`_images._digits_images`): the same
   images in the same splits, so no test image is ever seen in training.
2. There are 20 questions, "plus K" and "minus K" with K one of the words zero..nine. Every
   image gets its own random order of the 20, drawn once from a fixed seed (like the splits,
   independent of the run's seed); its first ``n`` questions (default 4, at most 20) are its
   rows. A larger ``n`` keeps the smaller one's rows and adds to them.
3. A question is 2 word ids of `WordTokenizer(("plus", "minus", "zero", ..., "nine"))`:
   <pad>=0 and <unk>=1 (reserved), plus=2, minus=3, zero=4, ..., nine=13; vocabulary 14.
   ``DataInfo.tokenizer`` decodes them.
4. The answer (the class, "0".."9") is (digit + K) mod 10 for "plus K" and (digit - K) mod 10
   for "minus K". K is uniform and drawn apart from the image, so the image alone leaves the
   answer uniform over the ten classes, and so does the question alone (the digits are
   balanced): a model that reads one input is at chance (10%); one that reads both can learn
   the answer.

Each split's x is `Inputs(image=(N, 1, 8, 8) float32, question=(N, 2) int64)`, image-major:
the rows of one image are adjacent, in its question order.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core import DataError
from ..layers import Inputs
from ._dataset import SPLIT_SEED, DataInfo, Dataset, Split, _options, register_dataset
from ._images import _digits_images
from ._text import _int_option
from ._tokenizers import WordTokenizer

__all__ = ["QA_NUMBERS", "QA_OPERATIONS", "qa_answer"]

QA_OPERATIONS = ("plus", "minus")  # +K and -K, mod 10
QA_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_QUESTIONS = len(QA_OPERATIONS) * len(QA_NUMBERS)  # question q: operation q // 10, K = q % 10
_QUESTION_SEED = (SPLIT_SEED, 2024)  # fixed: the questions, like the splits, never move with the run seed
_TOKENIZER = WordTokenizer((*QA_OPERATIONS, *QA_NUMBERS))
_DEFAULT_N = 4  # questions per image: 5,032 training rows, enough for the 200 (digit, question) pairs


def qa_answer(digit: np.ndarray, question: np.ndarray) -> np.ndarray:
    """The answers to question ids (0..19) about digits: (digit + K) or (digit - K), mod 10.

    >>> qa_answer(np.array([7, 7]), np.array([3, 13])).tolist()  # 7 plus three, 7 minus three
    [0, 4]
    """
    sign = np.where(question // len(QA_NUMBERS) == 0, 1, -1)
    return (digit + sign * (question % len(QA_NUMBERS))) % 10


def _question_tokens(question: np.ndarray) -> np.ndarray:
    """Question ids (N,) -> word ids (N, 2): the operation's, then the number's."""
    op, k = question // len(QA_NUMBERS), question % len(QA_NUMBERS)
    first = _TOKENIZER.encode(QA_OPERATIONS[0])[0]  # plus=2, minus=3, zero=4, ... nine=13
    return np.stack([first + op, first + len(QA_OPERATIONS) + k], axis=1).astype(np.int64)


@register_dataset("digits-qa", "digits_qa")
def _load_digits_qa(arg, *, seed, root, target, val_fraction) -> Dataset:
    where, _, query = (arg or "").partition("?")
    if where:
        raise DataError(f"digits-qa: takes options only, e.g. digits-qa?n=8, got digits-qa:{where}")
    opts = _options("digits-qa", query, {"n": str(_DEFAULT_N)})
    n = _int_option("digits-qa", opts, "n", 1)
    if n > _QUESTIONS:
        raise DataError(f"digits-qa: option n must be <= {_QUESTIONS} (there are {_QUESTIONS} distinct "
                        f"questions), got {n}")
    x, y, parts, version = _digits_images(val_fraction)
    # One random order of the 20 questions per image, for all images at once, so an image's
    # questions do not depend on val_fraction or on n (its rows for n=4 are the first 4 of n=8).
    order = np.argsort(np.random.default_rng(_QUESTION_SEED).random((len(y), _QUESTIONS)), axis=1)

    def split(images: np.ndarray) -> Split:
        rows = np.repeat(images, n)  # image-major: an image's n rows are adjacent
        question = order[images, :n].reshape(-1)
        # torch.tensor copies: callers may modify their tensors without touching digits' cache.
        return Split(Inputs(image=torch.tensor(x[rows]), question=torch.from_numpy(_question_tokens(question))),
                     torch.from_numpy(qa_answer(y[rows], question)))

    train, val, test = (split(images) for images in parts)
    notes = (
        f"question: 2 word ids, 'plus K' or 'minus K' with K in zero..nine (vocabulary {_TOKENIZER.vocab_size}, "
        f"<pad>=0)",
        "answer: (digit + K) mod 10 or (digit - K) mod 10; either input alone leaves it at chance (10%)",
        f"rows: each image with {n} of the 20 questions (fixed seed), split by image as digits is",
    )
    inputs = {"image": {"shape": [1, 8, 8], "dtype": "float"},
              "question": {"shape": [2], "dtype": "long", "vocab": _TOKENIZER.vocab_size}}
    info = DataInfo("digits-qa" if n == _DEFAULT_N else f"digits-qa?n={n}", (1, 8, 8), "float", "classify", 10,
                    tuple(str(d) for d in range(10)), tokenizer=_TOKENIZER.to_dict(), notes=notes, inputs=inputs,
                    source=f"sklearn.datasets.load_digits (scikit-learn {version}) + generated questions")
    return Dataset(info, train, val, test)
