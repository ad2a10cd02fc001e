"""A throw-away PostgreSQL server for tests and benchmarks, started from the machine's binaries.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` OS user on a directory it owns.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def available() -> str | None:
    """None if a server can be started here, else the reason it cannot."""
    if not _bin("initdb") or not _bin("pg_ctl"):
        return "PostgreSQL binaries (initdb, pg_ctl) are not on PATH; `make setup` installs them"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' OS user to run the server as"
    return None


class PostgresServer:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="hubfleet-pg-"))
        self.port = _free_port()
        self.data = self.dir / "data"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_user, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       cwd=self.dir)

    def start(self) -> PostgresServer:
        self._run(_bin("initdb"), "-D", str(self.data), "-U", "hubfleet", "--auth=trust", "-E", "UTF8", "--no-sync")
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.dir / "server.log"), "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                  f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200", "start")
        return self

    def stop(self) -> None:
        subprocess.run([*self._as_user, _bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://hubfleet@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=hubfleet dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
