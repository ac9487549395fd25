"""The store on real SQLite files and a real PostgreSQL server: schema, errors, reads, locking."""
import ast
import dataclasses
import hashlib
import json
import math
import re
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import tuner
from tuner.store import (COMPLETED, FAILED, RUNNING, SCHEMA_VERSION, Store, StoreError, best_trial,
                         create_or_get_study, get_study, list_metrics, list_studies, list_trials, mask_url, open_store,
                         study_fingerprint)
from tuner.errors import ConfigError
from tuner.settings import SearchSettings, StudySettings
from tuner.store import api, schema

SEARCH = SearchSettings(objective="score", direction="max", oracle="random", max_trials=5, seed=1, retries=1)
SETTINGS = StudySettings(SEARCH, heartbeat_timeout=60.0)


def settings(**search) -> StudySettings:
    return dataclasses.replace(SETTINGS, search=dataclasses.replace(SEARCH, **search))


def make_study(store, name="s", direction="max", **overrides):
    fields = dict(name=name, space="parameters: {}\n", settings=settings(direction=direction))
    return create_or_get_study(store, **{**fields, **overrides})[0]


def running_trial(store, study, params=None):
    """A RUNNING trial row as a worker writes it, under the study lock; (row id, number)."""
    now = api.utcnow()
    with api.study_lock(store, study.id) as locked:
        return locked.insert_trial(kt_trial_id=f"kt{time.monotonic_ns()}", status=RUNNING,
                                params=json.dumps(params or {}), worker="w0", host="h", pid=1, started=now,
                                heartbeat=now, retries=0, kt_state="{}", kt_version=1)


def end_trial(store, trial_id, status, objective=None, seconds=1.0):
    with store.write() as conn:  # the update a worker makes under the lock, written directly
        trials = schema.trials
        started = conn.execute(sa.select(trials.c.started).where(trials.c.id == trial_id)).scalar()
        conn.execute(sa.update(trials).where(trials.c.id == trial_id)
                     .values(status=status, objective=objective, ended=started + timedelta(seconds=seconds)))


# --- opening and the schema version --------------------------------------------------------


def test_open_creates_the_tables_once_and_records_the_schema_version(store_url):
    open_store(store_url).close()
    store = open_store(store_url)  # a second open finds the tables and leaves them be
    with store.read() as conn:
        assert set(sa.inspect(conn).get_table_names()) >= {"meta", "studies", "trials", "metrics"}
        version = conn.execute(sa.select(schema.meta.c.value)).scalar_one()
    assert version == str(SCHEMA_VERSION)
    store.close()


def test_concurrent_first_opens_of_an_empty_database_all_succeed(store_url):
    errors, stores = [], []

    def open_it():
        try:
            stores.append(open_store(store_url))
        except Exception as exc:  # noqa: BLE001  (collected and asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with stores[0].read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.meta)).scalar_one() == 1
    for s in stores:
        s.close()


def test_sqlite_store_uses_wal_busy_timeout_and_foreign_keys(sqlite_url):
    store = open_store(sqlite_url)
    with store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.close()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_store_from_a_newer_version_is_refused_and_never_altered(store_url):
    store = open_store(store_url)
    make_study(store)
    with store.write() as conn:
        conn.execute(sa.update(schema.meta).values(value=str(SCHEMA_VERSION + 1)))
    store.close()
    db_file = Path(sa.engine.make_url(store_url).database) if store_url.startswith("sqlite") else None
    before = _digest(db_file) if db_file else None

    with pytest.raises(StoreError) as err:
        open_store(store_url)
    message = str(err.value)
    assert "\n" not in message and "newer" in message and f"version {SCHEMA_VERSION + 1}" in message
    assert mask_url(store_url) in message

    if db_file:
        assert _digest(db_file) == before
        assert not Path(f"{db_file}-wal").exists() or Path(f"{db_file}-wal").stat().st_size == 0
    engine = sa.create_engine(store_url)
    with engine.connect() as conn:  # read behind the store's back: still the newer version, study intact
        assert conn.execute(sa.select(schema.meta.c.value)).scalar_one() == str(SCHEMA_VERSION + 1)
        assert conn.execute(sa.select(schema.studies.c.name)).scalars().all() == ["s"]
    engine.dispose()


def test_a_foreign_meta_table_is_not_taken_for_a_store(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    with pytest.raises(StoreError, match="not a tuner store"):
        open_store(f"sqlite:///{path}")


@pytest.mark.parametrize("url, expected", [
    ("postgresql+psycopg://alice:s3cret@127.0.0.1:1/tuner", "postgresql+psycopg://alice:***@127.0.0.1:1/tuner: cannot open"),
    ("nosuchdb://alice:s3cret@host/x", "nosuchdb://alice:***@host/x: cannot open"),
    ("not a url", "not a url: cannot open the store: not a database URL (--storage or TUNER_STORAGE); "
                  "use sqlite:///"),
    ("sqlite:////nonexistent-dir/tuner.db", "sqlite:////nonexistent-dir/tuner.db: cannot open the store: cannot create "
                                            "/nonexistent-dir/tuner.db: the folder /nonexistent-dir does not exist"),
])
def test_bad_or_unreachable_urls_give_one_line_errors_with_the_password_masked(url, expected):
    with pytest.raises(StoreError) as err:
        open_store(url)
    message = str(err.value)
    assert message.startswith(expected)
    assert "\n" not in message and "s3cret" not in message


@pytest.mark.parametrize("url", ["postgresql+psycopg://alice:s3@cret@db.example/tuner",  # '@' not escaped
                                 "postgresql+psycopg://alice@db.example/tuner?password=s3cret",
                                 "postgresql://alice:s3cret@db.example:notaport/tuner"])  # does not parse
def test_a_password_is_masked_however_the_url_carries_it(url):
    shown = mask_url(url)
    assert "s3" not in shown and "cret" not in shown and "alice" in shown and "db.example" in shown


def test_the_store_shows_a_masked_url_and_keeps_the_real_one_for_workers():
    url = "postgresql+psycopg://alice:s3cret@db.example:5432/tuner"
    store = Store(sa.create_engine(url), url)  # no connection is made
    assert store.url == "postgresql+psycopg://alice:***@db.example:5432/tuner"
    assert store.raw_url == url and "s3cret" not in repr(store)


def test_a_database_failure_is_one_store_error_line_naming_the_masked_url(store_url):
    if store_url.startswith("postgresql"):  # the test server trusts loopback, so any password gets in
        store_url = sa.engine.make_url(store_url).set(password="s3cret").render_as_string(hide_password=False)
    store = open_store(store_url)
    make_study(store)
    with store.write() as conn:  # another program drops the tables behind the store's back
        schema.metadata.drop_all(conn)
    with pytest.raises(StoreError) as err:
        list_studies(store)
    message = str(err.value)
    assert message.startswith(f"{mask_url(store_url)}: ") and "studies" in message  # the driver's own words
    assert "\n" not in message and "s3cret" not in message
    assert isinstance(err.value.__cause__, sa.exc.SQLAlchemyError)  # kept for whoever debugs it
    store.close()


def test_only_the_store_imports_sqlalchemy_or_names_its_tables():
    root = Path(tuner.__file__).parent
    tables = {"metadata", "meta", "studies", "trials", "metrics"}
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] == "store":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                offenders += [f"{path}: import {a.name}" for a in node.names if a.name.split(".")[0] == "sqlalchemy"]
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module.split(".")[0] == "sqlalchemy":
                    offenders.append(f"{path}: from {node.module}")
                elif node.module == "tuner.store.schema" and tables & {a.name for a in node.names}:
                    offenders.append(f"{path}: the store's tables")
    assert offenders == []


def _contents(store_url: str) -> dict:
    """Every table of the database with its rows, read behind the store's back."""
    engine = sa.create_engine(store_url)
    with engine.connect() as conn:
        found = {name: sorted(map(tuple, conn.execute(sa.select(sa.Table(name, sa.MetaData(), autoload_with=conn)))))
                 for name in sa.inspect(conn).get_table_names()}
    engine.dispose()
    return found


@pytest.mark.parametrize("read_only", [False, True], ids=["writer", "reader"])
def test_a_database_with_other_tables_is_refused_and_nothing_is_written_to_it(store_url, read_only):
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:  # another application's own `trials` table
        conn.exec_driver_sql("CREATE TABLE trials (id INTEGER PRIMARY KEY, drug TEXT)")
        conn.exec_driver_sql("INSERT INTO trials (id, drug) VALUES (1, 'x')")
    engine.dispose()
    db_file = Path(sa.engine.make_url(store_url).database) if store_url.startswith("sqlite") else None
    before, digest = _contents(store_url), db_file and _digest(db_file)
    with pytest.raises(StoreError, match=r"not a tuner store: the database holds other tables \(trials\)"):
        open_store(store_url, read_only=read_only)
    assert _contents(store_url) == before == {"trials": [(1, "x")]}
    if db_file:  # not even the switch to WAL, which rewrites the header
        assert _digest(db_file) == digest and not Path(f"{db_file}-wal").exists()


def test_a_read_only_open_creates_no_store(store_url):
    db_file = Path(sa.engine.make_url(store_url).database) if store_url.startswith("sqlite") else None
    expected = "does not exist; `tuner search` creates one" if db_file else "no tuner store there yet"
    with pytest.raises(StoreError, match=expected):
        open_store(store_url, read_only=True)
    if db_file:
        assert not db_file.exists()
    else:
        assert _contents(store_url) == {}
    open_store(store_url).close()  # a writer creates it; a reader opens it from then on
    open_store(store_url, read_only=True).close()


@pytest.mark.parametrize("lock, prefix", [
    ("c.execute('PRAGMA locking_mode = EXCLUSIVE'); c.execute('BEGIN EXCLUSIVE')", "cannot open the store: "),
    ("c.execute('BEGIN IMMEDIATE'); c.execute('DELETE FROM metrics')", ""),  # a long write transaction
], ids=["exclusive-lock", "write-transaction"])
def test_a_sqlite_lock_held_too_long_is_one_line_naming_the_holder(sqlite_url, monkeypatch, lock, prefix):
    from tuner.store import engine

    open_store(sqlite_url).close()
    path = sa.engine.make_url(sqlite_url).database
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys, time\n"
                               "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                               f"{lock}\nprint('held', flush=True); time.sleep(60)", path],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_S", 1)  # a writer's wait, shortened for the test
        started = time.monotonic()
        with pytest.raises(StoreError) as err:
            with open_store(sqlite_url) as store:  # WAL: opening reads past a writer, the write waits
                make_study(store)
        assert time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{sqlite_url}: {prefix}OperationalError: database is locked")
    assert "database is locked after waiting 1 s" in message and f"open by pid {holder.pid} (" in message


@pytest.mark.parametrize("name, problem", [("", "is empty"), ("  ", "is blank"), ("x" * 201, "has 201 characters"),
                                           ("a\nb", "has a control character"), (" a", "starts or ends with a space"),
                                           (7, "is int, not text")])
def test_study_names_follow_one_rule_when_created_and_when_read(store_url, name, problem):
    store = open_store(store_url)
    with pytest.raises(ConfigError, match=re.escape(problem)):
        make_study(store, name=name)
    with pytest.raises(ConfigError, match=re.escape(problem)):
        get_study(store, name)
    assert list_studies(store) == []
    make_study(store, name="x" * 200)  # the longest name fits the column on both backends
    assert get_study(store, "x" * 200).name == "x" * 200
    store.close()


def test_default_url_is_tuner_storage_else_tuner_db(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUNER_STORAGE", raising=False)
    open_store().close()
    assert (tmp_path / "tuner.db").exists()
    monkeypatch.setenv("TUNER_STORAGE", f"sqlite:///{tmp_path / 'env.db'}")
    store = open_store()
    assert store.url.endswith("env.db")
    store.close()
    assert (tmp_path / "env.db").exists()


# --- studies ---------------------------------------------------------------------------------


def test_studies_are_created_once_and_resumed_only_with_the_same_space_and_settings(store_url):
    store = open_store(store_url)
    study, created = create_or_get_study(store, name="s", space="a: 1\n", settings=SETTINGS)
    again, created_again = create_or_get_study(store, name="s", space="a: 1\n", settings=settings())
    assert created and not created_again and again.id == study.id
    with pytest.raises(StoreError) as err:
        create_or_get_study(store, name="s", space="a: 2\n", settings=settings(direction="min", max_trials=9))
    assert "study 's' exists with a different space, direction, search.max_trials;" in str(err.value)
    make_study(store, name="t")
    assert [s.name for s in list_studies(store)] == ["s", "t"]
    with pytest.raises(StoreError, match=r"no study named 'nope' \(studies: s, t\)"):
        get_study(store, "nope")
    store.close()


def test_settings_come_back_typed_and_a_study_written_by_an_earlier_version_still_resumes(store_url):
    store = open_store(store_url)
    hyperband = StudySettings(dataclasses.replace(SEARCH, oracle="hyperband", max_trials=None, max_epochs=9),
                              hyperparameters={"space": []}, towers={"sha256": "ab"})
    create_or_get_study(store, name="hb", space="a: 1\n", settings=hyperband)
    assert get_study(store, "hb").settings == hyperband
    # The JSON an earlier version wrote: no key of a setting it did not know, Hyperband's keys
    # only for Hyperband, objective, direction and oracle in columns of their own.
    old = {"max_trials": 5, "seed": 1, "retries": 1, "heartbeat_timeout": 60.0, "hyperparameters": {"space": []},
           "early_terminate": {"type": "median", "min_iter": 1, "startup_trials": 5}}
    with store.write() as conn:
        conn.execute(sa.insert(schema.studies).values(name="old", space="a: 1\n", objective="score", direction="max",
                                                      oracle="random", settings=json.dumps(old), version=0,
                                                      created=api.utcnow()))
    settings = get_study(store, "old").settings
    assert settings.search.early_terminate["type"] == "median" and settings.search.max_trials == 5
    assert settings.towers is None and settings.initial_points is None
    study, created = create_or_get_study(store, name="old", space="a: 1\n", settings=dataclasses.replace(
        settings, search=dataclasses.replace(settings.search, workers=4, engine="ray", study="other",
                                             enqueue=["best.yaml"], warm_start={"study": "earlier"})))
    # how this run places its workers is not the study's, nor the files and study it read values from
    assert not created and study.settings == settings
    assert settings.enqueued == [] and settings.warm_trials is None
    store.close()


def test_a_grown_budget_keeps_what_only_the_studys_oracle_reads(store_url):
    """The locked study's settings carry the oracle column: saved back with a new budget, a
    Hyperband study keeps max_epochs and factor (stored for Hyperband alone)."""
    with open_store(store_url) as store:
        study = make_study(store, settings=settings(oracle="hyperband", max_epochs=7, factor=2))
        grown = api.resize_budget(store, study.id, 9)
        assert grown == get_study(store, "s").settings
    assert (grown.search.oracle, grown.search.max_trials, grown.search.max_epochs, grown.search.factor) == \
        ("hyperband", 9, 7, 2)


def test_processes_racing_to_create_one_study_all_get_it_and_one_creates_it(store_url):
    stores = [open_store(store_url) for _ in range(4)]
    start, results, errors = threading.Barrier(len(stores)), [], []

    def create(store):
        start.wait()
        try:
            results.append(create_or_get_study(store, name="s", space="parameters: {}\n", settings=SETTINGS))
        except Exception as exc:  # noqa: BLE001  (collected and asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(created for _, created in results) == [False, False, False, True]
    assert len({study.id for study, _ in results}) == 1
    for s in stores:
        s.close()


# --- trials and metrics ----------------------------------------------------------------------


def test_epoch_metrics_are_visible_at_once_and_stop_when_the_trial_is_taken_away(store_url):
    writer, reader = open_store(store_url), open_store(store_url)
    study = make_study(writer)
    trial_id, number = running_trial(writer, study)
    assert api.report_epoch(writer, trial_id, 1, {"loss": 0.9, "val_recall@10": 0.1})
    assert api.report_epoch(writer, trial_id, 2, {"loss": 0.7, "val_recall@10": 0.2})
    # another connection (a report, a dashboard) sees the curve while the trial still runs
    assert [(m.epoch, m.name, m.value) for m in list_metrics(reader, "s", number)] == [
        (1, "loss", 0.9), (1, "val_recall@10", 0.1), (2, "loss", 0.7), (2, "val_recall@10", 0.2)]
    assert list_trials(reader, "s")[0].status == RUNNING

    end_trial(writer, trial_id, FAILED)  # e.g. declared lost by another worker
    assert not api.report_epoch(writer, trial_id, 3, {"loss": 0.5})
    assert not api.heartbeat(writer, trial_id)
    assert len(list_metrics(reader, "s", number)) == 4  # the curve up to the loss is kept, nothing added
    writer.close()
    reader.close()


@pytest.mark.parametrize("direction, best_objective", [("max", 0.9), ("min", 0.1)])
def test_best_trial_follows_the_direction_and_ignores_unfinished_trials(store_url, direction, best_objective):
    store = open_store(store_url)
    study = make_study(store, direction=direction)
    for objective, status in [(0.5, COMPLETED), (0.9, COMPLETED), (0.1, COMPLETED), (None, FAILED), (None, RUNNING)]:
        trial_id, _ = running_trial(store, study, params={"x": objective})
        if status != RUNNING:
            end_trial(store, trial_id, status, objective, seconds=2.5)
    best = best_trial(store, "s")
    assert best.objective == best_objective and best.params == {"x": best_objective}
    trials = list_trials(store, "s")
    assert [t.number for t in trials] == [1, 2, 3, 4, 5]
    assert [t.status for t in trials] == [COMPLETED, COMPLETED, COMPLETED, FAILED, RUNNING]
    assert trials[0].duration == pytest.approx(2.5) and trials[4].duration is None
    assert [t.number for t in list_trials(store, "s", status=FAILED)] == [4]
    assert list_studies(store)[0].counts == {COMPLETED: 3, FAILED: 1, RUNNING: 1}
    store.close()


def test_final_metrics_come_after_the_epochs(store_url):
    store = open_store(store_url)
    study = make_study(store)
    trial_id, number = running_trial(store, study)
    with api.study_lock(store, study.id) as locked:
        locked.add_metrics(trial_id, None, {"score": 0.5})
    api.report_epoch(store, trial_id, 2, {"loss": 0.2})
    api.report_epoch(store, trial_id, 1, {"loss": 0.4})
    assert [(m.epoch, m.name) for m in list_metrics(store, "s")] == [(1, "loss"), (2, "loss"), (None, "score")]
    store.close()


def test_nan_metrics_do_not_break_reads(store_url):
    store = open_store(store_url)
    study = make_study(store)
    trial_id, number = running_trial(store, study)
    api.report_epoch(store, trial_id, 1, {"loss": float("nan")})
    (metric,) = list_metrics(store, "s", number)
    assert metric.value is None or math.isnan(metric.value)
    store.close()


def test_the_fingerprint_changes_when_a_trial_starts_reports_or_ends_and_not_on_heartbeats(store_url):
    store = open_store(store_url)
    study = make_study(store)
    empty = study_fingerprint(store, "s")
    assert study_fingerprint(store, "s") == empty
    trial_id, _ = running_trial(store, study)
    started = study_fingerprint(store, "s")
    assert api.heartbeat(store, trial_id) and study_fingerprint(store, "s") == started  # no page rebuild per beat
    api.report_epoch(store, trial_id, 1, {"loss": 0.5})
    reported = study_fingerprint(store, "s")
    end_trial(store, trial_id, COMPLETED, 0.5)
    ended = study_fingerprint(store, "s")
    assert len({empty, started, reported, ended}) == 4
    with pytest.raises(StoreError, match="no study named 'nope'"):
        study_fingerprint(store, "nope")
    store.close()


# --- the study lock --------------------------------------------------------------------------


def test_the_study_lock_makes_a_second_worker_wait_and_then_see_the_first_ones_writes(store_url):
    store_a, store_b = open_store(store_url), open_store(store_url)
    study = make_study(store_a)
    holding, waited, seen = threading.Event(), [], []

    def first():
        with api.study_lock(store_a, study.id) as locked:
            holding.set()
            time.sleep(0.8)
            locked.save_oracle_state('{"from": "a"}', locked.version + 1)

    def second():
        holding.wait()
        start = time.monotonic()
        with api.study_lock(store_b, study.id) as locked:
            waited.append(time.monotonic() - start)
            seen.append((locked.oracle_state, locked.version))

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert waited[0] > 0.6
    assert seen == [('{"from": "a"}', 1)]
    store_a.close()
    store_b.close()
