"""Reading a study's trials and metrics: what `tuner status`, `best` and the report show."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from tuner.store.engine import Store
from tuner.store.locked import trial_history
from tuner.store.schema import COMPLETED, DECISION, metrics, trials
from tuner.store.studies import get_study


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


def sampler_history(store: Store, study: str) -> list[tuple[dict, str, float | None, int | None]]:
    """`LockedStudy.sampler_history` of study `study`, read without its lock: the trials of an
    earlier study that warm start gives a sampler."""
    with store.read() as conn:
        return trial_history(conn, get_study(store, study, conn).id)


@dataclass(frozen=True)
class MetricRecord:
    number: int  # the trial's number
    epoch: int | None  # None: the trial's final metrics
    name: str
    value: float | None


def list_metrics(store: Store, study: str, number: int | None = None) -> list[MetricRecord]:
    """Per-epoch and final metrics of a study's trials (or of trial `number`), epochs in order, finals last.
    The pruner's decision rows are not metrics and are left out."""
    with store.read() as conn:
        study_id = get_study(store, study, conn).id
        query = (sa.select(trials.c.number, metrics.c.epoch, metrics.c.name, metrics.c.value)
                 .join(trials, trials.c.id == metrics.c.trial_id)
                 .where(trials.c.study_id == study_id, metrics.c.name != DECISION)
                 .order_by(trials.c.number, sa.case((metrics.c.epoch.is_(None), 1), else_=0),
                           metrics.c.epoch, metrics.c.id))
        if number is not None:
            query = query.where(trials.c.number == number)
        return [MetricRecord(*r) for r in conn.execute(query)]


def study_fingerprint(store: Store, study: str) -> str:
    """A short string that changes whenever the study's trials do: a trial added, ended or
    changing status, an epoch reported. Cheap (three aggregates), so a dashboard can poll it."""
    with store.read() as conn:
        s = get_study(store, study, conn)
        last_end = conn.execute(sa.select(sa.func.max(trials.c.ended)).where(trials.c.study_id == s.id)).scalar()
        n_metrics = conn.execute(sa.select(sa.func.count())
                                 .select_from(metrics.join(trials, trials.c.id == metrics.c.trial_id))
                                 .where(trials.c.study_id == s.id)).scalar_one()
    return json.dumps([sorted(s.counts.items()), str(last_end), n_metrics])
