"""A throwaway PostgreSQL server for the team-log tests: Debian's ``initdb``/``pg_ctl`` in a
temporary directory on a free port, password authentication over TCP, stopped and removed at
the end. PostgreSQL refuses to run as root, so as root the server runs as the ``postgres``
system user (``runuser``), in a directory that user owns."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BIN = Path(os.environ.get("IMGTOOLS_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "imgtools_admin"
# Unusual, so that a leak cannot be a coincidence.
SUPERUSER_PASSWORD = "adm1n-Pw-7Kq2xZ"


def available() -> bool:
    return (BIN / "initdb").exists() and (BIN / "pg_ctl").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Server:
    port: int
    data: Path
    root: Path

    def url(self, user: str = SUPERUSER, password: str = SUPERUSER_PASSWORD,
            database: str = "postgres") -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def admin(self, statement: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database=database), autocommit=True) as conn:
            conn.execute(statement)

    def new_database(self) -> str:
        """A fresh, empty database; its name."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.admin(f"CREATE DATABASE {name}")
        return name

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.root / 'sock'} -c listen_addresses=127.0.0.1 "
                   f"-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   f"-c max_connections=60")
        subprocess.run(_as_server_user([
            str(BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
            str(self.root / "log"), "-w", "-t", "60", "start"]), check=True, capture_output=True,
            timeout=120)

    def stop(self) -> None:
        subprocess.run(_as_server_user([str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                                        "-w", "stop"]), check=True, capture_output=True,
                       timeout=120)


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


@contextmanager
def running() -> Iterator[Server]:
    root = Path(tempfile.mkdtemp(prefix="imgtools-pg-"))
    root.chmod(0o755)
    _chown(root)
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    _chown(sockets)
    pwfile = root / "pw"
    pwfile.write_text(SUPERUSER_PASSWORD + "\n")
    _chown(pwfile)
    server = Server(port=_free_port(), data=data, root=root)
    try:
        subprocess.run(_as_server_user([
            str(BIN / "initdb"), "-D", str(data), "-U", SUPERUSER, f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync"]),
            check=True, capture_output=True, timeout=120)
        server.start()
        yield server
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_server_user([str(BIN / "pg_ctl"), "-D", str(data), "-m",
                                            "immediate", "-w", "stop"]),
                           capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def require() -> None:
    """Skip (fail on CI, which installs PostgreSQL) when the server binaries are missing."""
    import pytest

    if not available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not installed at {BIN} (.ci/run installs it)")
        pytest.skip(f"PostgreSQL is not installed at {BIN}")


def team_log_url(server: Server, user: str = SUPERUSER, password: str = SUPERUSER_PASSWORD
                 ) -> str:
    """A fresh database with the team log's tables; its URL (as ``user``)."""
    from imgtools._pglog import init_schema

    database = server.new_database()
    init_schema(server.url(database=database))
    return server.url(user, password, database)
