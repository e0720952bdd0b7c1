"""A real PostgreSQL server for the tests: one per test session, a fresh database per test.

``initdb`` + ``pg_ctl`` (found on PATH, else in Debian's ``/usr/lib/postgresql/*/bin``) make
a cluster in a temporary folder and start it on a free port of 127.0.0.1, with password
authentication over TCP (so a wrong password is refused, as on a real server). PostgreSQL
refuses to run as root: under root (CI) the server runs as the unprivileged user ``nobody``
(``runuser``), in a folder that user owns.

Without the binaries (or psycopg) the tests that need the server skip locally and FAIL
under CI (``CI=true``): ``.ci/run`` installs Debian's ``postgresql`` package.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

USER, PASSWORD = "archlab", "pg-test-pw"


@dataclass
class Server:
    host: str
    port: int
    folder: Path

    def url(self, db: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@{self.host}:{self.port}/{db}"


def _unavailable(why: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL tests cannot run under CI: {why} (.ci/run installs Debian's postgresql)")
    pytest.skip(f"PostgreSQL tests need a local server: {why}")


def _binaries() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(folder, "initdb")):
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> tuple[Server, callable]:
    """Start a server; returns it and the function that stops it and removes its folder."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'archlab[postgres]')")
    bin_dir = _binaries()
    if bin_dir is None:
        _unavailable("initdb and pg_ctl not found (apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="archlab-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses root: run it as nobody, in a folder nobody owns
        runuser = shutil.which("runuser")
        if runuser is None:
            _unavailable("running as root without runuser to drop to an unprivileged user")
        as_user = [runuser, "-u", "nobody", "--"]
        os.chown(folder, *_nobody())
    (folder / "pw").write_text(PASSWORD + "\n")
    if as_user:
        os.chown(folder / "pw", *_nobody())
    port = _free_port()
    data, log = folder / "data", folder / "log"

    def run(*cmd: str) -> None:
        out = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)
        if out.returncode:
            shutil.rmtree(folder, ignore_errors=True)
            text = (out.stderr or out.stdout).strip().splitlines()
            _unavailable(f"{Path(cmd[0]).name} failed: {text[-1] if text else out.returncode}")

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={folder / 'pw'}",
        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync", "--no-instructions")
    options = (f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
               f"-c full_page_writes=off -c max_connections=100 -c shared_buffers=16MB")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")

    def stop() -> None:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)

    return Server("127.0.0.1", port, folder), stop


def _nobody() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def new_database(server: Server) -> str:
    """A fresh, empty database on ``server``; returns its URL."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server.url(), autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.url(name)
