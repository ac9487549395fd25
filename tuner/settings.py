"""A study's search settings, typed from the check to the last reader.

`search_settings` checks a space's `search:` (or a study's stored settings) once into a frozen
`SearchSettings`; a study keeps it, with what the study adds, as one `StudySettings`, which the
store stores flat and returns typed. Nothing here imports the store or TensorFlow, so the store,
the space and the search all read the same types.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Sequence

from tuner import safe_yaml, typed

ORACLES = ("random", "bayesian", "hyperband", "grid", "tpe")
ENQUEUE_ORACLES = ("random", "bayesian", "tpe")  # hyperband and grid plan every trial themselves
WARM_START_KEYS = ("study", "storage")
DIRECTIONS = ("max", "min")
ENGINES = ("local", "ray")  # where workers run: processes on this machine, or actors on a Ray cluster
# settings of one `tuner search` run, not of the study it runs; the study keeps what enqueue and
# warm_start read (StudySettings.enqueued, .warm_trials), not the files and study they name
RUN_ONLY = ("workers", "study", "engine", "trials_per_process", "enqueue", "warm_start")
HYPERBAND_ONLY = ("max_epochs", "factor")  # read by the Hyperband oracle alone
# A worker hands over to a fresh process after this many trials (None: one process for the whole
# study). Measured (experiments/benchmarks/worker_memory.py, 50 one-epoch MovieLens-100K trials):
# RSS after trial 50 over after trial 5 1.02 with 10 (1.01 with 5, 1.19 in one process); a fresh
# process costs ~20 s (Python, TensorFlow, the data, the first trace), 2-12% of ten full.yaml
# trials (median 94 s unpruned, 18 s under hyperband): 5 would double that for little memory.
TRIALS_PER_PROCESS = 10


@dataclass(frozen=True)
class SearchSettings:
    """How a study searches; built and checked by `search_settings` only, then trusted by the study."""

    oracle: str = "random"
    objective: str = "val_recall@10"
    direction: str = "max"
    max_trials: int | None = 20  # None: until the oracle stops by itself (hyperband, grid)
    workers: int = 1
    seed: int = 42  # default: the config's seed
    max_epochs: int | None = 10  # hyperband; default: training.epochs
    factor: int = 3  # hyperband
    retries: int = 1  # re-queues of a trial whose worker died
    study: str = ""  # default: the file's stem
    engine: str = "local"  # "ray": `tuner search` places the workers on a Ray cluster, as --ray does
    # A worker process hands its place to a fresh one (same worker id) after this many trials: every
    # trial builds a new TensorFlow graph and a process only grows (experiments/benchmarks/worker_memory.py).
    trials_per_process: int | None = TRIALS_PER_PROCESS
    early_terminate: dict[str, Any] | None = None  # checked, defaults filled: {"type": "hyperband", "min_iter": 1, "eta": 3}
    # random, bayesian, tpe: the space's own config is the first trial, so that a search starts
    # from what it is asked to improve (skipped, with a note, if a value of it lies outside the
    # space). Measured: experiments/benchmarks/sample_efficiency.py --base-first
    base_first: bool = True
    enqueue: list[str] = field(default_factory=list)  # training configs run next, their values read at the parameters' paths
    warm_start: dict[str, Any] | None = None  # tpe: {study: NAME, storage: URL (default: this study's)}

    def replace(self, source: str, **changes) -> SearchSettings:
        """These settings with `changes` (command-line overrides named by `source`), checked again."""
        return search_settings({**dataclasses.asdict(self), **changes}, source)


def search_settings(values: dict, source: str, objectives: Sequence[str] | None = None) -> SearchSettings:
    """Checked search settings from a mapping: a space's `search:` with its defaults filled in, or
    the settings of a study whose trials are not training configs (`objectives` None: any name)."""
    s = typed.build(SearchSettings, values, source, "search.")
    typed.one_of(s.oracle, ORACLES, source, "search.oracle")
    typed.one_of(s.direction, DIRECTIONS, source, "search.direction")
    typed.one_of(s.engine, ENGINES, source, "search.engine")
    if objectives is None:
        typed.require(bool(s.objective), source, "search.objective", "must be a metric name")
    else:
        typed.one_of(s.objective, objectives, source, "search.objective")
    typed.require(s.max_trials is not None or s.oracle in ("hyperband", "grid"), source, "search.max_trials",
                   f"required for oracle {s.oracle}")
    for key, low in (("max_trials", 1), ("workers", 1), ("retries", 0), ("factor", 2), ("trials_per_process", 1)):
        typed.require(getattr(s, key) is None or getattr(s, key) >= low, source, f"search.{key}",
                       f"must be >= {low} (got {getattr(s, key)})")
    if s.oracle == "hyperband":
        typed.require(s.max_epochs is not None and s.max_epochs >= 1, source, "search.max_epochs",
                       "must be >= 1 for hyperband")
    if s.early_terminate is not None:  # each pruner checks its own keys (their rules: tuner.search.pruners)
        from tuner.search.pruners import checked_early_terminate

        s = dataclasses.replace(s, early_terminate=checked_early_terminate(
            s.early_terminate, s.oracle, s.objective, s.direction, f"{source}: search.early_terminate"))
    typed.require(not s.enqueue or s.oracle in ENQUEUE_ORACLES, source, "search.enqueue",
                  f"not for oracle {s.oracle}, which plans every trial itself (oracles: {', '.join(ENQUEUE_ORACLES)})")
    typed.require(not s.enqueue or s.max_trials is None or len(s.enqueue) <= s.max_trials, source, "search.enqueue",
                  f"{len(s.enqueue)} configs, more than search.max_trials {s.max_trials}")
    if s.warm_start is not None:
        _check_warm_start(s.warm_start, s.oracle, source)
    return s


def _check_warm_start(raw: dict, oracle: str, source: str) -> None:
    key = "search.warm_start"
    typed.require(oracle == "tpe", source, key, f"only used by oracle tpe (oracle is {oracle})")
    for name, value in raw.items():
        typed.require(name in WARM_START_KEYS, source, f"{key}.{name}",
                      f"unknown key (allowed: {', '.join(WARM_START_KEYS)})")
        typed.require(isinstance(value, str) and bool(value), source, f"{key}.{name}",
                      f"expected a non-empty string, got {safe_yaml.quote(value)}")
    typed.require("study" in raw, source, f"{key}.study", "required: the name of the study to learn from")


@dataclass(frozen=True)
class StudySettings:
    """A study's settings as the store keeps and returns them: the space's checked search
    settings (`RUN_ONLY` aside) and what the study adds. Typed from the check to the last reader."""

    search: SearchSettings
    hyperparameters: dict = field(default_factory=dict)  # the space's keras_tuner.HyperParameters config
    heartbeat_timeout: float = 60.0  # seconds without a beat before a running trial is declared lost
    towers: dict | None = None  # fingerprint of the space's own towers (usercode.fingerprint)
    initial_points: int | None = None  # bayesian, tpe: random trials first, pinned when a budget grew
    base: dict | None = None  # search.base_first: the space's own config's values, run first; kept on resume
    enqueued: list[dict] = field(default_factory=list)  # search.enqueue's values, read at creation: run next
    warm_trials: dict | None = None  # tpe: search.warm_start's {study, storage, trials}, read at creation

    def stored(self) -> dict[str, Any]:
        """The settings as one flat JSON-ready mapping (search keys beside the study's own):
        this run's own settings and another oracle's keys left out, so neither tells studies apart."""
        skip = RUN_ONLY + (() if self.search.oracle == "hyperband" else HYPERBAND_ONLY)
        search = {k: v for k, v in dataclasses.asdict(self.search).items() if k not in skip}
        return {**search, **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "search"}}

    @classmethod
    def from_stored(cls, values: dict[str, Any]) -> StudySettings:
        """The settings of `stored()`, trusted (checked when the study was made); a key a study
        of an older version lacks takes its default."""
        names = {f.name for f in fields(SearchSettings)}
        search = SearchSettings(**{k: v for k, v in values.items() if k in names})
        own = {f.name: values[f.name] for f in fields(cls) if f.name != "search" and f.name in values}
        return cls(search, **own)
