"""Tokenizers: text <-> token ids, and padding id sequences to a fixed length.

Every tokenizer has encode(str) -> list[int], decode(ids) -> str, vocab_size, pad_id / unk_id /
bos_id / eos_id (None when it has no such token) and to_dict(); `tokenizer_from_dict` rebuilds
one from `DataInfo.tokenizer`, so a stored run can decode what its model generates.
The data sets that use them are in `archlab.text`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ..core import DataError

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "SymbolTokenizer",
    "Tokenizer",
    "WordTokenizer",
    "pad_sequences",
    "tokenizer_from_dict",
    "words",
]


class Tokenizer:
    """Base class: text <-> ids. Subclasses set ``kind`` and the special ids they have."""

    kind: ClassVar[str] = ""
    pad_id: int | None = None
    unk_id: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Tokenizer:
        return tokenizer_from_dict(d)

    def _ids(self, ids: Iterable[int] | Tensor) -> list[int]:
        """Plain ints, each checked to be a valid id (a Tensor or array is accepted too)."""
        out = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        if out and isinstance(out[0], list):
            raise DataError(f"tokenizer {self.kind}: decode takes one sequence of ids, "
                            f"got a nested one; decode each row")
        bad = next((i for i in out if not 0 <= int(i) < self.vocab_size), None)
        if bad is not None:
            raise DataError(f"tokenizer {self.kind}: id {bad} is out of range "
                            f"0..{self.vocab_size - 1}")
        return [int(i) for i in out]

    def _header(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "pad_id": self.pad_id,
                "unk_id": self.unk_id, "bos_id": self.bos_id, "eos_id": self.eos_id}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    def __hash__(self) -> int:
        return hash((self.kind, self.vocab_size))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class CharTokenizer(Tokenizer):
    """One id per character: 0 = <unk> (decoded as U+FFFD), then ``chars`` from id 1.

    >>> tok = CharTokenizer.train("hello")
    >>> tok.chars, tok.encode("hole!"), tok.decode(tok.encode("hello"))
    ('ehlo', [2, 4, 3, 1, 0], 'hello')
    """

    kind = "char"
    unk_id = 0
    UNK_TEXT = "\ufffd"

    def __init__(self, chars: str | Iterable[str]):
        chars = chars if isinstance(chars, str) else "".join(chars)
        if len(set(chars)) != len(chars):
            raise DataError("tokenizer char: repeated characters in the vocabulary")
        self.chars = chars
        self.vocab_size = len(chars) + 1
        codes = np.frombuffer(chars.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        order = np.argsort(codes, kind="stable")
        self._codes = codes[order].astype(np.int64)  # sorted code points ...
        self._code_ids = order.astype(np.int64) + 1  # ... and their ids

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        """The vocabulary: the sorted set of characters in ``text`` (code-point order)."""
        return cls("".join(sorted(set(text))))

    def encode_array(self, text: str) -> np.ndarray:
        """``encode`` as an int64 array, vectorised (millions of characters per second)."""
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        codes = codes.astype(np.int64)
        if not len(self._codes):
            return np.zeros(len(codes), np.int64)
        pos = np.searchsorted(self._codes, codes).clip(max=len(self._codes) - 1)
        return np.where(self._codes[pos] == codes, self._code_ids[pos], self.unk_id)

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        table = self.UNK_TEXT + self.chars
        return "".join(table[i] for i in self._ids(ids))

    def to_dict(self) -> dict[str, Any]:
        return self._header() | {"chars": self.chars}


# Lower-cased words: runs of letters/digits, with apostrophes inside ("don't", "90's"); every
# other non-space character is a token of its own ("!", ",", "'", "-", "_").
WORD_PATTERN = r"[^\W_]+(?:'[^\W_]+)*|[^\w\s]|_"
_WORD_RE = re.compile(WORD_PATTERN)
_ASCII_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*|\S")  # the same on ASCII text, faster
_BR_RE = re.compile(r"<br\s*/?>", re.IGNORECASE)  # IMDB's line breaks: <br />, <br/>, <br>


def words(text: str) -> list[str]:
    """The word tokens of ``text``: lower-cased, ``<br />`` removed, punctuation split off.

    >>> words("A <br /><br />GREAT film, isn't it?!")
    ['a', 'great', 'film', ',', "isn't", 'it', '?', '!']
    """
    text = _BR_RE.sub(" ", text).lower()
    return (_ASCII_WORD_RE if text.isascii() else _WORD_RE).findall(text)


def _top_words(words_and_counts: Iterable[tuple[str, int]], size: int) -> list[str]:
    """The ``size`` most frequent words, ties broken alphabetically (deterministic)."""
    ranked = sorted(((w, c) for w, c in words_and_counts if c > 0), key=lambda wc: (-wc[1], wc[0]))
    return [w for w, _ in ranked[:size]]


class WordTokenizer(Tokenizer):
    """Word ids for `words`: 0 = <pad>, 1 = <unk>, then the vocabulary from id 2.

    ``train`` keeps the ``size`` most frequent words, ties broken alphabetically. ``decode``
    joins words with single spaces (so it is not the original text) and drops <pad>.

    >>> tok = WordTokenizer.train(["b a c", "a b!"], size=2)
    >>> tok.words, tok.encode("A b zzz"), tok.decode([3, 2, 1, 0])
    (('a', 'b'), [2, 3, 1], 'b a <unk>')
    """

    kind = "word"
    pad_id, unk_id = 0, 1
    SPECIALS = ("<pad>", "<unk>")

    def __init__(self, vocab: Sequence[str]):
        self.words = tuple(vocab)
        self.vocab_size = len(self.words) + 2
        self._index = {w: i + 2 for i, w in enumerate(self.words)}
        if len(self._index) != len(self.words):
            raise DataError("tokenizer word: repeated words in the vocabulary")

    @classmethod
    def train(cls, texts: Iterable[str], size: int) -> WordTokenizer:
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(words(text))
        return cls(_top_words(counts.items(), size))

    def encode(self, text: str) -> list[int]:
        get = self._index.get
        return [get(w, 1) for w in words(text)]

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        table = self.SPECIALS + self.words
        return " ".join(table[i] for i in self._ids(ids) if i != self.pad_id)

    def to_dict(self) -> dict[str, Any]:
        return self._header() | {"pattern": WORD_PATTERN, "words": list(self.words)}


@lru_cache(maxsize=1)
def _byte_of_char() -> dict[str, int]:
    """Byte-level BPE's alphabet (GPT-2's): each byte 0..255 is shown as one printable char."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _hf_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise DataError("tokenizer bpe needs the `tokenizers` package: pip install tokenizers "
                        "(or use tokenizer=char / tokenizer=word)") from None
    return tokenizers


class BPETokenizer(Tokenizer):
    """Byte-level BPE (GPT-2 style) trained with the `tokenizers` package.

    Any text encodes (no <unk>: the 256 bytes are in the base vocabulary) and decodes back
    exactly. Special tokens, when asked for (imdb uses ``("<pad>",)``), take ids 0, 1, ...
    ``decode`` works without `tokenizers` installed; ``train`` and ``encode`` need it.
    """

    kind = "bpe"

    def __init__(self, tokenizer_json: str):
        try:
            parsed = json.loads(tokenizer_json)
            vocab: dict[str, int] = dict(parsed["model"]["vocab"])
            added = {t["content"]: int(t["id"]) for t in parsed.get("added_tokens") or ()}
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"tokenizer bpe: not a `tokenizers` BPE JSON ({e})") from None
        vocab |= added
        self.json = tokenizer_json
        self.vocab_size = max(vocab.values()) + 1
        self.special_tokens = tuple(sorted(added, key=added.get))
        self.pad_id = added.get("<pad>")
        self._token_of = {i: t for t, i in vocab.items()}
        self._specials = set(added.values())
        self._backend: Any = None

    @classmethod
    def train(cls, texts: str | Iterable[str], vocab_size: int,
              special_tokens: Sequence[str] = ()) -> BPETokenizer:
        """A BPE vocabulary of ``vocab_size`` ids (specials and the 256 bytes included)."""
        tk = _hf_tokenizers()
        if vocab_size < 256 + len(special_tokens):
            raise DataError(f"tokenizer bpe: vocab must be >= {256 + len(special_tokens)} "
                            f"(256 bytes + {len(special_tokens)} special), got {vocab_size}")
        tok = tk.Tokenizer(tk.models.BPE())
        tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=list(special_tokens), show_progress=False,
            initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator([texts] if isinstance(texts, str) else texts, trainer=trainer)
        new = cls(tok.to_str())
        new._backend = tok
        return new

    def _tokenizer(self) -> Any:
        if self._backend is None:
            self._backend = _hf_tokenizers().Tokenizer.from_str(self.json)
        return self._backend

    def encode(self, text: str) -> list[int]:
        return self._tokenizer().encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tokenizer().encode_batch(list(texts))]

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        byte_of = _byte_of_char()
        tokens = (self._token_of[i] for i in self._ids(ids) if i not in self._specials)
        return bytes(byte_of[c] for t in tokens for c in t).decode("utf-8", errors="replace")

    def to_dict(self) -> dict[str, Any]:
        return self._header() | {"special_tokens": list(self.special_tokens), "json": self.json}


class SymbolTokenizer(Tokenizer):
    """A fixed table for the seq tasks: 0 = <pad>, 1 = <bos>, 2 = <eos>, symbols from id 3.

    ``encode`` maps each character to its symbol (no specials added). ``decode`` skips <pad>
    and <bos> and stops at the first <eos>; ``decode(ids, specials=True)`` shows them all.

    >>> tok = SymbolTokenizer("0123456789+")
    >>> tok.encode("12+3"), tok.decode([1, 4, 5, 13, 6, 2, 0]), tok.decode([1, 4, 2], specials=True)
    ([4, 5, 13, 6], '12+3', '<bos>1<eos>')
    """

    kind = "symbol"
    pad_id, bos_id, eos_id = 0, 1, 2
    SPECIALS = ("<pad>", "<bos>", "<eos>")

    def __init__(self, symbols: str | Sequence[str]):
        self.symbols = tuple(symbols)
        if len(set(self.symbols)) != len(self.symbols) or any(len(s) != 1 for s in self.symbols):
            raise DataError("tokenizer symbol: symbols must be distinct single characters")
        self.vocab_size = len(self.symbols) + 3
        self._index = {s: i + 3 for i, s in enumerate(self.symbols)}

    def encode(self, text: str) -> list[int]:
        try:
            return [self._index[c] for c in text]
        except KeyError as e:
            raise DataError(f"tokenizer symbol: {e.args[0]!r} is not a symbol; known: "
                            f"{''.join(self.symbols)}") from None

    def decode(self, ids: Iterable[int] | Tensor, *, specials: bool = False) -> str:
        table = self.SPECIALS + self.symbols
        ids = self._ids(ids)
        if specials:
            return "".join(table[i] for i in ids)
        out = []
        for i in ids:
            if i == self.eos_id:
                break
            if i >= 3:
                out.append(table[i])
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        return self._header() | {"symbols": list(self.symbols)}


_TOKENIZERS: dict[str, type[Tokenizer]] = {
    "char": CharTokenizer, "word": WordTokenizer, "bpe": BPETokenizer, "symbol": SymbolTokenizer}


def tokenizer_from_dict(d: Mapping[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from its ``to_dict()`` (e.g. a stored run's ``DataInfo.tokenizer``).

    >>> tok = SymbolTokenizer("abc")
    >>> tokenizer_from_dict(tok.to_dict()) == tok
    True
    """
    kind = d.get("kind") if isinstance(d, Mapping) else None
    try:
        if kind == "char":
            return CharTokenizer(d["chars"])
        if kind == "word":
            return WordTokenizer(d["words"])
        if kind == "bpe":
            return BPETokenizer(d["json"])
        if kind == "symbol":
            return SymbolTokenizer(d["symbols"])
    except KeyError as e:
        raise DataError(f"tokenizer {kind}: the description lacks the key {e.args[0]!r}") from None
    raise DataError(f"tokenizer: unknown kind {kind!r}; known: {', '.join(_TOKENIZERS)}")


def pad_sequences(seqs: Iterable[Sequence[int]], length: int, pad_id: int = 0, side: str = "post") -> Tensor:
    """(N, length) int64: each sequence truncated to its first ``length`` ids, padded at the
    end (``side="post"``) or at the front (``"pre"``, so the last position holds real text —
    what a recurrent layer that returns its last state needs).

    >>> pad_sequences([[5, 6, 7], [8]], 2).tolist()
    [[5, 6], [8, 0]]
    >>> pad_sequences([[5, 6, 7], [8]], 2, side="pre").tolist()
    [[5, 6], [0, 8]]
    """
    seqs = list(seqs)
    out = np.full((len(seqs), length), pad_id, dtype=np.int64)
    for row, seq in zip(out, seqs, strict=True):
        seq = seq[:length]
        if len(seq):
            if side == "pre":
                row[length - len(seq):] = seq
            else:
                row[: len(seq)] = seq
    return torch.from_numpy(out)
