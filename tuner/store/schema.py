"""The store's tables. SCHEMA_VERSION is written into `meta`; bump it with every table change.

Oracle and trial states are JSON text (not a JSON column type) so that SQLite and PostgreSQL
store them the same way. Times are naive UTC.
"""
from __future__ import annotations

import sqlalchemy as sa

SCHEMA_VERSION = 1

# Trial statuses. INTERRUPTED trials (Ctrl-C, SIGTERM) and FAILED ones lost with their worker
# have their values handed out again as a new trial; a FAILED trial function is final. PRUNED:
# stopped early by `search.early_terminate`, its curve and last objective kept. A new status is
# a new value in a text column, not a table change: SCHEMA_VERSION stays (older tuners show it
# as it is written).
RUNNING, COMPLETED, FAILED, INTERRUPTED, PRUNED = "RUNNING", "COMPLETED", "FAILED", "INTERRUPTED", "PRUNED"
STATUSES = (RUNNING, COMPLETED, FAILED, INTERRUPTED, PRUNED)

# Metric rows named here are the pruner's decisions, not measurements: at a decided epoch,
# 1.0 the trial went on, 0.0 it was stopped. Kept beside the trial's curve, so a decision is
# recorded with the trial it is about, and readers of curves leave them out.
DECISION = "tuner/continue"

STUDY_NAME_MAX = 200  # characters; the rule itself is names.check_study_name

metadata = sa.MetaData()

meta = sa.Table(
    "meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

studies = sa.Table(
    "studies", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(STUDY_NAME_MAX), nullable=False, unique=True),
    sa.Column("space", sa.Text, nullable=False),  # the search-space YAML, verbatim
    sa.Column("objective", sa.String(200), nullable=False),
    sa.Column("direction", sa.String(3), nullable=False),  # min | max
    sa.Column("oracle", sa.String(32), nullable=False),  # random | bayesian | hyperband | grid
    sa.Column("settings", sa.Text, nullable=False),  # JSON: max_trials, seed, retries, hyperparameters...
    sa.Column("oracle_state", sa.Text),  # JSON; NULL until the first worker builds the oracle
    sa.Column("version", sa.Integer, nullable=False, default=0),  # bumped on every oracle_state write
    sa.Column("created", sa.DateTime, nullable=False),
)

trials = sa.Table(
    "trials", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),  # 1-based per study, one per run attempt
    sa.Column("kt_trial_id", sa.String(64), nullable=False),  # keras-tuner's id; shared by retries
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("params", sa.Text, nullable=False),  # JSON: the oracle's values, Hyperband's tuner/* included
    sa.Column("objective", sa.Float),
    sa.Column("worker", sa.String(200)),
    sa.Column("host", sa.String(200)),
    sa.Column("pid", sa.Integer),
    sa.Column("started", sa.DateTime),
    sa.Column("heartbeat", sa.DateTime),
    sa.Column("ended", sa.DateTime),
    sa.Column("error", sa.Text),  # one-line reason
    sa.Column("traceback", sa.Text),
    sa.Column("retries", sa.Integer, nullable=False, default=0),  # earlier failed runs of these values
    sa.Column("kt_state", sa.Text, nullable=False),  # JSON keras-tuner Trial state
    sa.Column("kt_version", sa.Integer, nullable=False),  # studies.version when kt_state was written
    sa.UniqueConstraint("study_id", "number"),
    sa.Index("ix_trials_study_status", "study_id", "status"),
    sa.Index("ix_trials_study_version", "study_id", "kt_version"),
)

metrics = sa.Table(
    "metrics", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("trial_id", sa.Integer, sa.ForeignKey("trials.id", ondelete="CASCADE"), nullable=False),
    sa.Column("epoch", sa.Integer),  # NULL: the trial's final metrics
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("value", sa.Float),
    sa.Index("ix_metrics_trial", "trial_id", "epoch"),
)
