"""ONNX export through `torch.onnx.export(..., dynamo=True)` with a dynamic batch dimension,
and verification in onnxruntime against PyTorch at batch 1, 2 and 7.

What is exported, by network kind: a plain network whole (input -> output); a seq2seq
network's teacher-forced step (source, target_in -> logits, both batch-dynamic); a VAE's
decoder (latent -> image) and a GAN's generator (latent -> image), the halves that make
images: the VAE's forward draws noise and the GAN's forward scores its own samples, which
nobody ships. The sequence length stays the trained one (a language model's context).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core import ArchlabError
from ..model import require_one_input
from ..runs import SQLiteRunStorage
from ._source import Shipped, open_source

__all__ = ["TOLERANCE", "VERIFY_BATCHES", "OnnxExport", "export_onnx", "onnx_graph"]

TOLERANCE = 1e-4
VERIFY_BATCHES = (1, 2, 7)
_INSTALL = "pip install 'archlab[onnx]'"


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    what: str                        # e.g. "the whole network", "the decoder (latent -> image)"
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    max_diff: dict[int, float] | None = None   # batch size -> max |onnxruntime - torch|, with --verify


class _Seq2SeqStep(nn.Module):
    """forward(src, tgt_in) with both arguments required (the plain call fills tgt_in itself)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, source: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        return self.net(source, target_in)  # (B, T, V)


def _vocab(module: nn.Module, default: int = 4) -> int:
    return min((m.num_embeddings for m in module.modules() if isinstance(m, nn.Embedding)), default=default)


def onnx_graph(net: nn.Module) -> tuple[nn.Module, str, tuple[str, ...], tuple[str, ...], object]:
    """(module to export, what it is, input names, output names, make_inputs(batch, seed))."""
    kind = getattr(net, "kind", "plain")

    def randn(shape: Sequence[int], seed: int) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))

    if kind in ("vae", "gan"):
        part, name = (net.decoder, "decoder") if kind == "vae" else (net.generator, "generator")
        return (part, f"the {name} (latent -> image)", ("latent",), ("image",),
                lambda b, seed: (randn((b, net.latent), seed),))
    if kind == "seq2seq":
        src_shape, tgt_shape = net.input_shape, net.target_type.shape
        v_src, v_tgt = _vocab(net.encoder), _vocab(net.decoder)

        def ids(b: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
            g = torch.Generator().manual_seed(seed)
            return (torch.randint(3, max(v_src, 4), (b, *src_shape), generator=g),
                    torch.randint(3, max(v_tgt, 4), (b, *tgt_shape), generator=g))

        return _Seq2SeqStep(net), "the teacher-forced step (source, target_in -> logits)", \
            ("source", "target_in"), ("logits",), ids
    shape = net.input_shape
    if net.input_type.dtype == "long":
        vocab = _vocab(net)
        return net, "the whole network", ("input",), ("output",), lambda b, seed: (
            torch.randint(0, vocab, (b, *shape), generator=torch.Generator().manual_seed(seed)),)
    return net, "the whole network", ("input",), ("output",), lambda b, seed: (randn((b, *shape), seed),)


def _require(*modules: str) -> None:
    import importlib.util

    if missing := [m for m in modules if importlib.util.find_spec(m) is None]:
        raise ArchlabError(f"archlab export --onnx needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                           f"not installed: {_INSTALL}")


@contextlib.contextmanager
def _quiet():
    """The exporter prints progress and logs warnings (torchvision ops it skips): keep them off the terminal."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(source: str | Path | Shipped, path: str | Path, *, verify: bool = False,
                store: SQLiteRunStorage | None = None, tolerance: float | None = None) -> OnnxExport:
    """Export a finished run (or a model folder) to ONNX with a dynamic batch dimension.

    With ``verify``, onnxruntime runs the file at batch 1, 2 and 7 and every output must match
    PyTorch within ``tolerance`` (max absolute difference, default `TOLERANCE` = 1e-4); otherwise an ArchlabError says by
    how much and nothing is written. The file appears only once it is complete.

    >>> export_onnx("r1a2b3c4d", "model.onnx", verify=True).max_diff   # doctest: +SKIP
    {1: 5.9e-08, 2: 8.9e-08, 7: 9.3e-08}
    """
    _require("onnx", "onnxscript", *(("onnxruntime",) if verify else ()))
    shipped = source if isinstance(source, Shipped) else open_source(source, store)
    target = Path(path).expanduser()
    if target.is_dir():
        raise ArchlabError(f"--onnx {target}: is a folder; expected a file name such as model.onnx")
    target.parent.mkdir(parents=True, exist_ok=True)
    require_one_input(shipped.model, "export --onnx")
    module, what, inputs, outputs, make = onnx_graph(shipped.model)
    module.eval()
    example = make(2, 0)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(module, example, input_names=list(inputs), output_names=list(outputs),
                                        dynamic_shapes=tuple({0: batch} for _ in example), dynamo=True,
                                        verbose=False)
            program.save(str(tmp))
        diffs = _verify(tmp, module, make, inputs, TOLERANCE if tolerance is None else tolerance) if verify else None
        os.replace(tmp, target)
    except ArchlabError:
        raise
    except Exception as e:  # the exporter's own failures (an op it cannot convert): one line
        raise ArchlabError(f"--onnx {target}: torch.onnx.export (dynamo) could not export {what}: "
                           f"{type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return OnnxExport(target, what, inputs, outputs, diffs)


def _verify(path: Path, module: nn.Module, make, inputs: tuple[str, ...], tolerance: float) -> dict[int, float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    diffs = {}
    for b in VERIFY_BATCHES:
        args = make(b, b)
        with torch.no_grad():
            expected = module(*args)
        expected = expected if isinstance(expected, tuple | list) else (expected,)
        got = session.run(None, {name: a.numpy() for name, a in zip(inputs, args, strict=True)})
        worst = 0.0
        for e, g in zip(expected, got, strict=True):
            if tuple(g.shape) != tuple(e.shape):
                raise ArchlabError(f"--verify: at batch {b} onnxruntime gives an output of shape {tuple(g.shape)}, "
                                   f"PyTorch {tuple(e.shape)}; the ONNX file is not written")
            worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - e.double().numpy()), initial=0.0)))
        diffs[b] = worst
        if not worst <= tolerance:
            raise ArchlabError(f"--verify: at batch {b} onnxruntime differs from PyTorch by up to {worst:.3g} "
                               f"(tolerance {tolerance:g}); the ONNX file is not written. Export without --verify "
                               f"to keep it anyway")
    return diffs
