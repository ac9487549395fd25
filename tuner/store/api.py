"""The worker's side of the store: the study lock, heartbeats, per-epoch metrics, the budget.

Every write is a short transaction (see `engine`). On PostgreSQL the study lock is
`SELECT ... FOR UPDATE` on the study's row. Trial times (start, heartbeat, end) are the
database's clock, never a worker's, so workers on machines whose clocks disagree still judge
each other's heartbeats right.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from tuner.errors import StoreError
from tuner.settings import StudySettings
from tuner.store.engine import Store
from tuner.store.locked import LockedStudy, add_metrics, curve
from tuner.store.schema import DECISION, RUNNING, metrics, studies, trials


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


# --- the study lock, and the writes made without it ------------------------------------------


@contextmanager
def study_lock(store: Store, study_id: int, trial_id: int | None = None) -> Iterator[LockedStudy]:
    """A write transaction holding the study's lock, as a `LockedStudy`.

    SQLite: BEGIN IMMEDIATE already holds the database's write lock (FOR UPDATE is not
    rendered). PostgreSQL: the row lock makes other workers wait here, not fail. The locked
    study also carries `trial_status`, the current status of trial `trial_id` (the caller's
    own), and `now`, the database's time, read in the same round trip: visits are short because
    they make few.
    """
    status = sa.select(trials.c.status).where(trials.c.id == trial_id).scalar_subquery().label("trial_status")
    with store.write() as conn:
        row = conn.execute(sa.select(studies, status, database_now().label("now")).where(studies.c.id == study_id)
                           .with_for_update(of=studies)).one()
        yield LockedStudy(conn, row)


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


def resize_budget(store: Store, study_id: int, max_trials: int, *, initial_points: int | None = None
                  ) -> StudySettings:
    """Sets a study's `max_trials` under the study lock; its new settings. `initial_points`: the
    random start of the Bayesian or TPE oracle computed from the old budget, kept if the study
    has none yet. A budget only grows: a smaller one is refused (StoreError), checked under the
    lock so two commands racing cannot shrink it. The version bump makes every worker re-read the
    budget at its next visit."""
    with study_lock(store, study_id) as study:
        settings = study.settings
        budget = settings.search.max_trials or 0
        if max_trials < budget:
            raise StoreError(f"--max-trials {max_trials}: study '{study.name}' has a budget of {budget} trials "
                             f"({study.handed_out()} run) and a budget only grows; give at least {budget}, "
                             "or a new --study")
        settings = dataclasses.replace(settings, search=dataclasses.replace(settings.search, max_trials=max_trials),
                                       initial_points=settings.initial_points or initial_points)
        study.save_settings(settings)
        return settings


def stopped_at(store: Store, trial_id: int, objective: str) -> tuple[int, float | None] | None:
    """(epoch, objective there) where the pruner stopped trial `trial_id`; None if it did not."""
    with store.read() as conn:
        epoch = conn.execute(sa.select(sa.func.min(metrics.c.epoch)).where(
            metrics.c.trial_id == trial_id, metrics.c.name == DECISION, metrics.c.value < 0.5)).scalar()
        return None if epoch is None else (int(epoch), curve(conn, trial_id, objective).get(int(epoch)))
