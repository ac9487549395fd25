"""The study store: studies, trials and their metrics in any SQLAlchemy database.

Light on purpose (SQLAlchemy only, no TensorFlow): `tuner status`, reports and workers on
other machines open it without paying for a TensorFlow import.
"""
from tuner.store.api import (
    DEFAULT_URL,
    MetricRecord,
    Store,
    StoreError,
    Study,
    TrialRecord,
    best_trial,
    get_study,
    list_metrics,
    list_studies,
    list_trials,
    mask_url,
    open_store,
)
from tuner.store.schema import COMPLETED, FAILED, INTERRUPTED, RUNNING, SCHEMA_VERSION, STATUSES

__all__ = [
    "DEFAULT_URL", "MetricRecord", "Store", "StoreError", "Study", "TrialRecord", "best_trial", "get_study",
    "list_metrics", "list_studies", "list_trials", "mask_url", "open_store",
    "COMPLETED", "FAILED", "INTERRUPTED", "RUNNING", "SCHEMA_VERSION", "STATUSES",
]
