"""Pruning (`search.early_terminate`) on real SQLite stores: rung decisions on handmade curves,
and worker processes pruning one study together.

`curve_trial` is loaded by worker processes from this file, so the module imports no
TensorFlow at the top.
"""
import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import sqlalchemy as sa

import tuner  # noqa: F401  (before TensorFlow: selects tf-keras)
from tuner.errors import ConfigError
from tuner.search import TrialContext, create_or_resume_custom_study, start_local_workers
from tuner.search.pruners import HyperbandPruner, MedianPruner, options, promotable
from tuner.search.pruning import decide
from tuner.settings import search_settings
from tuner.space import load_space
from tuner.store import COMPLETED, PRUNED, RUNNING, EpochView, api, get_study, list_metrics, list_trials, open_store
from tuner.store.schema import DECISION

HERE = Path(__file__).resolve()
SPACE = "parameters:\n  x: {min: 0.0, max: 1.0}\n"


def hyperparameters():
    import keras_tuner as kt

    hp = kt.HyperParameters()
    hp.Float("x", 0.0, 1.0)
    return hp


def new_study(url, name="p", **settings):
    store = open_store(url)
    settings = {"oracle": "random", "objective": "score", "direction": "max", "max_trials": 12, "seed": 5,
                **settings}
    study = create_or_resume_custom_study(store, name, SPACE, hyperparameters(),
                                          search_settings(settings, f"study '{name}'"), heartbeat_timeout=30.0)
    return store, study


def add_trial(store, study, status=RUNNING) -> int:
    """A trial row as a worker writes it (the pruner needs only its id and status)."""
    with api.study_lock(store, study.id) as locked:
        trial_id, _ = locked.insert_trial(kt_trial_id=f"k{time.monotonic_ns()}", status=status,
                                          params="{}", started=locked.now, heartbeat=locked.now, kt_state="{}",
                                          kt_version=0)
    return trial_id


def report(store, trial_id, epoch, value):
    assert api.report_epoch(store, trial_id, epoch, {"score": value})


def recorded(store, trial_id) -> dict[int, float]:
    with store.read() as conn:
        rows = conn.execute(sa.text("SELECT epoch, value FROM metrics WHERE trial_id = :t AND name = :n"),
                            {"t": trial_id, "n": DECISION})
        return {epoch: value for epoch, value in rows}


def complete(store, study, trial_id):
    with api.study_lock(store, study.id) as locked:
        locked.update_trial(trial_id, status=COMPLETED)


# --- rung decisions on handmade curves -----------------------------------------------------


def test_hyperband_keeps_the_top_third_at_each_rung(sqlite_url):
    store, study = new_study(sqlite_url, early_terminate={"type": "hyperband", "min_iter": 1, "eta": 3})
    pruner = HyperbandPruner("score", "max", min_iter=1, eta=3)
    assert [e for e in range(1, 30) if pruner.is_rung(e)] == [1, 3, 9, 27]
    # Epoch-1 values in arrival order, and what the rule says: while fewer than eta trials reached
    # the rung a trial must be the best so far; from 6 on, the top 2 (6 // 3) go on.
    arrivals = [(0.5, False), (0.4, True), (0.6, False), (0.55, True), (0.3, True), (0.58, False), (0.57, True)]
    ids = []
    for value, stops in arrivals:
        trial_id = add_trial(store, study)
        ids.append(trial_id)
        report(store, trial_id, 1, value)
        assert decide(store, pruner, study.id, trial_id, 1, value) is stops, value
        assert recorded(store, trial_id) == {1: 0.0 if stops else 1.0}
    # Epoch 2 is no rung: nothing decided, nothing recorded.
    report(store, ids[0], 2, 0.1)
    assert decide(store, pruner, study.id, ids[0], 2, 0.1) is False
    assert 2 not in recorded(store, ids[0])
    # Rung 3 has its own competitors: the first trial there goes on whatever its value.
    report(store, ids[0], 3, 0.01)
    assert decide(store, pruner, study.id, ids[0], 3, 0.01) is False
    report(store, ids[2], 3, 0.02)
    assert decide(store, pruner, study.id, ids[2], 3, 0.02) is False  # the best of the two at rung 3
    # Never decided twice: asking again gives the recorded answer, whatever the value now says.
    assert decide(store, pruner, study.id, ids[1], 1, 0.99) is True
    assert decide(store, pruner, study.id, ids[0], 1, -1.0) is False
    with store.read() as conn:
        rows = conn.execute(sa.text(
            "SELECT COUNT(*) FROM metrics WHERE name = :n"), {"n": DECISION}).scalar()
    assert rows == len(arrivals) + 2
    # The pruner's rows are not metrics: curves and reports never see them.
    assert DECISION not in {m.name for m in list_metrics(store, "p")}


def test_hyperband_minimising_and_nan(sqlite_url):
    assert promotable(0.2, [0.2, 0.5, 0.9], 3, maximize=False)
    assert not promotable(0.5, [0.2, 0.5, 0.9], 3, maximize=False)
    assert promotable(0.4, [0.2, 0.5, 0.4, 0.9, 0.7, 0.8], 3, maximize=False)  # top 2 of 6: 0.2 and 0.4
    assert not promotable(0.5, [0.2, 0.5, 0.4, 0.9, 0.7, 0.8], 3, maximize=False)
    store, study = new_study(sqlite_url, direction="min", early_terminate={"type": "hyperband", "min_iter": 2,
                                                                          "eta": 2})
    pruner = HyperbandPruner("score", "min", min_iter=2, eta=2)
    first, second = add_trial(store, study), add_trial(store, study)
    report(store, first, 2, 0.3)
    assert decide(store, pruner, study.id, first, 1, 0.3) is False and recorded(store, first) == {}  # rung is 2
    assert decide(store, pruner, study.id, first, 2, 0.3) is False
    report(store, second, 2, math.nan)
    assert decide(store, pruner, study.id, second, 2, math.nan) is True


def test_a_rung_at_a_trials_last_epoch_stops_nothing_and_its_value_still_competes(sqlite_url):
    """Stopping after the last epoch saves nothing: a 9-epoch trial at rung 9 would be PRUNED
    after training in full. It goes on, recorded at the rung, where later trials meet it."""
    store, study = new_study(sqlite_url, early_terminate={"type": "hyperband", "min_iter": 1, "eta": 3})
    pruner = HyperbandPruner("score", "max", min_iter=1, eta=3)
    best, last, later = add_trial(store, study), add_trial(store, study), add_trial(store, study)
    report(store, best, 1, 0.5)
    assert decide(store, pruner, study.id, best, 1, 0.5) is False
    report(store, last, 1, 0.4)  # below the best at the rung: asked, the pruner stops it ...
    assert decide(store, pruner, study.id, last, 1, 0.4, last=True) is False  # ... but nothing is left to stop
    assert recorded(store, last) == {1: 1.0}
    assert decide(store, pruner, study.id, last, 1, 0.4) is False  # decided once: the recorded answer
    report(store, later, 1, 0.45)  # third at the rung: only the best of the three goes on, 0.4 counted
    assert decide(store, pruner, study.id, later, 1, 0.45) is True
    assert decide(store, pruner, study.id, best, 2, 0.6, last=True) is False and 2 not in recorded(store, best)


def test_median_stops_below_the_median_of_completed_trials_at_the_same_epoch(sqlite_url):
    store, study = new_study(sqlite_url, early_terminate={"type": "median", "min_iter": 2, "startup_trials": 2})
    pruner = MedianPruner("score", "max", min_iter=2, startup_trials=2)
    done_a = add_trial(store, study)
    for epoch, value in enumerate([0.1, 0.2, 0.3], 1):
        report(store, done_a, epoch, value)
    complete(store, study, done_a)
    early = add_trial(store, study)
    report(store, early, 1, 0.0)
    report(store, early, 2, 0.0)
    # One completed trial, two needed (startup_trials): no decision yet.
    assert decide(store, pruner, study.id, early, 2, 0.0) is False and recorded(store, early) == {}

    done_b = add_trial(store, study)
    for epoch, value in enumerate([0.2, 0.4, 0.5], 1):
        report(store, done_b, epoch, value)
    complete(store, study, done_b)
    # Median at epoch 2 of the completed trials: (0.2 + 0.4) / 2 = 0.3.
    low, dipped, high = add_trial(store, study), add_trial(store, study), add_trial(store, study)
    for trial_id, curve in ((low, [0.1, 0.25]), (dipped, [0.5, 0.29]), (high, [0.2, 0.31])):
        report(store, trial_id, 1, curve[0])
        assert decide(store, pruner, study.id, trial_id, 1, curve[0]) is False  # before min_iter
        report(store, trial_id, 2, curve[1])
    assert decide(store, pruner, study.id, low, 2, 0.25) is True
    assert decide(store, pruner, study.id, dipped, 2, 0.29) is False  # its best so far (0.5) counts
    assert decide(store, pruner, study.id, high, 2, 0.31) is False
    assert recorded(store, low) == {2: 0.0} and recorded(store, high) == {2: 1.0}
    # Epoch 3: the completed trials' values there are 0.3 and 0.5, median 0.4.
    report(store, high, 3, 0.35)
    assert decide(store, pruner, study.id, high, 3, 0.35) is True


def test_each_pruner_checks_its_own_keys_and_reads_plain_values():
    assert options("hyperband") == {"min_iter": 1, "eta": 3} and options("median") == {"min_iter": 1, "startup_trials": 5}
    with pytest.raises(ConfigError, match=r"^search.early_terminate.eta: must be an integer >= 2, got 1$"):
        HyperbandPruner("score", "max", eta=1)
    with pytest.raises(ConfigError, match=r"^x.yaml: search.early_terminate.startup_trials: must be an integer >= 0, "
                                          r"got True$"):
        MedianPruner("score", "max", startup_trials=True, where="x.yaml: search.early_terminate")
    view = EpochView(epoch=2, value=0.25, curve=(0.1, 0.25), decided=(0.5, 0.4), completed=(0.2, 0.4),
                     completed_trials=2)
    assert MedianPruner("score", "max", startup_trials=2).should_stop(view) is True  # 0.25 < median 0.3
    assert MedianPruner("score", "max", startup_trials=3).should_stop(view) is None  # two completed, three needed
    assert HyperbandPruner("score", "max", eta=3).should_stop(view) is True  # 0.25 is not the best of three
    assert HyperbandPruner("score", "min", eta=3).should_stop(view) is False


@pytest.mark.parametrize("early_terminate, message", [
    ({"type": "asha"}, "search.early_terminate.type: 'asha' is not one of hyperband, median"),
    ({"min_iter": 1}, "search.early_terminate.type: None is not one of hyperband, median"),
    ({"type": "hyperband", "min_iter": 0}, "search.early_terminate.min_iter: must be an integer >= 1, got 0"),
    ({"type": "hyperband", "eta": 1}, "search.early_terminate.eta: must be an integer >= 2, got 1"),
    ({"type": "median", "eta": 3}, "search.early_terminate.eta: only used by type hyperband "
                                   "(type median takes: min_iter, startup_trials)"),
    ({"type": "hyperband", "startup_trials": 3}, "search.early_terminate.startup_trials: only used by type median"),
    ({"type": "hyperband", "max_iter": 27}, "search.early_terminate.max_iter: unknown key (type hyperband takes: "
                                            "min_iter, eta)"),
    ("hyperband", "search.early_terminate: expected mapping or null, got 'hyperband'"),
])
def test_bad_early_terminate_keys_are_one_line_space_errors(tmp_path, early_terminate, message):
    import yaml

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"parameters": {"retrieval.temperature": {"values": [0.1, 0.2]}},
                                    "search": {"early_terminate": early_terminate}}))
    with pytest.raises(ConfigError) as err:
        load_space(str(path))
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value) and "\n" not in str(err.value)


def test_hyperband_early_terminate_with_the_hyperband_oracle_is_refused(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text("parameters:\n  retrieval.temperature: {values: [0.1, 0.2]}\n"
                    "search: {oracle: hyperband, early_terminate: {type: hyperband}}\n")
    with pytest.raises(ConfigError, match=r"both.yaml: search.early_terminate: type hyperband prunes within trials"):
        load_space(str(path))


# --- worker processes pruning one study ----------------------------------------------------


def curve_trial(ctx: TrialContext) -> dict:
    """Nine epochs whose score rises with x (so trials rank alike at every rung), reported as
    they end; stops when the pruner says so."""
    _barrier()
    value = None
    for epoch in range(1, 10):
        time.sleep(0.05)
        value = ctx.values["x"] * epoch / 9
        if ctx.report_epoch(epoch, {"score": value}):
            break
    return {"score": value}


def _barrier():
    folder = os.environ.get("TEST_BARRIER")
    if not folder or getattr(_barrier, "done", False):
        return
    _barrier.done = True
    Path(folder, str(os.getpid())).touch()
    deadline = time.monotonic() + 180
    while len(os.listdir(folder)) < int(os.environ["TEST_WORKERS"]) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_two_workers_prune_one_sqlite_study_and_no_trial_is_decided_twice(tmp_path):
    db = tmp_path / "prune.db"
    url = f"sqlite:///{db}"
    store, study = new_study(url, max_trials=12, early_terminate={"type": "hyperband", "min_iter": 1, "eta": 3})
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    codes = start_local_workers(2, url, "p", f"{HERE}:curve_trial",
                                env={"TEST_BARRIER": str(barrier), "TEST_WORKERS": "2"})
    assert codes == [0, 0]

    trials = list_trials(store, "p")
    assert len(trials) == 12 and len({t.kt_trial_id for t in trials}) == 12
    assert {t.status for t in trials} <= {COMPLETED, PRUNED}
    assert {t.worker for t in trials} == {"w0", "w1"}
    pruned = [t for t in trials if t.status == PRUNED]
    assert pruned and len(pruned) < 12

    with sqlite3.connect(db) as conn:
        marks = conn.execute("SELECT m.id, t.id, m.epoch, m.value FROM metrics m JOIN trials t ON t.id = m.trial_id "
                             "WHERE m.name = ? ORDER BY m.id", (DECISION,)).fetchall()
        scores = conn.execute("SELECT trial_id, epoch, value FROM metrics WHERE name = 'score' "
                              "AND epoch IS NOT NULL").fetchall()
    curve = defaultdict(dict)
    for trial_id, epoch, value in scores:
        curve[trial_id][epoch] = value
    decided = defaultdict(dict)
    for _, trial_id, epoch, value in marks:
        assert epoch not in decided[trial_id], f"trial row {trial_id} decided twice at epoch {epoch}"
        decided[trial_id][epoch] = value

    for t in trials:
        last = max(curve[t.id])
        # every rung it reached was decided once, and only rungs
        assert sorted(decided[t.id]) == [e for e in (1, 3, 9) if e <= last], t
        if t.status == PRUNED:
            assert decided[t.id][last] == 0.0 and last < 9  # stopped right after the deciding epoch
            assert all(v == 1.0 for e, v in decided[t.id].items() if e < last)
            assert t.objective == pytest.approx(curve[t.id][last])
            assert t.error == f"pruned after epoch {last}: score={curve[t.id][last]:.6g}"
        else:
            assert last == 9 and all(v == 1.0 for v in decided[t.id].values())

    # Decisions were taken one at a time: replaying them in the order they were recorded, each
    # against the rung values recorded before it, gives every recorded answer.
    seen = defaultdict(list)
    for _, trial_id, epoch, value in marks:
        mine = curve[trial_id][epoch]
        assert promotable(mine, seen[epoch] + [mine], 3, maximize=True) == (value == 1.0)
        seen[epoch].append(mine)

    # The oracle was told each pruned trial's last value as a finished observation.
    states = {t.kt_trial_id: t for t in trials}
    with sqlite3.connect(db) as conn:
        for kt_id, state in conn.execute("SELECT kt_trial_id, kt_state FROM trials"):
            state = json.loads(state)
            assert state["status"] == "COMPLETED"
            observed = state["metrics"]["metrics"]["score"]["observations"][0]["value"][0]
            assert observed == pytest.approx(states[kt_id].objective)

    status = subprocess.run([sys.executable, "-m", "tuner.cli", "status", "--study", "p", "--storage", url],
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "random oracle, early_terminate hyperband, 12/12 trials" in status.stdout
    assert sum(" PRUNED " in line for line in status.stdout.splitlines()) == len(pruned)


def test_a_trial_pruned_in_a_child_process_is_recorded_pruned(sqlite_url):
    """The pruner's decision is in the store, so a trial run in a fresh child process (whose
    context the worker never sees again) is still recorded PRUNED, with its last value."""
    from tuner.search import in_subprocess, run_worker

    store, _ = new_study(sqlite_url, max_trials=4, early_terminate={"type": "hyperband", "min_iter": 1, "eta": 3})
    run_worker(sqlite_url, "p", trial_fn=in_subprocess(f"{HERE}:curve_trial"), worker_id="w0", log=lambda m: None)
    trials = list_trials(store, "p")
    firsts = [t.params["x"] / 9 for t in trials]  # every trial's epoch-1 value
    expected = [i > 0 and firsts[i] < max(firsts[:i]) for i in range(len(trials))]  # fewer than eta: be the best
    assert [t.status == PRUNED for t in trials] == expected and any(expected)
    for t, first in zip(trials, firsts):
        if t.status == PRUNED:
            assert t.objective == pytest.approx(first)
