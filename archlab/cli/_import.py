"""archlab import: weights from a peer implementation, renamed into archlab's layout."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ._app import SetOption, app
from ._format import parse_vars

group = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                    help="Import weights from another implementation (Hugging Face GPT-2).")
app.add_typer(group, name="import")


@group.command("hf-gpt2")
def hf_gpt2_cmd(
    path: Annotated[str, typer.Argument(help="A Hugging Face GPT-2 model.safetensors, or its folder (with "
                                             "config.json, which says the number of heads).")],
    out: Annotated[str, typer.Option(help="Where to write the weights under archlab's names.")] = "weights.safetensors",
    spec: Annotated[str, typer.Option(help="The spec they load into.")] = "zoo:gpt2",
    context: Annotated[int | None, typer.Option(help="Keep this many positions (default: the file's "
                                                     "n_positions); a model trains on sequences this long.")] = None,
    set: SetOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table.")] = False,
) -> None:
    """Convert GPT-2 weights in Hugging Face's layout (Conv1D, fused qkv, tied lm_head) to zoo:gpt2's names."""
    from ..train import import_hf_gpt2

    report, found = import_hf_gpt2(path, out, spec=spec, vars=parse_vars(set), context=context, quiet=quiet)
    sets = " ".join(f"--set {k}={v}" for k, v in found.items() if k != "context")
    print(f"wrote {report.count('loaded')} tensors to {out}", file=sys.stderr)
    print(f"use   archlab train {spec} {sets} --init-from {out}  (sequences of {found['context']} tokens)")
