"""archlab predict: PNG folders, .npy arrays and CSV rows read with the run's own preprocessing
(the same tensors the loaders made at training), one CSV row per sample out; bad input is a
one-line error and writes nothing. Runs are trained once per module (one epoch, tiny data)."""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import archlab.cli._app as cli
from archlab.core import ArchlabError, DataError, StoreError
from archlab.data import load_dataset, read_inputs, tokenizer_from_dict
from archlab.deploy import export_folder, predict, run_preprocessing
from archlab.model import generate
from archlab.runs import PREPROCESSING_FILE, open_store
from archlab.train import fit, load_run_model

TINY = {"model": [{"linear": 16}, "relu", {"linear": "$num_classes"}]}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return open_store(tmp_path_factory.mktemp("predict-store"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tmp_path_factory.mktemp("files")


@pytest.fixture(scope="module")
def digits_run(store):
    return fit("zoo:mlp", data="digits", epochs=1, batch_size=256, quiet=True, store=store)


def _table(path, n=90, *, target="label"):
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "color", "b", target])
        for i in range(n):
            a, b = rng.normal(), rng.normal() * 10
            value = ("cat" if a + b / 10 > 0 else "dog") if target == "label" else f"{2 * a - b:.4f}"
            w.writerow([f"{a:.4f}", ["red", "green", "blue"][i % 3], f"{b:.3f}", value])
    return path


@pytest.fixture(scope="module")
def table_run(store, files):
    return fit(TINY, data=f"csv:{_table(files / 'pets.csv')}", epochs=1, quiet=True, store=store)


@pytest.fixture(scope="module")
def regress_run(store, files):
    spec = {"model": [{"linear": 8}, "relu", {"linear": 1}]}
    return fit(spec, data=f"csv:{_table(files / 'values.csv', target='y')}", epochs=1, quiet=True, store=store)


@pytest.fixture(scope="module")
def lm_run(store, files):
    (files / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog. " * 60)
    spec = {"input": {"shape": [16], "dtype": "long"}, "vars": {"vocab_size": 32},
            "model": [{"embedding": {"vocab": "$vocab_size", "dim": 16}}, "pos_embedding",
                      {"decoder_block": {"heads": 2}}, "layernorm", "unembed"],
            "train": {"task": "language_model"}}
    return fit(spec, data=f"text:{files / 'corpus.txt'}?context=16", epochs=1, batch_size=32, quiet=True,
               store=store)


@pytest.fixture(scope="module")
def reviews_run(store, files):
    path = files / "reviews.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(40):
            good = i % 2 == 0
            w.writerow([("a great fun film<br />loved it " if good else "a dull bad film, boring ") * (1 + i % 3),
                        "pos" if good else "neg"])
    spec = {"model": [{"embedding": {"vocab": "$vocab_size", "dim": 8}}, {"seq_pool": "mean"},
                      {"linear": "$num_classes"}]}
    return fit(spec, data=f"imdb:{path}?max_len=12", epochs=1, quiet=True, store=store)


def _pngs(folder, pixels, mode="L"):
    folder.mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image if mode == "L" else np.stack([image] * 3, axis=-1)).save(folder / f"{i:02d}.png")
    return folder


def _read(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


# --------------------------------------------------------------------------- images and arrays


def test_png_folder_npy_and_rgb_pngs_predict_what_the_model_says(digits_run, store, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (9, 8, 8), dtype=np.uint8)
    out = tmp_path / "p.csv"
    got = predict(digits_run.run_id, _pngs(tmp_path / "gray", pixels), out, store=store)
    net, _ = load_run_model(digits_run.run_id, store=store)
    with torch.no_grad():  # the loaders' scaling: uint8 / 255
        probs = torch.softmax(net.eval()(torch.from_numpy(pixels).float().div(255)[:, None]).double(), 1)
    assert got.columns == ("input", "class", "probability")
    assert [r[1] for r in got.rows] == [str(i) for i in probs.argmax(1).tolist()]
    assert [r[2] for r in got.rows] == pytest.approx(probs.max(1).values.tolist(), abs=1e-6)
    assert _read(out)[0] == ["input", "class", "probability"] and _read(out)[1][0] == "00.png"
    np.save(tmp_path / "x.npy", pixels[:, None])  # uint8 (N, 1, 8, 8): pixels, as npy data sets store them
    from_npy = predict(digits_run.run_id, tmp_path / "x.npy", store=store)
    rgb = predict(digits_run.run_id, _pngs(tmp_path / "rgb", pixels, "RGB"), store=store)
    assert [r[1:] for r in from_npy.rows] == [r[1:] for r in got.rows] == [r[1:] for r in rgb.rows]


def test_a_png_of_the_wrong_size_is_one_line_and_writes_nothing(digits_run, store, tmp_path):
    folder = _pngs(tmp_path / "imgs", np.zeros((2, 8, 8), np.uint8))
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(folder / "big.png")
    with pytest.raises(DataError, match=r"big.png: expected an image of 8x8 pixels .* Received: 8x9; resize"):
        predict(digits_run.run_id, folder, tmp_path / "p.csv", store=store)
    np.save(tmp_path / "bad.npy", np.zeros((3, 64), np.float32))
    with pytest.raises(DataError, match=r"expected an array of shape \(N, 1, 8, 8\).*Received: \(3, 64\)"):
        predict(digits_run.run_id, tmp_path / "bad.npy", tmp_path / "p.csv", store=store)
    assert not (tmp_path / "p.csv").exists()


def test_missing_paths_and_unfinished_runs_are_one_line(digits_run, store, tmp_path):
    with pytest.raises(DataError, match="not found"):
        predict(digits_run.run_id, tmp_path / "nowhere", tmp_path / "p.csv", store=store)
    with pytest.raises(ArchlabError, match="not a run id and no such model folder"):
        predict(str(tmp_path / "no-folder"), tmp_path, store=store)
    rid = store.create_run(name="mlp", data="digits", spec=dict(digits_run.spec.to_dict()), settings={}, env={},
                           params=1)
    with pytest.raises(StoreError, match="is running, not finished"):
        predict(rid, tmp_path, tmp_path / "p.csv", store=store)
    assert not (tmp_path / "p.csv").exists()


def test_a_model_folder_predicts_as_its_run(digits_run, store, tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(1).random((5, 1, 8, 8), dtype=np.float32))
    folder = export_folder(digits_run.run_id, tmp_path / "shipped", store=store).path
    assert predict(folder, tmp_path / "x.npy").rows == predict(digits_run.run_id, tmp_path / "x.npy", store=store).rows


# --------------------------------------------------------------------------- tables


def test_csv_rows_become_the_training_rows_bit_for_bit(table_run, store, files):
    prep = run_preprocessing(store.get_run(table_run.run_id), store)
    x = read_inputs(files / "pets.csv", prep).x
    ds = load_dataset(f"csv:{files / 'pets.csv'}")
    trained = torch.cat([ds.train.x, ds.val.x, ds.test.x])
    assert x.shape == trained.shape and torch.equal(torch.unique(x, dim=0), torch.unique(trained, dim=0))
    rows = predict(table_run.run_id, files / "pets.csv", store=store).rows
    assert {r[1] for r in rows} <= {"cat", "dog"} and rows[0][0] == "pets.csv:2"


def test_an_old_run_without_preprocessing_json_reads_it_from_its_data(table_run, store):
    record = store.get_run(table_run.run_id)
    before = run_preprocessing(record, store)
    path = store.run_dir(record.run_id) / PREPROCESSING_FILE
    kept = path.read_text()
    path.unlink()
    try:
        recovered = run_preprocessing(record, store)
    finally:
        path.write_text(kept)
    assert recovered == before and before["kind"] == "table" and len(before["columns"]) == 3


def test_regression_gives_the_value_under_the_target_name(regress_run, store, files):
    got = predict(regress_run.run_id, files / "values.csv", store=store)
    assert got.columns == ("input", "y")
    net, _ = load_run_model(regress_run.run_id, store=store)
    x = read_inputs(files / "values.csv", run_preprocessing(store.get_run(regress_run.run_id), store)).x
    with torch.no_grad():
        assert [r[1] for r in got.rows] == net.eval()(x).reshape(-1).tolist()


def test_a_csv_missing_a_column_is_one_line_and_writes_nothing(table_run, store, tmp_path, monkeypatch, capsys):
    (tmp_path / "rows.csv").write_text("a,color\n0.5,red\n")
    with pytest.raises(DataError, match=r"column 'b' missing; the model was trained on the columns a, color, b"):
        predict(table_run.run_id, tmp_path / "rows.csv", tmp_path / "p.csv", store=store)
    (tmp_path / "rows.csv").write_text("b,a,color\nx,0.5,red\n")
    with pytest.raises(DataError, match=r"line 2, column 'b': expected a finite number.*Received: 'x'"):
        predict(table_run.run_id, tmp_path / "rows.csv", tmp_path / "p.csv", store=store)
    monkeypatch.setenv("ARCHLAB_HOME", str(store.root))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["archlab", "predict", table_run.run_id, "--input", "rows.csv"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: --input rows.csv line 2") and len(err.splitlines()) == 1
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "predictions.csv").exists()


# --------------------------------------------------------------------------- text


def test_a_language_model_continues_each_prompt(lm_run, store, tmp_path):
    (tmp_path / "prompts.csv").write_text("text\nthe quick\nlazy\n")
    got = predict(lm_run.run_id, tmp_path / "prompts.csv", max_tokens=5, store=store)
    assert got.columns == ("input", "text") and len(got.rows) == 2
    net, _ = load_run_model(lm_run.run_id, store=store)
    tok = tokenizer_from_dict(run_preprocessing(store.get_run(lm_run.run_id), store)["tokenizer"])
    assert got.rows[0][1] == tok.decode(list(generate(net, tok.encode("the quick"), 5, temperature=0.0)))


def test_reviews_are_encoded_as_the_imdb_loader_encodes_them(reviews_run, store, files, tmp_path):
    prep = run_preprocessing(store.get_run(reviews_run.run_id), store)
    assert prep["kind"] == "reviews" and prep["pad"] == "pre"
    x = read_inputs(files / "reviews.csv", prep).x
    ds = load_dataset(f"imdb:{files / 'reviews.csv'}?max_len=12")
    trained = torch.cat([ds.train.x, ds.val.x, ds.test.x])
    assert torch.equal(torch.unique(x, dim=0), torch.unique(trained, dim=0))
    (tmp_path / "new.csv").write_text("review\nloved it<br />great\n")
    rows = predict(reviews_run.run_id, tmp_path / "new.csv", store=store).rows
    assert rows[0][1] in ("neg", "pos") and 0.5 <= rows[0][2] <= 1.0


def test_the_cli_writes_predictions(digits_run, store, tmp_path, monkeypatch, capsys):
    _pngs(tmp_path / "imgs", np.zeros((3, 8, 8), np.uint8))
    monkeypatch.setenv("ARCHLAB_HOME", str(store.root))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["archlab", "predict", digits_run.run_id, "--input", "imgs", "--out", "o.csv"])
    cli.main()
    assert "wrote 3 predictions to o.csv" in capsys.readouterr().out and len(_read(tmp_path / "o.csv")) == 4


def test_a_seq2seq_run_decodes_each_source_to_text(store, tmp_path):
    spec = {"vars": {"dim": 16},
            "encoder": [{"embedding": {"vocab": "$vocab_size", "dim": "$dim"}}, "sinusoidal",
                        {"encoder_block": {"heads": 2}}, "layernorm"],
            "decoder": [{"embedding": {"vocab": "$vocab_size", "dim": "$dim"}}, "sinusoidal",
                        {"cross_decoder_block": {"heads": 2}}, "layernorm", {"linear": "$vocab_size"}],
            "train": {"task": "seq2seq"}}
    run = fit(spec, data="seq:reverse?n=200&min_len=2&max_len=4&symbols=5", epochs=1, quiet=True, store=store)
    (tmp_path / "src.csv").write_text("source\n0123\n41\n")
    got = predict(run.run_id, tmp_path / "src.csv", tmp_path / "p.csv", store=store)
    assert got.columns == ("input", "text") and len(got.rows) == 2
    assert all(set(text) <= set("01234") and len(text) <= 5 for _, text in got.rows)
    (tmp_path / "long.csv").write_text("source\n0123401234\n")
    with pytest.raises(DataError, match=r"the source is 10 tokens; the model reads at most 4"):
        predict(run.run_id, tmp_path / "long.csv", tmp_path / "q.csv", store=store)
    assert not (tmp_path / "q.csv").exists()


def test_a_single_logit_classifier_gives_the_sigmoid_class(tmp_path):
    from archlab.deploy import Shipped
    from archlab.model import build

    net = build({"input": {"shape": [3]}, "model": [{"linear": 1}]}, seed=0).eval()
    prep = {"task": "classify", "kind": "array", "input_shape": [3], "input_dtype": "float",
            "class_names": ["neg", "pos"]}
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rows = predict(Shipped(net, net.spec, prep, "binary"), tmp_path / "x.npy").rows
    with torch.no_grad():
        logit = net(torch.from_numpy(x))[:, 0].double()
    assert [r[1] for r in rows] == ["pos" if v > 0 else "neg" for v in logit.tolist()]
    assert [r[2] for r in rows] == pytest.approx(torch.sigmoid(logit.abs()).tolist(), abs=1e-6)


def test_a_text_run_keeps_its_tokenizer_once(lm_run, reviews_run, store):
    for run in (lm_run, reviews_run):
        folder = store.run_dir(run.run_id)
        assert '"tokenizer": null' in (folder / PREPROCESSING_FILE).read_text()
        assert run_preprocessing(store.get_run(run.run_id), store)["tokenizer"]["kind"] in ("char", "word")
