"""The PostgreSQL backend: record streams as rows of ``custodian.records``.

Sessions
    A session is one transaction. Its first statement takes the stream's
    transaction-level advisory lock (``pg_advisory_xact_lock`` on the project and
    stream), so writers on every machine queue there exactly as local writers
    queue on the file's ``flock``; at READ COMMITTED the snapshot read after the
    lock sees every record committed before it. An append is durable when the
    session's commit returns (``synchronous_commit`` as the server has it, on by
    default). A failed session rolls back: nothing it appended exists.

What the server enforces (``migrations/*.sql``)
    Writer roles have INSERT and SELECT only; triggers refuse UPDATE, DELETE and
    TRUNCATE even to the owner; a trigger checks each row's ``sha256`` and that
    ``prev`` is the hash of the row before it; the primary key (project, stream,
    seq) stops two writers from forking a chain; row-level security shows a role
    only the projects whose writer or reviewer role it holds. The owner's records
    still carry their own chain, checked on every read, so a DBA who rewrites
    rows (bypassing the triggers) is caught as a local editor would be.

Connections
    ``url`` carries no password (:mod:`stores.config`); libpq reads it from its
    usual places. A stream keeps one connection (its transactions begin and
    commit explicitly), checks it before each session and opens a new one if the
    server restarted meanwhile. A server that cannot be reached raises :class:`StoreUnavailable`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from importlib import resources

import psycopg
import psycopg.errors
from psycopg import sql

from stores.config import StoreConfig
from stores.errors import StoreError, StoreUnavailable
from stores.local import GENESIS, RecordBuilder, RecoveryBuilder, sha256_hex
from stores.stream import Snapshot, TornGuard

_STREAM = re.compile(r"[a-z0-9_-]{1,64}")
_MIGRATION = re.compile(r"(\d{3})_[a-z0-9_]+\.sql")
CONNECT_TIMEOUT_S = 10


class StoreRefused(StoreError):
    """The server refused an operation (privileges, append-only, chain check)."""


def connect(url: str, **kwargs: object) -> psycopg.Connection:
    """A connection to ``url`` (autocommit off); StoreUnavailable if the server is gone."""
    try:
        return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, **kwargs)
    except psycopg.OperationalError as err:
        raise StoreUnavailable(f"cannot reach store {_where(url)}: {_first_line(err)}") from None


class PostgresStream:
    """The stream ``name`` of ``config.project`` in the database at ``config.url``."""

    backend = "postgresql"

    def __init__(self, config: StoreConfig, name: str) -> None:
        if not _STREAM.fullmatch(name):
            raise StoreError(f"stream name must be 1-64 of a-z, 0-9, _ and -, got {name!r}")
        self.config = config
        self.name = name
        self._conn: psycopg.Connection | None = None

    @property
    def label(self) -> str:
        return f"{_where(self.config.url)} project {self.config.project} stream {self.name}"

    def close(self) -> None:
        """Close the stream's connection (a later session opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg.Connection:
        """The stream's connection: checked if reused, since the server may have restarted."""
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.execute("SELECT 1")  # outside any transaction: nothing to lose
                return self._conn
            except psycopg.OperationalError:
                self.close()
        self._conn = connect(self.config.url, autocommit=True)
        return self._conn

    @contextlib.contextmanager
    def session(self) -> Iterator[_PostgresSession]:
        conn = self._connection()
        try:
            with conn.transaction():
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    (f"{self.config.project}/{self.name}",),
                )
                yield _PostgresSession(conn, self.config.project, self.name)
        except psycopg.OperationalError as err:
            self.close()
            raise StoreUnavailable(f"store {self.label} went away: {_first_line(err)}") from None
        except psycopg.errors.InsufficientPrivilege as err:
            raise StoreRefused(f"store {self.label} refused: {_first_line(err)}") from None
        except psycopg.Error as err:
            raise StoreError(f"store {self.label}: {_first_line(err)}") from None


class _PostgresSession:
    def __init__(self, conn: psycopg.Connection, project: str, stream: str) -> None:
        self._conn = conn
        self._key = (project, stream)
        self._next: tuple[int, str] | None = None

    def snapshot(self) -> Snapshot:
        rows = self._conn.execute(
            "SELECT seq, line FROM custodian.records WHERE project = %s AND stream = %s "
            "ORDER BY seq",
            self._key,
        ).fetchall()
        for expected, (seq, _line) in enumerate(rows):
            if seq != expected:
                raise StoreError(f"stream {self._key[1]}: record {expected} is missing")
        lines = [bytes(line) for _seq, line in rows]
        prev = sha256_hex(lines[-1]) if lines else GENESIS
        self._next = (len(lines), prev)
        return Snapshot(b"".join(line + b"\n" for line in lines))

    def append(
        self,
        records: Sequence[RecordBuilder],
        *,
        recovery: RecoveryBuilder | None = None,
        guard: TornGuard | None = None,
    ) -> list[bytes]:
        # A transaction never leaves a torn line: nothing to recover, nothing to guard.
        del recovery, guard
        seq, prev = self._next if self._next is not None else self._tail()
        lines = []
        rows = []
        for build in records:
            line = build(seq, prev)
            digest = sha256_hex(line)
            lines.append(line)
            rows.append((*self._key, seq, prev, digest, line))
            seq, prev = seq + 1, digest
        with self._conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO custodian.records (project, stream, seq, prev, sha256, line) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                rows,
            )
        self._next = (seq, prev)
        return lines

    def _tail(self) -> tuple[int, str]:
        row = self._conn.execute(
            "SELECT seq, sha256 FROM custodian.records WHERE project = %s AND stream = %s "
            "ORDER BY seq DESC LIMIT 1",
            self._key,
        ).fetchone()
        return (0, GENESIS) if row is None else (row[0] + 1, row[1])


def migrations() -> list[tuple[int, str, str]]:
    """``(version, file name, SQL)`` of every migration shipped in ``stores/migrations``."""
    found = []
    for entry in resources.files("stores").joinpath("migrations").iterdir():
        match = _MIGRATION.fullmatch(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate_schema(conn: psycopg.Connection) -> list[str]:
    """Apply the migrations the database lacks, each in its own transaction; their names."""
    applied: set[int] = set()
    if conn.execute("SELECT to_regclass('custodian.migrations')").fetchone()[0] is not None:
        applied = {row[0] for row in conn.execute("SELECT version FROM custodian.migrations")}
    conn.commit()
    done = []
    for version, name, text in migrations():
        if version in applied:
            continue
        with conn.transaction():
            conn.execute(text)  # type: ignore[call-overload]  # a trusted file in the package
            conn.execute(
                "INSERT INTO custodian.migrations (version, name) VALUES (%s, %s)",
                (version, name),
            )
        done.append(name)
    return done


def writer_role(project: str) -> str:
    """The role whose members may append to ``project``'s records."""
    return f"custodian_{project}_writer"


def reviewer_role(project: str) -> str:
    """The role whose members may read ``project``'s records."""
    return f"custodian_{project}_reviewer"


def add_project(conn: psycopg.Connection, project: str) -> bool:
    """Register ``project`` with its writer and reviewer roles; False if it already was."""
    StoreConfig("postgresql://check", project)  # validates the name
    with conn.transaction():
        known = conn.execute(
            "SELECT 1 FROM custodian.projects WHERE project = %s", (project,)
        ).fetchone()
        if known:
            return False
        for role, group in (
            (writer_role(project), "custodian_writer"),
            (reviewer_role(project), "custodian_reviewer"),
        ):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if not exists:
                conn.execute(
                    sql.SQL("CREATE ROLE {} NOLOGIN IN ROLE {}").format(
                        sql.Identifier(role), sql.Identifier(group)
                    )
                )
        conn.execute(
            "INSERT INTO custodian.projects (project, writer_role, reviewer_role) "
            "VALUES (%s, %s, %s)",
            (project, writer_role(project), reviewer_role(project)),
        )
    return True


def _where(url: str) -> str:
    """The URL for messages: host, port and database, never a password or options."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://?"
    host = params.get("host", "")
    port = params.get("port", "")
    return f"postgresql://{host}{':' + str(port) if port else ''}/{params.get('dbname', '')}"


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
