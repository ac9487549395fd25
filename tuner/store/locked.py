"""A study under its lock: what workers and pruners read and write in one short transaction.

`api.study_lock` opens the transaction and hands out a `LockedStudy`; its methods are the only
things callers do there, and they take and return plain values, never rows or connections.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tuner.settings import StudySettings
from tuner.store.schema import COMPLETED, DECISION, RUNNING, metrics, studies, trials
from tuner.store.studies import settings_text, stored_settings


@dataclass(frozen=True)
class StaleTrial:
    """A RUNNING trial whose heartbeat stopped: what the worker that fails it needs."""

    id: int
    number: int
    kt_trial_id: str
    heartbeat: datetime
    worker: str | None


@dataclass(frozen=True)
class EpochView:
    """What a pruner reads about a study at one trial's epoch, read under the study lock."""

    epoch: int
    value: float  # the trial's objective at `epoch`
    curve: tuple[float, ...]  # the trial's objective at epochs 1..`epoch`, as reported
    decided: tuple[float, ...]  # the objective at `epoch` of the other trials the pruner decided there
    completed: tuple[float, ...]  # the objective at `epoch` of the completed trials
    completed_trials: int  # how many trials of the study completed


class LockedStudy:
    """The locked study row (`version`, `oracle_state`, `settings`, the database's `now`, the
    status of the caller's own trial) and the writes a visit makes under the lock."""

    def __init__(self, conn: Connection, row):
        self._conn = conn
        self.id: int = row.id
        self.name: str = row.name
        self.version: int = row.version
        self.oracle_state: str | None = row.oracle_state  # JSON; None until the first worker saves it
        self.settings: StudySettings = stored_settings(row.settings, objective=row.objective,
                                                       direction=row.direction, oracle=row.oracle)
        self.now: datetime = row.now  # the database's clock: trial times and staleness use it
        self.trial_status: str | None = row.trial_status

    # --- the oracle and its trials ------------------------------------------------------------

    def save_oracle_state(self, state: str, version: int) -> None:
        self._conn.execute(sa.update(studies).where(studies.c.id == self.id).values(oracle_state=state,
                                                                                    version=version))

    def save_settings(self, settings: StudySettings) -> None:
        """New settings (a grown budget), with a version bump so that every worker re-reads them."""
        self._conn.execute(sa.update(studies).where(studies.c.id == self.id)
                           .values(settings=settings_text(settings), version=self.version + 1))

    def kt_states(self, since_version: int | None = None) -> list[tuple[str, str]]:
        """(keras-tuner trial id, Trial state JSON) in number order: a later attempt's state wins."""
        query = sa.select(trials.c.kt_trial_id, trials.c.kt_state).where(trials.c.study_id == self.id)
        if since_version is not None:
            query = query.where(trials.c.kt_version > since_version)
        return [tuple(r) for r in self._conn.execute(query.order_by(trials.c.number))]

    def insert_trial(self, **values) -> tuple[int, int]:
        """Adds a trial numbered one past the study's last; (id, number). One statement,
        INSERT ... SELECT max + 1 ... RETURNING: visits under the lock stay short."""
        names = list(values)
        number = sa.func.coalesce(sa.func.max(trials.c.number), 0) + 1
        source = sa.select(sa.literal(self.id, trials.c.study_id.type), number,
                           *(sa.literal(values[n], trials.c[n].type) for n in names)).where(trials.c.study_id == self.id)
        statement = (sa.insert(trials).from_select(["study_id", "number", *names], source)
                     .returning(trials.c.id, trials.c.number))
        trial_id, number = self._conn.execute(statement).one()
        return trial_id, number

    def update_trial(self, trial_id: int, **values) -> None:
        self._conn.execute(sa.update(trials).where(trials.c.id == trial_id).values(**values))

    def add_metrics(self, trial_id: int, epoch: int | None, values: dict[str, float]) -> None:
        add_metrics(self._conn, trial_id, epoch, values)

    def stale_trials(self, before: datetime) -> list[StaleTrial]:
        """RUNNING trials whose last heartbeat is older than `before` (a time on the database's clock)."""
        rows = self._conn.execute(sa.select(trials.c.id, trials.c.number, trials.c.kt_trial_id, trials.c.heartbeat,
                                            trials.c.worker)
                                  .where(trials.c.study_id == self.id, trials.c.status == RUNNING,
                                         trials.c.heartbeat < before).order_by(trials.c.number))
        return [StaleTrial(*r) for r in rows]

    def count_running(self) -> int:
        return self._counts().get(RUNNING, 0)

    def completed_number(self, kt_trial_id: str) -> int | None:
        """The number of the completed run of keras-tuner trial `kt_trial_id` (Hyperband's parent)."""
        return self._conn.execute(sa.select(sa.func.max(trials.c.number))
                                  .where(trials.c.study_id == self.id, trials.c.kt_trial_id == kt_trial_id,
                                         trials.c.status == COMPLETED)).scalar()

    def checkpoints_to_drop(self, live: set[str]) -> set[int]:
        """Numbers of the ended trials whose checkpoint nothing needs any more: their keras-tuner id
        is not in `live` (Hyperband's live brackets) and no running trial continues them.
        Running trials keep theirs (they write it as they end)."""
        rows = self._conn.execute(sa.select(trials.c.number, trials.c.kt_trial_id, trials.c.status, trials.c.params)
                                  .where(trials.c.study_id == self.id)).all()
        parents = {json.loads(r.params).get("tuner/trial_id") for r in rows if r.status == RUNNING}
        return {r.number for r in rows if r.status != RUNNING and r.kt_trial_id not in live | parents}

    def handed_out(self) -> int:
        """Distinct trials handed out so far (re-runs of lost ones counted once)."""
        return self._conn.execute(sa.select(sa.func.count(sa.distinct(trials.c.kt_trial_id)))
                                  .where(trials.c.study_id == self.id)).scalar_one()

    def sampler_history(self) -> list[tuple[dict, str, float | None, int | None]]:
        """What a model-based sampler learns from (`tuner.search.tpe`): see `trial_history`."""
        return trial_history(self._conn, self.id)

    # --- pruning: a trial's decisions, recorded with its curve ----------------------------------

    def decision(self, trial_id: int, epoch: int) -> bool | None:
        """The pruner's recorded decision for trial `trial_id` at `epoch`: True went on, False
        stopped, None not decided."""
        value = self._conn.execute(sa.select(metrics.c.value).where(
            metrics.c.trial_id == trial_id, metrics.c.epoch == epoch, metrics.c.name == DECISION)).scalar()
        return None if value is None else value > 0.5

    def record_decision(self, trial_id: int, epoch: int, go_on: bool) -> None:
        add_metrics(self._conn, trial_id, epoch, {DECISION: 1.0 if go_on else 0.0})

    def epoch_view(self, trial_id: int, objective: str, epoch: int, value: float) -> EpochView:
        """What a pruner may read to decide trial `trial_id` at `epoch`."""
        mine = curve(self._conn, trial_id, objective)
        return EpochView(epoch, value, tuple(v for e, v in sorted(mine.items()) if e <= epoch),
                         tuple(self._values_at(objective, epoch, decided=True, exclude=trial_id)),
                         tuple(self._values_at(objective, epoch, status=COMPLETED)),
                         self._counts().get(COMPLETED, 0))

    def _values_at(self, name: str, epoch: int, *, decided: bool = False, status: str | None = None,
                   exclude: int | None = None) -> list[float]:
        value = metrics.alias("value")
        query = (sa.select(value.c.value).join(trials, trials.c.id == value.c.trial_id)
                 .where(trials.c.study_id == self.id, value.c.name == name, value.c.epoch == epoch,
                        value.c.value.is_not(None)))
        if decided:
            mark = metrics.alias("mark")
            query = query.where(sa.exists().where(mark.c.trial_id == value.c.trial_id, mark.c.epoch == epoch,
                                                  mark.c.name == DECISION))
        if status is not None:
            query = query.where(trials.c.status == status)
        if exclude is not None:
            query = query.where(trials.c.id != exclude)
        return [float(v) for v in self._conn.execute(query).scalars()]

    def _counts(self) -> dict[str, int]:
        query = (sa.select(trials.c.status, sa.func.count()).where(trials.c.study_id == self.id)
                 .group_by(trials.c.status))
        return {status: n for status, n in self._conn.execute(query)}


def add_metrics(conn: Connection, trial_id: int, epoch: int | None, values: dict[str, float]) -> None:
    if values:
        conn.execute(sa.insert(metrics), [{"trial_id": trial_id, "epoch": epoch, "name": str(k), "value": float(v)}
                                          for k, v in values.items()])


def curve(conn: Connection, trial_id: int, name: str) -> dict[int, float]:
    """Trial `trial_id`'s per-epoch values of metric `name`."""
    rows = conn.execute(sa.select(metrics.c.epoch, metrics.c.value)
                        .where(metrics.c.trial_id == trial_id, metrics.c.name == name, metrics.c.epoch.is_not(None)))
    return {int(e): v for e, v in rows}


def trial_history(conn: Connection, study_id: int) -> list[tuple[dict, str, float | None, int | None]]:
    """(values, status, objective, epoch its pruner stopped it at or None) of a study's trials in
    number order; a pruned trial's objective is its value at that epoch."""
    stopped = (sa.select(sa.func.min(metrics.c.epoch))
               .where(metrics.c.trial_id == trials.c.id, metrics.c.name == DECISION, metrics.c.value < 0.5)
               .scalar_subquery())
    rows = conn.execute(sa.select(trials.c.params, trials.c.status, trials.c.objective, stopped)
                        .where(trials.c.study_id == study_id).order_by(trials.c.number))
    return [(json.loads(params), status, objective, epoch) for params, status, objective, epoch in rows]
