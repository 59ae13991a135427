"""Fixtures: one PostgreSQL, one Redis and one OpenID provider per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.indexer.conftest import embedder, make_index, real_embedder, small_policies  # noqa: F401  (fixtures)
from tests.state.services import IdP, Postgres, Redis, oidc_provider, postgres, redis_server


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    with postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(scope="session")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def idp() -> Iterator[IdP]:
    with oidc_provider() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """Each state test runs on both stores: SQLite under a data dir, and a fresh Postgres database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    server: Postgres = request.getfixturevalue("pg")
    return server.fresh_database()
