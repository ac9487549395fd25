"""The study store: studies, trials and their metrics in any SQLAlchemy database.

The only code that speaks SQL: `schema` (the tables), `engine` (opening; database errors
become `StoreError`), `locks` (who holds a locked SQLite file), `names` (the rule for study
names), `studies`, `reads` (trials and metrics as records), `api` (the worker's side: the study
lock, heartbeats, the budget), `locked` (`LockedStudy`: what a visit under the lock reads and
writes, a pruner's `EpochView` among them). Callers get plain objects (frozen records, tuples,
dicts), never rows or connections. Light on purpose (SQLAlchemy only, no TensorFlow): `tuner
status`, reports and workers on other machines open it without paying for a TensorFlow import.
"""
from tuner.errors import StoreError
from tuner.store.engine import DEFAULT_URL, Store, mask_url, open_store
from tuner.store.locked import EpochView, LockedStudy, StaleTrial
from tuner.store.names import STUDY_NAME_RULE, check_study_name, check_worker_id
from tuner.store.reads import MetricRecord, TrialRecord, best_trial, list_metrics, list_trials, sampler_history, \
    study_fingerprint
from tuner.store.schema import COMPLETED, FAILED, INTERRUPTED, PRUNED, RUNNING, SCHEMA_VERSION, STATUSES
from tuner.store.studies import Study, create_or_get_study, get_study, latest_study, list_studies

__all__ = [
    "DEFAULT_URL", "EpochView", "LockedStudy", "MetricRecord", "STUDY_NAME_RULE", "StaleTrial", "Store", "StoreError",
    "Study", "TrialRecord", "best_trial",
    "check_study_name", "check_worker_id",
    "create_or_get_study", "get_study", "latest_study", "list_metrics", "list_studies", "list_trials", "mask_url",
    "open_store", "sampler_history",
    "study_fingerprint",
    "COMPLETED", "FAILED", "INTERRUPTED", "PRUNED", "RUNNING", "SCHEMA_VERSION", "STATUSES",
]
