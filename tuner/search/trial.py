"""One trial as its trial function sees it (`TrialContext`), its heartbeat, its pruner's
decisions (`decide`, under the study lock), and its outcome.

A trial function takes a TrialContext and returns a dict of final metrics holding the study's
objective; what it does meanwhile (sleep, train here or in a child process) is its own
business. The built-in one is `tuner.search.hypermodel.TrialRunner`; tests and experiments
may name their own as "package.module:function" or "path/file.py:function".
"""
from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from tuner import usercode
from tuner.errors import TrialLost
from tuner.search.pruners import pruner_for
from tuner.search.pruning import decide
from tuner.store import Store, api, open_store
from tuner.store.engine import one_line
from tuner.store.schema import COMPLETED, FAILED, PRUNED


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
    study_id: int | None = None
    early_terminate: dict | None = None  # the study's checked search.early_terminate
    artifacts: str | None = None  # the study's artifact folder: checkpoints in <artifacts>/<trial number>/
    _store: Store | None = field(default=None, repr=False, compare=False)
    _lost: bool = field(default=False, repr=False, compare=False)
    pruned_at: int | None = field(default=None, compare=False)  # the epoch after which the pruner stopped it
    last_value: float | None = field(default=None, compare=False)  # the objective of the last reported epoch

    def __post_init__(self):
        self.pruner = pruner_for(self.early_terminate, self.objective, self.direction)  # once per trial

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
        from tuner.search.oracle import hyperparameters

        return hyperparameters(self.hp_config)

    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.store_url)
        return self._store

    def report_epoch(self, epoch: int, metrics: dict[str, float], last: bool = False) -> bool:
        """Writes one epoch's metrics at once (1-based: epochs done) and beats the heart. True when
        the study's pruner stops the trial here: the trial function ends after this epoch.
        `last`: the trial's final epoch, which the pruner records but never stops."""
        if self._lost or not api.report_epoch(self.store(), self.trial_id, epoch, metrics):
            self._lost = True
            raise TrialLost(f"trial {self.number} was declared lost by another worker (stale heartbeat)")
        if self.objective not in metrics:
            return False
        self.last_value = float(metrics[self.objective])
        if self.pruner is None:
            return False
        try:
            stop = decide(self.store(), self.pruner, self.study_id, self.trial_id, epoch, self.last_value, last)
        except TrialLost:
            self._lost = True
            raise
        if stop:
            self.pruned_at = epoch
        return stop

    def heartbeat(self) -> None:
        if self._lost or not api.heartbeat(self.store(), self.trial_id):
            self._lost = True
            raise TrialLost(f"trial {self.number} was declared lost by another worker (stale heartbeat)")

    def __getstate__(self):
        return {**self.__dict__, "_store": None}


class Heartbeat(threading.Thread):
    """Beats for a running trial from the background; notes when the trial was taken away.
    A failed beat (the database briefly unreachable) is logged and retried at the next one:
    only a trial whose beats stay away for the study's timeout is declared lost."""

    def __init__(self, ctx: TrialContext, interval: float, log: Callable[[str], None]):
        super().__init__(name=f"heartbeat-{ctx.number}", daemon=True)
        self.ctx, self.interval, self.log, self.done = ctx, interval, log, threading.Event()

    def run(self):
        while not self.done.wait(self.interval):
            try:
                if not api.heartbeat(self.ctx.store(), self.ctx.trial_id):
                    self.ctx._lost = True
                    return
            except Exception as exc:  # noqa: BLE001 - logged; the next beat retries
                self.log(f"trial {self.ctx.number}: heartbeat failed, retrying in {self.interval:.1f} s: "
                         f"{one_line(exc)}")

    def stop(self):
        self.done.set()
        self.join()


@dataclass
class Outcome:
    status: str  # COMPLETED | FAILED | INTERRUPTED | PRUNED
    metrics: dict[str, float] = field(default_factory=dict)
    objective: float | None = None
    error: str | None = None
    traceback: str | None = None


def judge(result, objective: str, ctx: TrialContext | None = None) -> Outcome:
    """A trial function's return value as an outcome: a finite objective or a FAILED reason; a
    trial the pruner stopped is PRUNED with the objective of its last epoch (what the pruner
    judged), beside whatever final metrics it returned."""
    if ctx is not None and ctx.pruned_at is not None:
        outcome = judge(result, objective)
        return Outcome(PRUNED, outcome.metrics, ctx.last_value,
                       error=f"pruned after epoch {ctx.pruned_at}: {objective}={ctx.last_value:.6g}")
    if not isinstance(result, Mapping):
        return Outcome(FAILED, error=f"the trial function returned {type(result).__name__}, expected a dict of metrics")
    try:
        values = {str(k): float(v) for k, v in result.items()}
    except (TypeError, ValueError):
        bad = next(k for k, v in result.items() if not isinstance(v, (int, float)))
        return Outcome(FAILED, error=f"metric {bad!r} is not a number: {result[bad]!r}")
    if objective not in values:
        return Outcome(FAILED, values, error=f"objective {objective!r} missing from the trial's metrics "
                                             f"(got: {', '.join(values) or 'none'})")
    if not math.isfinite(values[objective]):
        return Outcome(FAILED, values, error=f"objective {objective} is {values[objective]}")
    return Outcome(COMPLETED, values, values[objective])


def short_values(values: dict, limit: int = 160) -> str:
    """A trial's values on one line (logs, `tuner status`): last path segment, 4 significant
    digits, Keras Tuner's own `tuner/` keys left out."""
    shown = {k.rsplit(".", 1)[-1]: v for k, v in values.items() if not k.startswith("tuner/")}
    text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
    return text if len(text) <= limit else text[:limit - 1] + "…"


# --- trial functions named by strings (tests, experiments) -------------------------------------


def load_trial_fn(spec: str) -> Callable[[TrialContext], dict]:
    """The function named by "package.module:function" or "path/to/file.py:function", loaded as
    user towers are (`usercode.load_function`), its errors naming the trial function."""
    return usercode.load_function(spec, key="trial function")


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
