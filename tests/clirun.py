"""Test helper: run the real `archlab` entry point in-process, as a user's shell would."""

import sys

import archlab.cli._app as cli


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `archlab ARGS...`: 0 when main returns, else its exit
    code (errors become one line and exit 2)."""
    monkeypatch.setattr(sys, "argv", ["archlab", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code
    return code, *capsys.readouterr()
