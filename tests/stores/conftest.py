"""Store fixtures: every contract test runs on local files and on a real PostgreSQL server.

The session starts one throwaway server (``tests/stores/pgserver.py``) and applies the
repository's migrations as the superuser, as ``custodian store init`` would. Each test
gets its own project with a login role for the trainer (the project's writer role) and
one for a reviewer, so tests never see each other's records.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from stores import config
from stores.postgres import add_project, migrate_schema, reviewer_role, writer_role
from tests.stores import pgserver

BACKENDS = ["local", "postgresql"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.Server]:
    if not pgserver.available():
        pytest.fail("PostgreSQL is not installed: run `make postgres` (make test does)")
    with pgserver.throwaway_server() as server:
        with psycopg.connect(server.url(), autocommit=False) as conn:
            migrate_schema(conn)
        yield server


class PgProject:
    """A project in the test server, and the URLs of its trainer and reviewer."""

    def __init__(self, server: pgserver.Server, name: str) -> None:
        self.server = server
        self.name = name
        self.trainer = f"{name}_trainer"
        self.reviewer = f"{name}_reviewer"

    def url(self, role: str) -> str:
        return self.server.url(role)

    def use(self, directory: Path, role: str | None = None) -> None:
        """Point the record streams in ``directory`` at this project, as ``role``."""
        config.save(Path(directory), config.StoreConfig(self.url(role or self.trainer), self.name))


def new_project(server: pgserver.Server) -> PgProject:
    project = PgProject(server, f"t{uuid.uuid4().hex[:12]}")
    with psycopg.connect(server.url()) as conn:
        add_project(conn, project.name)
        for login, group in (
            (project.trainer, writer_role(project.name)),
            (project.reviewer, reviewer_role(project.name)),
        ):
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                    sql.Identifier(login), sql.Identifier(group)
                )
            )
        conn.commit()
    return project


@pytest.fixture
def pg_project(pg_server: pgserver.Server) -> PgProject:
    return new_project(pg_server)


@pytest.fixture(params=BACKENDS)
def store_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A directory whose record streams live in the parametrised backend."""
    directory = tmp_path / ".custodian"
    directory.mkdir()
    if request.param == "postgresql":
        project = new_project(request.getfixturevalue("pg_server"))
        project.use(directory)
    return directory
