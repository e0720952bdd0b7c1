"""Data that does not fit a model is one line before anything runs (archlab.train._inputs_fit):
`evaluate` on another data set, a distillation teacher on the student's data, and token ids
beyond an embedding's vocab at `fit`, each refused before a run is recorded or a batch is
read; data that does fit (a data set with an input the model does not read) is served."""

from __future__ import annotations

import random

import numpy as np
import pytest
from clirun import run_main

from archlab.compress import distill
from archlab.core import DataError, SpecError
from archlab.data import DataInfo, load_dataset, write_npy
from archlab.model import build
from archlab.runs import open_store
from archlab.spec import load_spec
from archlab.train import check_inputs_fit, check_vocab_fits, evaluate, fit

ONE = {"name": "one", "input": {"shape": [1, 8, 8]},
       "model": ["flatten", {"linear": 16}, "relu", {"linear": "$num_classes"}]}
# zoo:digits-qa's two towers, small: an image MLP and a question embedding, concatenated.
TWO = {"name": "two", "vars": {"words": 14},
       "inputs": {"image": {"shape": [1, 8, 8]}, "question": {"shape": [2], "dtype": "long", "vocab": "$words"}},
       "model": [{"flatten": None, "from": "image"}, {"linear": 16, "name": "seen"},
                 {"embedding": {"vocab": "$words", "dim": 8}, "from": "question"},
                 {"seq_pool": "mean", "name": "asked"}, {"from": ["seen", "asked"], "merge": "concat"},
                 {"linear": "$num_classes"}]}
QUICK = {"epochs": 1, "batch_size": 256, "quiet": True}


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and text.strip() == text, text
    return text


def runs() -> int:
    return len(open_store().list_runs())


def info(name: str = "data", **inputs: dict) -> DataInfo:
    """A classify DataInfo of named inputs, e.g. info(image={"shape": [1, 8, 8], "dtype": "float"})."""
    first = next(iter(inputs.values()))
    return DataInfo(name, tuple(first["shape"]), first["dtype"], "classify", 10, inputs=inputs)


IMAGE = {"shape": [1, 8, 8], "dtype": "float"}
QUESTION = {"shape": [2], "dtype": "long", "vocab": 14}


def meta(spec: dict, data: DataInfo):
    """The spec built on the meta device with the data's vars and input shapes, as training binds them."""
    bound = load_spec(spec).with_vars(data.vars(), strict=False)
    return build(bound.with_input(data.input_shape, data.input_dtype, named=data.named_inputs()), device="meta")


# ------------------------------------------------------------------ the check, on its own


def test_inputs_are_compared_by_name_shape_and_dtype():
    two = meta(TWO, info(image=IMAGE, question=QUESTION))
    fix = "use the run's data"
    # what the model does not read is no misfit: an extra input, first in the data's order
    check_inputs_fit(two, info(aaa={"shape": [5], "dtype": "float"}, image=IMAGE, question=QUESTION),
                     where="--data x", fix=fix)
    cases = [
        (info(image=IMAGE, question={**QUESTION, "shape": [3]}),
         "--data x: the model reads input 'question' as (2,) long; the data gives (3,) long. Received: question "
         "(3,) long; use the run's data"),
        (info(image=IMAGE, question={**QUESTION, "dtype": "float"}),
         "the model reads input 'question' as (2,) long; the data gives (2,)."),
        (info(image=IMAGE, words=QUESTION),
         "the model reads input 'question', which the data does not have. Received: inputs image (1, 8, 8), "
         "words (2,) long;"),
        (load_dataset("digits").info,
         "the model reads 2 inputs (image (1, 8, 8), question (2,) long); the data gives one unnamed input "
         "(1, 8, 8)."),
    ]
    for data, expected in cases:
        with pytest.raises(DataError) as e:
            check_inputs_fit(two, data, where="--data x", fix=fix)
        assert expected in one_line(e) and one_line(e).endswith(fix)


def test_a_model_of_one_input_reads_one_unnamed_x_only():
    digits = load_dataset("digits").info
    unnamed = meta(ONE, digits)
    check_inputs_fit(unnamed, digits, where="--data digits", fix="f")
    # several named inputs reach it as one Inputs batch, which it cannot read
    with pytest.raises(DataError, match="the model reads one unnamed input \\(1, 8, 8\\); the data gives 2 named "
                                        "inputs \\(image \\(1, 8, 8\\), question \\(2,\\) long\\)") as e:
        check_inputs_fit(unnamed, info(image=IMAGE, question=QUESTION), where="--data qa", fix="f")
    one_line(e)
    with pytest.raises(DataError, match="reads samples of shape \\(1, 8, 8\\); the data gives \\(5,\\)"):
        check_inputs_fit(unnamed, DataInfo("t", (5,), "float", "classify", 10), where="--data t", fix="f")
    # one named input: fed by one unnamed x, or read by name from several
    named = {"name": "n", "inputs": {"image": {"shape": [1, 8, 8]}}, "model": ["flatten", {"linear": 10}]}
    net = meta(named, digits)
    check_inputs_fit(net, digits, where="--data digits", fix="f")
    check_inputs_fit(net, info(image=IMAGE, question=QUESTION), where="--data qa", fix="f")
    with pytest.raises(DataError, match="reads input 'image' as \\(1, 8, 8\\); the data gives \\(5,\\)"):
        check_inputs_fit(net, DataInfo("t", (5,), "float", "classify", 10), where="--data t", fix="f")


def test_a_gan_is_checked_against_the_images_it_learns_from():
    gan = build("zoo:gan", device="meta")
    assert (gan.input_shape, gan.data_shape) == ((32,), (1, 8, 8))  # its own input is the latent code
    check_inputs_fit(gan, load_dataset("digits").info, where="--data digits", fix="f")
    with pytest.raises(DataError, match="the model reads samples of shape \\(1, 8, 8\\); the data gives \\(32,\\)"):
        check_inputs_fit(gan, DataInfo("z", (32,), "float", "classify", 10), where="--data z", fix="f")


def test_the_vocab_error_names_the_layer_the_sizes_and_the_var():
    data = info(image=IMAGE, question=QUESTION)
    with pytest.raises(SpecError) as e:
        check_vocab_fits(meta({**TWO, "vars": {"words": 10}}, data), data, where="--data qa")
    assert one_line(e) == ("--data qa: model[2].embedding: vocab 10 is too small for the data's input 'question' "
                           "(a vocabulary of 14, ids 0..13). Received: vocab 10 < 14; --set words=14 (or raise the "
                           "embedding's vocab to 14)")
    check_vocab_fits(meta(TWO, data), data, where="--data qa")  # 14 <= 14
    check_vocab_fits(meta({**TWO, "vars": {"words": 20}}, data), data, where="--data qa")  # room to spare

    def embedding(vocab) -> dict:
        spec = {**TWO, "vars": {"words": 10, "vocab_size": 10}}
        model = list(spec["model"])
        model[2] = {"embedding": {"vocab": vocab, "dim": 8}, "from": "question"}
        return {**spec, "model": model}

    # a literal, an expression: no var to name; a data var the data does not set is --set like any
    for vocab, fix in ((10, "raise the embedding's vocab to 14 or more"),
                       ("${words * 1}", "raise the embedding's vocab to 14 or more"),
                       ("$vocab_size", "--set vocab_size=14 (or raise the embedding's vocab to 14)")):
        with pytest.raises(SpecError) as e:
            check_vocab_fits(meta(embedding(vocab), data), data, where="--data qa")
        assert one_line(e).endswith(fix)


# ----------------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store with a two-input run on digits-qa and a one-input run on digits."""
    home = tmp_path_factory.mktemp("fit-home")
    two = fit(TWO, data="digits-qa", store=home, **QUICK)
    one = fit(ONE, data="digits", store=home, **QUICK)
    return home, two, one


@pytest.fixture
def home(trained, tmp_path, monkeypatch):
    import shutil

    src, two, one = trained
    shutil.copytree(src, tmp_path / "home")
    monkeypatch.setenv("ARCHLAB_HOME", str(tmp_path / "home"))
    return two.run_id, one.run_id


def test_evaluate_refuses_data_whose_inputs_do_not_fit_in_one_line(home, monkeypatch, capsys):
    two, one = home
    with pytest.raises(DataError) as e:
        evaluate(two, "digits")
    assert one_line(e) == ("--data digits: the model reads 2 inputs (image (1, 8, 8), question (2,) long); the data "
                           "gives one unnamed input (1, 8, 8). Received: one input (1, 8, 8); evaluate on data with "
                           "the inputs of the run's own (digits-qa)")
    with pytest.raises(DataError, match="--data digits-qa: the model reads one unnamed input \\(1, 8, 8\\); the data "
                                        "gives 2 named inputs .*the run's own \\(digits\\)") as e:
        evaluate(one, "digits-qa")
    one_line(e)
    code, _, err = run_main(monkeypatch, capsys, "evaluate", one, "--data", "digits-qa")
    assert code == 2 and err.startswith("error: --data digits-qa: the model reads one unnamed input")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_evaluate_reads_its_inputs_by_name_from_npy_data(home, trained, tmp_path):
    two, _ = home
    run = trained[1]
    qa = load_dataset("digits-qa")
    extra, longer = write_npy(tmp_path / "extra", qa), write_npy(tmp_path / "longer", qa)
    for part in ("train", "val", "test"):
        rows = len(np.load(extra / f"{part}_y.npy"))
        # "aaa" comes first in the folder: the data's first input is not the model's
        np.save(extra / f"{part}_x_aaa.npy", np.zeros((rows, 5), np.float32))
        q = np.load(longer / f"{part}_x_question.npy")
        np.save(longer / f"{part}_x_question.npy", np.concatenate([q, q[:, :1]], axis=1))
    assert load_dataset(f"npy:{extra}").info.input_shape == (5,)
    result = evaluate(two, f"npy:{extra}")  # the same samples as digits-qa's test split: the same numbers
    assert {k: result[k] for k in run.test_metrics} == pytest.approx(run.test_metrics, rel=1e-5)
    # a question of 3 words would pass a mean pool silently: it is not the input the model learnt from
    with pytest.raises(DataError, match="the model reads input 'question' as \\(2,\\) long; the data gives "
                                        "\\(3,\\) long") as e:
        evaluate(two, f"npy:{longer}")
    one_line(e)


# ------------------------------------------------------------------- distillation


def test_a_teacher_that_cannot_read_the_data_is_refused_before_a_run_is_recorded(home):
    two, one = home
    n = runs()
    with pytest.raises(DataError) as e:
        distill(one, TWO, data="digits-qa", **QUICK)
    assert one_line(e).startswith(f"teacher {one} on data digits-qa: the model reads one unnamed input (1, 8, 8); "
                                  f"the data gives 2 named inputs")
    assert one_line(e).endswith("distil on data the teacher reads, e.g. its own (digits)")
    with pytest.raises(DataError, match=f"teacher {two} on data digits: the model reads 2 inputs"):
        distill(two, ONE, data="digits", **QUICK)
    assert runs() == n


# ------------------------------------------------------------- vocabularies at fit


def test_token_ids_beyond_the_vocab_are_refused_before_a_run_is_recorded(monkeypatch, capsys):
    with pytest.raises(SpecError) as e:
        fit("zoo:digits-qa", data="digits-qa", vars={"words": 10}, **QUICK)
    assert one_line(e) == ("--data digits-qa: model[4].embedding: vocab 10 is too small for the data's input "
                           "'question' (a vocabulary of 14, ids 0..13). Received: vocab 10 < 14; --set words=14 "
                           "(or raise the embedding's vocab to 14)")
    code, _, err = run_main(monkeypatch, capsys, "train", "zoo:digits-qa", "--data", "digits-qa", "--set",
                            "words=10", "--epochs", "1", "--quiet")
    assert code == 2 and err.count("\n") == 1 and "--set words=14" in err
    assert runs() == 0


TOKENS = {"name": "tokens", "input": {"shape": [6], "dtype": "long"},
          "model": [{"embedding": {"vocab": 5, "dim": 4}}, {"seq_pool": "mean"}, {"linear": "$num_classes"}]}


def test_one_text_input_from_csv_or_imdb_is_checked_too(tmp_path):
    rng = random.Random(0)
    words = "the a film plot was good bad great awful fine dull".split()
    rows = ["review,label"] + [" ".join(rng.choices(words, k=5)) + f",{i % 2}" for i in range(60)]
    (tmp_path / "reviews.csv").write_text("\n".join(rows) + "\n")
    imdb = tmp_path / "aclImdb"
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            (imdb / split / label).mkdir(parents=True)
            for i in range(10):
                (imdb / split / label / f"{i}_7.txt").write_text(" ".join(rng.choices(words, k=8)))
    for uri in (f"csv:{tmp_path / 'reviews.csv'}?text=review&max_len=6", f"imdb:{imdb}?max_len=6"):
        vocab, n = load_dataset(uri).info.vocab_size, runs()
        assert vocab > 5
        with pytest.raises(SpecError) as e:
            fit(TOKENS, data=uri, **QUICK)
        assert one_line(e) == (f"--data {uri}: model[0].embedding: vocab 5 is too small for the data's token input "
                               f"(a vocabulary of {vocab}, ids 0..{vocab - 1}). Received: vocab 5 < {vocab}; raise "
                               f"the embedding's vocab to {vocab} or more")
        assert runs() == n
        # and with room for every id it trains
        ok = {**TOKENS, "model": [{"embedding": {"vocab": vocab, "dim": 4}}, *TOKENS["model"][1:]]}
        assert fit(ok, data=uri, **QUICK).status == "finished"
