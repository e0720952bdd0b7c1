"""Text and sequence data sets, and the tokenizers that turn their text into ids.

Loaders (registered in `archlab.data.DATASETS`; options go in the uri's query string):

    imdb[:PATH][?vocab=10000&max_len=200&tokenizer=word&pad=pre]
        Sentiment classification. PATH is the aclImdb folder (train/pos, train/neg, test/pos,
        test/neg, one review per .txt file; train/unsup is ignored), a folder holding aclImdb/,
        the aclImdb_v1.tar.gz archive itself (read in place, not extracted), or a .csv with
        columns text,label (or review,sentiment).
    text:PATH[?context=128&tokenizer=char&vocab=512&max_chars=5000000&glob=*.txt&stride=T]
        Language modelling on a text file, or on the files of a folder matching `glob`.
    text:stdlib[?...]
        The same on the .py sources of this Python's standard library (offline, reproducible
        on any machine with the same Python version): every file under
        sysconfig.get_paths()["stdlib"] matching glob (default *.py), leaving out folders named
        site-packages, dist-packages, test, tests, idle_test, __pycache__ or config-*, and the
        machine-specific _sysconfigdata*.py; sorted by relative POSIX path; files that are not
        UTF-8 skipped; CRLF/CR -> LF; a newline added to a file lacking one; concatenated and
        cut to the first max_chars (default 2,000,000) characters.
    seq:TASK[?n=20000&min_len=8&max_len=12&symbols=10]
        Synthetic seq2seq: TASK is copy, reverse, sort or add.

Token conventions (what a trainer may rely on):

    classify (imdb)   x (N, max_len) int64: the first max_len tokens of a review, with <pad>=0
                      filling up to max_len in FRONT (pad=pre, the default) or at the end
                      (pad=post); y (N,) int64: 0 = neg, 1 = pos.
                      tokenizer=word: `words` (lower-cased, <br /> removed, punctuation split
                      off), <pad>=0, <unk>=1, the `vocab` most frequent train words from 2.
                      tokenizer=bpe: byte-level BPE of the review (<br /> -> " "), <pad>=0.
    language_model    x, y (N, T) int64 with y[:, t] == x[:, t + 1] inside a window: the
                      windows are tokens[i : i+T] and tokens[i+1 : i+T+1], i = 0, stride, ...
                      No padding; every id is a real token. The text is split by position,
                      train | val | test = 90 | 5 | 5 % by default (see `_load_text`).
                      char: <unk>=0 (chars absent from the train text), chars from 1.
    seq2seq           x (N, S) int64: source tokens, <eos>, then <pad> up to S.
                      y (N, U) int64: <bos>, target tokens, <eos>, then <pad> up to U.
                      <pad>=0, <bos>=1, <eos>=2. Teacher forcing: decoder input y[:, :-1],
                      labels y[:, 1:], loss with ignore_index=0.

Every tokenizer has encode(str) -> list[int], decode(ids) -> str, vocab_size, pad_id / unk_id /
bos_id / eos_id (None when it has no such token) and to_dict(); `tokenizer_from_dict` rebuilds
one from `DataInfo.tokenizer`, so a stored run can decode what its model generates.
The tokenizers are defined in `_tokenizers` (public through `archlab.data`).
Nothing is ever downloaded.
"""

from __future__ import annotations

import csv
import os
import sys
import sysconfig
import tarfile
import zlib
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch import Tensor

from ..core import DataError
from ._dataset import (
    SPLIT_SEED,
    TEST_FRACTION,
    DataInfo,
    Dataset,
    Split,
    _data_folder,
    _options,
    _resolve,
    _split_indices,
    register_dataset,
)
from ._tokenizers import (
    _BR_RE,
    BPETokenizer,
    CharTokenizer,
    SymbolTokenizer,
    Tokenizer,
    WordTokenizer,
    _top_words,
    pad_sequences,
    words,
)

# No public names: the loaders are reached through archlab.data, where they register
# themselves; the tokenizers are `_tokenizers`' own (`encode_reviews` serves `_inputs`;
# `text_settings` and `encode_texts` serve `_tables`' text columns).
__all__: list[str] = []


# --------------------------------------------------------------------------- shared helpers


def _int_option(name: str, opts: Mapping[str, str | None], key: str, low: int) -> int:
    value = opts[key]
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{name}: option {key} must be an integer, got {value!r}") from None
    if number < low:
        raise DataError(f"{name}: option {key} must be >= {low}, got {number}")
    return number


def _choice_option(name: str, opts: Mapping[str, str | None], key: str,
                   choices: Sequence[str]) -> str:
    value = str(opts[key])
    if value not in choices:
        raise DataError(f"{name}: option {key} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _read_text(name: str, path: Path, limit: int = -1) -> str:
    """A UTF-8 text file (universal newlines), at most ``limit`` characters."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(limit)
    except UnicodeDecodeError as e:
        raise DataError(f"{name}: cannot read {path}: not UTF-8 text ({e.reason} at byte "
                        f"{e.start})") from None
    except OSError as e:
        raise DataError(f"{name}: cannot read {path}: {e.strerror or e}") from None


def _long(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


# --------------------------------------------------------------------------- IMDB

_IMDB_LAYOUT = "train/pos, train/neg, test/pos, test/neg with one review per .txt file"
_POS_NEG = {"neg": 0, "pos": 1, "negative": 0, "positive": 1, "0": 0, "1": 1}


def _imdb_folder(folder: Path) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """Texts and labels (0 = neg, 1 = pos) of the train and test parts, files in name order."""
    if not (folder / "train").is_dir() and (folder / "aclImdb" / "train").is_dir():
        folder = folder / "aclImdb"
    reviews: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for part in ("train", "test"):
        for cls in ("neg", "pos"):
            sub = folder / part / cls
            if not sub.is_dir():
                raise DataError(f"imdb: missing folder {sub}; expected the aclImdb layout "
                                f"{folder}/{_IMDB_LAYOUT} (nothing is downloaded)")
            files = sorted(p for p in sub.glob("*.txt") if p.is_file())
            reviews[part, cls] = [(p.name, _read_text("imdb", p)) for p in files]
    return _imdb_parts(reviews, str(folder))


def _imdb_archive(path: Path) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """The same from the aclImdb_v1.tar.gz archive itself, read member by member (nothing is
    extracted to disk, so member paths cannot escape anywhere)."""
    reviews: dict[tuple[str, str], list[tuple[str, str]]] = {("train", "neg"): [], ("train", "pos"): [],
                                                            ("test", "neg"): [], ("test", "pos"): []}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if not (member.isfile() and len(parts) >= 3 and (parts[-3], parts[-2]) in reviews
                        and parts[-1].endswith(".txt")):
                    continue  # train/unsup, README, imdb.vocab, the *.feat files
                raw = tar.extractfile(member).read()
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"imdb: cannot read {path}:{member.name}: not UTF-8 text ({e.reason} at byte "
                                    f"{e.start})") from None
                # As open() reads the extracted file: universal newlines.
                text = text.replace("\r\n", "\n").replace("\r", "\n")
                reviews[parts[-3], parts[-2]].append((parts[-1], text))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        # tarfile's "could not be opened" lists every compression it tried, one per line: say it once.
        reason = "not a tar archive" if "opened successfully" in str(e) else (str(e) or type(e).__name__)
        raise DataError(f"imdb: cannot read {path}: {reason} (a truncated download?); expected "
                        f"aclImdb_v1.tar.gz as distributed") from None
    return _imdb_parts({k: sorted(v) for k, v in reviews.items()}, f"{path}:aclImdb")


def _imdb_parts(reviews: dict[tuple[str, str], list[tuple[str, str]]], where: str
                ) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """(name, text) lists per (part, class), in name order -> texts and labels of train and test."""
    out = []
    for part in ("train", "test"):
        texts, labels = [], []
        for label, cls in enumerate(("neg", "pos")):
            found = reviews[part, cls]
            if not found:
                raise DataError(f"imdb: {where}/{part}/{cls} holds no .txt reviews; expected the aclImdb "
                                f"layout {_IMDB_LAYOUT}")
            texts += [text for _, text in found]
            labels += [label] * len(found)
        out += [texts, np.array(labels, dtype=np.int64)]
    return out[0], out[1], out[2], out[3]


def _imdb_csv(path: Path) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """Texts, labels and class names from a CSV with text,label (or review,sentiment) columns."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DataError(f"imdb: {path} is empty; expected a header row text,label")
            names = [h.strip().lower() for h in header]
            col = {}
            for key, options in (("text", ("text", "review")), ("label", ("label", "sentiment"))):
                col[key] = next((names.index(o) for o in options if o in names), None)
            if None in col.values():
                raise DataError(f"imdb: {path} needs columns text,label (or review,sentiment); "
                                f"found {','.join(header)}")
            texts, raw = [], []
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataError(f"imdb: {path} line {reader.line_num}: {len(row)} fields, "
                                    f"the header has {len(header)}")
                label = row[col["label"]].strip()
                if not label:
                    raise DataError(f"imdb: {path} line {reader.line_num}: empty label")
                texts.append(row[col["text"]])
                raw.append(label)
    except UnicodeDecodeError as e:
        raise DataError(f"imdb: cannot read {path}: not UTF-8 text ({e.reason} at byte "
                        f"{e.start})") from None
    except csv.Error as e:
        raise DataError(f"imdb: cannot parse {path}: {e}") from None
    except OSError as e:
        raise DataError(f"imdb: cannot read {path}: {e.strerror or e}") from None
    if not texts:
        raise DataError(f"imdb: {path} has a header but no rows")
    distinct = sorted(set(raw))
    if len(distinct) < 2:
        raise DataError(f"imdb: {path}: every label is {distinct[0]!r}; need 2 or more classes")
    lowered = {v.lower() for v in distinct}
    if len(lowered) == 2 and lowered <= set(_POS_NEG) and len({_POS_NEG[v] for v in lowered}) == 2:
        return texts, np.array([_POS_NEG[v.lower()] for v in raw], np.int64), ("neg", "pos")
    index = {v: i for i, v in enumerate(distinct)}
    return texts, np.array([index[v] for v in raw], np.int64), tuple(distinct)


def _word_encode(parts: Sequence[list[str]], size: int,
                 max_len: int, side: str = "post") -> tuple[WordTokenizer, list[Tensor]]:
    """WordTokenizer.train(parts[0], size) and each part encoded and padded to max_len; the
    same result, but every text is split into words once (the slow step on the full IMDB)."""
    index: dict[str, int] = {}  # every word seen -> a provisional id
    add = index.setdefault
    provisional = []
    for p, texts in enumerate(parts):
        rows = []
        for text in texts:
            toks = words(text)
            if p:  # only the train part is counted, so the rest need only their first tokens
                toks = toks[:max_len]
            rows.append(np.fromiter((add(w, len(index)) for w in toks), np.int64, len(toks)))
        provisional.append(rows)
    seen = list(index)
    counts = np.bincount(np.concatenate([np.zeros(0, np.int64), *provisional[0]]),
                         minlength=len(seen))
    tok = WordTokenizer(_top_words(zip(seen, counts.tolist(), strict=True), size))
    final = np.full(len(seen), tok.unk_id, np.int64)
    final[[index[w] for w in tok.words]] = np.arange(2, tok.vocab_size)
    return tok, [pad_sequences([final[r[:max_len]] for r in rows], max_len, side=side) for rows in provisional]


def encode_reviews(tok: Tokenizer, texts: Sequence[str], max_len: int, side: str) -> Tensor:
    """(N, max_len) int64 ids of reviews as the imdb loader encodes them: the first max_len
    tokens, <pad>=0 in front (side="pre") or behind; a word tokenizer drops <br /> itself
    (`words`), byte-level BPE reads it as a space."""
    if isinstance(tok, BPETokenizer):
        return pad_sequences(tok.encode_batch([_BR_RE.sub(" ", t) for t in texts]), max_len, side=side)
    return pad_sequences([tok.encode(t)[:max_len] for t in texts], max_len, side=side)


# A text input's options, the same for imdb and for a csv table's text columns.
TEXT_OPTIONS = {"vocab": "10000", "max_len": "200", "tokenizer": "word", "pad": "pre"}


def text_settings(name: str, opts: Mapping[str, str | None]) -> tuple[str, int, int, str]:
    """(tokenizer, vocab, max_len, pad) from a uri's text options, unset ones at `TEXT_OPTIONS`."""
    opts = {k: v if opts.get(k) is None else opts[k] for k, v in TEXT_OPTIONS.items()}
    max_len = _int_option(name, opts, "max_len", 1)
    # Padding goes in front by default (as in Keras): a recurrent layer's last state then
    # comes right after the text's last word, not after a run of <pad>.
    side = _choice_option(name, opts, "pad", ("pre", "post"))
    kind = _choice_option(name, opts, "tokenizer", ("word", "bpe"))
    vocab = _int_option(name, opts, "vocab", 257 if kind == "bpe" else 1)
    return kind, vocab, max_len, side


def encode_texts(parts: Sequence[Sequence[str]], kind: str, vocab: int, max_len: int, side: str
                 ) -> tuple[Tokenizer, list[Tensor]]:
    """A tokenizer learnt on parts[0] only (the train split's texts, so nothing leaks from val or
    test) and every part encoded as (N, max_len) int64 ids, as `encode_reviews` encodes them."""
    if kind == "word":
        return _word_encode(parts, vocab, max_len, side)
    tok = BPETokenizer.train([_BR_RE.sub(" ", t) for t in parts[0]], vocab, special_tokens=("<pad>",))
    return tok, [encode_reviews(tok, texts, max_len, side) for texts in parts]


@register_dataset("imdb")
def _load_imdb(arg, *, seed, root, target, val_fraction) -> Dataset:
    """``imdb[:PATH][?vocab=10000&max_len=200&tokenizer=word]``; see the module docstring.

    The vocabulary is learnt from the train split only (not from val or test). Val is a
    stratified ``val_fraction`` of the official train reviews (fixed seed); a CSV is split
    20% test / ``val_fraction`` val / rest train, stratified, with a fixed seed.
    """
    where, _, query = (arg or "").partition("?")
    kind, vocab, max_len, side = text_settings("imdb", _options("imdb", query, TEXT_OPTIONS))
    if where:
        location = _resolve(where, root)
        if not location.exists():
            raise DataError(f"imdb: not found: {location}; expected the aclImdb folder "
                            f"({_IMDB_LAYOUT}), aclImdb_v1.tar.gz or a .csv with columns text,label "
                            f"(nothing is downloaded)")
    else:
        location = _data_folder("imdb", None, root, "the aclImdb folder")

    archive = location.is_file() and location.name.lower().endswith((".tar.gz", ".tgz", ".tar"))
    if location.is_file() and not archive:
        texts, y, class_names = _imdb_csv(location)
        tr, va, te = _split_indices(len(y), TEST_FRACTION, val_fraction, SPLIT_SEED, labels=y)
        parts = [([texts[i] for i in idx], y[idx]) for idx in (tr, va, te)]
    else:
        x_tr, y_tr, x_te, y_te = _imdb_archive(location) if archive else _imdb_folder(location)
        tr, va, _ = _split_indices(len(y_tr), 0.0, val_fraction, SPLIT_SEED, labels=y_tr)
        parts = [([x_tr[i] for i in tr], y_tr[tr]), ([x_tr[i] for i in va], y_tr[va]),
                 (x_te, y_te)]
        class_names = ("neg", "pos")

    tok, x_parts = encode_texts([t for t, _ in parts], kind, vocab, max_len, side)
    train, val, test = (Split(x, _long(y)) for x, (_, y) in zip(x_parts, parts, strict=True))
    info = DataInfo(f"imdb:{arg}" if arg else "imdb", (max_len,), "long", "classify",
                    len(class_names), class_names, vocab_size=tok.vocab_size,
                    source=str(location), tokenizer=tok.to_dict(),
                    preprocessing={"kind": "reviews", "max_len": max_len, "pad": side})
    return Dataset(info, train, val, test)


# --------------------------------------------------------------------------- text corpora

STDLIB_MAX_CHARS = 2_000_000
TEXT_MAX_CHARS = 5_000_000
# Left out of text:stdlib: tests, installed packages, caches and the machine-specific files.
_STDLIB_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test",
                     "__pycache__"}


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files(pattern: str) -> list[tuple[str, Path]]:
    """(relative posix path, path) of the stdlib's source files, sorted by relative path."""
    root = _stdlib_root()
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _STDLIB_SKIP_DIRS and not d.startswith("config-")]
        rel = Path(folder).relative_to(root)
        for f in files:
            if Path(f).match(pattern) and not f.startswith("_sysconfigdata"):
                found.append(((rel / f).as_posix(), Path(folder) / f))
    return sorted(found)


@lru_cache(maxsize=4)
def _stdlib_corpus(pattern: str, max_chars: int) -> tuple[str, int]:
    """The stdlib text (files joined in sorted order, non-UTF-8 ones skipped) and file count."""
    pieces, total, count = [], 0, 0
    for _, path in _stdlib_files(pattern):
        if total >= max_chars:
            break
        try:
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        text = text.replace("\r\n", "\n").replace("\r", "\n")  # as universal newlines would
        pieces.append(_with_newline(text))
        total += len(pieces[-1])
        count += 1
    return "".join(pieces)[:max_chars], count


def _with_newline(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def _read_corpus(path: Path, pattern: str, max_chars: int) -> tuple[str, int]:
    """A file, or the files under a folder matching ``pattern`` in sorted relative-path order,
    joined (a newline added after a file that lacks one), at most ``max_chars`` characters."""
    if path.is_file():
        return _read_text("text", path, max_chars), 1
    files = sorted((p for p in path.rglob(pattern) if p.is_file()),
                   key=lambda p: p.relative_to(path).as_posix())
    if not files:
        raise DataError(f"text: no files matching {pattern!r} under {path}; pass "
                        f"?glob=PATTERN (e.g. glob=*.md) or a file")
    pieces, total, count = [], 0, 0
    for p in files:
        if total >= max_chars:
            break
        pieces.append(_with_newline(_read_text("text", p, max_chars - total)))
        total += len(pieces[-1])
        count += 1
    return "".join(pieces)[:max_chars], count


def _windows(ids: np.ndarray, context: int, stride: int) -> tuple[Tensor, Tensor]:
    """x = ids[i : i+T], y = ids[i+1 : i+T+1] for i = 0, stride, 2*stride, ... (N, T) each."""
    n = (len(ids) - context - 1) // stride + 1 if len(ids) > context else 0
    if n == 0:
        empty = torch.zeros((0, context), dtype=torch.int64)
        return empty, empty.clone()
    view = np.lib.stride_tricks.sliding_window_view(ids, context + 1)[: (n - 1) * stride + 1 : stride]
    return torch.from_numpy(view[:, :-1].copy()), torch.from_numpy(view[:, 1:].copy())


@register_dataset("text")
def _load_text(arg, *, seed, root, target, val_fraction) -> Dataset:
    """``text:PATH`` or ``text:stdlib`` with ``?context=&tokenizer=&vocab=&max_chars=&glob=&stride=``.

    The text is split by position: the first ``1 - val_fraction`` is train, then half of
    ``val_fraction`` val, then the last half test (90/5/5 by default), so no window crosses
    or leaks between splits. The tokenizer is learnt on the train part; each part is encoded
    separately and cut into windows of ``context`` tokens every ``stride`` tokens (default
    ``stride = context``: non-overlapping windows; the tail shorter than a window is dropped).
    ``seed`` is not used: the data is the same for every run.
    """
    if not arg or arg.startswith("?"):
        raise DataError("text: needs a source: text:PATH (a text file or a folder of text "
                        "files) or text:stdlib (Python's standard library sources)")
    where, _, query = arg.partition("?")
    stdlib = where == "stdlib"
    opts = _options("text", query, {
        "context": "128", "tokenizer": "char", "vocab": None, "stride": None,
        "max_chars": str(STDLIB_MAX_CHARS if stdlib else TEXT_MAX_CHARS),
        "glob": "*.py" if stdlib else "*.txt"})
    context = _int_option("text", opts, "context", 1)
    stride = context if opts["stride"] is None else _int_option("text", opts, "stride", 1)
    max_chars = _int_option("text", opts, "max_chars", 1)
    kind = _choice_option("text", opts, "tokenizer", ("char", "bpe"))
    if kind == "char" and opts["vocab"] is not None:
        raise DataError("text: option vocab applies to tokenizer=bpe (char takes every "
                        "character of the train text)")
    if kind == "bpe" and opts["vocab"] is None:
        opts["vocab"] = "512"
    pattern = str(opts["glob"])

    if stdlib:
        text, count = _stdlib_corpus(pattern, max_chars)
        version = ".".join(map(str, sys.version_info[:3]))
        source = (f"Python {version} standard library at {_stdlib_root()}: {count} {pattern} "
                  f"files, {len(text)} chars")
        label = "the standard library"
    else:
        path = _resolve(where, root)
        if not path.exists():
            raise DataError(f"text: not found: {path}; pass text:PATH with a text file or a "
                            f"folder of text files, or text:stdlib (nothing is downloaded)")
        text, count = _read_corpus(path, pattern, max_chars)
        source = f"{path}: {count} file(s), {len(text)} chars"
        label = str(path)
    if not text:
        raise DataError(f"text: {label} holds no text")

    held = round(len(text) * val_fraction / 2)
    cut_val, cut_test = len(text) - 2 * held, len(text) - held
    parts = text[:cut_val], text[cut_val:cut_test], text[cut_test:]
    if kind == "char":
        tok: Tokenizer = CharTokenizer.train(parts[0])
        ids = [tok.encode_array(p) for p in parts]
    else:
        tok = BPETokenizer.train(parts[0], _int_option("text", opts, "vocab", 256))
        ids = [np.array(tok.encode(p), dtype=np.int64) for p in parts]

    for name, part, p_ids in zip(("train", "val", "test"), parts, ids, strict=True):
        if part and len(p_ids) <= context:
            raise DataError(f"text: {label}: the {name} part has {len(p_ids)} tokens, not "
                            f"more than context={context}; lower context or give more text "
                            f"(max_chars={max_chars})")
        if len(p_ids) // stride * context > 200_000_000:
            raise DataError(f"text: {label}: stride={stride} makes too many windows of "
                            f"{context} tokens to hold in memory; raise stride")
    train, val, test = (Split(*_windows(p, context, stride)) for p in ids)
    info = DataInfo(f"text:{arg}", (context,), "long", "language_model", None,
                    vocab_size=tok.vocab_size, source=source, tokenizer=tok.to_dict())
    return Dataset(info, train, val, test)


# --------------------------------------------------------------------------- synthetic seq2seq

SEQ_TASKS = ("copy", "reverse", "sort", "add")
SEQ_TEST_FRACTION = 0.1
_SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_PAD, _BOS, _EOS, _FIRST = 0, 1, 2, 3


def _draw_symbols(task: str, rng: np.random.Generator, m: int, lo: int, hi: int,
                  symbols: int) -> tuple[np.ndarray, np.ndarray]:
    """copy / reverse / sort: m sources of length lo..hi (uniform), symbols iid uniform."""
    lengths = rng.integers(lo, hi + 1, size=m)
    pos = np.arange(hi)
    inside = pos < lengths[:, None]  # (m, hi)
    src = np.where(inside, rng.integers(0, symbols, size=(m, hi)) + _FIRST, _PAD)
    if task == "copy":
        tgt = src
    elif task == "reverse":
        back = np.where(inside, lengths[:, None] - 1 - pos, 0)
        tgt = np.where(inside, np.take_along_axis(src, back, axis=1), _PAD)
    else:  # sort: ascending ids (= the symbols' order: 0 < 1 < ... < 9 < a < ...)
        tgt = np.where(inside, np.sort(np.where(inside, src, np.iinfo(np.int64).max), axis=1),
                       _PAD)
    rows = np.arange(m)
    x = np.zeros((m, hi + 1), np.int64)
    x[:, :hi] = src
    x[rows, lengths] = _EOS
    y = np.zeros((m, hi + 2), np.int64)
    y[:, 0] = _BOS
    y[:, 1 : hi + 1] = tgt
    y[rows, lengths + 1] = _EOS
    return x, y


def _draw_add(rng: np.random.Generator, m: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """add: "a+b" with lo..hi digits in a and b together; target = the digits of a + b."""
    total = rng.integers(lo, hi + 1, size=m)  # digits of a and b together
    len_a = rng.integers(1, total)  # 1 .. total-1
    digits = rng.integers(0, 10, size=(m, 2, hi))
    leads = rng.integers(1, 10, size=(m, 2))  # a number of 2+ digits has no leading zero
    tok = SymbolTokenizer("0123456789+")
    x = np.zeros((m, hi + 2), np.int64)
    y = np.zeros((m, hi + 2), np.int64)
    for i in range(m):
        numbers = []
        for j, n_digits in enumerate((int(len_a[i]), int(total[i] - len_a[i]))):
            d = digits[i, j, :n_digits].copy()
            if n_digits > 1:
                d[0] = leads[i, j]
            numbers.append(int("".join(map(str, d))))
        a, b = numbers
        src = tok.encode(f"{a}+{b}") + [_EOS]
        tgt = [_BOS, *tok.encode(str(a + b)), _EOS]
        x[i, : len(src)] = src
        y[i, : len(tgt)] = tgt
    return x, y


@register_dataset("seq")
def _load_seq(arg, *, seed, root, target, val_fraction) -> Dataset:
    """``seq:TASK?n=20000&min_len=8&max_len=12&symbols=10``, TASK in copy, reverse, sort, add.

    copy / reverse / sort: a source is min_len..max_len symbols (length and each symbol
    uniform); the target is the source, reversed, or sorted by id. add: a source is "a+b"
    where a and b have min_len..max_len digits together (total uniform, then a's share
    uniform in 1..total-1; each number uniform among those of its length, no leading zero
    except the number 0); the target is the decimal digits of a + b.

    Of the n samples, 10% are test, ``val_fraction`` val, the rest train. The test samples are
    drawn from a fixed stream (the same for every seed); train and val are drawn from
    ``seed``, leaving out any source that occurs in the test split.
    """
    task, _, query = (arg or "").partition("?")
    if task not in SEQ_TASKS:
        raise DataError(f"seq: unknown task {task!r}; known: {', '.join(SEQ_TASKS)} "
                        f"(e.g. seq:copy?n=20000&min_len=8&max_len=12&symbols=10)")
    name = f"seq:{task}"
    defaults = {"n": "20000", "min_len": "8", "max_len": "12"}
    if task != "add":
        defaults["symbols"] = "10"
    opts = _options(name, query, defaults)
    n = _int_option(name, opts, "n", 10)
    lo = _int_option(name, opts, "min_len", 2 if task == "add" else 1)
    hi = _int_option(name, opts, "max_len", lo)
    symbols = 10 if task == "add" else _int_option(name, opts, "symbols", 1)
    if symbols > len(_SYMBOLS):
        raise DataError(f"{name}: option symbols must be <= {len(_SYMBOLS)}, got {symbols}")
    n_test, n_val = round(n * SEQ_TEST_FRACTION), round(n * val_fraction)
    n_train = n - n_test - n_val
    if n_train < 1:
        raise DataError(f"{name}: n={n} leaves no training samples after {n_test} test and "
                        f"{n_val} validation")

    def draw(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
        if task == "add":
            return _draw_add(rng, m, lo, hi)
        return _draw_symbols(task, rng, m, lo, hi, symbols)

    task_id = SEQ_TASKS.index(task)
    x_te, y_te = draw(np.random.default_rng([SPLIT_SEED, 7919, task_id]), n_test)
    seen = {row.tobytes() for row in x_te}
    rng = np.random.default_rng([seed, task_id])
    xs, ys, have = [], [], 0
    for _ in range(20):
        x, y = draw(rng, max(n_train + n_val - have, 256))
        keep = np.array([row.tobytes() not in seen for row in x], dtype=bool)
        xs.append(x[keep])
        ys.append(y[keep])
        have += int(keep.sum())
        if have >= n_train + n_val:
            break
    else:
        raise DataError(f"{name}: cannot draw {n_train + n_val} train/val sources that differ "
                        f"from the {n_test} test sources; too few distinct sources, raise "
                        f"max_len or symbols or lower n")
    x_all = np.concatenate(xs)[: n_train + n_val]
    y_all = np.concatenate(ys)[: n_train + n_val]

    tok = SymbolTokenizer("0123456789+" if task == "add" else _SYMBOLS[:symbols])
    train = Split(_long(x_all[:n_train]), _long(y_all[:n_train]))
    val = Split(_long(x_all[n_train:]), _long(y_all[n_train:]))
    test = Split(_long(x_te), _long(y_te))
    info = DataInfo(f"seq:{arg}", (x_te.shape[1],), "long", "seq2seq", None,
                    vocab_size=tok.vocab_size, source="synthetic (generated)",
                    tokenizer=tok.to_dict())
    return Dataset(info, train, val, test)
