"""Which searched parameters the objective depends on: random-forest permutation importance
over the completed trials."""
from __future__ import annotations

import math
from dataclasses import dataclass

from tuner.report.data import StudyData, is_number
from tuner.store import COMPLETED, PRUNED

MIN_IMPORTANCE_TRIALS = 4
IMPORTANCE_METHOD = ("random-forest permutation importance: a 200-tree random forest (scikit-learn) is fitted to "
                     "the objective of the completed trials, categorical parameters one-hot encoded; a "
                     "parameter's importance is the mean drop in R² when its values are shuffled (20 repeats)")


@dataclass(frozen=True)
class Importance:
    parameter: str
    score: float  # mean drop in R² when the parameter is shuffled
    std: float


def parameter_importance(data: StudyData) -> tuple[list[Importance], str]:
    """Ranked importance and the method, or [] and why not. See IMPORTANCE_METHOD. Trees split on
    thresholds, so log-scale parameters need no log transform: the ranking is the same."""
    done = [t for t in data.trials
            if t.status == COMPLETED and t.objective is not None and math.isfinite(t.objective)]
    y, counted = [t.objective for t in done], f"{len(done)} completed trials"
    if len(done) < MIN_IMPORTANCE_TRIALS:
        completed = len(done)
        done, y, epoch = _at_common_epoch(data)
        if len(done) < MIN_IMPORTANCE_TRIALS:
            return [], (f"not computed: needs at least {MIN_IMPORTANCE_TRIALS} completed trials with an objective "
                        f"(have {completed}), or as many pruned and "
                        "completed trials with a value at one epoch")
        counted = (f"{len(done)} completed and pruned trials, on the objective at epoch {epoch}, which all reached "
                   "(too few completed: a pruned search)")
    if max(y) == min(y):
        return [], "not computed: every completed trial has the same objective"
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    columns, categorical = {}, []
    for p in data.params:
        values = [t.params.get(p.name) for t in done]
        if all(v is None for v in values):
            continue
        if p.categorical or not all(v is None or is_number(v) for v in values):
            columns[p.name] = ["(inactive)" if v is None else str(v) for v in values]
            categorical.append(p.name)
        else:  # inactive conditional parameters: NaN, which scikit-learn's forests split on
            columns[p.name] = [np.nan if v is None else float(v) for v in values]
    if not columns:
        return [], "not computed: the trials have no parameter values"
    x, y = pd.DataFrame(columns), np.array(y)
    encode = ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), categorical)],
                               remainder="passthrough")
    model = make_pipeline(encode, RandomForestRegressor(n_estimators=200, random_state=0)).fit(x, y)
    mean, std = _permutation_importance(model, x, y, repeats=20)
    ranked = sorted((Importance(name, float(m), float(s)) for name, m, s in zip(x.columns, mean, std)),
                    key=lambda i: -i.score)
    return ranked, f"{IMPORTANCE_METHOD}; {counted}"


def _at_common_epoch(data: StudyData) -> tuple[list, list[float], int | None]:
    """Completed and pruned trials with their objective at the last epoch all of them reached.
    When pruning stops most trials, that early value is what every trial has; the importance it
    gives is that of the early objective, which is what pruning judged the trials by."""
    objective = data.study.objective
    curves = {n: dict(c) for n, c in data.curves.get(objective, {}).items()}
    trials = [t for t in data.trials if t.status in (COMPLETED, PRUNED) and curves.get(t.number)]
    if not trials:
        return [], [], None
    epoch = min(max(curves[t.number]) for t in trials)
    trials = [t for t in trials if epoch in curves[t.number]]
    return trials, [curves[t.number][epoch] for t in trials], epoch


def _permutation_importance(model, x, y, repeats: int):
    """scikit-learn's permutation_importance (R² drop; a whole column shuffled, so a one-hot
    parameter moves as one), batched: every shuffled copy goes through a single predict. The
    stock one predicts copy by copy, ~10 s for 60 trials of 16 parameters; this takes well under 1 s."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    copies = []
    for name in x.columns:
        for _ in range(repeats):
            shuffled = x.copy()
            shuffled[name] = x[name].to_numpy()[rng.permutation(len(x))]
            copies.append(shuffled)
    predicted = model.predict(pd.concat(copies, ignore_index=True)).reshape(len(x.columns), repeats, len(x))
    total = ((y - y.mean()) ** 2).sum()
    baseline = 1 - ((model.predict(x) - y) ** 2).sum() / total
    drop = baseline - (1 - ((predicted - y) ** 2).sum(axis=2) / total)
    return drop.mean(axis=1), drop.std(axis=1)
