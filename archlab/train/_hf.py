"""GPT-2 weights in Hugging Face's layout, into archlab's zoo:gpt2 (`--map hf-gpt2`).

Hugging Face's `GPT2LMHeadModel` saves `model.safetensors` with names like
`transformer.h.0.attn.c_attn.weight` (older files drop the `transformer.` prefix). The
mapping onto a zoo:gpt2-shaped network (embedding, pos_embedding, N decoder_blocks,
layernorm, unembed) is, per block i (`model.2.repeat.{i}.0` in zoo:gpt2):

    wte                  -> the embedding (unembed is tied to it; lm_head.weight is the same table)
    wpe                  -> pos_embedding (its first T rows where the model's context T is shorter)
    h.i.ln_1 / ln_2      -> norm1 / norm2
    h.i.attn.c_attn      -> attn.qkv      transposed: HF's Conv1D keeps weights as (in, out);
    h.i.attn.c_proj      -> attn.proj     the fused c_attn splits q, k, v in the same order
    h.i.mlp.c_fc / c_proj -> mlp.fc / mlp.proj (transposed)
    ln_f                 -> the last layernorm
    h.i.attn.bias, h.i.attn.masked_bias   causal-mask buffers of older files: not weights, skipped

The computations agree: GELU with the tanh approximation (HF's "gelu_new"), layer norm eps
1e-5, attention scaled by 1/sqrt(head_dim), causal, pre-norm blocks. What the weights cannot
say (the number of heads, eps, the activation) is checked against the file's config.json
when one lies beside it; an option archlab's block does not compute (another activation,
`scale_attn_by_inverse_layer_idx`, untied embeddings) is refused with the key's name.
Dropout does not enter the logits (eval mode); zoo:gpt2 trains without dropout (HF's default
config has 0.1 in three places: embeddings, attention, residuals).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core import SpecError, StoreError
from ..model import build
from ..spec import load_spec
from ._init_from import Entry, InitReport, Source, plan_init, read_source, register_converter
from ._trainer import save_weights

_BLOCK = re.compile(r"h\.(\d+)\.(.+)")
_PARTS = {"ln_1": "norm1", "ln_2": "norm2", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj",
          "mlp.c_fc": "mlp.fc", "mlp.c_proj": "mlp.proj"}
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_MASKS = ("attn.bias", "attn.masked_bias")
_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # the tanh approximation, by three names


def _layout(net: nn.Module) -> dict[str, Any]:
    """Where a GPT-2 network keeps its parts: {wte, wpe, blocks: [...], ln_f} as module names."""
    layers = getattr(net, "layers", None)
    if not layers:
        raise SpecError("--map hf-gpt2: loads into a plain network built from a spec like zoo:gpt2")
    kinds = [(leaf.kind, leaf.module_name) for leaf in layers]
    names = dict(net.named_modules())
    found: dict[str, Any] = {"blocks": [m for k, m in kinds if k in ("decoder_block", "transformer_block")]}
    for key, kind in (("wte", "embedding"), ("wpe", "pos_embedding")):
        found[key] = next((m for k, m in kinds if k == kind), None)
    after = [m for k, m in kinds[[m for _, m in kinds].index(found["blocks"][-1]) + 1:] if k == "layernorm"] \
        if found["blocks"] else []
    found["ln_f"] = after[0] if after else None
    missing = [k for k in ("wte", "wpe", "ln_f") if found[k] is None] + ([] if found["blocks"] else ["blocks"])
    if missing:
        raise SpecError(f"--map hf-gpt2: this model lacks GPT-2's {', '.join(missing)} (GPT-2 is embedding, "
                        f"pos_embedding, decoder_block x N, layernorm, unembed: zoo:gpt2). Received: layers "
                        f"{', '.join(k for k, _ in kinds)}")
    found["modules"] = names
    return found


def _check_block(block: nn.Module, where: str) -> None:
    """archlab's block computes GPT-2's function only in this configuration."""
    attn, mlp = block.attn, getattr(block, "mlp", None)
    act = getattr(mlp, "act", None)
    problems = []
    if not (isinstance(act, nn.GELU) and act.approximate == "tanh"):
        problems.append("mlp: gelu (tanh approximation)")
    if not (isinstance(block.norm1, nn.LayerNorm) and isinstance(block.norm2, nn.LayerNorm)):
        problems.append("norm: layernorm")
    if attn.kv_heads != attn.heads or attn.rope or not attn.causal or attn.qkv.bias is None:
        problems.append("causal attention with all kv_heads, biases, no rope")
    if problems:
        raise SpecError(f"--map hf-gpt2: {where} differs from a GPT-2 block; it needs {'; '.join(problems)}")


def _config(source: Source) -> dict[str, Any] | None:
    path = source.path.with_name("config.json")
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SpecError(f"--map hf-gpt2: {path} is not readable JSON ({e}); remove it or fix it") from None


def check_config(config: Mapping[str, Any], net: nn.Module, where: str) -> None:
    """Refuse a Hugging Face GPT-2 config that archlab's network does not compute."""
    layout = _layout(net)
    modules = layout["modules"]
    block = modules[layout["blocks"][0]]
    heads, eps = block.attn.heads, block.norm1.eps

    def need(ok: bool, key: str, wanted: str) -> None:
        if not ok:
            raise SpecError(f"--map hf-gpt2: {where}: {key} is {config.get(key)!r}, but this model computes "
                            f"{wanted}. Received: {key}={config.get(key)!r}; "
                            f"{'--set heads=' + str(config.get(key)) if key == 'n_head' else 'no archlab layer computes it'}")

    need(config.get("n_head", heads) == heads, "n_head", f"{heads} heads")
    need(config.get("activation_function", "gelu_new") in _ACTIVATIONS, "activation_function",
         "gelu with the tanh approximation (gelu_new)")
    need(abs(float(config.get("layer_norm_epsilon", eps)) - eps) <= 1e-12, "layer_norm_epsilon", f"eps {eps}")
    need(not config.get("scale_attn_by_inverse_layer_idx", False), "scale_attn_by_inverse_layer_idx",
         "attention scaled by 1/sqrt(head_dim) only")
    need(config.get("scale_attn_weights", True), "scale_attn_weights", "attention scaled by 1/sqrt(head_dim)")
    need(config.get("tie_word_embeddings", True), "tie_word_embeddings", "an output layer tied to the embedding")
    need(not config.get("add_cross_attention", False), "add_cross_attention", "no cross-attention")


def _transposed(name: str) -> Any:
    return lambda tensors: tensors[name].t()


def _rows(name: str, n: int) -> Any:
    return lambda tensors: tensors[name][:n]


def _tied(wte: str, head: str) -> Any:
    def get(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if head in tensors and not torch.equal(tensors[head], tensors[wte]):
            raise SpecError(f"--map hf-gpt2: {head} differs from {wte}: an untied output layer, but archlab's "
                            f"unembed is tied to the embedding; no archlab layer holds it")
        return tensors[wte]

    return get


@register_converter("hf-gpt2")
def convert_hf_gpt2(entries: list[Entry], net: nn.Module, source: Source) -> tuple[list[Entry], list[str]]:
    """Rename (and transpose, cut) Hugging Face GPT-2 tensors onto a zoo:gpt2-shaped `net`."""
    layout = _layout(net)
    modules = layout["modules"]
    for i, name in enumerate(layout["blocks"]):
        _check_block(modules[name], f"block {i} ({name})")
    notes = []
    config = _config(source)
    if config is None:
        notes.append(f"no config.json beside {source.path.name}: the number of heads, layer-norm eps and "
                     f"activation are not checked against the file")
    else:
        check_config(config, net, str(source.path.with_name("config.json")))
    context = modules[layout["wpe"]].weight.shape[0]
    names = {e.origin for e in entries}
    out = []
    for e in entries:
        name = e.origin.removeprefix("transformer.")
        if name == "wte.weight":
            out.append(Entry(f"{layout['wte']}.weight", e.origin, e.shape, _tied(e.origin, "lm_head.weight"),
                             "unembed is tied to it" if "lm_head.weight" in names else ""))
        elif name == "lm_head.weight":
            continue  # the tied table again: checked equal to wte when it loads
        elif name == "wpe.weight":
            if e.shape[0] > context and len(e.shape) == 2:
                out.append(Entry(f"{layout['wpe']}.weight", e.origin, (context, e.shape[1]), _rows(e.origin, context),
                                 f"first {context} of {e.shape[0]} positions"))
            else:
                out.append(Entry(f"{layout['wpe']}.weight", e.origin, e.shape, e.get))
        elif name.startswith("ln_f."):
            out.append(Entry(f"{layout['ln_f']}.{name[5:]}", e.origin, e.shape, e.get))
        elif m := _BLOCK.fullmatch(name):
            i, rest = int(m.group(1)), m.group(2)
            if rest in _MASKS:
                continue  # a causal-mask buffer, not a weight
            part, _, leaf = rest.rpartition(".")
            if part not in _PARTS or i >= len(layout["blocks"]):
                out.append(Entry(name, e.origin, e.shape, e.get))  # left as is: reported unused
                continue
            target = f"{layout['blocks'][i]}.{_PARTS[part]}.{leaf}"
            if rest in _CONV1D and len(e.shape) == 2:
                out.append(Entry(target, e.origin, (e.shape[1], e.shape[0]), _transposed(e.origin),
                                 "transposed: Conv1D"))
            else:
                out.append(Entry(target, e.origin, e.shape, e.get))
        else:
            out.append(Entry(name, e.origin, e.shape, e.get))
    return out, notes


def hf_gpt2_vars(source: Source) -> dict[str, int]:
    """zoo:gpt2's vars (and context) for a Hugging Face GPT-2 file: from its shapes and config.json."""
    shapes = {k.removeprefix("transformer."): v for k, v in source.shapes.items()}
    if "wte.weight" not in shapes or "wpe.weight" not in shapes:
        raise SpecError(f"{source.path}: not a Hugging Face GPT-2 file: it has no wte.weight / wpe.weight "
                        f"(its names: {', '.join(list(source.shapes)[:4])}, ...)")
    vocab, dim = shapes["wte.weight"]
    depth = 1 + max((int(m.group(1)) for k in shapes if (m := _BLOCK.fullmatch(k))), default=-1)
    found = {"vocab_size": int(vocab), "dim": int(dim), "depth": depth, "context": int(shapes["wpe.weight"][0])}
    config = _config(source)
    if config and "n_head" in config:
        found["heads"] = int(config["n_head"])
    return found


def import_hf_gpt2(path: str | Path, out: str | Path, *, spec: Any = "zoo:gpt2",
                   vars: Mapping[str, Any] | None = None, context: int | None = None,
                   quiet: bool = True) -> tuple[InitReport, dict[str, Any]]:
    """Convert a Hugging Face GPT-2 `model.safetensors` (or its folder) into archlab's names and
    write them to `out`; returns (the report, the vars and context the weights fit).

    The heads come from the config.json beside the file, else from `vars` (the weights do not
    say). `context` (default: the file's n_positions) keeps that many position rows."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise StoreError(f"import hf-gpt2 {path}: no such folder or file. Expected a Hugging Face GPT-2 folder "
                         f"(model.safetensors and config.json, as save_pretrained writes them) or its model.safetensors")
    source = read_source(path, flag="import hf-gpt2")
    found = {**hf_gpt2_vars(source), **dict(vars or {})}
    ctx = int(context or found.pop("context"))
    found.pop("context", None)
    spec_ = load_spec(spec)
    if "heads" not in found and found["dim"] % int(spec_.vars.get("heads", 1) or 1):
        raise SpecError(f"{source.path}: no config.json says its number of heads, and {spec_.name}'s default "
                        f"does not divide dim {found['dim']}; give it: --set heads=N")
    spec_ = spec_.with_vars({k: v for k, v in found.items() if k in spec_.vars}).with_input((ctx,), "long")
    torch.manual_seed(0)
    net = build(spec_, seed=0)
    report = plan_init(net, source, ["hf-gpt2"])
    if not quiet:
        report.print()
    report.load(net)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_weights(Path(out), net)
    return report, {**{k: v for k, v in found.items() if k in spec_.vars}, "context": ctx}
