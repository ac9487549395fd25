"""A study read once from the store, in the shape the report draws: trials, final metrics,
per-epoch curves, the searched parameters in the space's order and the baselines' values.
Validation only: test metrics (stored by older studies or custom trial functions) are left out,
so that nothing on the page invites choosing on test."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from tuner.errors import ConfigError
from tuner.report.references import References, is_baseline_metric, is_test_metric, study_references
from tuner.store import Store, Study, TrialRecord, best_trial, get_study, list_metrics, list_trials


@dataclass(frozen=True)
class Param:
    """A searched parameter as the report draws it: a log axis, or categories."""
    name: str
    log: bool = False
    categorical: bool = False


@dataclass
class StudyData:
    """Everything the page shows, read once per rendering."""
    study: Study
    trials: list[TrialRecord]
    finals: dict  # trial number -> {metric: value}
    curves: dict  # metric -> trial number -> [(epoch, value)]
    params: list[Param]  # in the space's order
    space_note: str  # why the space could not be read, or ""
    best: TrialRecord | None
    references: References  # MostPopular, EASE, ALS on the trials' split


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def metric_order(names, objective: str) -> list[str]:
    """Objective first, then validation, other and baseline metrics."""
    def rank(name):
        return (name != objective, is_baseline_metric(name), not name.startswith("val_"), name)
    return sorted(names, key=rank)


def searched_params(space_text: str, trials) -> tuple[list[Param], str]:
    """The searched parameters in the space's order (constants left out) and a note when the stored
    space cannot be parsed any more (then: the trials' keys, linear axes)."""
    from tuner.space import load_space_text  # the one parser of the space syntax

    params, note = [], ""
    try:
        space = load_space_text(space_text, "space")
        params = [Param(p.path, p.distribution == "log_uniform_values", p.distribution == "categorical")
                  for p in space.parameters if p.distribution != "constant"]
    except ConfigError as exc:
        note = f"the study's space could not be read ({exc})"
    known = {p.name for p in params}
    for t in trials:  # Hyperband's epoch budget varies too; its other tuner/* keys are bookkeeping
        for key, value in t.params.items():
            if key not in known and (not key.startswith("tuner/") or key == "tuner/epochs"):
                known.add(key)
                params.append(Param(key, categorical=not is_number(value)))
    return params, note


def read_study(store: Store, study: str) -> StudyData:
    """The study, its trials, validation metrics (non-finite epoch values left out of the curves)
    and best trial."""
    s = get_study(store, study)
    trials = list_trials(store, study)
    finals: dict = defaultdict(dict)
    curves: dict = defaultdict(lambda: defaultdict(list))
    for m in list_metrics(store, study):
        if is_test_metric(m.name):
            continue
        if m.epoch is None:
            finals[m.number][m.name] = m.value
        elif m.value is not None and math.isfinite(m.value):
            curves[m.name][m.number].append((m.epoch, m.value))
    params, note = searched_params(s.space, trials)
    best = best_trial(store, study)
    return StudyData(s, trials, finals, curves, params, note, best, study_references(trials, finals, best))
