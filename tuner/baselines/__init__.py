"""The strongest simple recommenders, beside MostPopular, on the model's protocol.

EASE and ALS (item-item and factor models), and the peers each time protocol's specialists try
first: popularity over the recent part of training, and item-to-item transitions from the user's
latest items. Each is fitted on the training part (the model's data), its settings are chosen from
a small grid by the validation metric the model monitors, and the chosen fit is scored on test.
Scores go through `tuner.ranking`, the ranking the model and MostPopular go through; each
module's docstring says what users without training interactions get. Results are computed once
per split and cached on disk (`cache.py`), not once per trial.
"""
from __future__ import annotations

import time
from typing import Callable, Union

import numpy as np

from tuner import ranking
from tuner.baselines import als, ease, recent_popularity, transitions
from tuner.baselines.cache import cached, split_fingerprint
from tuner.data.movielens import cache_dir
from tuner.data.types import Split
from tuner.heldout import queries_of, with_cold_users

# each module: NAME, GRID, DEFAULT, skip_reason, Model(split, seed).fit(params) -> a Scorer
FAMILIES = {"ease": ease, "als": als, "recent_popularity": recent_popularity, "transitions": transitions}
VERSION = 1  # part of the cache key: raise it when what a baseline computes changes
# A fitted baseline's scores: one [num_items] row every user shares, or `scores(users, part)` ->
# [len(users), num_items] for those users when `part` ("val", "test") is ranked.
Scorer = Union[np.ndarray, Callable[[np.ndarray, str], np.ndarray]]


def baselines_for(cfg, split: Split, log=None, parts=("val", "test")) -> dict:
    """`{"ease": {"chosen": .., "val": .., "test": .., "grid": ..}, "als": ..}`, or `{"skipped": reason}`,
    for the baselines `evaluation.baselines` names, scored on `parts` (a search trial: val only)."""
    ev = cfg.evaluation
    root = cache_dir(cfg.dataset).parent / "baselines"  # beside the dataset cache: $TUNER_CACHE_DIR
    result = {}
    for name in ev.baselines:
        module = FAMILIES[name]
        reason = module.skip_reason(split.dataset.num_items)
        if reason is not None:
            result[name] = {"skipped": reason}
            continue
        key = split_fingerprint(split, baseline=name, grid=module.GRID, default=module.DEFAULT,
                                ks=list(ev.ks), monitor=ev.monitor, seed=cfg.seed, parts=list(parts), version=VERSION)
        result[name] = cached(root / f"{name}-{key}.json",
                              lambda: tune(module, split, ev.ks, ev.monitor, cfg.seed, ev.memory_mb, log, parts))
    return result


def tune(module, split: Split, ks: list[int], monitor: str, seed: int, memory_mb: float = 512,
         log=None, parts=("val", "test")) -> dict:
    """Fits every grid point, keeps the val-best (the first on ties) and scores it on `parts`.
    Without a val part there is nothing to choose on: the module's DEFAULT setting is fitted alone."""
    started = time.perf_counter()
    settings = module.GRID if len(split.val) else (module.DEFAULT,)
    if log is not None:
        log(f"baseline {module.NAME}: fitting {len(settings)} setting(s) on this split (once; then cached)")
    model = module.Model(split, seed)
    grid, chosen, scorer, best = [], None, None, None
    for params in settings:
        fitted = model.fit(params)
        value = score(split, "val", ks, fitted, memory_mb)[monitor] if len(split.val) else None
        if value is not None:
            grid.append({**params, f"val_{monitor}": value})
        if chosen is None or (value is not None and value > best):
            chosen, scorer, best = dict(params), fitted, value
    scored = {part: with_cold_users(lambda s, part=part: score(s, part, ks, scorer, memory_mb), split, part)
              for part in parts}
    entry = {"chosen": chosen, "chosen_on": f"val_{monitor}" if grid else "default: the split has no val part",
             **scored, "grid": grid, "seconds": round(time.perf_counter() - started, 3)}
    if log is not None:
        log(f"baseline {_describe(module.NAME, entry)}, {entry['seconds']:.1f} s")
    return entry


def score(split: Split, part: str, ks: list[int], scorer: Scorer, memory_mb: float = 512) -> dict[str, float]:
    """A fitted baseline's `Scorer` ranked by `tuner.ranking` on `part`; {} if the part is empty."""
    queries = queries_of(split, part, ks)
    if queries is None:
        return {}
    num_items = split.dataset.num_items
    if isinstance(scorer, np.ndarray):  # shared by every query: ranked as MostPopular's counts are
        return ranking.rank(scorer, queries, num_items, ks, memory_mb, label=f"{part} (baseline)")

    def scores(start, end):  # called from several threads at once: nothing shared is written
        return scorer(queries.user[start:end], part)

    return ranking.rank(scores, queries, num_items, ks, memory_mb, label=f"{part} (baseline)")


def columns(baselines: dict, part: str) -> dict[str, dict[str, float]]:
    """Table columns ("EASE", "ALS", ...) of the baselines that ran, for `evaluate.format_table`."""
    return {FAMILIES[name].NAME: entry[part] for name, entry in baselines.items()
            if "skipped" not in entry and entry.get(part)}


def describe(baselines: dict) -> list[str]:
    """One line per baseline: its chosen values, or why it did not run."""
    return [_describe(FAMILIES[name].NAME, entry) for name, entry in baselines.items()]


def _describe(label: str, entry: dict) -> str:
    if "skipped" in entry:
        return f"{label}: skipped: {entry['skipped']}"
    how = f"chosen on {entry['chosen_on']} from {len(entry['grid'])} settings" if entry["grid"] else entry["chosen_on"]
    return f"{label}: {_params(entry['chosen'])} ({how})"


def _params(params: dict) -> str:
    names = {"lambda": "λ", "regularization": "reg", "alpha": "α"}
    return ", ".join(f"popularity over the last {v:.0%} of training" if k == "fraction" else f"{names.get(k, k)} {v:g}"
                     for k, v in params.items())
