"""archlab export (ONNX, model folder) and archlab predict."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from ..core import ArchlabError
from ._app import app, console


@app.command("export")
def export_cmd(
    source: Annotated[str, typer.Argument(help="A finished run id (or unique prefix), or a model folder.")],
    onnx: Annotated[str | None, typer.Option("--onnx", help="Write an ONNX file (dynamic batch) here.")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Check the ONNX file in onnxruntime at batch 1, 2 "
                                         "and 7 (max difference 1e-4).")] = False,
    folder: Annotated[str | None, typer.Option("--folder", help="Write a model folder here (spec, safetensors "
                                               "weights, preprocessing, model card).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --folder.")] = False,
) -> None:
    """Ship a trained run: an ONNX file (--onnx) and/or a folder `archlab.load` reads offline (--folder).

    `archlab runs export --mlflow` is another command: it copies run records into MLflow.
    """
    if onnx is None and folder is None:
        raise ArchlabError("export: give --onnx PATH (an ONNX file) and/or --folder PATH (a model folder)")
    if verify and onnx is None:
        raise ArchlabError("export: --verify checks an ONNX file; add --onnx PATH")
    from ..deploy import export_folder, export_onnx, open_source

    shipped = open_source(source)  # once: both exports use the same weights
    if folder is not None:
        done = export_folder(shipped, folder, overwrite=overwrite)
        console.print(f"wrote {escape(str(done.path))}/  ({', '.join(done.files)}; {done.params:,} params, "
                      f"{done.macs:,} MACs per sample); load it with archlab.load({escape(repr(str(done.path)))})")
    if onnx is not None:
        with console.status("exporting to ONNX (torch.onnx.export, dynamo)..."):
            result = export_onnx(shipped, onnx, verify=verify)
        line = f"wrote {escape(str(result.path))}: {result.what}, inputs {', '.join(result.inputs)} (batch dynamic)"
        if result.max_diff is not None:
            worst = ", ".join(f"batch {b}: {d:.1e}" for b, d in result.max_diff.items())
            line += f"; verified in onnxruntime (max |difference| {worst})"
        console.print(line)


@app.command("predict")
def predict_cmd(
    source: Annotated[str, typer.Argument(help="A finished run id (or unique prefix), or a model folder.")],
    input: Annotated[str, typer.Option("--input", help="A folder of .png images, an .npy array or a .csv file.")],
    out: Annotated[str, typer.Option(help="Where to write the predictions (CSV).")] = "predictions.csv",
    batch_size: Annotated[int, typer.Option(help="Samples per forward pass.")] = 256,
    max_tokens: Annotated[int, typer.Option(help="Language models: tokens to generate per prompt.")] = 32,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Predict on new inputs with the run's own preprocessing; one CSV row per sample.

    Classifiers give class and probability, regressions the value, language models the text.
    """
    from ..deploy import predict

    result = predict(source, input, out, batch_size=batch_size, max_tokens=max_tokens, quiet=quiet)
    console.print(f"wrote {len(result.rows)} prediction{'s' * (len(result.rows) != 1)} to {escape(str(result.path))} "
                  f"({', '.join(result.columns)})")
