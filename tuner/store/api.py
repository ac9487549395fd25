"""Opening the store and the functions that read and write it.

Workers on one machine or many share nothing but this database, so every write is a short
transaction. SQLite gets WAL (readers never block the writer), a 30 s busy timeout, and
`BEGIN IMMEDIATE` on every write transaction, which takes the write lock up front instead of
failing with "database is locked" when a read transaction tries to upgrade. On PostgreSQL the
study lock is `SELECT ... FOR UPDATE` on the study's row.
"""
from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url

from tuner.errors import StoreError
from tuner.store import schema
from tuner.store.schema import COMPLETED, RUNNING, SCHEMA_VERSION, metrics, studies, trials

DEFAULT_URL = "sqlite:///tuner.db"
SQLITE_BUSY_TIMEOUT_S = 30
_PG_INIT_LOCK = 0x74756E6572  # pg_advisory_xact_lock key serialising table creation




def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, safe to print."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Store:
    """An engine plus the URL to show in messages. `write()` and `read()` are transactions."""

    def __init__(self, engine: Engine, raw_url: str):
        self.engine = engine
        self.url = mask_url(raw_url)  # for messages
        self.raw_url = raw_url  # password included: for worker processes, never for printing

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(tuner_read=True)
            with conn.begin():
                yield conn

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url})"


def _sqlite_engine(url: str) -> Engine:
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("tuner_read") else "BEGIN IMMEDIATE")

    return engine


def _engine(url: str) -> Engine:
    if make_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    connect_args = {"connect_timeout": 10} if make_url(url).get_backend_name() == "postgresql" else {}
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def open_store(url: str | None = None) -> Store:
    """Opens (creating the tables if the database is empty) the store at `url`.

    Default: env TUNER_STORAGE, else sqlite:///tuner.db. A store written by a newer version of
    this tool is refused and left untouched.
    """
    url = url or os.environ.get("TUNER_STORAGE") or DEFAULT_URL
    shown = mask_url(url)
    store = None
    try:
        store = Store(_engine(url), url)
        _init_schema(store)
        return store
    except BaseException as exc:
        if store is not None:
            store.close()
        if isinstance(exc, (sa.exc.SQLAlchemyError, ImportError)):
            raise StoreError(f"{shown}: cannot open the store: {one_line(exc)}") from None
        raise


def _stored_version(conn: Connection, url: str) -> int | None:
    if not sa.inspect(conn).has_table("meta"):
        return None
    value = conn.execute(sa.select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")).scalar()
    if value is None or not value.isdigit():
        raise StoreError(f"{url}: has a 'meta' table without a schema_version: not a tuner store")
    return int(value)


def _init_schema(store: Store) -> None:
    with store.read() as conn:
        version = _stored_version(conn, store.url)
    if version is None:
        with store.write() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_INIT_LOCK})
            version = _stored_version(conn, store.url)
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


# --- studies --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Study:
    id: int
    name: str
    space: str  # the search-space YAML text
    objective: str
    direction: str  # min | max
    oracle: str
    settings: dict  # max_trials, seed, retries, heartbeat_timeout, hyperparameters, ...
    created: datetime
    counts: dict = field(default_factory=dict)  # trials per status


def _study(row, counts: dict | None = None) -> Study:
    return Study(row.id, row.name, row.space, row.objective, row.direction, row.oracle,
                 json.loads(row.settings), row.created, counts or {})


def _counts(conn: Connection, study_ids: list[int]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {i: {} for i in study_ids}
    query = (sa.select(trials.c.study_id, trials.c.status, sa.func.count())
             .where(trials.c.study_id.in_(study_ids)).group_by(trials.c.study_id, trials.c.status))
    for study_id, status, n in conn.execute(query):
        out[study_id][status] = n
    return out


def create_or_get_study(store: Store, *, name: str, space: str, objective: str, direction: str, oracle: str,
                        settings: dict) -> tuple[Study, bool]:
    """The study `name`, created if new; (study, created). An existing study must match exactly:
    resuming with another space or other settings would mix incomparable trials."""
    settings = json.loads(json.dumps(settings, sort_keys=True))
    wanted = {"space": space, "objective": objective, "direction": direction, "oracle": oracle}
    for attempt in range(2):
        try:
            with store.write() as conn:
                row = conn.execute(sa.select(studies).where(studies.c.name == name)).first()
                if row is None:
                    conn.execute(sa.insert(studies).values(name=name, settings=json.dumps(settings), version=0,
                                                           created=utcnow(), **wanted))
                    return _study(conn.execute(sa.select(studies).where(studies.c.name == name)).one()), True
        except sa.exc.IntegrityError:  # created concurrently by another process: compare with it
            if attempt:
                raise
            continue
        break
    study = _study(row)
    differ = [k for k, v in wanted.items() if getattr(study, k) != v]
    differ += [f"search.{k}" for k in sorted(set(settings) | set(study.settings))
               if settings.get(k) != study.settings.get(k)]
    if differ:
        raise StoreError(f"{store.url}: study '{name}' exists with a different {', '.join(differ)}; "
                         "resume it with the same space and search settings, or choose another study name")
    return study, False


def get_study(store: Store, name: str, conn: Connection | None = None) -> Study:
    if conn is None:
        with store.read() as conn:
            return get_study(store, name, conn)
    row = conn.execute(sa.select(studies).where(studies.c.name == name)).first()
    if row is None:
        names = conn.execute(sa.select(studies.c.name).order_by(studies.c.name)).scalars().all()
        known = f"studies: {', '.join(names)}" if names else "no studies yet"
        raise StoreError(f"{store.url}: no study named '{name}' ({known})")
    return _study(row, _counts(conn, [row.id])[row.id])


def list_studies(store: Store) -> list[Study]:
    with store.read() as conn:
        rows = conn.execute(sa.select(studies).order_by(studies.c.created, studies.c.id)).all()
        counts = _counts(conn, [r.id for r in rows])
    return [_study(r, counts[r.id]) for r in rows]


# --- trials and metrics: reads ------------------------------------------------------------


@dataclass(frozen=True)
class TrialRecord:
    id: int
    number: int
    kt_trial_id: str
    status: str
    params: dict  # the oracle's values; Hyperband adds tuner/epochs, tuner/initial_epoch, ...
    objective: float | None
    worker: str | None
    host: str | None
    pid: int | None
    started: datetime | None
    heartbeat: datetime | None
    ended: datetime | None
    error: str | None
    traceback: str | None
    retries: int

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (None while running)."""
        if self.started is None or self.ended is None:
            return None
        return (self.ended - self.started).total_seconds()


_TRIAL_COLUMNS = [trials.c[f] for f in TrialRecord.__dataclass_fields__ if f != "params"] + [trials.c.params]


def _trial(row) -> TrialRecord:
    data = dict(row._mapping)
    data["params"] = json.loads(data["params"])
    return TrialRecord(**data)


def list_trials(store: Store, study: str, status: str | None = None) -> list[TrialRecord]:
    """All trials of a study (one per run attempt) in number order, optionally of one status."""
    with store.read() as conn:
        study_id = get_study(store, study, conn).id
        query = sa.select(*_TRIAL_COLUMNS).where(trials.c.study_id == study_id).order_by(trials.c.number)
        if status is not None:
            query = query.where(trials.c.status == status)
        return [_trial(r) for r in conn.execute(query)]


def best_trial(store: Store, study: str) -> TrialRecord | None:
    """The completed trial with the best objective (by the study's direction); ties: lowest number."""
    with store.read() as conn:
        s = get_study(store, study, conn)
        order = trials.c.objective.desc() if s.direction == "max" else trials.c.objective.asc()
        row = conn.execute(sa.select(*_TRIAL_COLUMNS)
                           .where(trials.c.study_id == s.id, trials.c.status == COMPLETED,
                                  trials.c.objective.is_not(None))
                           .order_by(order, trials.c.number).limit(1)).first()
    return None if row is None else _trial(row)


@dataclass(frozen=True)
class MetricRecord:
    number: int  # the trial's number
    epoch: int | None  # None: the trial's final metrics
    name: str
    value: float | None


def list_metrics(store: Store, study: str, number: int | None = None) -> list[MetricRecord]:
    """Per-epoch and final metrics of a study's trials (or of trial `number`), epochs in order, finals last."""
    with store.read() as conn:
        study_id = get_study(store, study, conn).id
        query = (sa.select(trials.c.number, metrics.c.epoch, metrics.c.name, metrics.c.value)
                 .join(trials, trials.c.id == metrics.c.trial_id).where(trials.c.study_id == study_id)
                 .order_by(trials.c.number, sa.case((metrics.c.epoch.is_(None), 1), else_=0),
                           metrics.c.epoch, metrics.c.id))
        if number is not None:
            query = query.where(trials.c.number == number)
        return [MetricRecord(*r) for r in conn.execute(query)]


# --- trials and metrics: writes (the worker's side) ----------------------------------------


@contextmanager
def study_lock(store: Store, study_id: int, trial_id: int | None = None) -> Iterator[tuple[Connection, sa.Row]]:
    """A write transaction holding the study's lock; yields (connection, locked study row).

    SQLite: BEGIN IMMEDIATE already holds the database's write lock (FOR UPDATE is not
    rendered). PostgreSQL: the row lock makes other workers wait here, not fail. The row
    also carries `trial_status`, the current status of trial `trial_id` (the caller's own),
    read in the same round trip: visits are short because they make few.
    """
    status = sa.select(trials.c.status).where(trials.c.id == trial_id).scalar_subquery().label("trial_status")
    with store.write() as conn:
        row = conn.execute(sa.select(studies, status).where(studies.c.id == study_id)
                           .with_for_update(of=studies)).one()
        yield conn, row


def save_oracle_state(conn: Connection, study_id: int, state: str, version: int) -> None:
    conn.execute(sa.update(studies).where(studies.c.id == study_id).values(oracle_state=state, version=version))


def kt_states(conn: Connection, study_id: int, since_version: int | None = None) -> list[tuple[str, str]]:
    """(keras-tuner trial id, Trial state JSON) in number order: a later attempt's state wins."""
    query = sa.select(trials.c.kt_trial_id, trials.c.kt_state).where(trials.c.study_id == study_id)
    if since_version is not None:
        query = query.where(trials.c.kt_version > since_version)
    return [tuple(r) for r in conn.execute(query.order_by(trials.c.number))]


def insert_trial(conn: Connection, study_id: int, **values) -> tuple[int, int]:
    """Adds a trial numbered one past the study's last (callers hold the study lock); (id, number).
    One statement, INSERT ... SELECT max + 1 ... RETURNING: visits under the lock stay short."""
    names = list(values)
    number = sa.func.coalesce(sa.func.max(trials.c.number), 0) + 1
    source = sa.select(sa.literal(study_id, trials.c.study_id.type), number,
                       *(sa.literal(values[n], trials.c[n].type) for n in names)).where(trials.c.study_id == study_id)
    statement = (sa.insert(trials).from_select(["study_id", "number", *names], source)
                 .returning(trials.c.id, trials.c.number))
    trial_id, number = conn.execute(statement).one()
    return trial_id, number


def update_trial(conn: Connection, trial_id: int, **values) -> None:
    conn.execute(sa.update(trials).where(trials.c.id == trial_id).values(**values))


def stale_trials(conn: Connection, study_id: int, before: datetime) -> list[sa.Row]:
    """RUNNING trials whose last heartbeat is older than `before`."""
    return conn.execute(sa.select(trials.c.id, trials.c.number, trials.c.kt_trial_id, trials.c.heartbeat,
                                  trials.c.worker)
                        .where(trials.c.study_id == study_id, trials.c.status == RUNNING,
                               trials.c.heartbeat < before).order_by(trials.c.number)).all()


def count_running(conn: Connection, study_id: int) -> int:
    return conn.execute(sa.select(sa.func.count()).where(trials.c.study_id == study_id,
                                                         trials.c.status == RUNNING)).scalar_one()


def completed_number(conn: Connection, study_id: int, kt_trial_id: str) -> int | None:
    """The number of the completed run of keras-tuner trial `kt_trial_id` (Hyperband's parent)."""
    return conn.execute(sa.select(sa.func.max(trials.c.number))
                        .where(trials.c.study_id == study_id, trials.c.kt_trial_id == kt_trial_id,
                               trials.c.status == COMPLETED)).scalar()


def add_metrics(conn: Connection, trial_id: int, epoch: int | None, values: dict[str, float]) -> None:
    if values:
        conn.execute(sa.insert(metrics), [{"trial_id": trial_id, "epoch": epoch, "name": str(k), "value": float(v)}
                                          for k, v in values.items()])


def heartbeat(store: Store, trial_id: int) -> bool:
    """Marks a running trial alive; False if it is no longer RUNNING (another worker failed it)."""
    with store.write() as conn:
        return _beat(conn, trial_id)


def _beat(conn: Connection, trial_id: int) -> bool:
    result = conn.execute(sa.update(trials).where(trials.c.id == trial_id, trials.c.status == RUNNING)
                          .values(heartbeat=utcnow()))
    return result.rowcount == 1


def report_epoch(store: Store, trial_id: int, epoch: int, values: dict[str, float]) -> bool:
    """Writes one epoch's metrics now (a killed trial keeps its curve) and beats the heart.
    False, and nothing written, if the trial is no longer RUNNING."""
    with store.write() as conn:
        if not _beat(conn, trial_id):
            return False
        add_metrics(conn, trial_id, int(epoch), values)
        return True
