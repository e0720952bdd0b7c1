"""New inputs for a trained model: read PNG images, .npy arrays or CSV rows and turn them into
what the model was trained on, with the preprocessing its data set fitted (`archlab predict`).

`input_preprocessing(info)` is a JSON-able description of that preprocessing, made from a
data set's `DataInfo` (a run keeps it in `preprocessing.json`; a model folder too):

    kind        image    pixels scaled to [0, 1] (PNG: 8-bit, converted to the run's channels)
                table    csv: each column standardised or one-hot encoded as at training; text
                         columns ("text": name, tokenizer, max_len, pad) encoded as at training,
                         making several named inputs (features and one per text column)
                reviews  imdb: the run's tokenizer, the first max_len tokens, padded
                text     language models: prompts encoded with the run's tokenizer
                seq2seq  sources encoded with the run's tokenizer, <eos>, padded
                array    any other float input: taken as it is
                tokens   any other token input: ids taken as they are
    input_shape, input_dtype, task, class_names, tokenizer, and the kind's own keys.

`read_inputs(path, preprocessing)` reads a folder of .png files, an .npy array or a .csv file;
every reading and encoding step is the loader's own (`_images`, `_ondisk`, `_tables`,
`_text`), so a training row and the same row given to `predict` become the same tensor. Any
input that does not fit is a one-line DataError naming the file (and line or column).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core import DataError
from ..layers import Inputs
from ._dataset import DataInfo
from ._images import _images
from ._ondisk import _decode_x, _kind_of
from ._tables import _MISSING, FEATURES, _encode_column, _read_csv
from ._text import encode_reviews
from ._tokenizers import pad_sequences, tokenizer_from_dict

__all__ = ["INPUT_KINDS", "NewSamples", "input_preprocessing", "read_inputs"]

INPUT_KINDS = ("image", "table", "reviews", "text", "seq2seq", "array", "tokens")
_TEXT_COLUMNS = ("text", "review", "prompt", "source")


def input_preprocessing(info: DataInfo) -> dict[str, Any]:
    """What a new input needs to become this data set's model input (JSON-able).

    >>> from archlab.data import load_dataset
    >>> input_preprocessing(load_dataset("digits").info)["kind"]
    'image'
    """
    prep: dict[str, Any] = {"input_shape": list(info.input_shape), "input_dtype": info.input_dtype,
                            "task": info.task, "data": info.name,
                            "class_names": None if info.class_names is None else list(info.class_names),
                            "tokenizer": info.tokenizer}
    if info.preprocessing:
        return prep | dict(info.preprocessing)
    if info.task == "language_model":
        kind = "text"
    elif info.task == "seq2seq":
        kind = "seq2seq"
    elif info.input_dtype == "long":
        kind = "tokens"
    elif len(info.input_shape) == 3 and info.input_shape[0] in (1, 3, 4):
        kind = "image"
    else:
        kind = "array"
    return prep | {"kind": kind}


@dataclass
class NewSamples:
    """New samples, ready for the model: ``x`` (N, *input_shape), an `archlab.layers.Inputs` of
    named tensors for a model of several inputs (a table with text columns), or, for a language
    model, ``prompts`` (token ids of any length); ``names`` say where each came from."""

    names: list[str]
    x: Tensor | Inputs | None = None
    prompts: list[list[int]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.names)


def read_inputs(path: str | Path, preprocessing: Mapping[str, Any]) -> NewSamples:
    """Read and encode new inputs: a folder of .png images, an .npy array or a .csv file.

    >>> import tempfile, numpy as np
    >>> p = Path(tempfile.mkdtemp()) / "x.npy"; np.save(p, np.zeros((3, 1, 8, 8), np.uint8))
    >>> from archlab.data import load_dataset
    >>> read_inputs(p, input_preprocessing(load_dataset("digits").info)).x.shape
    torch.Size([3, 1, 8, 8])
    """
    path = Path(path).expanduser()
    kind = preprocessing.get("kind")
    if kind not in INPUT_KINDS:
        raise DataError(f"preprocessing: unknown kind {kind!r}; expected one of {', '.join(INPUT_KINDS)}")
    if not path.exists():
        raise DataError(f"--input {path}: not found. Give a folder of .png images, an .npy array or a .csv file")
    if path.is_dir():
        return _read_pngs(path, preprocessing)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy(path, preprocessing)
    if suffix == ".csv":
        return _read_table(path, preprocessing)
    if suffix == ".png":
        return _read_pngs(path, preprocessing)
    raise DataError(f"--input {path}: expected a folder of .png images, an .npy array or a .csv file. "
                    f"Received: a {suffix or 'suffix-less'} file")


def _shape(prep: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(int(d) for d in prep["input_shape"])


# --------------------------------------------------------------------------- images


def _read_pngs(path: Path, prep: Mapping[str, Any]) -> NewSamples:
    shape = _shape(prep)
    if prep["kind"] != "image":
        raise DataError(f"--input {path}: this model reads {_what(prep)}, not images; give "
                        f"{_expected(prep)}")
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not files:
        raise DataError(f"--input {path}: the folder holds no .png files; put the images there (each "
                        f"{shape[1]}x{shape[2]} pixels)")
    from PIL import Image, UnidentifiedImageError

    mode = {1: "L", 3: "RGB", 4: "RGBA"}[shape[0]]
    pixels = np.empty((len(files), shape[1], shape[2], shape[0]), np.uint8)
    for i, file in enumerate(files):
        try:
            with Image.open(file) as image:
                if image.size != (shape[2], shape[1]):
                    raise DataError(f"--input {file}: expected an image of {shape[2]}x{shape[1]} pixels (width x "
                                    f"height), as the model was trained on. Received: {image.size[0]}x"
                                    f"{image.size[1]}; resize it to {shape[2]}x{shape[1]}")
                u8 = np.asarray(image.convert(mode), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise DataError(f"--input {file}: cannot read it as a PNG image ({' '.join(str(e).split())})") from None
        pixels[i] = u8.reshape(shape[1], shape[2], shape[0])
    # (N, H, W, C) -> (N, C, H, W), then the loaders' own uint8 -> [0, 1]
    return NewSamples([f.name for f in files], x=_images(pixels.transpose(0, 3, 1, 2)))


# --------------------------------------------------------------------------- arrays


def _read_npy(path: Path, prep: Mapping[str, Any]) -> NewSamples:
    try:
        raw = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"--input {path}: cannot read it as an .npy array ({' '.join(str(e).split())}); "
                        f"object arrays are refused (nothing is unpickled)") from None
    shape, kind = _shape(prep), prep["kind"]
    if kind == "table":  # raw column values, in the run's column order
        encodings = prep["columns"]
        if prep.get("text"):
            raise DataError(f"--input {path}: this model's table has text columns "
                            f"({', '.join(t['name'] for t in prep['text'])}); give the rows as a CSV file with the "
                            f"columns {', '.join(c['name'] for c in (*encodings, *prep['text']))}")
        if any(c["kind"] != "numeric" for c in encodings):
            raise DataError(f"--input {path}: this model's table has categorical columns; give the rows as a "
                            f"CSV file with the columns {', '.join(c['name'] for c in encodings)}")
        shape = (len(encodings),)
    if kind == "text":  # prompts: token ids of any length
        shape = (raw.shape[-1],) if raw.ndim in (1, 2) else shape
    if tuple(raw.shape) == shape:
        raw = raw[None]
    if tuple(raw.shape[1:]) != shape:
        raise DataError(f"--input {path}: expected an array of shape (N, {', '.join(map(str, shape))}) "
                        f"({_what(prep)}). Received: {tuple(raw.shape)} {raw.dtype}")
    try:
        found = _kind_of(raw.dtype)
    except DataError:
        raise DataError(f"--input {path}: expected numbers. Received: dtype {raw.dtype}") from None
    names = [f"{path.name}[{i}]" for i in range(len(raw))]
    if prep["input_dtype"] == "long" or kind in ("text", "seq2seq"):
        if found != "tokens" and found != "image":
            raise DataError(f"--input {path}: this model reads token ids (integers). Received: dtype {raw.dtype}")
        ids = _decode_x(raw, "tokens")
        vocab = (prep.get("tokenizer") or {}).get("vocab_size")
        if vocab is not None and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise DataError(f"--input {path}: token ids must be in 0..{vocab - 1}. Received: "
                            f"{int(ids.min())}..{int(ids.max())}")
        if kind == "text":
            return NewSamples(names, prompts=ids.tolist())
        return NewSamples(names, x=ids)
    if found == "tokens":  # integer pixels or values: as floats
        found = "float"
    x = _decode_x(raw, found)  # uint8 images -> [0, 1], as the npy loader serves them
    if kind == "table":
        nums = x.double().numpy()
        if not np.isfinite(nums).all():
            raise DataError(f"--input {path}: expected finite numbers. Received: NaN or inf")
        missing = np.zeros(len(nums), dtype=bool)
        x = torch.from_numpy(np.concatenate([_encode_column(c, nums[:, j], missing, [""] * len(nums))
                                             for j, c in enumerate(encodings)], axis=1).astype(np.float32))
    return NewSamples(names, x=x)


# --------------------------------------------------------------------------- tables and text


def _read_table(path: Path, prep: Mapping[str, Any]) -> NewSamples:
    header, rows, lines = _read_csv(path)
    kind = prep["kind"]
    names = [f"{path.name}:{line}" for line in lines]
    if kind in ("reviews", "text", "seq2seq"):
        return _read_texts(path, prep, header, rows, names)
    if kind != "table":
        raise DataError(f"--input {path}: this model reads {_what(prep)}, not CSV rows; give {_expected(prep)}")
    columns = {name: [row[j] for row in rows] for j, name in enumerate(header)}
    encodings, texts = prep["columns"], prep.get("text") or []
    trained = [c["name"] for c in (*encodings, *texts)]
    if missing_cols := [name for name in trained if name not in columns]:
        raise DataError(f"--input {path}: column{'s' * (len(missing_cols) > 1)} {', '.join(map(repr, missing_cols))} "
                        f"missing; the model was trained on the columns {', '.join(trained)}. "
                        f"Received: {', '.join(header)}. Add the column (other columns, such as the target, are ignored)")
    fill = prep.get("fill") == "mean"
    features = []
    for enc in encodings:
        name, values = enc["name"], columns[enc["name"]]
        missing = np.array([v.lower() in _MISSING for v in values], dtype=bool)
        if missing.any() and not fill:
            row = int(np.argmax(missing))
            raise DataError(f"--input {path} line {lines[row]}, column {name!r}: expected a value, the cell is empty "
                            f"(the model was trained without fill=mean). Received: {values[row]!r}. Fill the cell")
        nums = None
        if enc["kind"] == "numeric":
            nums = np.zeros(len(values))
            for i, v in enumerate(values):
                if not missing[i]:
                    try:
                        nums[i] = float(v)
                    except ValueError:
                        nums[i] = np.nan
                    if not np.isfinite(nums[i]):
                        raise DataError(f"--input {path} line {lines[i]}, column {name!r}: expected a finite number, "
                                        f"as at training. Received: {v!r}. Fix the cell")
        features.append(_encode_column(enc, nums, missing, values))
    xs = {}
    if features:
        xs[FEATURES] = torch.from_numpy(np.concatenate(features, axis=1).astype(np.float32))
    for t in texts:  # text columns: token ids under the column's own tokenizer, as at training
        values = columns[t["name"]]
        missing = np.array([v.lower() in _MISSING for v in values], dtype=bool)
        if missing.any() and not fill:
            row = int(np.argmax(missing))
            raise DataError(f"--input {path} line {lines[row]}, column {t['name']!r}: expected text, the cell is empty "
                            f"(the model was trained without fill=mean). Received: {values[row]!r}. Fill the cell")
        cells = ["" if missing[i] else v for i, v in enumerate(values)]
        xs[t["name"]] = encode_reviews(tokenizer_from_dict(t["tokenizer"]), cells, t["max_len"], t["pad"])
    # several named inputs (features and text columns) travel as one batch value, as in training
    return NewSamples(names, x=Inputs(xs) if len(xs) > 1 else next(iter(xs.values())))


def _read_texts(path: Path, prep: Mapping[str, Any], header: list[str], rows: list[list[str]],
                names: list[str]) -> NewSamples:
    lowered = [h.lower() for h in header]
    col = next((lowered.index(c) for c in _TEXT_COLUMNS if c in lowered), 0 if len(header) == 1 else None)
    if prep.get("column") in header:  # a csv table's text column: the one the run was trained on
        col = header.index(prep["column"])
    if col is None:
        raise DataError(f"--input {path}: expected a column named text (or review, prompt, source). "
                        f"Received: {', '.join(header)}. Rename the column that holds the text")
    texts = [row[col] for row in rows]
    if not prep.get("tokenizer"):
        raise DataError(f"--input {path}: the run kept no tokenizer, so text cannot be encoded; give token ids "
                        f"as an .npy array")
    tok = tokenizer_from_dict(prep["tokenizer"])
    (length,) = _shape(prep)
    if prep["kind"] == "reviews":
        return NewSamples(names, x=encode_reviews(tok, texts, length, prep.get("pad", "pre")))
    if prep["kind"] == "text":
        return NewSamples(names, prompts=[tok.encode(t) for t in texts])
    # seq2seq: source ids, <eos>, <pad> up to the source length (as the seq loaders write them)
    ids = []
    for name, text in zip(names, texts, strict=True):
        src = [*tok.encode(text), tok.eos_id]
        if len(src) > length:
            raise DataError(f"--input {name}: the source is {len(src) - 1} tokens; the model reads at most "
                            f"{length - 1}. Received: {text[:40]!r}. Shorten it")
        ids.append(src)
    return NewSamples(names, x=pad_sequences(ids, length, pad_id=tok.pad_id or 0))


def _what(prep: Mapping[str, Any]) -> str:
    shape = "x".join(map(str, prep["input_shape"]))
    return {"image": f"{shape} images", "table": "table rows", "reviews": "text", "text": "text prompts",
            "seq2seq": "source text", "array": f"arrays of shape {shape}",
            "tokens": f"{shape} token ids"}[prep["kind"]]


def _expected(prep: Mapping[str, Any]) -> str:
    return {"image": "a folder of .png images or an .npy array",
            "table": "a .csv file with the training columns",
            "reviews": "a .csv file with a text column", "text": "a .csv file with a text column",
            "seq2seq": "a .csv file with a text column",
            "array": "an .npy array", "tokens": "an .npy array of token ids"}[prep["kind"]]
