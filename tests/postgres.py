"""A throwaway PostgreSQL for tests: ``$IMAGEGATE_TEST_POSTGRES_URL`` when set, else a cluster
started here with ``initdb`` and ``pg_ctl`` (found on PATH or under /usr/lib/postgresql/*/bin;
as root they run as the ``postgres`` user). Without either, or without asyncpg, tests that
need it skip with the reason.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

POSTGRES_URL_ENV = "IMAGEGATE_TEST_POSTGRES_URL"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bin(name: str) -> str | None:
    installed = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return next((path for path in (shutil.which(name), *installed) if path), None)


class _Cluster:
    """A throwaway PostgreSQL cluster in a temp dir on a random port (trust auth)."""

    def __init__(self) -> None:
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise FileNotFoundError("initdb/pg_ctl not found")
        self.pg_ctl = pg_ctl
        # initdb refuses to run as root; run the cluster as the postgres user then.
        self.user = "postgres" if os.geteuid() == 0 else None
        self.dir = Path(tempfile.mkdtemp(prefix="imagegate-pg-"))
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self.port = _free_port()
        self._run(initdb, "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")
        self._run(pg_ctl, "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w",
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                  "-c fsync=off -c max_connections=300", "start")
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        try:
            self._run(self.pg_ctl, "-D", str(self.dir / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    pytest.importorskip("asyncpg")
    if os.environ.get(POSTGRES_URL_ENV):
        yield os.environ[POSTGRES_URL_ENV]
        return
    try:
        cluster = _Cluster()
    except (FileNotFoundError, KeyError, subprocess.SubprocessError) as exc:
        pytest.skip(f"no PostgreSQL: set {POSTGRES_URL_ENV} or install initdb/pg_ctl ({exc})")
    yield cluster.url
    cluster.stop()


async def admin(admin_url: str, statement: str) -> None:
    import asyncpg

    dsn = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def admin_blocking(admin_url: str, statement: str) -> None:
    # Its own thread and loop: first requested from inside an async fixture.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, admin(admin_url, statement)).result()




def new_database(admin_url: str) -> str:
    """An empty database of its own on the cluster, as a SQLAlchemy URL."""
    name = f"imagegate_{uuid.uuid4().hex[:12]}"
    admin_blocking(admin_url, f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)
