"""The worker's side of the store: the study lock, trial rows, heartbeats and per-epoch metrics.

Every write is a short transaction (see `engine`). On PostgreSQL the study lock is
`SELECT ... FOR UPDATE` on the study's row. Trial times (start, heartbeat, end) are the
database's clock, never a worker's, so workers on machines whose clocks disagree still judge
each other's heartbeats right.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from tuner.store.engine import Store
from tuner.store.schema import COMPLETED, DECISION, RUNNING, metrics, studies, trials


def utcnow() -> datetime:
    """This machine's clock as naive UTC; trial times use `database_now` instead."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class database_now(FunctionElement):  # noqa: N801 (an SQL function, named like sa.func's)
    """The database's current time as naive UTC: the one clock heartbeats are written and judged by."""

    type = sa.DateTime()
    inherit_cache = True


@compiles(database_now, "sqlite")
def _sqlite_now(element, compiler, **kw) -> str:
    # CURRENT_TIMESTAMP has 1 s resolution; %f gives milliseconds, padded to the six digits
    # SQLAlchemy writes, so times from Python and from SQL compare as text.
    return "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


@compiles(database_now, "postgresql")
def _postgresql_now(element, compiler, **kw) -> str:
    return "(clock_timestamp() AT TIME ZONE 'UTC')"  # the time now, not the transaction's start


@compiles(database_now)
def _standard_now(element, compiler, **kw) -> str:
    return "CURRENT_TIMESTAMP"


# --- trials and metrics: writes (the worker's side) ----------------------------------------


@contextmanager
def study_lock(store: Store, study_id: int, trial_id: int | None = None) -> Iterator[tuple[Connection, sa.Row]]:
    """A write transaction holding the study's lock; yields (connection, locked study row).

    SQLite: BEGIN IMMEDIATE already holds the database's write lock (FOR UPDATE is not
    rendered). PostgreSQL: the row lock makes other workers wait here, not fail. The row
    also carries `trial_status`, the current status of trial `trial_id` (the caller's own),
    and `now`, the database's time, read in the same round trip: visits are short because
    they make few.
    """
    status = sa.select(trials.c.status).where(trials.c.id == trial_id).scalar_subquery().label("trial_status")
    with store.write() as conn:
        row = conn.execute(sa.select(studies, status, database_now().label("now")).where(studies.c.id == study_id)
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
    """RUNNING trials whose last heartbeat is older than `before` (a time on the database's clock)."""
    return conn.execute(sa.select(trials.c.id, trials.c.number, trials.c.kt_trial_id, trials.c.heartbeat,
                                  trials.c.worker)
                        .where(trials.c.study_id == study_id, trials.c.status == RUNNING,
                               trials.c.heartbeat < before).order_by(trials.c.number)).all()


def count_running(conn: Connection, study_id: int) -> int:
    return count_status(conn, study_id, RUNNING)


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
                          .values(heartbeat=database_now()))
    return result.rowcount == 1


def report_epoch(store: Store, trial_id: int, epoch: int, values: dict[str, float]) -> bool:
    """Writes one epoch's metrics now (a killed trial keeps its curve) and beats the heart.
    False, and nothing written, if the trial is no longer RUNNING."""
    with store.write() as conn:
        if not _beat(conn, trial_id):
            return False
        add_metrics(conn, trial_id, int(epoch), values)
        return True


def resize_budget(store: Store, study_id: int, max_trials: int, *, pin: dict | None = None) -> dict:
    """Sets a study's `max_trials` under the study lock; its new settings. `pin`: settings that
    stay as they were computed from the old budget (the Bayesian oracle's random start), written
    if absent. A budget only grows: a smaller one is refused (StoreError), checked under the lock
    so two commands racing cannot shrink it. The version bump makes every worker re-read the
    budget at its next visit."""
    from tuner.errors import StoreError

    with study_lock(store, study_id) as (conn, row):
        settings = json.loads(row.settings)
        budget = settings.get("max_trials") or 0
        if max_trials < budget:
            handed_out = conn.execute(sa.select(sa.func.count(sa.distinct(trials.c.kt_trial_id)))
                                      .where(trials.c.study_id == study_id)).scalar_one()
            raise StoreError(f"--max-trials {max_trials}: study '{row.name}' has a budget of {budget} trials "
                             f"({handed_out} run) and a budget only grows; give at least {budget}, or a new --study")
        settings = {**(pin or {}), **settings, "max_trials": max_trials}
        conn.execute(sa.update(studies).where(studies.c.id == study_id)
                     .values(settings=json.dumps(settings, sort_keys=True), version=row.version + 1))
        return settings


def checkpoints_to_drop(conn: Connection, study_id: int, live: set[str]) -> set[int]:
    """Numbers of a study's ended trials whose checkpoint nothing needs any more: their
    keras-tuner id is not in `live` (Hyperband's live brackets) and no running trial continues
    them. Running trials keep theirs (they write it as they end)."""
    rows = conn.execute(sa.select(trials.c.number, trials.c.kt_trial_id, trials.c.status, trials.c.params)
                        .where(trials.c.study_id == study_id)).all()
    parents = {json.loads(r.params).get("tuner/trial_id") for r in rows if r.status == RUNNING}
    return {r.number for r in rows if r.status != RUNNING and r.kt_trial_id not in live | parents}


# --- pruning: a trial's decisions, recorded with its curve ------------------------------------


def decision(conn: Connection, trial_id: int, epoch: int) -> bool | None:
    """The pruner's recorded decision for trial `trial_id` at `epoch`: True went on, False
    stopped, None not decided."""
    value = conn.execute(sa.select(metrics.c.value).where(metrics.c.trial_id == trial_id, metrics.c.epoch == epoch,
                                                          metrics.c.name == DECISION)).scalar()
    return None if value is None else value > 0.5


def stopped_at(store: Store, trial_id: int, objective: str) -> tuple[int, float | None] | None:
    """(epoch, objective there) where the pruner stopped trial `trial_id`; None if it did not."""
    with store.read() as conn:
        epoch = conn.execute(sa.select(sa.func.min(metrics.c.epoch)).where(
            metrics.c.trial_id == trial_id, metrics.c.name == DECISION, metrics.c.value < 0.5)).scalar()
        return None if epoch is None else (int(epoch), curve(conn, trial_id, objective).get(int(epoch)))


def record_decision(conn: Connection, trial_id: int, epoch: int, go_on: bool) -> None:
    add_metrics(conn, trial_id, epoch, {DECISION: 1.0 if go_on else 0.0})


def curve(conn: Connection, trial_id: int, name: str) -> dict[int, float]:
    """Trial `trial_id`'s per-epoch values of metric `name`."""
    rows = conn.execute(sa.select(metrics.c.epoch, metrics.c.value)
                        .where(metrics.c.trial_id == trial_id, metrics.c.name == name, metrics.c.epoch.is_not(None)))
    return {int(e): v for e, v in rows}


def values_at(conn: Connection, study_id: int, name: str, epoch: int, *, decided: bool = False,
              status: str | None = None, exclude: int | None = None) -> list[float]:
    """Metric `name` at `epoch` across a study's trials: of those with a pruner decision at that
    epoch (`decided`), or of a given `status`; trial `exclude` left out."""
    value = metrics.alias("value")
    query = (sa.select(value.c.value).join(trials, trials.c.id == value.c.trial_id)
             .where(trials.c.study_id == study_id, value.c.name == name, value.c.epoch == epoch,
                    value.c.value.is_not(None)))
    if decided:
        mark = metrics.alias("mark")
        query = query.where(sa.exists().where(mark.c.trial_id == value.c.trial_id, mark.c.epoch == epoch,
                                              mark.c.name == DECISION))
    if status is not None:
        query = query.where(trials.c.status == status)
    if exclude is not None:
        query = query.where(trials.c.id != exclude)
    return [float(v) for v in conn.execute(query).scalars()]


def count_status(conn: Connection, study_id: int, status: str) -> int:
    return conn.execute(sa.select(sa.func.count()).where(trials.c.study_id == study_id,
                                                         trials.c.status == status)).scalar_one()


def sampler_history(conn: Connection, study_id: int) -> list[tuple[dict, str, float | None, int | None]]:
    """(values, status, objective, epoch its pruner stopped it at or None) of a study's trials in
    number order: what a model-based sampler learns from (`tuner.search.tpe`)."""
    stopped = (sa.select(sa.func.min(metrics.c.epoch))
               .where(metrics.c.trial_id == trials.c.id, metrics.c.name == DECISION, metrics.c.value < 0.5)
               .scalar_subquery())
    rows = conn.execute(sa.select(trials.c.params, trials.c.status, trials.c.objective, stopped)
                        .where(trials.c.study_id == study_id).order_by(trials.c.number))
    return [(json.loads(params), status, objective, epoch) for params, status, objective, epoch in rows]
