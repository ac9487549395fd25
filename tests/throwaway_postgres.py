"""A throwaway PostgreSQL server on loopback, for the tests and the coordination benchmark
(experiments/benchmarks/coordination.py). Test-only: it is not part of the installed package.

The multi-machine path of the store is PostgreSQL; it is exercised against a real server, not
a stand-in. Debian's binaries live in /usr/lib/postgresql/<version>/bin; initdb and postgres
refuse to run as root, so under root they run as the `postgres` user.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def find_bin_dir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    for path in reversed(candidates):  # newest first
        if (Path(path) / "initdb").exists() and (Path(path) / "pg_ctl").exists():
            return Path(path)
    found = shutil.which("initdb") and shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or PATH")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], as_postgres: bool) -> None:
    if as_postgres:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {(result.stderr or result.stdout).strip()}")


@contextmanager
def temporary_server(password: str | None = None) -> Iterator[str]:
    """Starts a fresh server (fsync off, trust auth on 127.0.0.1; with `password`, password
    authentication) and yields its admin URL."""
    bin_dir = find_bin_dir()
    as_postgres = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="tuner-pg-"))
    data, sock, logfile = root / "data", root / "sock", root / "server.log"
    sock.mkdir()
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(sock, "postgres", "postgres")
    port = _free_port()
    started = False
    auth = ["-A", "trust"]
    if password is not None:
        (root / "pw").write_text(password)
        if as_postgres:
            shutil.chown(root / "pw", "postgres", "postgres")
        auth = ["-A", "scram-sha-256", f"--pwfile={root / 'pw'}"]
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", *auth, "--no-sync",
              "-E", "UTF8", "--locale=C"], as_postgres)
        options = (f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(logfile), "-w", "-t", "60", "start"],
             as_postgres)
        started = True
        user = "postgres" if password is None else f"postgres:{password}"
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/postgres"
    finally:
        if started:
            _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], as_postgres)
        shutil.rmtree(root, ignore_errors=True)


def create_database(admin_url: str, prefix: str = "t") -> str:
    """A new empty database on the server of `admin_url`; returns its URL."""
    import psycopg

    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                         dbname=url.database, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)
