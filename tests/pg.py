"""A private, throwaway PostgreSQL + PostGIS cluster for the tests and the benchmarks.

Started on a free loopback port in a temporary directory, as a non-root user when run as root
(postgres refuses root), with durability switched off (it is thrown away), and stopped at the
end. `scripts/test.sh` installs the Debian packages when they are missing; set
GRIDMAP_TEST_DATABASE_URL to use an existing server instead.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _pg_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not candidates:
        raise RuntimeError(
            "PostgreSQL is not installed: run `make test` (it installs postgresql and postgis "
            "from Debian packages) or set GRIDMAP_TEST_DATABASE_URL"
        )
    return candidates[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="gridmap-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres"  # created by the Debian postgresql package
            pwd.getpwnam(self.user)
            shutil.chown(self.dir, self.user)
        self.url = f"postgresql://gridmap@127.0.0.1:{self.port}/gridmap"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, text=True)

    def start(self) -> Cluster:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "gridmap",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
        )
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=256MB "
            "-c max_parallel_workers_per_gather=2 -c work_mem=64MB "
            # The suite keeps its stores open until the end (one database each, and their
            # routers' shared connections): more than the default 100 clients.
            "-c max_connections=400"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "gridmap", "gridmap")
        deadline = time.time() + 30
        import psycopg2

        while True:
            try:
                psycopg2.connect(self.url).close()
                break
            except psycopg2.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        return self

    def new_database(self, name: str, template: str | None = None) -> str:
        """A fresh database in this cluster (empty, or a copy of `template`); returns its URL."""
        return create_database(self.url, name, template)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            # A run leaves a few GB of databases behind: removed by a process of its own, so
            # that the test session does not wait 10 s for it at its end.
            subprocess.Popen(["rm", "-rf", str(self.dir)], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """(Re)create database `name` on the server of `admin_url` (a copy of database `template`
    when given: PostgreSQL copies its files, a few times faster than migrating anew); returns
    its URL."""
    import psycopg2

    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"'
                    + (f' TEMPLATE "{template}"' if template else ""))
    conn.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"
