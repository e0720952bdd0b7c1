"""Text and sequence data sets: loaders read small files these tests write in the real formats."""

from __future__ import annotations

import csv
import importlib.util
import sys
import time
from pathlib import Path
from types import MappingProxyType

import pytest
import torch

from archlab.core import DataError
from archlab.data import (
    BPETokenizer,
    CharTokenizer,
    DataInfo,
    Dataset,
    Split,
    SymbolTokenizer,
    WordTokenizer,
    load_dataset,
    pad_sequences,
    tokenizer_from_dict,
    words,
)
from archlab.data._dataset import _check
from archlab.data._text import _stdlib_corpus
from archlab.data._tokenizers import _WORD_RE

HAS_TOKENIZERS = importlib.util.find_spec("tokenizers") is not None
needs_tokenizers = pytest.mark.skipif(not HAS_TOKENIZERS, reason="`tokenizers` is not installed")


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg, msg
    return msg


# --------------------------------------------------------------------------- fixtures

POS = ["A GREAT movie!<br /><br />I loved it, truly.", "Wonderful acting; great story.",
       "Best film of the year... don't miss it!", "Great, great, GREAT fun.",
       "I loved the music<br/>and the cast.", "Superb: a must-see!"]
NEG = ["Awful. Just awful!<br /><br />Don't watch it.", "Boring plot, bad acting.",
       "The worst film I've seen; truly bad.", "Bad bad bad. Zero stars?",
       "Dull<BR>and far too long.", "A waste of time, sadly."]


def write_aclimdb(root: Path, unique: bool = False) -> Path:
    """aclImdb/{train,test}/{pos,neg}/ID_RATING.txt, plus a train/unsup that must be ignored."""
    folder = root / "aclImdb"
    k = 0
    for part in ("train", "test"):
        for cls, texts in (("pos", POS), ("neg", NEG)):
            sub = folder / part / cls
            sub.mkdir(parents=True)
            for i, text in enumerate(texts if part == "train" else texts[:3]):
                k += 1
                extra = f" uniq{k}" if unique else ""
                (sub / f"{i}_{8 if cls == 'pos' else 2}.txt").write_text(text + extra, "utf-8")
    (folder / "train" / "unsup").mkdir()
    (folder / "train" / "unsup" / "0_0.txt").write_text("unlabelled zebra zebra zebra", "utf-8")
    return folder


def write_csv(path: Path, rows: list[tuple[str, str]], header=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# --------------------------------------------------------------------------- tokenizers


def test_words_rules():
    assert words("A <br /><br />GREAT film, isn't it?!") == [
        "a", "great", "film", ",", "isn't", "it", "?", "!"]
    assert words("end.<BR>Next<br/>one") == ["end", ".", "next", "one"]
    assert words("'quoted' rock'n'roll 90's well-made...") == [
        "'", "quoted", "'", "rock'n'roll", "90's", "well", "-", "made", ".", ".", "."]
    assert words("Café naïve_x") == ["café", "naïve", "_", "x"]
    assert words("  \n\t ") == []
    # the fast path for ASCII text splits exactly as the general pattern does
    ascii_text = "".join(map(chr, range(128))) * 2 + "it's a_b 'x' y'' ''z 1'2'3"
    lowered = ascii_text.lower()
    assert words(ascii_text) == _WORD_RE.findall(lowered) and len(words(ascii_text)) > 60


def test_word_tokenizer_topk_ties_unk_and_round_trip():
    # counts: b 3, a 2, c 2, d 1 -> top 3 = b, then a and c (tie, alphabetical)
    tok = WordTokenizer.train(["b a c", "B, c d", "b a"], size=3)
    assert tok.words == ("b", "a", "c") and tok.vocab_size == 5
    assert (tok.pad_id, tok.unk_id) == (0, 1)
    assert tok.encode("A b D c!") == [3, 2, 1, 4, 1]
    assert tok.decode([2, 3, 1, 0, 0]) == "b a <unk>"
    assert tokenizer_from_dict(tok.to_dict()) == tok
    assert WordTokenizer.train(["x y z"], size=10).words == ("x", "y", "z")


def test_char_tokenizer_round_trip_and_unk():
    tok = CharTokenizer.train("hello world\n")
    assert tok.chars == "\n dehlorw" and tok.vocab_size == 10 and tok.unk_id == 0
    assert tok.decode(tok.encode("hold the world\n")) == "hold \ufffdhe world\n"
    assert tok.encode("hé") == [5, 0]
    s = "low rower\nhello"
    assert tok.decode(tok.encode(s)) == s
    assert tok.decode(torch.tensor(tok.encode(s))) == s  # tensors are accepted
    assert tokenizer_from_dict(tok.to_dict()) == tok
    assert CharTokenizer.train("").encode("abc") == [0, 0, 0]
    with pytest.raises(DataError) as e:
        tok.decode([10])
    assert "out of range 0..9" in one_line(e)


def test_symbol_tokenizer():
    tok = SymbolTokenizer("0123456789+")
    assert tok.vocab_size == 14 and (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert tok.encode("12+3") == [4, 5, 13, 6]
    assert tok.decode([1, 4, 5, 2, 9, 0]) == "12"  # stops at <eos>
    assert tok.decode([1, 4, 2, 0], specials=True) == "<bos>1<eos><pad>"
    assert tokenizer_from_dict(tok.to_dict()) == tok
    with pytest.raises(DataError) as e:
        tok.encode("1x")
    assert "'x' is not a symbol" in one_line(e)


def test_tokenizer_from_dict_errors():
    with pytest.raises(DataError) as e:
        tokenizer_from_dict({"kind": "morse"})
    assert "unknown kind 'morse'" in one_line(e)
    with pytest.raises(DataError) as e:
        tokenizer_from_dict({"kind": "char"})
    assert "'chars'" in one_line(e)


def test_pad_sequences_truncates_start_and_pads_end():
    assert pad_sequences([[5, 6, 7], [8], []], 2).tolist() == [[5, 6], [8, 0], [0, 0]]
    assert pad_sequences([[5]], 3, pad_id=9).dtype == torch.int64


@needs_tokenizers
def test_bpe_tokenizer_round_trip_and_determinism():
    text = "def f(x):\n    return x + 1  # héllo ✓\n" * 50
    a = BPETokenizer.train(text, 300)
    b = BPETokenizer.train(text, 300)
    assert a.to_dict() == b.to_dict() and 256 < a.vocab_size <= 300
    odd = "unseen ✗ text\twith ünïcode and 🙂\r\n"
    assert a.decode(a.encode(odd)) == odd and a.decode(a.encode(text)) == text
    assert len(a.encode(text)) < len(text.encode()) / 2  # it learnt merges
    c = tokenizer_from_dict(a.to_dict())
    assert isinstance(c, BPETokenizer) and c.encode(odd) == a.encode(odd)
    assert c.decode(a.encode(text)) == a._tokenizer().decode(a.encode(text))
    with pytest.raises(DataError) as e:
        BPETokenizer.train(text, 100)
    assert "vocab must be >= 256" in one_line(e)


def test_bpe_without_package_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import now raises ImportError
    (tmp_path / "a.txt").write_text("some text " * 100)
    with pytest.raises(DataError) as e:
        load_dataset(f"text:{tmp_path / 'a.txt'}?tokenizer=bpe")
    assert "pip install tokenizers" in one_line(e)


# --------------------------------------------------------------------------- imdb


def test_imdb_folder(tmp_path):
    folder = write_aclimdb(tmp_path)
    ds = load_dataset(f"imdb:{folder}?vocab=20&max_len=12&pad=post")
    info = ds.info
    assert (info.task, info.num_classes, info.class_names) == ("classify", 2, ("neg", "pos"))
    assert info.input_shape == (12,) and info.input_dtype == "long"
    assert info.vocab_size == 22 and info.tokenizer["kind"] == "word"
    assert info.vars() == {"num_classes": 2, "vocab_size": 22}
    assert (len(ds.train), len(ds.val), len(ds.test)) == (11, 1, 6)
    assert ds.test.y.tolist() == [0, 0, 0, 1, 1, 1]  # neg then pos, files in name order
    assert sorted(torch.cat([ds.train.y, ds.val.y]).tolist()) == [0] * 6 + [1] * 6
    for split in (ds.train, ds.val, ds.test):
        assert split.x.dtype == torch.int64 and split.x.shape[1] == 12
        assert split.y.dtype == torch.int64 and split.x.max() < 22
    assert "zebra" not in info.tokenizer["words"]  # train/unsup is ignored
    tok = tokenizer_from_dict(info.tokenizer)
    # test/neg/0_2.txt: the first 12 tokens, <br /> gone, punctuation split, lower-cased
    first = tok.decode(ds.test.x[0])
    ref = words(NEG[0])[:12]
    assert first.split() == [w if w in tok.words else "<unk>" for w in ref]
    # a short review is padded with 0 at the end
    short = [tok.encode(t) for t in NEG[:3]]
    assert ds.test.x[2].tolist() == (short[2] + [0] * 12)[:12]
    assert (ds.test.x[2] == 0).sum() == 12 - len(short[2])
    test_texts = NEG[:3] + POS[:3]
    assert torch.equal(ds.test.x, pad_sequences([tok.encode(t) for t in test_texts], 12))
    # the parent folder of aclImdb works too, with the same result
    again = load_dataset(f"imdb:{tmp_path}?vocab=20&max_len=12&pad=post")
    assert torch.equal(again.test.x, ds.test.x) and again.info.tokenizer == info.tokenizer


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar"])
def test_imdb_archive_reads_like_the_extracted_folder(tmp_path, suffix):
    import tarfile

    folder = write_aclimdb(tmp_path / "x")
    (folder / "README").write_text("not a review")
    (folder / "train" / "pos" / "9_10.txt").write_bytes(b"Windows\r\nline ends")
    archive = tmp_path / f"aclImdb_v1{suffix}"
    with tarfile.open(archive, "w:gz" if suffix == ".tar.gz" else "w") as tar:
        tar.add(folder, arcname="aclImdb")
    uri = "?vocab=30&max_len=10"
    from_folder, from_archive = load_dataset(f"imdb:{folder}{uri}"), load_dataset(f"imdb:{archive}{uri}")
    assert from_archive.info.tokenizer == from_folder.info.tokenizer  # same words: unsup left out
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(from_archive, part).x, getattr(from_folder, part).x)
        assert torch.equal(getattr(from_archive, part).y, getattr(from_folder, part).y)


def test_a_damaged_imdb_archive_is_named(tmp_path):
    import tarfile

    folder = write_aclimdb(tmp_path / "x")
    archive = tmp_path / "aclImdb_v1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="aclImdb")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=r"imdb: cannot read .*aclImdb_v1.tar.gz.*truncated download"):
        load_dataset(f"imdb:{archive}")
    with tarfile.open(archive, "w:gz") as tar:  # an archive of something else
        tar.add(folder / "train", arcname="train")
    with pytest.raises(DataError, match=r"test/neg holds no .txt reviews"):
        load_dataset(f"imdb:{archive}")


def test_imdb_vocab_from_train_split_only(tmp_path):
    folder = write_aclimdb(tmp_path, unique=True)  # review k holds the word "uniqk"
    ds = load_dataset(f"imdb:{folder}?vocab=100000&max_len=64", val_fraction=0.25)
    uniq = [w for w in ds.info.tokenizer["words"] if w.startswith("uniq")]
    assert len(uniq) == len(ds.train) == 9
    unk = ds.info.tokenizer["unk_id"]
    assert all(unk in row.tolist() for row in ds.val.x)  # val's own words are unknown


def test_imdb_defaults_and_determinism(tmp_path):
    folder = write_aclimdb(tmp_path)
    a, b = load_dataset(f"imdb:{folder}", seed=0), load_dataset(f"imdb:{folder}", seed=5)
    assert a.info.input_shape == (200,) and a.info.vocab_size < 10002
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.x, b.val.x)
    assert DataInfo.from_dict(a.info.to_dict()) == a.info


@pytest.mark.parametrize("labels,names", [
    (("pos", "neg"), ("neg", "pos")), (("1", "0"), ("neg", "pos")),
    (("Positive", "negative"), ("neg", "pos")), (("good", "bad"), ("bad", "good"))])
def test_imdb_csv(tmp_path, labels, names):
    rows = [(t, labels[0]) for t in POS] * 2 + [(t, labels[1]) for t in NEG] * 2
    path = write_csv(tmp_path / "reviews.csv", rows)
    ds = load_dataset(f"imdb:{path}?max_len=8")
    assert ds.info.class_names == names and ds.info.num_classes == 2
    assert (len(ds.train), len(ds.val), len(ds.test)) == (17, 2, 5)  # 20% test, 10% val
    pos_id = names.index("good" if "good" in labels else "pos")
    y = torch.cat([ds.train.y, ds.val.y, ds.test.y])
    assert (y == pos_id).sum() == 12 and ds.info.input_shape == (8,)


def test_imdb_csv_review_sentiment_columns(tmp_path):
    rows = [(t, "positive") for t in POS] + [(t, "negative") for t in NEG]
    path = write_csv(tmp_path / "IMDB Dataset.csv", rows, header=("review", "sentiment"))
    ds = load_dataset(f"imdb:{path}?max_len=8")
    assert ds.info.class_names == ("neg", "pos") and len(ds.test) == 2


@needs_tokenizers
def test_imdb_bpe(tmp_path):
    folder = write_aclimdb(tmp_path)
    ds = load_dataset(f"imdb:{folder}?tokenizer=bpe&vocab=300&max_len=64&pad=post")
    tok = tokenizer_from_dict(ds.info.tokenizer)
    assert tok.pad_id == 0 and ds.info.vocab_size == tok.vocab_size <= 300
    assert tok.decode(ds.test.x[0]) == NEG[0].replace("<br /><br />", "  ")[: len(tok.decode(ds.test.x[0]))]
    assert ds.test.x[2, -1] == 0  # padded


def test_imdb_errors(tmp_path):
    def err(uri: str) -> str:
        with pytest.raises(DataError) as e:
            load_dataset(uri)
        return one_line(e)

    assert "not found" in (m := err(f"imdb:{tmp_path / 'nope'}")) and "nope" in m
    assert "train/pos, train/neg" in m
    folder = write_aclimdb(tmp_path / "a")
    for f in (folder / "test" / "neg").iterdir():
        f.unlink()
    m = err(f"imdb:{folder}")
    assert f"{folder / 'test' / 'neg'} holds no .txt reviews" in m
    (folder / "test" / "neg").rmdir()
    m = err(f"imdb:{folder}")
    assert f"missing folder {folder / 'test' / 'neg'}" in m and "aclImdb layout" in m
    (folder / "test" / "neg").mkdir()
    (folder / "test" / "neg" / "0_1.txt").write_bytes(b"bad \xff\xfe bytes")
    m = err(f"imdb:{folder}")
    assert f"cannot read {folder / 'test' / 'neg' / '0_1.txt'}: not UTF-8" in m
    bad_csv = write_csv(tmp_path / "r.csv", [("x", "pos")], header=("body", "stars"))
    m = err(f"imdb:{bad_csv}")
    assert str(bad_csv) in m and "needs columns text,label" in m and "body,stars" in m
    one = write_csv(tmp_path / "one.csv", [("x", "pos"), ("y", "pos")])
    assert "need 2 or more classes" in err(f"imdb:{one}")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert f"{empty} is empty" in err(f"imdb:{empty}")
    blank = write_csv(tmp_path / "blank.csv", [("x", "pos"), ("y", " ")])
    assert f"{blank} line 3: empty label" in err(f"imdb:{blank}")
    assert "unknown option(s) size" in err(f"imdb:{bad_csv}?size=3")
    assert "max_len must be >= 1" in err(f"imdb:{bad_csv}?max_len=0")
    assert "tokenizer must be one of word, bpe" in err(f"imdb:{bad_csv}?tokenizer=char")


# --------------------------------------------------------------------------- text:PATH

CORPUS = "".join(f"line {i:03d}: the quick brown fox jumps over the lazy dog\n" for i in range(60))


def test_text_file_windows_and_position_split(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS + "Z")  # "Z" only in the test part: <unk> there
    ds = load_dataset(f"text:{path}?context=16")
    info = ds.info
    assert (info.task, info.input_shape, info.input_dtype, info.num_classes) == (
        "language_model", (16,), "long", None)
    tok = tokenizer_from_dict(info.tokenizer)
    assert isinstance(tok, CharTokenizer) and info.vocab_size == tok.vocab_size
    assert "Z" not in tok.chars and info.vars() == {"vocab_size": tok.vocab_size}
    text = CORPUS + "Z"
    n, held = len(text), round(len(text) * 0.05)
    cut_val, cut_test = n - 2 * held, n - held
    for split, start, end in ((ds.train, 0, cut_val), (ds.val, cut_val, cut_test),
                              (ds.test, cut_test, n)):
        assert split.x.dtype == split.y.dtype == torch.int64
        assert split.x.shape == split.y.shape and split.x.shape[1] == 16
        assert len(split) == (end - start - 1) // 16  # non-overlapping windows, tail dropped
        assert torch.equal(split.x[:, 1:], split.y[:, :-1])  # y is x shifted by one
        assert torch.equal(split.x[1:, 0], split.y[:-1, -1])  # windows are contiguous
        # the windows are exactly this part's text, from its start
        joined = tok.decode(split.x.flatten())
        assert joined == text[start : start + len(joined)].replace("Z", "\ufffd")
    assert tok.encode("Z") == [0]
    assert torch.equal(load_dataset(f"text:{path}?context=16", seed=9).train.x, ds.train.x)


def test_text_stride_and_val_fraction(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(CORPUS)
    ds = load_dataset(f"text:{path}?context=8&stride=4", val_fraction=0.2)
    assert torch.equal(ds.train.x[1, :4], ds.train.x[0, 4:])  # windows overlap by half
    n_train = len(CORPUS) - 2 * round(len(CORPUS) * 0.1)
    assert len(ds.train) == (n_train - 8 - 1) // 4 + 1


def test_text_folder_recursive_sorted_glob_and_cap(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("second " * 40)
    (tmp_path / "a.txt").write_text("first " * 40)  # no trailing newline: one is added
    (tmp_path / "b" / "1.txt").write_text("middle " * 40 + "\n")
    (tmp_path / "notes.md").write_text("markdown " * 40)
    ds = load_dataset(f"text:{tmp_path}?context=10")
    tok = tokenizer_from_dict(ds.info.tokenizer)
    assert tok.decode(ds.train.x[0]) == "first firs"
    assert "3 file(s)" in ds.info.source and "k" not in tok.chars  # notes.md is not read
    text = "first " * 40 + "\n" + "middle " * 40 + "\n" + "second " * 40 + "\n"
    assert len(ds.train) == (len(text) - 2 * round(len(text) * 0.05) - 11) // 10 + 1
    md = load_dataset(f"text:{tmp_path}?context=10&glob=*.md")
    assert tokenizer_from_dict(md.info.tokenizer).decode(md.train.x[0]) == "markdown m"
    capped = load_dataset(f"text:{tmp_path}?context=10&max_chars=250")
    assert "250 chars" in capped.info.source and "2 file(s)" in capped.info.source


@needs_tokenizers
def test_text_bpe(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(CORPUS * 3)
    ds = load_dataset(f"text:{path}?tokenizer=bpe&vocab=300&context=12")
    tok = tokenizer_from_dict(ds.info.tokenizer)
    assert isinstance(tok, BPETokenizer) and ds.info.vocab_size == tok.vocab_size <= 300
    assert torch.equal(ds.train.x[:, 1:], ds.train.y[:, :-1])
    assert (CORPUS * 3).startswith(tok.decode(ds.train.x.flatten()))
    val_text = tok.decode(ds.val.x[0])
    assert val_text in (CORPUS * 3)[-round(len(CORPUS * 3) * 0.1):]
    again = load_dataset(f"text:{path}?tokenizer=bpe&vocab=300&context=12")
    assert torch.equal(again.train.x, ds.train.x) and again.info == ds.info


def test_text_errors(tmp_path):
    def err(uri: str) -> str:
        with pytest.raises(DataError) as e:
            load_dataset(uri)
        return one_line(e)

    assert "text:PATH" in err("text") and "text:stdlib" in err("text:?context=3")
    assert f"not found: {tmp_path / 'x.txt'}" in err(f"text:{tmp_path / 'x.txt'}")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert f"text: {empty} holds no text" == err(f"text:{empty}")
    (tmp_path / "d").mkdir()
    assert f"no files matching '*.txt' under {tmp_path / 'd'}" in err(f"text:{tmp_path / 'd'}")
    short = tmp_path / "short.txt"
    short.write_text("tiny text here")
    m = err(f"text:{short}?context=64")
    assert str(short) in m and "train part has" in m and "lower context" in m
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\x80\x81 not utf8")
    assert f"cannot read {binary}: not UTF-8" in err(f"text:{binary}")
    assert "vocab applies to tokenizer=bpe" in err(f"text:{short}?vocab=100")
    assert "context must be an integer" in err(f"text:{short}?context=big")
    assert "unknown option(s) ctx" in err(f"text:{short}?ctx=3")


def test_text_stdlib_is_real_fast_and_deterministic():
    start = time.perf_counter()
    ds = load_dataset("text:stdlib?context=64")
    assert time.perf_counter() - start < 5
    assert ds.info.name == "text:stdlib?context=64" and "standard library" in ds.info.source
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in ds.info.source
    assert len(ds.train) > 10_000 and len(ds.val) > 500 and len(ds.test) > 500
    tok = tokenizer_from_dict(ds.info.tokenizer)
    assert "def " in tok.decode(ds.train.x[:50].flatten())
    _stdlib_corpus.cache_clear()
    again = load_dataset("text:stdlib?context=64")
    assert torch.equal(again.train.x, ds.train.x) and torch.equal(again.test.y, ds.test.y)
    assert again.info == ds.info
    small = load_dataset("text:stdlib?max_chars=20000&context=32")
    assert "20000 chars" in small.info.source


# --------------------------------------------------------------------------- seq tasks


def decode_rows(tok, t: torch.Tensor) -> list[str]:
    return [tok.decode(row) for row in t]


@pytest.mark.parametrize("task", ["copy", "reverse", "sort", "add"])
def test_seq_targets_are_exact(task):
    ds = load_dataset(f"seq:{task}?n=600&min_len=3&max_len=7", seed=1)
    info = ds.info
    assert (info.task, info.input_dtype, info.num_classes) == ("seq2seq", "long", None)
    s = 9 if task == "add" else 8  # source max + eos (add: digits + '+' + eos)
    assert info.input_shape == (s,) and info.vocab_size == (14 if task == "add" else 13)
    tok = tokenizer_from_dict(info.tokenizer)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (480, 60, 60)
    for split in (ds.train, ds.val, ds.test):
        assert split.x.dtype == split.y.dtype == torch.int64
        assert split.x.shape[1] == s and split.y.shape[1] == 9  # <bos> + max_len + <eos>
        assert (split.y[:, 0] == 1).all()  # <bos>
        for x_row, y_row, src, tgt in zip(split.x.tolist(), split.y.tolist(),
                                          decode_rows(tok, split.x), decode_rows(tok, split.y),
                                          strict=True):
            # layout: tokens, <eos>, then only <pad>
            assert x_row[len(src)] == 2 and set(x_row[len(src) + 1:]) <= {0}
            assert y_row[len(tgt) + 1] == 2 and set(y_row[len(tgt) + 2:]) <= {0}
            assert 0 not in x_row[: len(src)] and 0 not in y_row[1 : len(tgt) + 1]
            if task == "add":
                a, b = src.split("+")
                assert 3 <= len(a) + len(b) <= 7 and a and b
                assert a == str(int(a)) and b == str(int(b))  # no leading zeros
                assert tgt == str(int(a) + int(b))
            else:
                assert 3 <= len(src) <= 7 and set(src) <= set("0123456789")
                expected = {"copy": src, "reverse": src[::-1], "sort": "".join(sorted(src))}
                assert tgt == expected[task]


def test_seq_determinism_and_disjoint_test():
    uri = "seq:reverse?n=2000&min_len=2&max_len=4&symbols=4"  # 336 distinct sources
    a, b, c = load_dataset(uri, seed=3), load_dataset(uri, seed=3), load_dataset(uri, seed=4)
    for sa, sb in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y)
    assert not torch.equal(a.train.x, c.train.x)
    assert torch.equal(a.test.x, c.test.x)  # the test split is the same for every seed
    test_sources = {tuple(r) for r in a.test.x.tolist()}
    for ds in (a, c):
        assert not test_sources & {tuple(r) for r in torch.cat([ds.train.x, ds.val.x]).tolist()}
    tok = tokenizer_from_dict(a.info.tokenizer)
    assert set("".join(decode_rows(tok, a.train.x))) == set("0123")


def test_seq_symbols_beyond_digits_and_defaults():
    ds = load_dataset("seq:sort?n=50&symbols=20")
    tok = tokenizer_from_dict(ds.info.tokenizer)
    assert tok.symbols == tuple("0123456789abcdefghij") and ds.info.vocab_size == 23
    assert ds.info.input_shape == (13,) and ds.train.y.shape[1] == 14
    src = decode_rows(tok, ds.train.x)
    assert decode_rows(tok, ds.train.y) == ["".join(sorted(s, key=tok.symbols.index)) for s in src]
    full = load_dataset("seq:copy")
    assert (len(full.train), len(full.val), len(full.test)) == (16000, 2000, 2000)


def test_seq_errors():
    def err(uri: str) -> str:
        with pytest.raises(DataError) as e:
            load_dataset(uri)
        return one_line(e)

    assert "unknown task 'mirror'" in err("seq:mirror")
    assert "unknown task ''" in err("seq")
    assert "unknown option(s) symbols" in err("seq:add?symbols=5")
    assert "max_len must be >= 8" in err("seq:copy?max_len=4")
    assert "min_len must be >= 2" in err("seq:add?min_len=1&max_len=3")
    assert "symbols must be <= 62" in err("seq:copy?symbols=63")
    assert "too few distinct sources" in err("seq:copy?n=500&min_len=1&max_len=1&symbols=2")
    assert "n must be >= 10" in err("seq:copy?n=9")
    with pytest.raises(DataError) as e:
        load_dataset("seq:copy?n=10", val_fraction=0.9)
    assert "leaves no training samples" in one_line(e)


# --------------------------------------------------------------------------- records and checks


def test_datainfo_tokenizer_round_trip():
    tok = SymbolTokenizer("ab")
    info = DataInfo("seq:x", (4,), "long", "seq2seq", None, vocab_size=5, tokenizer=tok.to_dict())
    assert DataInfo.from_dict(info.to_dict()) == info
    frozen = info.to_dict() | {"tokenizer": MappingProxyType(
        {**tok.to_dict(), "symbols": ("a", "b")})}  # as read back from the run store
    back = DataInfo.from_dict(frozen)
    assert back == info and type(back.tokenizer) is dict and back.to_dict() == info.to_dict()
    hash(info)  # still hashable: the tokenizer does not take part
    old = {k: v for k, v in info.to_dict().items() if k != "tokenizer"}  # a record from before
    assert DataInfo.from_dict(old).tokenizer is None


def _dataset(task: str, x: torch.Tensor, y: torch.Tensor, vocab: int | None = 10) -> Dataset:
    info = DataInfo("custom", tuple(x.shape[1:]), "long", task, None, vocab_size=vocab)
    return Dataset(info, Split(x, y), Split(x, y), Split(x[:0], y[:0]))


def test_check_validates_token_tasks():
    ok = torch.arange(24).reshape(4, 6) % 10  # every id 0..9 is there: ok - 1 and ok + 5 leave the range
    _check(_dataset("language_model", ok, ok))
    _check(_dataset("seq2seq", ok, ok[:, :3]))
    cases = [
        (_dataset("language_model", ok, ok[:, :5]), "must have the inputs' shape"),
        (_dataset("language_model", ok, ok.float()), "must be (N, L) int64"),
        (_dataset("seq2seq", ok, ok[:, 0]), "must be (N, L) int64"),
        (_dataset("seq2seq", ok, ok + 5), "target ids must be in 0..9"),
        (_dataset("language_model", ok - 1, ok), "input ids must be in 0..9"),
        (_dataset("language_model", ok, ok, vocab=None), "needs input_dtype 'long' and a vocab"),
    ]
    for ds, expected in cases:
        with pytest.raises(DataError) as e:
            _check(ds)
        assert expected in one_line(e), one_line(e)


def test_check_seq2seq_target_length_consistent():
    ok = torch.randint(0, 10, (4, 6))
    info = DataInfo("custom", (6,), "long", "seq2seq", None, vocab_size=10)
    ds = Dataset(info, Split(ok, ok), Split(ok, ok[:, :3]), Split(ok, ok))
    with pytest.raises(DataError) as e:
        _check(ds)
    assert "target length differs between splits" in one_line(e)


def test_text_loaders_are_registered():
    from archlab.data import DATASETS

    assert {"imdb", "text", "seq"} <= set(DATASETS)


def test_imdb_pads_in_front_by_default_so_the_last_position_is_text(tmp_path):
    folder = tmp_path / "aclImdb"
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            (folder / split / label).mkdir(parents=True)
            for i in range(4):
                (folder / split / label / f"{i}_7.txt").write_text(f"short {label} review number {i}")
    ds = load_dataset(f"imdb:{folder}?max_len=10")
    assert (ds.train.x[:, -1] != 0).all() and (ds.train.x[:, 0] == 0).all()
    post = load_dataset(f"imdb:{folder}?max_len=10&pad=post")
    assert (post.train.x[:, 0] != 0).all() and (post.train.x[:, -1] == 0).all()
