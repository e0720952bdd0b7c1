"""Data with several named inputs: npy:FOLDER with one PART_x_NAME.npy per input, csv tables with
text columns beside the numeric ones, and `archlab data` describing them (archlab.data)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from archlab import DataError
from archlab.data import DiskSplit, Split, load_dataset, serve, stream_batches, write_npy
from archlab.layers import Inputs as BatchInputs

N = 300


def _two_inputs(folder: Path, parts: tuple[str, ...] = ("train",), n: int = N) -> Path:
    """uint8 images and int32 token ids, with the row number in token 0 so a test can tell which
    row of the files a served sample came from."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for part in parts:
        tokens = rng.integers(0, 40, (n, 6)).astype(np.int32)
        tokens[:, 0] = np.arange(n)
        np.save(folder / f"{part}_x_image.npy", rng.integers(0, 256, (n, 1, 4, 4)).astype(np.uint8))
        np.save(folder / f"{part}_x_tokens.npy", tokens)
        np.save(folder / f"{part}_y.npy", np.arange(n) % 3)
    return folder


@pytest.fixture(scope="module")
def two_npy(tmp_path_factory) -> Path:
    return _two_inputs(tmp_path_factory.mktemp("two-inputs"))


# ------------------------------------------------------------------------ npy: loading


def test_named_arrays_become_named_inputs_decoded_by_their_own_kind(two_npy):
    ds = load_dataset(f"npy:{two_npy}")
    info = ds.info
    assert info.inputs == {"image": {"shape": [1, 4, 4], "dtype": "float"},
                           "tokens": {"shape": [6], "dtype": "long", "vocab": N}}
    # the first input is what input_shape / input_dtype describe; the one token input gives $vocab_size
    assert (info.input_shape, info.input_dtype, info.vocab_size) == ((1, 4, 4), "float", N)
    assert info.named_inputs() == {"image": ((1, 4, 4), "float"), "tokens": ((6,), "long")}
    assert info.task == "classify" and info.num_classes == 3
    image, tokens, y = (np.load(two_npy / f) for f in ("train_x_image.npy", "train_x_tokens.npy", "train_y.npy"))
    for split in (ds.train, ds.val, ds.test):
        assert isinstance(split, Split) and isinstance(split.x, BatchInputs)
        assert split.x.names == ("image", "tokens")
        assert split.x["image"].dtype == torch.float32 and split.x["tokens"].dtype == torch.int64
        rows = split.x["tokens"][:, 0].numpy()  # every input and the target come from the same rows
        assert torch.equal(split.x["image"], torch.from_numpy(image[rows] / np.float32(255)))
        assert torch.equal(split.x["tokens"], torch.from_numpy(tokens[rows].astype(np.int64)))
        assert torch.equal(split.y, torch.from_numpy(y[rows]))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (210, 30, 60)
    assert torch.bincount(ds.test.y).tolist() == [20, 20, 20]  # carved out stratified, as for one x
    served = sorted(np.concatenate([s.x["tokens"][:, 0].numpy() for s in (ds.train, ds.val, ds.test)]))
    assert served == list(range(N))  # each row in exactly one split


def test_streamed_named_inputs_are_bit_identical_to_in_memory(two_npy):
    memory = load_dataset(f"npy:{two_npy}", stream=False)
    disk = load_dataset(f"npy:{two_npy}", stream=True)
    assert isinstance(disk.train, DiskSplit) and len(disk.train) == len(memory.train)

    def same(a, b) -> bool:
        (xa, ya), (xb, yb) = a, b
        return (isinstance(xa, BatchInputs) and xa.names == xb.names
                and all(torch.equal(xa[n], xb[n]) for n in xa.names) and torch.equal(ya, yb))

    idx = torch.tensor([17, 3, 200, 3, 0])  # any order, repeats allowed
    assert same(disk.train.take(idx), memory.train.take(idx))
    assert same(disk.val.slice(5, 25), memory.val.slice(5, 25))
    assert torch.equal(disk.test.targets(), memory.test.y)
    assert same(disk.train.materialize().slice(0, len(memory.train)), memory.train.slice(0, len(memory.train)))
    assert disk.train.nbytes == sum(t.element_size() * t.numel() for t in (*memory.train.x.values(), memory.train.y))
    # DataLoader workers get the file paths, not the data, and serve the same batches
    blob = pickle.dumps(disk.train)
    assert len(blob) < 20_000 and same(pickle.loads(blob).take(idx), memory.train.take(idx))
    order = torch.randperm(len(memory.train), generator=torch.Generator().manual_seed(1))
    for workers in (0, 1):
        streamed = list(stream_batches(disk.train, order, 32, 1, workers=workers))
        assert [step for step, _, _ in streamed] == list(range(1, 7))
        for step, x, y in streamed:
            assert same((x, y), memory.train.take(order[step * 32:(step + 1) * 32]))


@pytest.mark.parametrize("world", [1, 2])
def test_the_training_loop_batches_named_inputs_alike_in_memory_and_streamed(two_npy, world):
    """The loop's own batching (archlab.train.batches): one process, and each of two ranks, whose
    DataLoader reads past the rank's part of the order into empty items."""
    from archlab.train import batches, epoch_order

    memory = load_dataset(f"npy:{two_npy}", stream=False).train
    disk = load_dataset(f"npy:{two_npy}", stream=True).train
    order, _ = epoch_order(len(memory), 0, 0)
    for rank in range(world):
        gen = torch.Generator().manual_seed(0)
        ours = list(batches(memory, order, 32, 0, None, gen, rank=rank, world=world))
        streamed = list(batches(disk, order, 32, 0, None, gen, rank=rank, world=world, workers=0))
        assert len(ours) == len(streamed) == 7
        for (step, x, y), (step_, x_, y_) in zip(ours, streamed, strict=True):
            assert step == step_ and isinstance(x_, BatchInputs) and torch.equal(y, y_)
            assert all(torch.equal(x[n], x_[n]) for n in x.names)


def test_in_memory_named_inputs_stream_when_asked(two_npy):
    memory = load_dataset(f"npy:{two_npy}", stream=False)
    disk = serve(memory, stream=True).train  # DiskSplit.from_split of an Inputs split
    assert isinstance(disk, DiskSplit)
    x, y = disk.slice(0, len(disk))
    assert all(torch.equal(x[n], memory.train.x[n]) for n in x.names) and torch.equal(y, memory.train.y)


def test_given_val_and_test_files_are_read_with_their_own_rows(tmp_path):
    folder = _two_inputs(tmp_path, ("train", "val", "test"), n=30)
    ds = load_dataset(f"npy:{folder}")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 30, 30)
    assert torch.equal(ds.val.x["image"], torch.from_numpy(np.load(folder / "val_x_image.npy") / np.float32(255)))


def test_info_json_sets_an_input_kind_and_vocabulary_by_name(two_npy, tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    for f in two_npy.glob("*.npy"):
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "info.json").write_text(json.dumps({"inputs": {"tokens": {"kind": "tokens", "vocab": 5000},
                                                             "image": {"kind": "float"}}}))
    ds = load_dataset(f"npy:{folder}")
    assert ds.info.inputs["tokens"]["vocab"] == 5000 and ds.info.vocab_size == 5000
    raw = np.load(folder / "train_x_image.npy")
    rows = ds.train.x["tokens"][:, 0].numpy()
    assert torch.equal(ds.train.x["image"], torch.from_numpy(raw[rows].astype(np.float32)))  # kind float: not / 255


def test_a_single_named_array_is_one_unnamed_x(tmp_path):
    np.save(tmp_path / "train_x_pixels.npy", np.zeros((20, 1, 4, 4), np.uint8))
    np.save(tmp_path / "train_y.npy", np.arange(20) % 2)
    (tmp_path / "info.json").write_text('{"inputs": {"pixels": {"kind": "float"}}}')  # still set by name
    ds = load_dataset(f"npy:{tmp_path}")
    assert ds.info.inputs is None and isinstance(ds.train.x, torch.Tensor)
    assert ds.info.input_shape == (1, 4, 4) and ds.train.x.dtype == torch.float32


def _write(folder: Path, files: dict) -> None:
    for name, content in files.items():
        if isinstance(content, str):
            (folder / name).write_text(content)
        else:
            np.save(folder / name, content)


_IMG, _TOK, _Y = np.zeros((10, 1, 2, 2), np.uint8), np.zeros((10, 3), np.int64), np.arange(10) % 2
_PAIR = {"train_x_image.npy": _IMG, "train_x_tokens.npy": _TOK, "train_y.npy": _Y}


@pytest.mark.parametrize(("files", "message"), [
    ({"train_x.npy": _TOK, **_PAIR},
     r"train_x.npy and .*train_x_image.npy both hold the train split's x: give one unnamed x \(train_x.npy\) or "
     r"one array per named input \(train_x_NAME.npy\), not both"),
    ({**_PAIR, "val_x_image.npy": _IMG, "val_y.npy": _Y},
     r"val_x_tokens.npy not found: train has train_x_image.npy, train_x_tokens.npy, so val needs the same inputs"),
    ({**_PAIR, "test_x_image.npy": _IMG, "test_x_tokens.npy": _TOK, "test_x_extra.npy": _TOK, "test_y.npy": _Y},
     r"test_x_extra.npy has no counterpart train_x_extra.npy"),
    ({**_PAIR, "test_x_image.npy": _IMG, "test_x_tokens.npy": _TOK},
     r"test_x_image.npy has no partner test_y.npy"),
    ({**_PAIR, "train_x_tokens.npy": _TOK[:7]},
     r"train_x_image.npy \(10, 1, 2, 2\), train_x_tokens.npy \(7, 3\) and train_y.npy \(10,\) must be .* with "
     r"the same N"),
    ({**_PAIR, "train_x_2d.npy": _TOK}, r"train_x_2d.npy: '2d' is not an input name"),
    ({**_PAIR, "val_x_image.npy": _IMG, "val_x_tokens.npy": np.zeros((10, 4), np.int64), "val_y.npy": _Y},
     r"samples differ in shape for input 'tokens'"),
    ({**_PAIR, "info.json": '{"inputs": {"tokns": {"vocab": 9}}}'},
     r"inputs.tokns: the folder has no train_x_tokns.npy. Did you mean 'tokens'\?"),
    ({**_PAIR, "info.json": '{"vocab_size": 9}'},
     r"vocab_size describes one unnamed x, but the folder has the named inputs image, tokens; set it per input: "
     r"\"inputs\": \{\"image\": \{\"vocab\": 9\}\}"),
    ({**_PAIR, "info.json": '{"inputs": {"image": {"vocab": 9}}}'},
     r"inputs.image.vocab applies to token ids, but train_x_image.npy is served as image"),
    ({**_PAIR, "info.json": '{"inputs": {"tokens": {"kind": "words"}}}'}, r"inputs.tokens.kind must be one of"),
    ({**_PAIR, "info.json": '{"inputs": {"tokens": {"size": 3}}}'}, r"inputs.tokens: unknown key\(s\) size"),
    ({**_PAIR, "info.json": '{"task": "language_model"}'},
     r"task language_model reads one x of token ids, but the folder has the named inputs image, tokens"),
    ({**_PAIR, "train_x_tokens.npy": np.where(np.arange(30).reshape(10, 3) == 22, 70, 1),
      "info.json": '{"inputs": {"tokens": {"vocab": 50}}}'},
     r"train_x_tokens.npy row 7: token id 70 is out of range for inputs.tokens.vocab 50 \(info.json\)"),
    ({**_PAIR, "train_x_tokens.npy": np.where(np.arange(30).reshape(10, 3) == 13, -2, 1)},
     r"train_x_tokens.npy row 4: token ids must be >= 0. Received: -2"),
    ({**_PAIR, "train_x_image.npy": np.where(np.arange(40).reshape(10, 1, 2, 2) == 9, np.nan, 0.5)},
     r"train_x_image.npy row 2 holds NaN or inf"),
])
def test_bad_named_folders_name_the_files_and_the_fix(tmp_path, files, message):
    _write(tmp_path, files)
    with pytest.raises(DataError, match=message) as e:
        load_dataset(f"npy:{tmp_path}")
    assert "\n" not in str(e.value)


def test_named_inputs_export_and_load_back_identically(two_npy, tmp_path):
    ds = load_dataset(f"npy:{two_npy}")
    out = write_npy(tmp_path / "out", ds)
    assert sorted(p.name for p in out.glob("train_*")) == ["train_x_image.npy", "train_x_tokens.npy", "train_y.npy"]
    back = load_dataset(f"npy:{out}")
    assert back.info.inputs == ds.info.inputs and back.info.class_names == ds.info.class_names
    for part in ("train", "val", "test"):
        mine, theirs = getattr(back, part), getattr(ds, part)
        assert all(torch.equal(mine.x[n], theirs.x[n]) for n in theirs.x.names) and torch.equal(mine.y, theirs.y)
    # --uint8: the float image input goes back to bytes, the token ids stay ids
    small = write_npy(tmp_path / "small", ds, images_as_uint8=True)
    assert np.load(small / "train_x_image.npy").dtype == np.uint8
    assert torch.equal(load_dataset(f"npy:{small}").train.x["image"], ds.train.x["image"])



# ------------------------------------------------------------------------ csv: text columns

_GOOD, _BAD = ["great", "works", "lovely", "fine"], ["broke", "awful", "poor", "late"]


def _shop_csv(path: Path, n: int = 60, title: bool = False) -> tuple[Path, list[str]]:
    """price (the row number, so a test can find a sample's row), colour, review[, title], label.
    Each review holds a word of its own, reviewZEBRA<row>, to see which rows a vocabulary saw."""
    reviews, lines = [], ["price,colour,review," + ("title," if title else "") + "label"]
    for r in range(n):
        words = _GOOD if r % 2 else _BAD
        reviews.append(f"{words[r % 4]} {words[(r + 1) % 4]}, really! zebra{r}")
        cells = [str(r), ("red", "blue", "green")[r % 3], f'"{reviews[-1]}"']
        lines.append(",".join(cells + ([f"title {r % 5}"] if title else []) + ["pos" if r % 2 else "neg"]))
    path.write_text("\n".join(lines) + "\n")
    return path, reviews


def _rows_of(ds, split) -> np.ndarray:
    """The csv rows of a split's samples, from its standardised price column (the row number)."""
    price = next(c for c in ds.info.preprocessing["columns"] if c["name"] == "price")
    return np.rint(split.x["features"][:, 0].double().numpy() * price["std"] + price["mean"]).astype(int)


def test_a_text_column_beside_numbers_makes_features_and_token_inputs(tmp_path):
    from archlab.data import tokenizer_from_dict
    from archlab.data._text import encode_reviews

    path, reviews = _shop_csv(tmp_path / "shop.csv")
    ds = load_dataset(f"csv:{path}?text=review&max_len=6")
    info = ds.info
    vocab = info.inputs["review"]["vocab"]
    assert info.inputs == {"features": {"shape": [4], "dtype": "float"},
                           "review": {"shape": [6], "dtype": "long", "vocab": vocab}}
    assert (info.input_shape, info.input_dtype, info.vocab_size) == ((4,), "float", vocab)
    assert info.feature_names == ("price", "colour=blue", "colour=green", "colour=red")  # the features input
    assert info.tokenizer["kind"] == "word" and info.tokenizer["vocab_size"] == vocab
    prep = info.preprocessing
    assert prep["kind"] == "table" and [c["name"] for c in prep["columns"]] == ["price", "colour"]
    assert prep["text"] == [{"name": "review", "tokenizer": info.tokenizer, "max_len": 6, "pad": "pre"}]
    assert f"text: column 'review' -> 6 word ids, pad=pre (a vocabulary of {vocab} learnt on the train split)" in info.notes
    tok = tokenizer_from_dict(info.tokenizer)
    seen = set()
    for part, split in (("train", ds.train), ("val", ds.val), ("test", ds.test)):
        assert isinstance(split.x, BatchInputs) and split.x.names == ("features", "review")
        rows = _rows_of(ds, split)
        # the same rows in every input and the target: the review ids are the row's own review
        assert torch.equal(split.x["review"], encode_reviews(tok, [reviews[r] for r in rows], 6, "pre"))
        assert split.y.tolist() == [r % 2 for r in rows]  # classes neg=0, pos=1
        if part == "train":
            seen = set(rows)
    # the vocabulary was learnt on the train split only: val and test rows' own words are <unk>
    assert {w for w in tok.to_dict()["words"] if w.startswith("zebra")} == {f"zebra{r}" for r in seen}
    assert {len(ds.train), len(ds.val), len(ds.test)} == {42, 6, 12}


def test_text_options_set_the_vocabulary_length_padding_and_tokenizer(tmp_path):
    path, _ = _shop_csv(tmp_path / "shop.csv")
    ds = load_dataset(f"csv:{path}?text=review&vocab=5&max_len=12&pad=post")
    assert ds.info.inputs["review"] == {"shape": [12], "dtype": "long", "vocab": 7}  # 5 words, <pad>, <unk>
    ids = ds.train.x["review"]
    assert (ids[:, -1] == 0).all() and (ids[:, 0] != 0).all()  # short reviews padded behind
    assert int(ids.max()) < 7 and (ids == 1).any()  # words beyond the 5 most frequent are <unk>
    bpe = load_dataset(f"csv:{path}?text=review&tokenizer=bpe&vocab=300&max_len=8")
    assert bpe.info.tokenizer["kind"] == "bpe" and bpe.info.inputs["review"]["vocab"] == bpe.info.vocab_size


def test_a_table_of_one_text_column_is_one_unnamed_token_input(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("review,label\n" + "".join(f'"{"good fun" if r % 2 else "dull, slow"} {r}",{r % 2}\n'
                                              for r in range(40)))
    ds = load_dataset(f"csv:{path}?text=review&max_len=5")
    info = ds.info
    assert info.inputs is None and isinstance(ds.train.x, torch.Tensor) and ds.train.x.dtype == torch.int64
    assert (info.input_shape, info.input_dtype, info.vocab_size) == ((5,), "long", info.tokenizer["vocab_size"])
    assert info.feature_names is None
    assert info.preprocessing == {"kind": "reviews", "max_len": 5, "pad": "pre", "column": "review", "target": "label"}


def test_two_text_columns_have_a_vocabulary_each(tmp_path):
    path, _ = _shop_csv(tmp_path / "shop.csv", title=True)
    ds = load_dataset(f"csv:{path}?text=title,review&max_len=4")
    info = ds.info
    assert list(info.inputs) == ["features", "title", "review"]  # features, then the text columns as given
    assert info.inputs["title"]["vocab"] == 2 + 6  # "title" and the digits 0..4, <pad>, <unk>
    assert info.inputs["review"]["vocab"] > info.inputs["title"]["vocab"]
    assert info.vocab_size is None and info.tokenizer is None  # no one vocabulary to name
    assert [t["name"] for t in info.preprocessing["text"]] == ["title", "review"]


def test_empty_text_cells_are_refused_unless_filled(tmp_path):
    path, _ = _shop_csv(tmp_path / "shop.csv")
    lines = path.read_text().splitlines()
    lines[5] = "4,blue,,neg"  # line 6 of the file
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 6, column 'review': expected a value, the cell is empty.*"
                                        r"\(categorical: no category; text: no words\)") as e:
        load_dataset(f"csv:{path}?text=review&max_len=6")
    assert f"--data 'csv:{path}?text=review&max_len=6&fill=mean'" in str(e.value)
    ds = load_dataset(f"csv:{path}?text=review&max_len=6&fill=mean")
    for split in (ds.train, ds.val, ds.test):
        rows = _rows_of(ds, split)
        assert (split.x["review"][rows == 4] == 0).all()  # no words: all <pad>
    assert any(n.startswith("filled: 1 empty cell") and "text ones no words" in n for n in ds.info.notes)


@pytest.mark.parametrize(("query", "message"), [
    ("text=reveiw", r"text column 'reveiw' not found in .*shop.csv. Did you mean 'review'\? "
                    r"Columns: price, colour, review, label."),
    ("text=label", r"column 'label' is the target and cannot also be a text input"),
    ("text=review&categorical=review", r"column 'review' is declared both categorical .* and text"),
    ("vocab=500&max_len=8", r"options vocab, max_len set how text columns are encoded, but no text column is "
                            r"named; add text=COLUMN, e.g. csv:.*shop.csv\?text=review&vocab=500"),
    ("text=review&max_len=0", r"option max_len must be >= 1"),
    ("text=review&pad=middle", r"option pad must be one of pre, post"),
])
def test_bad_text_options_are_one_line_with_the_fix(tmp_path, query, message):
    path, _ = _shop_csv(tmp_path / "shop.csv")
    with pytest.raises(DataError, match=message) as e:
        load_dataset(f"csv:{path}?{query}")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("header", "message"), [
    ("price,colour,my review,label", r"text column 'my review' becomes an input of that name, which a spec reads as "
                                     r"from: NAME, so it must be letters, digits and _"),
    ("price,colour,features,label", r"text column 'features' would share its input's name with the numeric and "
                                    r"categorical columns' input 'features'"),
])
def test_a_text_column_must_name_an_input(tmp_path, header, message):
    path, _ = _shop_csv(tmp_path / "shop.csv")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([header, *lines[1:]]) + "\n")
    text = header.split(",")[2]
    with pytest.raises(DataError, match=message):
        load_dataset(f"csv:{path}?text={text}")


def test_a_table_with_text_exports_to_npy_and_streams_identically(tmp_path):
    path, _ = _shop_csv(tmp_path / "shop.csv")
    ds = load_dataset(f"csv:{path}?text=review&max_len=6")
    back = load_dataset(f"npy:{write_npy(tmp_path / 'npy', ds)}", stream=True)
    assert back.info.inputs == ds.info.inputs and back.info.class_names == ds.info.class_names
    for part in ("train", "val", "test"):
        mine, theirs = getattr(back, part), getattr(ds, part)
        x, y = mine.slice(0, len(mine))
        assert all(torch.equal(x[n], theirs.x[n]) for n in theirs.x.names) and torch.equal(y, theirs.y)


def test_new_rows_with_text_are_encoded_as_at_training(tmp_path):
    from archlab.data import input_preprocessing, read_inputs

    path, _ = _shop_csv(tmp_path / "shop.csv")
    ds = load_dataset(f"csv:{path}?text=review&max_len=6")
    new = read_inputs(path, input_preprocessing(ds.info))  # the same rows, given to `predict`
    assert isinstance(new.x, BatchInputs) and new.x.names == ("features", "review")
    rows = torch.from_numpy(_rows_of(ds, ds.test))
    assert torch.equal(new.x["features"][rows], ds.test.x["features"])
    assert torch.equal(new.x["review"][rows], ds.test.x["review"])
    no_text = tmp_path / "no_text.csv"
    no_text.write_text("price,colour\n1,red\n")
    with pytest.raises(DataError, match=r"column 'review' missing; the model was trained on the columns price, "
                                        r"colour, review"):
        read_inputs(no_text, input_preprocessing(ds.info))


# ------------------------------------------------------------------------ archlab data


def test_data_command_lists_each_named_input(tmp_path, two_npy):
    from typer.testing import CliRunner

    from archlab.cli import app

    path, _ = _shop_csv(tmp_path / "shop.csv")
    result = CliRunner().invoke(app, ["data", f"csv:{path}?text=review&max_len=6"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    vocab = load_dataset(f"csv:{path}?text=review&max_len=6").info.vocab_size
    assert lines[1:3] == ["inputs   features  (4,) float", f"         review    (6,) long, vocabulary {vocab}"]
    assert not any(line.startswith("input ") for line in lines)
    assert any(line.startswith("features 2 columns -> the 4 values of input 'features'") for line in lines)
    assert any(line.startswith("text     column 'review' -> 6 word ids") for line in lines)
    result = CliRunner().invoke(app, ["data", f"npy:{two_npy}", "--export", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "inputs   image   (1, 4, 4) float" in result.output and "tokens  (6,) long, vocabulary 300" in result.output
    assert "size     35.2 KiB decoded; held in memory" in result.output  # 300 x (16 x 4 + 6 x 8 + 8) bytes
    assert (tmp_path / "out" / "train_x_tokens.npy").exists()
