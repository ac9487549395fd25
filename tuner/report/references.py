"""The baselines a study's trials were measured beside (MostPopular, EASE, ALS, ...) as reference
values: dashed lines on the learning curves, a table beside the best trial, a line under
`tuner status`.

Every trial stores them among its final metrics (`tuner.train.flat_metrics`:
`most_popular_val_recall@10`, `ease_test_ndcg@10`, `als_...`; a skipped baseline has none).
They depend on the data, the split and the evaluation only, so the trials of a study hold the
same values, unless its space searches the data or the split (`dataset.*`, `split.*`, `seed`:
allowed) or some workers lack the ALS extra. Each baseline's values are the best trial's (its
split is the one the best objective was measured on, so best ÷ baseline compares like with
like), else the latest completed trial's that has them; a note says when trials disagree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from tuner.store import COMPLETED, Store, TrialRecord, list_metrics

# flat-metric prefix -> label: the labels of `tuner train`'s table (tuner.baselines.FAMILIES names them
# too, but importing it would load SciPy into `tuner status`)
BASELINES = {"most_popular": "MostPopular", "ease": "EASE", "als": "ALS", "recent_popularity": "RecentPopularity",
             "transitions": "Transitions"}
_PARTS = ("val_", "test_")
_SAME = 1e-6  # relative, not equality: MostPopular is recomputed by every trial, on several threads


@dataclass(frozen=True)
class References:
    values: dict[str, dict[str, float]] = field(default_factory=dict)  # label -> {"val_recall@10": ..}
    trials: dict[str, int] = field(default_factory=dict)  # label -> the trial its values come from
    note: str = ""  # why some trials' values are not shown, or ""

    def of(self, metric: str) -> dict[str, float]:
        """label -> the baseline's value of `metric` ("val_recall@10"), for those that have it."""
        return {label: v[metric] for label, v in self.values.items() if metric in v}

    def strongest(self, metric: str, minimise: bool) -> tuple[str, float] | None:
        """The baseline with the best value of `metric` (the first on ties), or None."""
        values = self.of(metric)
        if not values:
            return None
        label = (min if minimise else max)(values, key=values.get)
        return label, values[label]


def is_baseline_metric(name: str) -> bool:
    """True for a baseline's flat metric name (`ease_val_recall@10`), false for the model's."""
    return _split_name(name) is not None


def study_references(trials: list[TrialRecord], finals: dict, best: TrialRecord | None) -> References:
    """The baselines' values from the completed trials' final metrics (`finals`: number -> {name: value})."""
    held: dict[str, list[tuple[TrialRecord, dict[str, float]]]] = {}
    for t in trials:
        if t.status != COMPLETED:
            continue
        for label, found in _baselines_of(finals.get(t.number, {})).items():
            held.setdefault(label, []).append((t, found))
    values, sources, others = {}, {}, set()
    for label in BASELINES.values():  # the order of the table and the lines' labels
        if label not in held:
            continue
        chosen, values[label] = max(held[label], key=lambda tv: (best is not None and tv[0].number == best.number,
                                                                 tv[0].ended or datetime.min, tv[0].number))
        sources[label] = chosen.number
        others.update(t.number for t, v in held[label] if not _same(v, values[label]))
    note = ""
    if others:
        shown = sorted(set(sources.values()))
        which = ("the best trial's or else the latest that has each" if len(shown) > 1
                 else f"the best trial's ({shown[0]})" if best is not None and shown[0] == best.number
                 else f"the latest trial's ({shown[0]})")
        listed = ", ".join(map(str, sorted(others)[:5])) + (", ..." if len(others) > 5 else "")
        note = (f"the trials disagree on the baselines (trial(s) {listed} hold other values: does the space "
                f"search the data or the split?); shown: {which}")
    return References(values, sources, note)


def read_references(store: Store, study: str, trials: list[TrialRecord], best: TrialRecord | None) -> References:
    """`study_references` from the store, for callers that read no StudyData (`tuner status`)."""
    finals: dict = {}
    for m in list_metrics(store, study):
        if m.epoch is None:
            finals.setdefault(m.number, {})[m.name] = m.value
    return study_references(trials, finals, best)


def summary_line(references: References, objective: str, best: float | None, minimise: bool) -> str | None:
    """`baselines' val_recall@10: MostPopular 0.1120, EASE 0.2276, ALS 0.2364; best trial 1.02× ALS`."""
    values = references.of(objective)
    if not values:
        return None
    line = f"baselines' {objective}: " + ", ".join(f"{label} {v:.4f}" for label, v in values.items())
    strongest = references.strongest(objective, minimise)
    if best is not None and strongest[1]:
        line += f"; best trial {best / strongest[1]:.2f}× {strongest[0]}"
    return line + (f" (note: {references.note})" if references.note else "")


def _split_name(name: str) -> tuple[str, str] | None:
    """`ease_val_recall@10` -> ("EASE", "val_recall@10"); None for other names."""
    for prefix, label in BASELINES.items():
        rest = name[len(prefix) + 1:]
        if name.startswith(prefix + "_") and rest.startswith(_PARTS):
            return label, rest
    return None


def _baselines_of(metrics: dict) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        parts = _split_name(name)
        if parts is not None and value is not None and math.isfinite(value):
            found.setdefault(parts[0], {})[parts[1]] = value
    return found


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=_SAME, abs_tol=1e-12) for k in a)
