"""Whether a data set can feed a built network: the inputs it reads, and the token ids its
embeddings can look up. Checked before anything runs, so a misfit is one line, never a
traceback from deep inside a forward pass:

    check_inputs_fit(net, dataset.info, where="--data digits", fix="evaluate on the run's data")
    check_vocab_fits(net, dataset.info, where="--data digits-qa")

`check_inputs_fit` compares what the model reads (its named inputs by name, or its one
unnamed input) with what the data gives: per-sample shape and dtype. Data inputs the model
does not read are fine (a spec may read a subset). It ends with `check_vocab_fits`: every
embedding that reads a token input directly must have room for each id of that input's
vocabulary, or `torch.embedding` fails mid-epoch with "index out of range in self".

Training binds a spec's input shapes to the data (`Task.adapt_spec`), so there only the
vocabulary can misfit; evaluating a stored run on other data, or a distillation teacher on
the student's data, can misfit in every way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..core import DataError, SpecError
from ..data import DataInfo
from ..layers import TensorType

__all__ = ["check_inputs_fit", "check_vocab_fits"]

# What the builder names a leaf's input when it reads a spec input directly (TensorType.source).
_UNNAMED, _NAMED = "input", "inputs."


def model_inputs(net: Any) -> dict[str, TensorType]:
    """What a built network reads from a data set: name -> per-sample type, or {"": type} for
    one unnamed input. A GAN learns from what its discriminator reads (its own input is the
    latent code)."""
    if net.input_names:
        return dict(net.input_types)
    if net.kind == "gan":
        return {"": net.discriminator.input_type}
    return {"": net.input_type}


def data_inputs(info: DataInfo) -> dict[str, TensorType]:
    """What a data set gives: name -> per-sample type, or {"": type} for one unnamed x."""
    named = info.named_inputs()
    if named is None:
        return {"": TensorType(tuple(info.input_shape), info.input_dtype)}
    return {name: TensorType(tuple(shape), dtype) for name, (shape, dtype) in named.items()}


def check_inputs_fit(net: Any, info: DataInfo, *, where: str, fix: str) -> None:
    """Raise a one-line DataError where `info`'s inputs cannot feed `net`, naming what the model
    reads, what the data gives and `fix`; then `check_vocab_fits` (a SpecError).

    >>> from archlab import build
    >>> from archlab.data import load_dataset
    >>> net = build({"input": {"shape": [4]}, "model": [{"linear": 2}]})
    >>> check_inputs_fit(net, load_dataset("digits").info, where="--data digits", fix="use 4 features")
    Traceback (most recent call last):
    ...
    archlab.core._errors.DataError: --data digits: the model reads samples of shape (4,); the data gives (1, 8, 8). Received: data samples (1, 8, 8); use 4 features
    """
    reads, gives = model_inputs(net), data_inputs(info)
    if "" in gives:  # one unnamed x: it feeds a model of one input, whatever that input is called
        (given,) = gives.values()
        if len(reads) > 1:
            raise DataError(f"{where}: the model reads {len(reads)} inputs ({_listed(reads)}); the data gives one "
                            f"unnamed input {given.describe()}. Received: one input {given.describe()}; {fix}")
        ((name, read),) = reads.items()
        if not _same(read, given):
            what = f"input {name!r} as" if name else "samples of shape"
            raise DataError(f"{where}: the model reads {what} {read.describe()}; the data gives {given.describe()}. "
                            f"Received: data samples {given.describe()}; {fix}")
    elif "" in reads:  # several named inputs reach a model of one unnamed input as one `Inputs`
        (read,) = reads.values()
        raise DataError(f"{where}: the model reads one unnamed input {read.describe()}; the data gives {len(gives)} "
                        f"named inputs ({_listed(gives)}). Received: inputs {', '.join(gives)}; {fix}")
    else:
        for name, read in reads.items():
            if name not in gives:
                raise DataError(f"{where}: the model reads input {name!r}, which the data does not have. Received: "
                                f"inputs {_listed(gives)}; {fix}")
            if not _same(read, gives[name]):
                raise DataError(f"{where}: the model reads input {name!r} as {read.describe()}; the data gives "
                                f"{gives[name].describe()}. Received: {name} {gives[name].describe()}; {fix}")
    check_vocab_fits(net, info, where=where, fix=fix)


def check_vocab_fits(net: Any, info: DataInfo, *, where: str, fix: str | None = None) -> None:
    """Raise a one-line SpecError where an embedding that reads a token input directly has a
    smaller vocab than the data's for that input (its ids would be out of range). The fix
    names the var that sets the embedding's vocab where there is one (`--set words=14`),
    unless `fix` is given. Inputs the data gives no vocabulary for are not checked."""
    reads = model_inputs(net)
    for leaf in net.layers:
        if leaf.kind != "embedding" or "vocab" not in leaf.args:
            continue
        name = _input_read(leaf.input.source, reads)
        if name is None:  # it embeds something a layer made, not a data input
            continue
        vocab, have = _data_vocab(info, name), int(leaf.args["vocab"])
        if vocab is None or vocab <= have:
            continue
        what = f"input {name!r}" if name else "token input"
        raise SpecError(f"{where}: {leaf.path}: vocab {have:,} is too small for the data's {what} (a "
                        f"vocabulary of {vocab:,}, ids 0..{vocab - 1:,}). Received: vocab {have:,} < {vocab:,}; "
                        f"{fix or _raise_vocab(net.spec, leaf.path, have, vocab)}")


def _same(read: TensorType, given: TensorType) -> bool:
    return tuple(read.shape) == tuple(given.shape) and read.dtype == given.dtype


def _listed(types: Mapping[str, TensorType]) -> str:
    return ", ".join(f"{name} {t.describe()}" for name, t in types.items())


def _input_read(source: str, reads: Mapping[str, TensorType]) -> str | None:
    """Which model input a leaf reads directly ("" for the one unnamed input), or None."""
    if source == _UNNAMED and "" in reads:
        return ""
    if source.startswith(_NAMED) and source[len(_NAMED):] in reads:
        return source[len(_NAMED):]
    return None


def _data_vocab(info: DataInfo, name: str) -> int | None:
    """The data's vocabulary for model input `name`: a named input's own, or the one unnamed
    token input's (which also feeds a model of one named input)."""
    if info.inputs is None:
        return info.vocab_size if info.input_dtype == "long" else None
    vocab = info.inputs.get(name, {}).get("vocab") if name else None
    return None if vocab is None else int(vocab)


def _raise_vocab(spec: Any, path: str, have: int, needed: int) -> str:
    """How to give the embedding at `path` a vocab of `needed`: the var its spec argument names
    (`vocab: $words` -> `--set words=14`), else the argument itself."""
    var = _vocab_var(spec, path)
    if var is not None and spec.resolved_vars().get(var) == have:
        return f"--set {var}={needed} (or raise the embedding's vocab to {needed})"
    return f"raise the embedding's vocab to {needed} or more"


def _vocab_var(spec: Any, path: str) -> str | None:
    """The var a leaf's `vocab:` names in the spec as written (`$words`), found by walking its
    path (`model[4].embedding`) through serial lists and `residual:`; None for a literal, an
    expression, or a leaf under a node the walk does not follow (repeat, parallel, a block)."""
    *steps, kind = path.split(".")
    node: Any = spec.to_dict()
    for step in steps:
        m = re.fullmatch(r"(\w+)((?:\[\d+\])+)", step)
        if m is None or not isinstance(node, Mapping):
            return None
        node = node.get(m[1])
        for index in map(int, re.findall(r"\d+", m[2])):
            if not isinstance(node, list) or index >= len(node):
                return None
            node = node[index]
    args = node.get(kind) if isinstance(node, Mapping) else None
    value = args.get("vocab") if isinstance(args, Mapping) else None
    m = re.fullmatch(r"\$([A-Za-z_]\w*)", value) if isinstance(value, str) else None
    return m[1] if m else None
