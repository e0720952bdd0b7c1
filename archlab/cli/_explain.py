"""archlab explain: attributions, attention maps and their checks for a stored run."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ._app import app, console


@app.command("explain")
def explain_cmd(
    run_id: Annotated[str, typer.Argument(help="A run id (see `archlab runs`).")],
    methods: Annotated[str | None, typer.Option(
        help="Comma-separated: saliency, ig, gradcam, attention (default: all the model allows).")] = None,
    samples: Annotated[int, typer.Option(help="Test samples to explain (one class after another).")] = 32,
    report: Annotated[str | None, typer.Option(help="Write an offline HTML page here.")] = None,
    ig_tolerance: Annotated[float, typer.Option(
        help="Integrated gradients: steps double per sample until |Σ attributions − (f(x) − f(baseline))| "
             "is at most this.")] = 1e-3,
    ig_max_steps: Annotated[int, typer.Option(help="Integrated gradients: at most this many steps.")] = 4096,
    seed: Annotated[int, typer.Option(help="Seed of the random deletion orders.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Explain a run's predictions (on Captum) and check the explanations: IG completeness,
    the model-randomisation test and deletion curves against random deletion."""
    from ..explain import explain

    expl = explain(run_id, methods, samples, seed=seed, ig_tolerance=ig_tolerance, ig_max_steps=ig_max_steps,
                   quiet=quiet or as_json)
    if report:
        from ..compare import write_explanation

        write_explanation(expl, report)
    if as_json:
        print(json.dumps(expl.summary(), indent=2))
        return
    print_explanation(expl)
    if report:
        console.print(f"report            {report}")


def print_explanation(expl) -> None:  # noqa: ANN001 - an Explanation
    from ..explain import COMPLETENESS_TARGET, DELETION_TARGET, METHOD_TITLES, RANDOMISATION_TARGET

    s = expl.summary()
    console.print(escape(f"explained         {len(expl.indices)} test samples of run {expl.run_id} ({expl.name} on "
                         f"{expl.data}) in {expl.seconds:.1f}s"))
    if expl.methods:
        table = Table(title="checks", title_justify="left")
        for col in ("method", f"completeness max (≤ {COMPLETENESS_TARGET:g})", "IG steps",
                    f"ρ vs randomised (≤ {RANDOMISATION_TARGET:g})", "ρ of |attr|", "deletion AUC",
                    "random AUC", f"beats random (≥ {DELETION_TARGET:.0%})"):
            table.add_column(col, justify="left" if col == "method" else "right")
        for m in expl.methods:
            d = s[m.name]

            def ok(flag: bool) -> str:
                return " ok" if flag else " FAIL"

            comp = f"{d['completeness_max']:.1e}{ok(d['completeness_pass'])}" if "completeness_max" in d else "-"
            steps = f"{d['steps_max']}" if "steps_max" in d else "-"
            rho = "-" if d["rank_corr_mean"] is None else f"{d['rank_corr_mean']:.3f}{ok(d['randomisation_pass'])}"
            rho_abs = "-" if d["rank_corr_abs_mean"] is None else f"{d['rank_corr_abs_mean']:.3f}"
            auc = f"{d['deletion_auc_mean']:.3f}" if "deletion_auc_mean" in d else "-"
            rnd = f"{d['random_auc_mean']:.3f}" if "random_auc_mean" in d else "-"
            wins = (f"{d['deletion_wins']:.0%}" + (ok(d["deletion_pass"]) if m.name == "ig" else "")
                    if "deletion_wins" in d else "-")
            table.add_row(METHOD_TITLES[m.name], comp, steps, rho, rho_abs, auc, rnd, wins)
        console.print(table)
    if expl.attention:
        heads = max(a.heads for a in expl.attention)
        table = Table(title=f"attention entropy (nats; each layer's math path matches its fused kernel within "
                            f"{expl.attention_error:.1e} of its output's scale)", title_justify="left")
        table.add_column("layer")
        for h in range(heads):
            table.add_column(f"head {h}", justify="right")
        table.add_column("uniform", justify="right")
        for a in expl.attention:
            table.add_row(escape(a.layer), *[f"{a.entropy[h]:.3f}" if h < a.heads else "" for h in range(heads)],
                          f"{a.uniform:.3f}")
        console.print(table)
