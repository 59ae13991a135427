"""The real back ends the state tests run against, each started in a temp folder:
PostgreSQL (Debian's ``postgresql``: initdb + pg_ctl, as the ``postgres`` user when
we are root), Redis (Debian's ``redis-server``) and an OpenID provider (node's
``oidc-provider``, ``tests/state/idp``). ``make test`` installs all three; under
CI (``CI=true``) a missing one fails the test instead of skipping it."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

IDP_DIR = Path(__file__).resolve().parent / "idp"
AUDIENCE = "urn:carafe:gateway"


def missing(what: str, how: str) -> None:
    """Fail under CI (the machine must have it), skip with the reason elsewhere."""
    message = f"{what} is not installed ({how}; `make test` does this)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _wait(check, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not start in {timeout:.0f}s")


@dataclass
class Postgres:
    port: int
    folder: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def fresh_database(self) -> str:
        import psycopg

        name = f"carafe_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@contextmanager
def postgres(tmp: Path) -> Iterator[Postgres]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        missing("PostgreSQL", "apt-get install -y postgresql")
    assert initdb is not None and pg_ctl is not None
    # its own folder under /tmp: the postgres user must reach it (pytest's tmp folders are root-only)
    folder = Path(tempfile.mkdtemp(prefix="carafe-pg-", dir=tmp if os.geteuid() != 0 else None))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(
        _as_postgres([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run(
        _as_postgres([pg_ctl, "-D", str(data), "-o", opts, "-l", str(folder / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    try:
        yield Postgres(port, folder)
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Redis:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP: the server holds its connections and answers nothing (as a hung Redis)."""
        self.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.proc.send_signal(signal.SIGCONT)

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()


@contextmanager
def redis_server(tmp: Path) -> Iterator[Redis]:
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server", "apt-get install -y redis-server")
    assert binary is not None
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
    )
    import redis

    try:
        _wait(lambda: redis.Redis(port=port).ping(), "redis-server")
        yield Redis(port, proc)
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class IdP:
    issuer: str
    proc: subprocess.Popen[bytes]

    def token(self, user: str, groups: list[str] | None = None, roles: list[str] | None = None) -> str:
        """A real access token (a JWT signed by the provider) as the IdP would issue for ``user``."""
        form = {"grant_type": "client_credentials", "resource": AUDIENCE, "test_user": user}
        if groups is not None:
            form["test_groups"] = ",".join(groups)
        if roles:
            form["test_roles"] = ",".join(roles)
        r = httpx.post(f"{self.issuer}/token", data=form, auth=("carafe-tests", "carafe-tests-secret"), timeout=10)
        r.raise_for_status()
        return str(r.json()["access_token"])


@contextmanager
def oidc_provider(ttl_s: int = 300) -> Iterator[IdP]:
    node = shutil.which("node")
    if node is None:
        missing("node", "apt-get install -y nodejs npm")
    if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
        missing("the npm package oidc-provider", "npm ci --prefix tests/state/idp")
    assert node is not None
    port = free_port()
    proc = subprocess.Popen(
        [node, "server.js", str(port), AUDIENCE, str(ttl_s)],
        cwd=IDP_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    issuer = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=1).status_code == 200, "IdP")
        yield IdP(issuer, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
