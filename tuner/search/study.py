"""Studies: created from a space and its checked search settings, or resumed with the same ones.

The search settings arrive checked (`tuner.settings.search_settings`); what is checked here is
only what a space cannot know: the heartbeat timeout, and whether this machine can run the
oracle. Light on purpose: no keras_tuner import (the HyperParameters object comes built); a
space's own towers (`model.towers`) are built and checked in a child process.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import sys

from tuner import config, towers_check, typed, usercode
from tuner.errors import ConfigError
from tuner.settings import ENQUEUE_ORACLES, SearchSettings, StudySettings
from tuner.space import Space
from tuner.store import Store, Study, api, create_or_get_study, list_studies


def create_or_resume_study(store: Store, name: str, space: Space, *, search: SearchSettings | None = None,
                           heartbeat_timeout: float = 60.0, budget: str = "set") -> Study:
    """The study `name` (created if new) searching `space`, with the space's own search settings
    or `search` (the space's, with command-line overrides). The space's text is stored, so a
    worker on another machine needs no file. See `create_or_resume_custom_study`.

    A space with its own towers has them built once on a tiny batch first (a one-line
    ConfigError, and no study, when they fail); the study records the code's fingerprint, and
    resuming it with other code is refused, as workers with other code refuse to join."""
    cfg, towers = config.from_dict(space.base, space.source), None
    existing = next((s for s in list_studies(store) if s.name == name), None)
    if cfg.model.towers is not None:
        towers = towers_check.in_child(cfg)
        if existing is not None:
            usercode.verify(existing.settings.towers, f"study '{name}'")
    search, hyperparameters = search or space.search, space.hyperparameters()
    enqueue = None
    if search.enqueue:
        from tuner.search.warmstart import enqueued_values

        enqueue = enqueued_values(space, search.enqueue, hyperparameters)
    base = first_trial(existing, space, search, hyperparameters)
    if base is not None and base in (enqueue or []):
        base = None  # enqueued as well: run once
    return create_or_resume_custom_study(store, name, space.text, hyperparameters, search,
                                         heartbeat_timeout=heartbeat_timeout, budget=budget, towers=towers,
                                         enqueue=enqueue, base=base)


def first_trial(existing: Study | None, space: Space, search: SearchSettings, hyperparameters) -> dict | None:
    """The space's own values to run first (`search.base_first`), or None. A resume (`existing`,
    the stored study) keeps what its study was created with (none, for a study made before the
    setting existed). A base value outside the space is a note on stderr, not an error: the
    search runs without it."""
    if not search.base_first or search.oracle not in ENQUEUE_ORACLES:
        return None
    if existing is not None:
        return existing.settings.base
    from tuner.search.warmstart import base_values

    try:
        return base_values(space, hyperparameters)
    except ConfigError as e:
        print(f"note: {e}; the search starts without it (search.base_first)", file=sys.stderr, flush=True)
        return None


def create_or_resume_custom_study(store: Store, name: str, text: str, hyperparameters, search: SearchSettings, *,
                                  heartbeat_timeout: float = 60.0, budget: str = "set", towers: dict | None = None,
                                  enqueue: list[dict] | None = None, base: dict | None = None) -> Study:
    """The study `name` searching any keras_tuner.HyperParameters, for trial functions that do
    not train configs (tests, benchmarks); `text` is stored as the study's space.

    `search.max_trials` counts distinct trials (re-runs of a lost trial are not new trials);
    Hyperband also stops by itself when its brackets are done. `search.retries`: how often the
    values of a trial whose worker died are run again. A RUNNING trial whose heartbeat is older
    than `heartbeat_timeout` seconds is failed by whichever worker notices; heartbeats are
    written and judged on the database's clock, so the workers' clocks need not agree.
    An existing study must have the same space and settings (else StoreError), except its
    budget: `budget` "set" (`--max-trials`) raises the study's budget to `search.max_trials` and
    refuses a smaller one (StoreError, nothing changed: shrinking would strand the oracle's plan);
    "extend" (the space's own value) only ever raises it, so re-running a search whose budget
    was extended on the command line keeps the larger budget. `towers`: the fingerprint of the
    space's own towers (`usercode.fingerprint`), recorded for workers to compare. `enqueue`:
    values to run first (`search.enqueue` read by `warmstart.enqueued_values`); the settings'
    `warm_start` study is read here, so a study is only created once it fits. `base`: values to
    run before those (`search.base_first`, read by `first_trial`).
    """
    where = f"study '{name}'"
    if heartbeat_timeout <= 0:
        raise ConfigError(f"{where}: search.heartbeat_timeout: must be > 0 seconds")
    if search.oracle == "bayesian":
        missing = [m for m in ("sklearn", "scipy") if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(f"{where}: search.oracle: bayesian needs {' and '.join(missing)} "
                              "(pip install scikit-learn scipy), or use random, hyperband or grid")
    warm_trials = None
    if search.oracle == "tpe":
        from tuner.search import tpe, warmstart  # Optuna; keras_tuner is loaded already (hyperparameters)

        tpe.distributions(hyperparameters)  # a hyperparameter TPE cannot sample: refused before the study exists
        if search.warm_start is not None:
            warm_trials = warmstart.kept_or_read(store, search.warm_start, hyperparameters, search.objective,
                                               search.direction, name)
    if search.enqueue and enqueue is None:
        raise ConfigError(f"{where}: search.enqueue: config files are read at a space's parameter paths, "
                          "and this study has no space (give the values as `enqueue`)")
    if enqueue or base:
        typed.one_of(search.oracle, ENQUEUE_ORACLES, where, "search.oracle (with search.enqueue)")
    settings = StudySettings(search, hyperparameters=hyperparameters.get_config(), heartbeat_timeout=heartbeat_timeout,
                             towers=towers, base=base, enqueued=enqueue or [], warm_trials=warm_trials)
    study, created = create_or_get_study(store, name=name, space=text, settings=settings,
                                         resizable=("max_trials", "initial_points"))
    wanted, stored = search.max_trials, study.settings.search.max_trials
    if created or wanted is None or wanted == stored or (budget == "extend" and stored is not None and wanted < stored):
        return study
    # the random start of bayesian and tpe stays the one computed from the first budget
    points = None
    if stored and search.oracle == "bayesian":
        points = bayesian_initial_points(stored)
    elif stored and search.oracle == "tpe":
        points = tpe.startup_trials(stored)
    return dataclasses.replace(study, settings=api.resize_budget(store, study.id, wanted, initial_points=points))


def bayesian_initial_points(max_trials: int) -> int:
    """Random trials before the Gaussian process takes over. Keras Tuner's default, three per
    dimension (48 for the `full` space), would spend most budgets on random search."""
    return max(3, max_trials // 4)
