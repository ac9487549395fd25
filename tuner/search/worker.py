"""Workers: run a study's trials, coordinating with each other through the store only.

Every visit to the Keras Tuner oracle happens under the study lock: bring the worker's copy
of the oracle up to date from the database, tell it how our last trial ended, fail trials
whose worker stopped beating, ask for the next trial, and save the oracle back, all in one
short transaction. Keras Tuner keeps trials in project files, not in `Oracle.get_state()`, so
each trial's state lives in its row; the oracle never writes files. Running, the trial
function sees only a `TrialContext`, so what it does (sleep, or train in this process or a
child) is its own business.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.util
import io
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before keras_tuner imports TensorFlow)
from tuner.errors import ConfigError, TrialLost, TunerError
from tuner.store import api
from tuner.store.schema import COMPLETED, FAILED, INTERRUPTED, RUNNING

ORACLES = ("random", "bayesian", "hyperband", "grid")
DIRECTIONS = ("max", "min")


# --- studies ------------------------------------------------------------------------------


def create_or_resume_study(store: api.Store, name: str, space: str, hyperparameters, *, oracle: str,
                           objective: str, direction: str, max_trials: int | None, seed: int | None = None,
                           retries: int = 1, max_epochs: int | None = None, factor: int = 3,
                           heartbeat_timeout: float = 60.0) -> api.Study:
    """The study `name` (created if new) searching `hyperparameters` (a keras_tuner.HyperParameters).

    `space` is the search-space YAML text, kept so a worker on another machine knows the
    base config. `max_trials` counts distinct trials (re-runs of a lost trial are not new
    trials); Hyperband also stops by itself when its brackets are done. `retries`: how often
    the values of a trial whose worker died are run again. A RUNNING trial whose heartbeat is
    older than `heartbeat_timeout` seconds is failed by whichever worker notices; heartbeats
    carry each worker's own UTC clock, so machines sharing a study need clocks in sync (NTP)
    to well within that timeout.
    """
    where = f"study '{name}': search"
    _check(oracle in ORACLES, f"{where}.oracle: {oracle!r} is not one of {', '.join(ORACLES)}")
    _check(direction in DIRECTIONS, f"{where}.direction: {direction!r} is not one of {', '.join(DIRECTIONS)}")
    _check(bool(objective), f"{where}.objective: must be a metric name")
    _check(max_trials is None or max_trials >= 1, f"{where}.max_trials: must be >= 1")
    _check(max_trials is not None or oracle in ("hyperband", "grid"), f"{where}.max_trials: required for {oracle}")
    _check(retries >= 0, f"{where}.retries: must be >= 0")
    _check(heartbeat_timeout > 0, f"{where}.heartbeat_timeout: must be > 0 seconds")
    settings: dict[str, Any] = {"max_trials": max_trials, "seed": seed, "retries": retries,
                                "heartbeat_timeout": heartbeat_timeout, "hyperparameters": hyperparameters.get_config()}
    if oracle == "hyperband":
        _check(max_epochs is not None and max_epochs >= 1, f"{where}.max_epochs: must be >= 1 for hyperband")
        _check(factor >= 2, f"{where}.factor: must be >= 2")
        settings.update(max_epochs=max_epochs, factor=factor)
    if oracle == "bayesian":
        missing = [m for m in ("sklearn", "scipy") if importlib.util.find_spec(m) is None]
        _check(not missing, f"{where}.oracle: bayesian needs {' and '.join(missing)} "
                            "(pip install scikit-learn scipy), or use random, hyperband or grid")
    study, _ = api.create_or_get_study(store, name=name, space=space, objective=objective, direction=direction,
                                       oracle=oracle, settings=settings)
    return study


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


# --- the oracle in the database -----------------------------------------------------------


class _NoFiles:
    """The store holds oracle and trial states: keras-tuner must not write project files."""

    def save(self):
        pass

    def _save_trial(self, trial):
        pass


@functools.cache
def _oracle_classes() -> dict[str, type]:
    import keras_tuner as kt

    bases = {"random": kt.oracles.RandomSearchOracle, "bayesian": kt.oracles.BayesianOptimizationOracle,
             "hyperband": kt.oracles.HyperbandOracle, "grid": kt.oracles.GridSearchOracle}
    return {kind: type(f"Store{base.__name__}", (_NoFiles, base), {}) for kind, base in bases.items()}


def _new_oracle(study: api.Study):
    import keras_tuner as kt

    s = study.settings
    kwargs = dict(objective=kt.Objective(study.objective, study.direction),
                  hyperparameters=_hyperparameters(s["hyperparameters"]), seed=s["seed"],
                  max_retries_per_trial=s["retries"],
                  max_consecutive_failed_trials=None)  # a failing trial must not stop the study
    cls = _oracle_classes()[study.oracle]
    if study.oracle == "hyperband":
        oracle = cls(max_epochs=s["max_epochs"], factor=s["factor"], **kwargs)
        oracle.max_trials = s["max_trials"]  # HyperbandOracle takes no max_trials, but create_trial honours it
    elif study.oracle == "bayesian":
        oracle = cls(max_trials=s["max_trials"], num_initial_points=bayesian_initial_points(s["max_trials"]), **kwargs)
    else:
        oracle = cls(max_trials=s["max_trials"], **kwargs)
    oracle.verbose = 0
    return oracle


def bayesian_initial_points(max_trials: int) -> int:
    """Random trials before the Gaussian process takes over. Keras Tuner's default, three per
    dimension (48 for the `full` space), would spend most budgets on random search."""
    return max(3, max_trials // 4)


def _dump_state(oracle, kind: str) -> str:
    """Oracle.get_state() plus what some oracles keep outside it, as JSON."""
    state = oracle.get_state()
    state["tried_so_far"] = sorted(state["tried_so_far"])  # a set: sorted so equal states give equal text
    extra: dict[str, Any] = {}
    if kind == "grid":  # GridSearchOracle's walk order and pending queue are not in get_state()
        order = oracle._ordered_ids
        extra["grid"] = {"memory": order._memory, "next": [[k, v] for k, v in order._next_index.items()],
                         "last": order._last_index, "populate_next": oracle._populate_next}
    if kind == "bayesian":  # the optimizer's random restarts
        name, keys, pos, has_gauss, cached = oracle._random_state.get_state()
        extra["rng"] = [name, keys.tolist(), pos, has_gauss, cached]
    return json.dumps({"oracle": state, **extra}, default=_plain)


def _load_state(oracle, kind: str, text: str) -> None:
    state = json.loads(text)
    oracle.set_state(state["oracle"])
    if kind == "grid":
        import collections

        g, order = state["grid"], oracle._ordered_ids
        order._memory = g["memory"]
        order._data_to_index = {data: i for i, data in enumerate(g["memory"])}
        order._next_index = collections.defaultdict(lambda: None, {k: v for k, v in g["next"]})
        order._last_index = g["last"]
        oracle._populate_next = g["populate_next"]
    if kind == "bayesian":
        import numpy as np

        name, keys, pos, has_gauss, cached = state["rng"]
        oracle._random_state.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _hyperparameters(config: dict):
    """keras_tuner.HyperParameters from its config. `from_config` turns the condition dicts
    of the config it is given into objects in place, so it gets a copy: the stored settings
    are read again on every restore."""
    import copy

    import keras_tuner as kt

    return kt.HyperParameters.from_config(copy.deepcopy(config))


def _plain(value):
    """json.dumps fallback for numpy scalars in hyperparameter values."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class _OracleCache:
    """A worker's copy of the study's oracle, refreshed under the lock from what changed since.

    Rebuilding every trial from JSON on each visit costs ~0.2 ms per trial (100 ms per visit
    at 500 trials), so only rows written after the cached version are re-read.
    Anything going wrong mid-visit drops the copy: the next visit rebuilds it from the store.
    """

    def __init__(self, study: api.Study):
        self.study = study
        self.oracle = None
        self.version = -1
        self.state_text: str | None = None

    def restore(self, conn, row):
        from keras_tuner.src.engine.trial import Trial

        since = self.version
        if self.oracle is None:
            self.oracle, since = _new_oracle(self.study), None
            self.oracle.trials = {}
        elif row.version == self.version:
            return self.oracle
        for kt_id, text in api.kt_states(conn, self.study.id, since):
            self.oracle.trials[kt_id] = Trial.from_state(json.loads(text))
        if row.oracle_state is not None:
            _load_state(self.oracle, self.study.oracle, row.oracle_state)
        self.version, self.state_text = row.version, row.oracle_state
        return self.oracle

    def save(self, conn, version: int, force: bool) -> None:
        text = _dump_state(self.oracle, self.study.oracle)
        if force or text != self.state_text:
            api.save_oracle_state(conn, self.study.id, text, version)
            self.version, self.state_text = version, text

    def drop(self) -> None:
        if self.oracle is not None:
            from keras_tuner.src.engine import oracle as kt_oracle

            # keras-tuner's @synchronized keeps a lock per Oracle instance forever: let ours go
            kt_oracle.LOCKS.pop(self.oracle, None)
            kt_oracle.THREADS.pop(self.oracle, None)
        self.oracle, self.version, self.state_text = None, -1, None


def _requeue(oracle, kt_trial_id: str) -> None:
    """Hands an interrupted trial's values out again without counting a failure, as
    keras-tuner's own Oracle.reload() does with the trials that were running."""
    for tuner_id, trial in list(oracle.ongoing_trials.items()):
        if trial.trial_id == kt_trial_id:
            del oracle.ongoing_trials[tuner_id]
    if kt_trial_id not in oracle._retry_queue:
        oracle._retry_queue.append(kt_trial_id)


# --- what the trial function sees -----------------------------------------------------------


@dataclass
class TrialContext:
    """One trial as the trial function sees it. Picklable: in a child process it reopens the
    store by URL, so the real training can run in a fresh process per trial."""

    number: int  # 1-based within the study, one per run attempt
    values: dict[str, Any]  # the oracle's values; Hyperband adds tuner/epochs, tuner/initial_epoch, ...
    study: str
    space: str  # the study's search-space YAML text
    objective: str
    direction: str
    trial_id: int  # the store's row id
    kt_trial_id: str  # keras-tuner's id (shared by re-runs of the same values)
    parent: int | None  # Hyperband: number of the completed trial this one continues
    store_url: str = field(repr=False)
    hp_config: dict = field(repr=False)
    _store: api.Store | None = field(default=None, repr=False, compare=False)
    _lost: bool = field(default=False, repr=False, compare=False)

    @property
    def epochs(self) -> int | None:
        """Hyperband's budget: train until this many epochs are done (None: the config's own)."""
        return self.values.get("tuner/epochs")

    @property
    def initial_epoch(self) -> int:
        return self.values.get("tuner/initial_epoch", 0)

    @property
    def hyperparameters(self):
        """The values as a keras_tuner.HyperParameters (importing it imports TensorFlow)."""
        import keras_tuner as kt

        return _hyperparameters(self.hp_config)

    def store(self) -> api.Store:
        if self._store is None:
            self._store = api.open_store(self.store_url)
        return self._store

    def report_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Writes one epoch's metrics at once (1-based: epochs done) and beats the heart."""
        if self._lost or not api.report_epoch(self.store(), self.trial_id, epoch, metrics):
            self._lost = True
            raise TrialLost(f"trial {self.number} was declared lost by another worker (stale heartbeat)")

    def heartbeat(self) -> None:
        if self._lost or not api.heartbeat(self.store(), self.trial_id):
            self._lost = True
            raise TrialLost(f"trial {self.number} was declared lost by another worker (stale heartbeat)")

    def __getstate__(self):
        return {**self.__dict__, "_store": None}


class _Heartbeat(threading.Thread):
    """Beats for a running trial from the background; notes when the trial was taken away."""

    def __init__(self, ctx: TrialContext, interval: float):
        super().__init__(name=f"heartbeat-{ctx.number}", daemon=True)
        self.ctx, self.interval, self.done = ctx, interval, threading.Event()

    def run(self):
        while not self.done.wait(self.interval):
            try:
                if not api.heartbeat(self.ctx.store(), self.ctx.trial_id):
                    self.ctx._lost = True
                    return
            except Exception:  # a transient database error: the next beat retries
                pass

    def stop(self):
        self.done.set()
        self.join()


@dataclass
class _Outcome:
    status: str  # COMPLETED | FAILED | INTERRUPTED
    metrics: dict[str, float] = field(default_factory=dict)
    objective: float | None = None
    error: str | None = None
    traceback: str | None = None


def _judge(result, objective: str) -> _Outcome:
    """A trial function's return value as an outcome: a finite objective or a FAILED reason."""
    if not isinstance(result, Mapping):
        return _Outcome(FAILED, error=f"the trial function returned {type(result).__name__}, expected a dict of metrics")
    try:
        values = {str(k): float(v) for k, v in result.items()}
    except (TypeError, ValueError):
        bad = next(k for k, v in result.items() if not isinstance(v, (int, float)))
        return _Outcome(FAILED, error=f"metric {bad!r} is not a number: {result[bad]!r}")
    if objective not in values:
        return _Outcome(FAILED, values, error=f"objective {objective!r} missing from the trial's metrics "
                                              f"(got: {', '.join(values) or 'none'})")
    if not math.isfinite(values[objective]):
        return _Outcome(FAILED, values, error=f"objective {objective} is {values[objective]}")
    return _Outcome(COMPLETED, values, values[objective])


# --- the worker ---------------------------------------------------------------------------


def _timings(timeout: float) -> tuple[float, float]:
    """(heartbeat interval, poll interval while waiting) for a study's heartbeat timeout."""
    return max(0.1, min(5.0, timeout / 6)), max(0.2, min(2.0, timeout / 10))


class _Worker:
    def __init__(self, store: api.Store, store_url: str, study: api.Study, worker_id: str, log):
        self.store, self.store_url, self.study, self.worker_id, self.log = store, store_url, study, worker_id, log
        self.tuner_id = f"{worker_id}#{uuid.uuid4().hex[:8]}"  # unique per run: a restart is a new tuner
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.timeout = float(study.settings["heartbeat_timeout"])
        self.beat_every, self.poll_every = _timings(self.timeout)
        self.cache = _OracleCache(study)
        self.next_stale_check = 0.0
        try:  # imports keras_tuner (TensorFlow, seconds) now, never while holding the lock
            _new_oracle(study)
        except ImportError as exc:  # bayesian without scikit-learn on this machine
            raise ConfigError(f"study '{study.name}': search.oracle {study.oracle}: {exc}") from None

    def visit(self, current: TrialContext | None, outcome: _Outcome | None, want_next: bool):
        """One visit to the oracle under the study lock. Returns the next trial's context, or
        "wait" (nothing to hand out yet, or trials still running elsewhere) or "done"."""
        notes: list[str] = []
        try:
            mine = None if current is None else current.trial_id
            with api.study_lock(self.store, self.study.id, mine) as (conn, row), _quiet_keras_tuner():
                oracle = self.cache.restore(conn, row)
                version = row.version + 1
                touched = current is not None and self._finish(conn, oracle, row, current, outcome, version, notes)
                touched |= self._recover(conn, oracle, version, notes)
                result = "done"
                if want_next:
                    result = self._next(conn, oracle, version)
                    touched |= isinstance(result, TrialContext)
                self.cache.save(conn, version, force=touched)
                if result == "done" and want_next and api.count_running(conn, self.study.id):
                    result = "wait"  # a running trial may yet fail and be re-queued
        except BaseException:
            self.cache.drop()
            raise
        for note in notes:
            self.log(f"[{self.worker_id}] {note}")
        return result

    def _finish(self, conn, oracle, row, ctx: TrialContext, outcome: _Outcome, version: int, notes: list) -> bool:
        if row.trial_status != RUNNING:
            notes.append(f"trial {ctx.number}: result discarded; it was declared lost while running")
            return False
        trial = oracle.trials[ctx.kt_trial_id]
        if outcome.status == COMPLETED:
            oracle.update_trial(trial.trial_id, {self.study.objective: outcome.objective}, step=ctx.epochs or 0)
            trial.status = COMPLETED
            oracle.end_trial(trial)
        elif outcome.status == FAILED:
            trial.status, trial.message = FAILED, outcome.error
            oracle.end_trial(trial)
        else:
            _requeue(oracle, trial.trial_id)
        now = api.utcnow()
        api.add_metrics(conn, ctx.trial_id, None, outcome.metrics)  # (nothing sent when empty)
        api.update_trial(conn, ctx.trial_id, status=outcome.status, objective=outcome.objective, ended=now,
                         heartbeat=now, error=outcome.error, traceback=outcome.traceback,
                         kt_state=json.dumps(trial.get_state(), default=_plain), kt_version=version)
        return True

    def _recover(self, conn, oracle, version: int, notes: list) -> bool:
        """Fails RUNNING trials whose heartbeat is stale; the oracle re-queues them within `retries`.
        Looked for at most every poll interval: the timeout is far longer, and the query is a
        round trip made while holding the lock."""
        if time.monotonic() < self.next_stale_check:
            return False
        self.next_stale_check = time.monotonic() + self.poll_every
        now = api.utcnow()
        stale = api.stale_trials(conn, self.study.id, now - timedelta(seconds=self.timeout))
        for row in stale:
            reason = f"worker lost: heartbeat stale since {row.heartbeat:%Y-%m-%d %H:%M:%S} UTC (worker {row.worker})"
            trial = oracle.trials[row.kt_trial_id]
            trial.status, trial.message = "INVALID", reason  # keras-tuner's "crashed, may be retried"
            oracle.end_trial(trial)
            if row.kt_trial_id in oracle._retry_queue:
                reason += "; re-queued"
            else:
                reason += f"; not re-queued (retries {self.study.settings['retries']} used up)"
            api.update_trial(conn, row.id, status=FAILED, ended=now, error=reason,
                             kt_state=json.dumps(trial.get_state(), default=_plain), kt_version=version)
            notes.append(f"trial {row.number}: {reason}")
        return bool(stale)

    def _next(self, conn, oracle, version: int):
        trial = oracle.create_trial(self.tuner_id)
        if trial.status != RUNNING:
            return "wait" if trial.status == "IDLE" else "done"
        values = dict(trial.hyperparameters.values)
        parent = values.get("tuner/trial_id")
        now = api.utcnow()
        row_id, number = api.insert_trial(
            conn, self.study.id, kt_trial_id=trial.trial_id, status=RUNNING,
            params=json.dumps(values, default=_plain), worker=self.worker_id, host=self.host, pid=self.pid,
            started=now, heartbeat=now, retries=oracle._run_times.get(trial.trial_id, 0),
            kt_state=json.dumps(trial.get_state(), default=_plain), kt_version=version)
        return TrialContext(
            number=number, values=json.loads(json.dumps(values, default=_plain)), study=self.study.name,
            space=self.study.space, objective=self.study.objective, direction=self.study.direction,
            trial_id=row_id, kt_trial_id=trial.trial_id,
            parent=None if parent is None else api.completed_number(conn, self.study.id, parent),
            store_url=self.store_url, hp_config=trial.hyperparameters.get_config(), _store=self.store)

    def run_trial(self, trial_fn, ctx: TrialContext) -> _Outcome:
        """Runs the trial function with heartbeats; KeyboardInterrupt passes through."""
        beat = _Heartbeat(ctx, self.beat_every)
        beat.start()
        started = time.monotonic()
        self.log(f"[{self.worker_id}] trial {ctx.number} started: {_short(ctx.values)}")
        try:
            outcome = _judge(trial_fn(ctx), self.study.objective)
        except KeyboardInterrupt:
            raise
        except TrialLost as exc:
            outcome = _Outcome(FAILED, error=str(exc))
        except Exception as exc:
            outcome = _Outcome(FAILED, error=api.one_line(exc), traceback=traceback.format_exc())
        finally:
            beat.stop()
        took = time.monotonic() - started
        if ctx._lost:
            self.log(f"[{self.worker_id}] trial {ctx.number} abandoned after {took:.1f} s: another worker "
                     "declared it lost (stale heartbeat) and re-queued it")
        elif outcome.status == COMPLETED:
            self.log(f"[{self.worker_id}] trial {ctx.number} completed in {took:.1f} s: "
                     f"{self.study.objective}={outcome.objective:.6g}")
        else:
            self.log(f"[{self.worker_id}] trial {ctx.number} FAILED after {took:.1f} s: {outcome.error}")
        return outcome

    def loop(self, trial_fn, stop_event: threading.Event | None) -> None:
        current = outcome = None
        try:
            while True:
                stopping = stop_event is not None and stop_event.is_set()
                result = self.visit(current, outcome, want_next=not stopping)
                current = outcome = None
                if stopping:
                    self.log(f"[{self.worker_id}] stopped on request")
                    return
                if result == "done":
                    self.log(f"[{self.worker_id}] study '{self.study.name}' has no more trials to run")
                    return
                if result == "wait":
                    if stop_event is not None:
                        stop_event.wait(self.poll_every)
                    else:
                        time.sleep(self.poll_every)
                    continue
                current = result
                outcome = self.run_trial(trial_fn, current)
        except KeyboardInterrupt:
            if current is not None:
                interrupted = _Outcome(INTERRUPTED, error="interrupted (Ctrl-C or SIGTERM); re-queued")
                self.visit(current, interrupted, want_next=False)
                self.log(f"[{self.worker_id}] trial {current.number} interrupted; its values are re-queued")
            raise
        finally:
            self.cache.drop()


@contextlib.contextmanager
def _quiet_keras_tuner():
    """keras-tuner prints retry notices and its @synchronized warns about threading.currentThread()."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", r"(currentThread|getName)\(\) is deprecated", DeprecationWarning)
        yield


def _short(values: dict) -> str:
    text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    return text if len(text) <= 200 else text[:197] + "..."


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a scheduler, `kill`) stops a worker like Ctrl-C: the trial is marked INTERRUPTED."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_worker(store_url: str | None, study_name: str, trial_fn: Callable[[TrialContext], dict] | str,
               worker_id: str | None = None, stop_event: threading.Event | None = None, log=print) -> None:
    """Runs trials of `study_name` until the study has none left (or `stop_event` is set, after
    the current trial). `trial_fn(ctx)` returns a dict of final metrics holding the objective;
    it may also be a "module:function" or "path/file.py:function" string. Ctrl-C or SIGTERM
    marks the running trial INTERRUPTED (its values are re-queued) and re-raises
    KeyboardInterrupt."""
    fn = load_trial_fn(trial_fn) if isinstance(trial_fn, str) else trial_fn
    store_url = store_url or os.environ.get("TUNER_STORAGE") or api.DEFAULT_URL
    store = api.open_store(store_url)
    try:
        study = api.get_study(store, study_name)
        worker = _Worker(store, store_url, study, worker_id or f"{socket.gethostname()}-{os.getpid()}", log)
        with _sigterm_as_interrupt():
            worker.loop(fn, stop_event)
    finally:
        store.close()


def load_trial_fn(spec: str) -> Callable[[TrialContext], dict]:
    """The function named by "package.module:function" or "path/to/file.py:function"."""
    module_name, sep, fn_name = spec.rpartition(":")
    if not sep or not module_name or not fn_name:
        raise ConfigError(f"trial function {spec!r}: expected 'package.module:function' or 'path/to/file.py:function'")
    if module_name.endswith(".py"):
        path = Path(module_name).resolve()
        if not path.is_file():
            raise ConfigError(f"trial function {spec!r}: file not found: {path}")
        name = f"_trial_fn_{path.stem}_{abs(hash(str(path)))}"
        module = sys.modules.get(name)
        if module is None:
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise ConfigError(f"trial function {spec!r}: cannot import {module_name}: {exc}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"trial function {spec!r}: {module_name} has no function {fn_name!r}")
    return fn


def in_subprocess(spec: str) -> Callable[[TrialContext], dict]:
    """A trial function that runs `spec` in a fresh process per trial, so whatever a trial
    allocates (TensorFlow graphs, datasets) is returned to the OS when it ends. The worker's
    heartbeats go on meanwhile; the child reports epochs through the pickled context."""
    load_trial_fn(spec)  # fail now, not in every trial

    def run(ctx: TrialContext) -> dict:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(1) as pool:  # leaving it terminates the child
            return pool.apply(_call_spec, (spec, ctx))

    return run


def _call_spec(spec: str, ctx: TrialContext) -> dict:
    return load_trial_fn(spec)(ctx)


# --- local worker processes ---------------------------------------------------------------


def gpu_count() -> int:
    """GPUs listed by `nvidia-smi -L` (0 without the tool or a driver)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def worker_env(i: int, n: int, gpus: int, cores: int | None = None) -> dict[str, str]:
    """Environment for local worker i of n: its own GPU, or its share of the CPU cores (set
    before the child imports TensorFlow, which reads them once)."""
    if gpus:
        return {"CUDA_VISIBLE_DEVICES": str(i % gpus)}
    cores = cores or len(os.sched_getaffinity(0))
    threads = str(max(1, cores // n))
    return {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads, "OMP_NUM_THREADS": threads}


def start_local_workers(n: int, store_url: str | None, study: str, trial_fn_spec: str, *,
                        worker_prefix: str = "w", env: dict[str, str] | None = None) -> list[int]:
    """Runs `n` worker processes on this machine until the study is done; their exit codes.

    Children get their own session, so Ctrl-C reaches them once, forwarded from here.
    The store URL travels in TUNER_STORAGE, not on command lines that `ps` shows.
    """
    load_trial_fn(trial_fn_spec)  # a typo fails here, once, not in n children
    if store_url and "***" in store_url and api.mask_url(store_url) == store_url:
        raise ConfigError(f"{store_url}: a masked URL (Store.url); pass Store.raw_url to worker processes")
    gpus = gpu_count()
    procs = []
    for i in range(n):
        child_env = {**os.environ, **(env or {}), **worker_env(i, n, gpus)}
        if store_url:
            child_env["TUNER_STORAGE"] = store_url
        cmd = [sys.executable, "-m", "tuner.search.worker", "--study", study, "--trial-fn", trial_fn_spec,
               "--worker-id", f"{worker_prefix}{i}"]
        procs.append(subprocess.Popen(cmd, env=child_env, start_new_session=True))
    try:
        with _sigterm_as_interrupt():
            return [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuner.search.worker",
                                     description="Run one worker of a study until it has no trials left.")
    parser.add_argument("--storage", help="store URL (default: env TUNER_STORAGE, else sqlite:///tuner.db)")
    parser.add_argument("--study", required=True)
    parser.add_argument("--trial-fn", required=True, help="'package.module:function' or 'file.py:function'")
    parser.add_argument("--worker-id")
    args = parser.parse_args(argv)
    try:
        run_worker(args.storage, args.study, args.trial_fn, args.worker_id, log=lambda m: print(m, flush=True))
    except KeyboardInterrupt:
        return 130
    except TunerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # run via the package module, so pickled contexts name tuner.search.worker
    from tuner.search.worker import main as _main

    sys.exit(_main())
