"""The worker loop: run a study's trials, coordinating with other workers through the store only.

Every visit to the oracle happens under the study lock, in one short transaction: bring the
worker's copy of the oracle up to date from the database (`oracle`), tell it how our last
trial ended, fail trials whose worker stopped beating, ask for the next trial, and save the
oracle back. Between visits the trial function runs with a heartbeat (`trial`). Staleness is
judged on the database's clock, which the lock hands over with the study row.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from datetime import timedelta
from typing import Callable

from tuner import memory, usercode
from tuner.errors import ConfigError, TrialLost
from tuner.store import DEFAULT_URL, LockedStudy, Store, Study, api, get_study, open_store
from tuner.store.engine import one_line
from tuner.store.schema import COMPLETED, FAILED, INTERRUPTED, PRUNED, RUNNING
from tuner.search import artifacts as artifact_files
from tuner.search.trial import Heartbeat, Outcome, TrialContext, judge, load_trial_fn, short_values

TrialFn = Callable[[TrialContext], dict]
# What `run_worker` returns when it left after `trials_per_process` trials: its launcher starts a
# fresh process with the same worker id (it owns no running trial; the store sees no lost worker).
HAND_OVER = "hand over"
HAND_OVER_EXIT = 75  # a worker process's exit code then (EX_TEMPFAIL: run me again)
# ... or sooner, once its memory has grown by both of these over what it held after its first
# trial: each fit leaves its traced step alive, one model's tables and optimizer slots (about 400
# MB a trial at 1M items, 32 dims, Adam), so a count of trials alone bounds nothing at scale. The
# slack keeps small data on the count: on MovieLens-100K, trials of other sizes moved a worker
# from 1.0-1.3 GB by 25% within 3-4 trials, and a fresh process costs ~20 s.
MEMORY_GROWTH = 1.25
MEMORY_SLACK = 1 << 30


def _timings(timeout: float) -> tuple[float, float]:
    """(heartbeat interval, poll interval while waiting) for a study's heartbeat timeout."""
    return max(0.1, min(5.0, timeout / 6)), max(0.2, min(2.0, timeout / 10))


class _Worker:
    def __init__(self, store: Store, store_url: str, study: Study, worker_id: str, log, artifacts: str | None = None):
        self.store, self.store_url, self.study, self.worker_id, self.log = store, store_url, study, worker_id, log
        quiet = study.oracle != "hyperband"  # only Hyperband writes checkpoints: no warning about where otherwise
        root = artifact_files.artifacts_root(store, artifacts, (lambda line: None) if quiet else log)
        self.folder = artifact_files.study_folder(root, study.name)
        self.stale_checkpoints: set[int] = set()
        self.tuner_id = f"{worker_id}#{uuid.uuid4().hex[:8]}"  # unique per run: a restart is a new tuner
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.timeout = study.settings.heartbeat_timeout
        self.beat_every, self.poll_every = _timings(self.timeout)
        self.next_stale_check = 0.0
        from tuner.search import oracle  # keras_tuner and TensorFlow (seconds): now, never under the lock

        try:
            oracle.new_oracle(study)
        except ImportError as exc:  # bayesian without scikit-learn on this machine
            raise ConfigError(f"study '{study.name}': search.oracle {study.oracle}: {exc}") from None
        self.oracle, self.quiet = oracle.StudyOracle(study), oracle.quiet

    def visit(self, current: TrialContext | None, outcome: Outcome | None, want_next: bool):
        """One visit to the oracle under the study lock. Returns the next trial's context, or
        "wait" (nothing to hand out yet, or trials still running elsewhere) or "done". A visit
        that asks for no trial says "done" only when none is left to run anywhere, so that a
        process handing over at the end of a study is not replaced by one that would find nothing."""
        notes: list[str] = []
        try:
            mine = None if current is None else current.trial_id
            with api.study_lock(self.store, self.study.id, mine) as study, self.quiet():
                self.oracle.restore(study)
                version = study.version + 1
                touched = current is not None and self._finish(study, current, outcome, version, notes)
                touched |= self._recover(study, version, notes)
                result = "done"
                if want_next:
                    result = self._next(study, version)
                    touched |= isinstance(result, TrialContext)
                elif not self.oracle.exhausted():
                    result = "wait"
                self.oracle.save(study, version, force=touched)
                if result == "done" and study.count_running():
                    result = "wait"  # a running trial may yet fail and be re-queued
                if touched and self.study.oracle == "hyperband" and self.folder.is_dir():
                    # decided under the lock, deleted after it (files are slow; the lock is shared)
                    self.stale_checkpoints = study.checkpoints_to_drop(self.oracle.live_trial_ids())
        except BaseException:
            self.oracle.drop()
            raise
        for note in notes:
            self.log(f"[{self.worker_id}] {note}")
        if self.stale_checkpoints:
            artifact_files.remove_unneeded(self.folder, drop=self.stale_checkpoints)
            self.stale_checkpoints = set()
        if result == "done":
            artifact_files.remove_study(self.folder)  # no trial left to run: no checkpoint is needed
        return result

    def _finish(self, study: LockedStudy, ctx: TrialContext, outcome: Outcome, version: int, notes: list) -> bool:
        if study.trial_status != RUNNING:
            notes.append(f"trial {ctx.number}: result discarded; it was declared lost while running")
            return False
        if outcome.status == COMPLETED:
            state = self.oracle.complete(ctx.kt_trial_id, outcome.objective, step=ctx.epochs or 0)
        elif outcome.status == PRUNED:  # the oracle learns its last value (README: what the oracle is told)
            state = self.oracle.complete(ctx.kt_trial_id, outcome.objective, step=ctx.pruned_at)
        elif outcome.status == FAILED:
            state = self.oracle.fail(ctx.kt_trial_id, outcome.error)
        else:
            state = self.oracle.requeue(ctx.kt_trial_id)
        study.add_metrics(ctx.trial_id, None, outcome.metrics)  # (nothing sent when empty)
        study.update_trial(ctx.trial_id, status=outcome.status, objective=outcome.objective, ended=study.now,
                           heartbeat=study.now, error=outcome.error, traceback=outcome.traceback,
                           kt_state=state, kt_version=version)
        return True

    def _recover(self, study: LockedStudy, version: int, notes: list) -> bool:
        """Fails RUNNING trials whose heartbeat is stale; the oracle re-queues them within `retries`.
        Looked for at most every poll interval: the timeout is far longer, and the query is a
        round trip made while holding the lock."""
        if time.monotonic() < self.next_stale_check:
            return False
        self.next_stale_check = time.monotonic() + self.poll_every
        stale = study.stale_trials(study.now - timedelta(seconds=self.timeout))
        for trial in stale:
            reason = (f"worker lost: heartbeat stale since {trial.heartbeat:%Y-%m-%d %H:%M:%S} UTC "
                      f"(worker {trial.worker})")
            requeued, state = self.oracle.lose(trial.kt_trial_id, reason)
            reason += "; re-queued" if requeued else f"; not re-queued (retries {self.study.settings.search.retries} used up)"
            # it ended when its heartbeats did: its duration is the time it ran, not the time until
            # the loss was noticed (which a study resumed days later would stretch to days)
            study.update_trial(trial.id, status=FAILED, ended=trial.heartbeat, error=reason, kt_state=state,
                               kt_version=version)
            notes.append(f"trial {trial.number}: {reason}")
        return bool(stale)

    def _next(self, study: LockedStudy, version: int):
        handout = self.oracle.next_trial(study, self.tuner_id)
        if isinstance(handout, str):
            return handout
        row_id, number = study.insert_trial(
            kt_trial_id=handout.kt_trial_id, status=RUNNING, params=json.dumps(handout.values),
            worker=self.worker_id, host=self.host, pid=self.pid, started=study.now, heartbeat=study.now,
            retries=handout.retries, kt_state=handout.state, kt_version=version)
        parent = handout.values.get("tuner/trial_id")
        return TrialContext(
            number=number, values=handout.values, study=self.study.name, space=self.study.space,
            objective=self.study.objective, direction=self.study.direction, trial_id=row_id,
            kt_trial_id=handout.kt_trial_id,
            parent=None if parent is None else study.completed_number(parent),
            store_url=self.store_url, hp_config=handout.hp_config, study_id=self.study.id, artifacts=str(self.folder),
            early_terminate=self.study.settings.search.early_terminate, _store=self.store)

    def run_trial(self, trial_fn: TrialFn, ctx: TrialContext) -> Outcome:
        """Runs the trial function with heartbeats; KeyboardInterrupt passes through."""
        beat = Heartbeat(ctx, self.beat_every, log=lambda line: self.log(f"[{self.worker_id}] {line}"))
        beat.start()
        started = time.monotonic()
        self.log(f"[{self.worker_id}] trial {ctx.number} started: {short_values(ctx.values, limit=200)}")
        try:
            result = trial_fn(ctx)
            if ctx.early_terminate and ctx.pruned_at is None:  # pruned in a child process: the store knows
                ctx.pruned_at, ctx.last_value = api.stopped_at(self.store, ctx.trial_id, ctx.objective) or (None, None)
            outcome = judge(result, self.study.objective, ctx)
        except KeyboardInterrupt:
            raise
        except TrialLost as exc:
            outcome = Outcome(FAILED, error=str(exc))
        except Exception as exc:
            outcome = Outcome(FAILED, error=one_line(exc), traceback=traceback.format_exc())
        finally:
            beat.stop()
        took = time.monotonic() - started
        if ctx._lost:
            self.log(f"[{self.worker_id}] trial {ctx.number} abandoned after {took:.1f} s: another worker "
                     "declared it lost (stale heartbeat) and re-queued it")
        elif outcome.status == COMPLETED:
            self.log(f"[{self.worker_id}] trial {ctx.number} completed in {took:.1f} s: "
                     f"{self.study.objective}={outcome.objective:.6g}")
        elif outcome.status == PRUNED:
            self.log(f"[{self.worker_id}] trial {ctx.number} {outcome.error} ({took:.1f} s)")
        else:
            self.log(f"[{self.worker_id}] trial {ctx.number} FAILED after {took:.1f} s: {outcome.error}")
        return outcome

    def loop(self, trial_fn: TrialFn, stop_event: threading.Event | None, trials_per_process: int | None = None) -> str:
        current = outcome = None
        ran = 0
        after_first = None  # RSS after this process's first trial
        grown = False  # its RSS after the latest trial passed both bounds over after_first
        try:
            while True:
                handing_over = trials_per_process is not None and (ran >= trials_per_process or grown)
                stopping = handing_over or (stop_event is not None and stop_event.is_set())
                result = self.visit(current, outcome, want_next=not stopping)  # the last trial's outcome first
                current = outcome = None
                # done, unless a stop was asked for; a process that ran the study's last trial as it
                # hands over ends the study too, rather than a fresh process finding nothing left
                if result == "done" and (handing_over or not stopping):
                    self.log(f"[{self.worker_id}] study '{self.study.name}' has no more trials to run")
                    return "done"
                if handing_over:
                    why = (f", its memory over {MEMORY_GROWTH:g}× and {MEMORY_SLACK / 2**30:g} GB more than the "
                           f"{after_first / 2**20:,.0f} MB it held after the first" if grown else "")
                    self.log(f"[{self.worker_id}] {ran} trials run in this process{why}: a fresh one takes its place")
                    return HAND_OVER
                if stopping:
                    self.log(f"[{self.worker_id}] stopped on request")
                    return "stopped"
                if result == "wait":
                    if stop_event is not None:
                        stop_event.wait(self.poll_every)
                    else:
                        time.sleep(self.poll_every)
                    continue
                current = result
                outcome = self.run_trial(trial_fn, current)
                ran += 1
                rss = memory.resident_bytes()  # None off Linux: then only the count hands over
                if ran == 1:
                    after_first = rss
                elif rss is not None and after_first is not None:
                    grown = rss > max(MEMORY_GROWTH * after_first, after_first + MEMORY_SLACK)
        except KeyboardInterrupt:
            if current is not None:
                interrupted = Outcome(INTERRUPTED, error="interrupted (Ctrl-C or SIGTERM); re-queued")
                self.visit(current, interrupted, want_next=False)
                self.log(f"[{self.worker_id}] trial {current.number} interrupted; its values are re-queued")
            raise
        finally:
            self.oracle.drop()


@contextlib.contextmanager
def sigterm_as_interrupt():
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


def run_worker(store_url: str | None, study_name: str, *, worker_id: str | None = None,
               stop_event: threading.Event | None = None, log=print, trial_fn: TrialFn | str | None = None,
               artifacts: str | None = None, trials_per_process: int | None = None) -> str:
    """Runs trials of `study_name` until the study has none left ("done"), `stop_event` is set
    ("stopped", after the current trial) or `trials_per_process` trials ran (HAND_OVER: the
    caller goes on in a fresh process, as `tuner.search.local` does). `trial_fn` None trains the
    study's space (`hypermodel.TrialRunner`); else `trial_fn(ctx)` returns a dict of final metrics holding the objective, or names such a
    function as "module:function" / "path/file.py:function". Ctrl-C or SIGTERM marks the running
    trial INTERRUPTED (its values are re-queued) and re-raises KeyboardInterrupt. `artifacts`:
    the folder for Hyperband checkpoints (`tuner.search.artifacts`; default beside a SQLite store)."""
    fn = load_trial_fn(trial_fn) if isinstance(trial_fn, str) else trial_fn
    store_url = store_url or os.environ.get("TUNER_STORAGE") or DEFAULT_URL
    store = open_store(store_url)
    try:
        study = get_study(store, study_name)
        usercode.verify(study.settings.towers, f"study '{study.name}'")  # the same towers as every worker
        worker = _Worker(store, store_url, study, worker_id or f"{socket.gethostname()}-{os.getpid()}", log,
                         artifacts)
        if fn is None:
            from tuner.search.hypermodel import TrialRunner
            from tuner.space import load_space_text

            fn = TrialRunner(load_space_text(study.space, f"study '{study.name}'"))
        with sigterm_as_interrupt():
            return worker.loop(fn, stop_event, trials_per_process)
    finally:
        store.close()
