"""The command line: a table of subcommands that call the public API. No logic lives here
beyond parsing flags and printing; errors the user can fix print as one line, exit 2."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from .. import __version__
from ..core import ArchlabError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="archlab: declare, inspect, train and compare neural-network architectures.")
# Lines never wrap mid-number when output is piped (CI logs): tables get a fixed width.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)

SetOption = Annotated[list[str] | None, typer.Option("--set", help="Set a var: NAME=VALUE (repeatable).")]
InputOption = Annotated[str | None, typer.Option("--input", help="Per-sample input shape, e.g. 1,28,28.")]
StoreOption = Annotated[str | None, typer.Option(
    "--store", help="The run store: postgresql://USER:PASSWORD@HOST/DB or a folder (default: $ARCHLAB_STORE, "
                    "else the folder $ARCHLAB_HOME).", show_default=False)]


def use_store(store: str | None) -> None:
    """`--store URL`: the run store of this command and of every process it starts (workers,
    ranks), which find it in $ARCHLAB_STORE; artifacts stay under $ARCHLAB_HOME."""
    if store:
        import os

        os.environ["ARCHLAB_STORE"] = store


@app.command("version")
def version_cmd() -> None:
    """Print archlab's version."""
    print(__version__)


def main() -> None:
    try:  # recent typer vendors its own click
        from typer._click.exceptions import UsageError
    except ImportError:  # pragma: no cover - older typer
        from click.exceptions import UsageError

    try:
        # Without standalone mode typer returns (not raises) a typer.Exit's code: pass it on.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except UsageError as e:  # a wrong flag or command: one line, like every other error
        command = e.ctx.command_path if e.ctx else "archlab"
        print(f"error: {e.format_message()} (see `{command} --help`)", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except ArchlabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
