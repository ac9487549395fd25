"""Opening a store: the engine, the checks that a database is a tuner store (or empty), the
schema-version guard, masked URLs, and the one place where database errors become `StoreError`.

Workers on one machine or many share nothing but this database, so every write is a short
transaction. SQLite gets WAL (readers never block the writer), a 30 s busy timeout, and
`BEGIN IMMEDIATE` on every write transaction, which takes the write lock up front instead of
failing with "database is locked" when a read transaction tries to upgrade.

A database is written only when it is empty or already holds a tuner store: one that holds
other tables is refused before anything is written to it (not even SQLite's WAL switch, which
rewrites the file's header), and read-only opens (`status`, `report`, ...) never create one.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url

from tuner.errors import StoreError
from tuner.store import schema
from tuner.store.locks import lock_note
from tuner.store.schema import SCHEMA_VERSION

DEFAULT_URL = "sqlite:///tuner.db"
URL_FORMS = "sqlite:///FILE or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
SQLITE_BUSY_TIMEOUT_S = 30  # writers: a worker waits this long for another's short write
SQLITE_READ_TIMEOUT_S = 5  # read-only opens: WAL readers never wait for writers, so a lock
#                            they meet is another program's exclusive lock; say so soon
_PG_INIT_LOCK = 0x74756E6572  # pg_advisory_xact_lock key serialising table creation


def mask_url(url: str) -> str:
    """The URL with its password (also a `?password=` one) replaced by ***, safe to print."""
    try:
        parsed = make_url(url)
        if "@" not in (parsed.host or ""):  # else an unescaped '@' split the password
            if "password" in parsed.query:
                parsed = parsed.update_query_dict({"password": "***"})
            return parsed.render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  (any text that does not parse is masked below)
        pass
    return re.sub(r"(://[^:/@]*:).*@", r"\1***@", url)  # up to the last '@': never less than the password


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message`; for SQLAlchemy errors, the driver's message."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


@contextmanager
def store_errors(url: str, doing: str = "", also: tuple[type[BaseException], ...] = (),
                 waited_s: float | None = None) -> Iterator[None]:
    """Turns a SQLAlchemy error (and the types in `also`) raised inside into one `StoreError`
    line naming the masked `url`: every database failure a user can meet passes through here.
    A SQLite "database is locked" also says how long it waited and which processes have the file open."""
    try:
        yield
    except (sa.exc.SQLAlchemyError, *also) as exc:
        raise StoreError(f"{url}: {doing + ': ' if doing else ''}{one_line(exc)}"
                         f"{lock_note(url, exc, waited_s)}") from exc


class Store:
    """An engine plus the URL to show in messages. `write()` and `read()` are transactions."""

    def __init__(self, engine: Engine, raw_url: str, busy_timeout_s: float | None = None):
        self.engine = engine
        self.url = mask_url(raw_url)  # for messages
        self.raw_url = raw_url  # password included: for worker processes, never for printing
        self.busy_timeout_s = busy_timeout_s  # SQLite's lock wait, for messages

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with store_errors(self.url, waited_s=self.busy_timeout_s), self._transaction(read=False) as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with store_errors(self.url, waited_s=self.busy_timeout_s), self._transaction(read=True) as conn:
            yield conn

    @contextmanager
    def _transaction(self, read: bool) -> Iterator[Connection]:
        """A transaction whose errors are left to the caller (opening words them its own way)."""
        with self.engine.connect() as conn:
            if read:
                conn.execution_options(tuner_read=True)  # SQLite: plain BEGIN (see _sqlite_engine)
            with conn.begin():
                yield conn

    @property
    def sqlite_file(self) -> str | None:
        """The database file of a SQLite store (None for other databases): what sits beside it."""
        url = self.engine.url
        return url.database if url.get_backend_name() == "sqlite" and url.database else None

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url})"


def _sqlite_engine(url: URL, timeout_s: float) -> Engine:
    engine = sa.create_engine(url, connect_args={"timeout": timeout_s})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        # Per-connection settings only: nothing here writes to the file (WAL is set once, by
        # _use_wal, and only on a database that is tuner's)
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("tuner_read") else "BEGIN IMMEDIATE")

    return engine


def _use_wal(engine: Engine) -> None:
    """Switches the SQLite file to WAL (persistent: once per file), outside any transaction."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()
    finally:
        raw.close()


def _parse(url: str, shown: str) -> URL:
    """The URL parsed, or a one-line error saying which forms are understood."""
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise StoreError(f"{shown}: cannot open the store: not a database URL (--storage or TUNER_STORAGE); "
                         f"use {URL_FORMS}") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:") or parsed.query.get("mode") == "memory":
            raise StoreError(f"{shown}: cannot open the store: a SQLite database in memory vanishes when the "
                             "command ends and workers cannot share it; use a file, e.g. sqlite:///tuner.db")
    return parsed


def _check_sqlite_file(parsed: URL, shown: str, read_only: bool) -> None:
    """What the file system can say before SQLite opens the file (which would create it)."""
    path = parsed.database
    if parsed.query.get("uri") or path.startswith("file:"):
        return  # a SQLite URI filename: SQLite reads it
    if os.path.isdir(path):
        raise StoreError(f"{shown}: cannot open the store: {path} is a directory; give a database file, "
                         f"e.g. sqlite:///{path}/tuner.db")
    if not os.path.exists(path):
        if read_only:
            raise StoreError(f"{shown}: cannot open the store: {path} does not exist; "
                             "`tuner search` creates one, or give the URL of an existing store")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise StoreError(f"{shown}: cannot open the store: cannot create {path}: "
                             f"the folder {folder} does not exist")


def _engine(url: str, parsed: URL, shown: str, read_only: bool) -> Store:
    backend = parsed.get_backend_name()
    try:
        if backend == "sqlite":
            _check_sqlite_file(parsed, shown, read_only)
            timeout = SQLITE_READ_TIMEOUT_S if read_only else SQLITE_BUSY_TIMEOUT_S
            return Store(_sqlite_engine(parsed, timeout), url, busy_timeout_s=timeout)
        connect_args = {"connect_timeout": 10} if backend == "postgresql" else {}
        return Store(sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args), url)
    except sa.exc.NoSuchModuleError:
        raise StoreError(f"{shown}: cannot open the store: unknown database or driver '{parsed.drivername}'; "
                         f"use {URL_FORMS}") from None
    except ImportError as exc:  # the dialect is known, its driver is not installed
        raise StoreError(f"{shown}: cannot open the store: the driver of '{parsed.drivername}' is not installed "
                         f"(missing Python module '{exc.name}'); install it, or use {URL_FORMS}") from None


def open_store(url: str | None = None, *, read_only: bool = False) -> Store:
    """Opens the store at `url`, creating its tables if the database is empty.

    Default: env TUNER_STORAGE, else sqlite:///tuner.db. Refused, and left untouched: a database
    holding other tables and no tuner store, a store written by a newer version of this tool,
    an in-memory SQLite database. `read_only` (status, best, report, dashboard): never creates
    a store or a file, and waits at most SQLITE_READ_TIMEOUT_S for a SQLite lock.
    """
    url = url or os.environ.get("TUNER_STORAGE") or DEFAULT_URL
    shown = mask_url(url)
    store = _engine(url, _parse(url, shown), shown, read_only)
    try:
        with store_errors(shown, "cannot open the store", waited_s=store.busy_timeout_s):
            _init_schema(store, read_only)
        return store
    except BaseException:
        store.close()
        raise


def _tables(conn: Connection) -> list[str]:
    """Tables and views in the schema tuner's tables live in (SQLite's own tables excluded)."""
    inspector = sa.inspect(conn)
    return sorted(set(inspector.get_table_names()) | set(inspector.get_view_names()))


def _stored_version(conn: Connection, url: str) -> int | None:
    """The store's schema version; None for an empty database; refuses anything else."""
    tables = _tables(conn)
    if not tables:
        return None
    value = None
    if "meta" in tables:
        try:
            with conn.begin_nested():  # a foreign `meta` may lack these columns: undo only this read
                value = conn.execute(sa.select(schema.meta.c.value)
                                     .where(schema.meta.c.key == "schema_version")).scalar()
        except sa.exc.DBAPIError:
            value = None
    if value is None or not str(value).isdigit():
        shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
        raise StoreError(f"{url}: not a tuner store: the database holds other tables ({shown}) and no tuner "
                         "schema; tuner leaves it untouched: give an empty database or a new SQLite file "
                         "(e.g. sqlite:///tuner.db)")
    return int(value)


def _init_schema(store: Store, read_only: bool) -> None:
    with store._transaction(read=True) as conn:
        version = _stored_version(conn, store.url)
    if version is None and read_only:
        raise StoreError(f"{store.url}: no tuner store there yet (the database is empty); "
                         "`tuner search` creates one, or give the URL of an existing store")
    sqlite = store.engine.dialect.name == "sqlite"
    if version is None:
        if sqlite:
            _use_wal(store.engine)
        with store._transaction(read=False) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_INIT_LOCK})
            version = _stored_version(conn, store.url)  # another process may have created it meanwhile
            if version is None:
                schema.metadata.create_all(conn)
                conn.execute(sa.insert(schema.meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
                return
    if version > SCHEMA_VERSION:
        raise StoreError(f"{store.url}: written by a newer tuner (store schema version {version}, this tuner "
                         f"reads up to {SCHEMA_VERSION}); upgrade tuner to use this store")
    if version < SCHEMA_VERSION:
        raise StoreError(f"{store.url}: store schema version {version} is older than {SCHEMA_VERSION} "
                         "and cannot be migrated; use a new store")
