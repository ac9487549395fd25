"""Shared fixtures: store URLs on real SQLite files and on a real PostgreSQL server.

The server is Debian's PostgreSQL, started once per session on loopback with a temporary data
directory (tests/throwaway_postgres.py). Without its binaries the PostgreSQL tests skip, unless
TUNER_REQUIRE_POSTGRES=1 (CI) turns the skip into an error.
"""
import os

import pytest
import throwaway_postgres  # a module beside this file: pytest puts a conftest's folder on sys.path

import tuner  # noqa: F401  (before TensorFlow: selects tf-keras)


@pytest.fixture(scope="session")
def postgres_server():
    """Admin URL of a throwaway PostgreSQL server for the whole session."""
    try:
        throwaway_postgres.find_bin_dir()
    except throwaway_postgres.PostgresUnavailable as exc:
        if os.environ.get("TUNER_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"TUNER_REQUIRE_POSTGRES=1 but {exc}", pytrace=False)
        pytest.skip(f"{exc} (install Debian's postgresql package)")
    with throwaway_postgres.temporary_server() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the session's server."""
    return throwaway_postgres.create_database(postgres_server)


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'tuner.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    """Each store test runs on a SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tuner.db'}"
    return request.getfixturevalue("postgres_url")
