"""Workers coordinating through real SQLite files and a real PostgreSQL server.

Trial functions here only sleep and return a function of their values: the coordination is
under test, not training. They live at module level so worker processes can import them by
file ("tests/test_workers.py:slow_trial"); this module therefore imports no TensorFlow at
the top (keras_tuner is imported inside helpers).
"""
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import tuner  # noqa: F401  (before TensorFlow: selects tf-keras)
from tuner.errors import ConfigError
from tuner.search import TrialContext, create_or_resume_custom_study, in_subprocess, load_trial_fn, run_worker, \
    start_local_workers
from tuner.search.local import worker_env
from tuner.settings import search_settings
from tuner.store import COMPLETED, FAILED, INTERRUPTED, RUNNING, best_trial, list_metrics, list_trials, open_store

HERE = Path(__file__).resolve()
SPACE = "parameters:\n  x: {min: 0.0, max: 1.0}\n"


# --- trial functions (also run inside worker processes) ------------------------------------


def score(values) -> float:
    return -(values["x"] - 0.3) ** 2 - 0.001 * values["units"]


def quick_trial(ctx: TrialContext) -> dict:
    return {"score": score(ctx.values), "loss": 1 - ctx.values["x"]}


_waited = False


def _barrier():
    """Wait (once per process) until TEST_WORKERS processes got here, so all of them run trials."""
    global _waited
    folder = os.environ.get("TEST_BARRIER")
    if not folder or _waited:
        return
    _waited = True
    Path(folder, str(os.getpid())).touch()
    deadline = time.monotonic() + 180
    while len(os.listdir(folder)) < int(os.environ["TEST_WORKERS"]) and time.monotonic() < deadline:
        time.sleep(0.05)


def slow_trial(ctx: TrialContext) -> dict:
    """Two epochs of TEST_SLEEP seconds each, reported as they end."""
    _barrier()
    pause = float(os.environ.get("TEST_SLEEP", "0.5"))
    for epoch in (1, 2):
        time.sleep(pause)
        ctx.report_epoch(epoch, {"loss": 1 / epoch})
    return {"score": score(ctx.values)}


def pid_trial(ctx: TrialContext) -> dict:
    ctx.report_epoch(1, {"pid": os.getpid()})
    return {"score": score(ctx.values), "pid": os.getpid()}


_kept: list[bytes] = []  # what leaky_trial holds on to, as a fit's traced step holds a model


def leaky_trial(ctx: TrialContext) -> dict:
    """pid_trial that keeps 0.6 GiB more each trial (written, so resident)."""
    _kept.append(b"\x01" * (600 << 20))
    return pid_trial(ctx)


# --- helpers ---------------------------------------------------------------------------------


def hyperparameters(with_float=True):
    import keras_tuner as kt

    hp = kt.HyperParameters()
    if with_float:
        hp.Float("x", 0.0, 1.0)
    else:
        hp.Choice("x", [0.1, 0.3, 0.5])
    hp.Choice("units", [8, 16, 32])
    return hp


def new_study(url, name="s", with_float=True, heartbeat_timeout=3.0, **settings):
    store = open_store(url)
    settings = {"oracle": "random", "objective": "score", "direction": "max", "max_trials": 6, "seed": 7,
                "retries": 1, **settings}
    create_or_resume_custom_study(store, name, SPACE, hyperparameters(with_float),
                                  search_settings(settings, f"study '{name}'"), heartbeat_timeout=heartbeat_timeout)
    return store


def key(trial) -> tuple:
    return tuple(sorted(trial.params.items()))


def assert_consistent(store, study, max_trials):
    """Every number once, max_trials distinct trials completed, no values or trial completed twice."""
    rows = list_trials(store, study)
    assert [r.number for r in rows] == list(range(1, len(rows) + 1))
    done = [r for r in rows if r.status == COMPLETED]
    assert len(done) == max_trials
    assert len({r.kt_trial_id for r in done}) == max_trials
    assert len({key(r) for r in done}) == max_trials
    assert not [r for r in rows if r.status == RUNNING]
    return rows


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def running_with_a_curve(store, study):
    """A RUNNING trial that has reported its first epoch."""
    curves = {m.number for m in list_metrics(store, study) if m.epoch == 1}
    return next((r for r in list_trials(store, study, status=RUNNING) if r.number in curves), None)


# --- one worker, in this process -------------------------------------------------------------


def test_failed_trials_are_recorded_with_a_reason_and_the_study_goes_on(sqlite_url):
    store = new_study(sqlite_url, max_trials=6)

    def trial(ctx):
        if ctx.number == 2:
            raise ValueError("bad learning rate\nsecond line of the message")
        if ctx.number == 3:
            return {"score": float("nan")}
        if ctx.number == 4:
            return {"loss": 0.5}
        return quick_trial(ctx)

    run_worker(sqlite_url, "s", trial_fn=trial, worker_id="w0", log=lambda m: None)
    rows = list_trials(store, "s")
    assert [r.status for r in rows] == [COMPLETED, FAILED, FAILED, FAILED, COMPLETED, COMPLETED]
    assert rows[1].error == "ValueError: bad learning rate"
    assert "ValueError: bad learning rate" in rows[1].traceback and "raise ValueError" in rows[1].traceback
    assert rows[2].error == "objective score is nan"
    assert rows[3].error == "objective 'score' missing from the trial's metrics (got: loss)"
    assert all(r.retries == 0 for r in rows)  # a trial function's failure is final, not retried
    assert best_trial(store, "s").objective == max(r.objective for r in rows if r.status == COMPLETED)
    assert {(m.number, m.name) for m in list_metrics(store, "s") if m.epoch is None} >= {(1, "score"), (1, "loss")}


@pytest.mark.parametrize("oracle, settings", [
    ("random", {"max_trials": 8}),
    ("grid", {"max_trials": None}),
    ("hyperband", {"max_trials": None, "max_epochs": 3, "factor": 3}),
])
def test_a_resumed_study_continues_exactly_where_it_stopped(tmp_path, oracle, settings):
    """Stopping after each trial and resuming with a fresh worker (oracle rebuilt from the
    store) hands out the same trials as one uninterrupted worker: the whole oracle state,
    including what keras-tuner keeps outside get_state(), survives the database."""
    from keras_tuner.src.engine import oracle as kt_oracle

    with_float = oracle != "grid"
    straight, resumed = f"sqlite:///{tmp_path / 'straight.db'}", f"sqlite:///{tmp_path / 'resumed.db'}"
    locks = len(kt_oracle.LOCKS)
    stores = [new_study(url, oracle=oracle, with_float=with_float, **settings) for url in (straight, resumed)]
    run_worker(straight, "s", trial_fn=quick_trial, worker_id="w0", log=lambda m: None)

    stop = threading.Event()

    def one_trial(ctx):
        stop.set()  # finish this trial, then stop
        return quick_trial(ctx)

    for restart in range(30):
        stop.clear()
        run_worker(resumed, "s", trial_fn=one_trial, worker_id=f"w{restart}", stop_event=stop, log=lambda m: None)
        if not stop.is_set():
            break  # the worker found nothing left to run
    a, b = (list_trials(s, "s") for s in stores)
    assert [r.params for r in a] == [r.params for r in b]
    assert [r.objective for r in a] == [r.objective for r in b]
    assert len({r.worker for r in b}) == len(b)  # really one fresh worker per trial
    expected = {"random": 8, "grid": 9, "hyperband": 6}[oracle]
    assert_consistent(stores[1], "s", expected)
    assert len(kt_oracle.LOCKS) == locks  # no oracle kept alive by keras-tuner's per-instance locks


def test_a_larger_budget_extends_a_study_and_its_oracle_and_a_smaller_one_is_refused(tmp_path):
    """A study of 3 trials given 5 runs the same 5 trials as a study of 5 from the start; a
    smaller budget is a one-line error that changes nothing, also when no trial ran; the space's
    own smaller budget (no --max-trials) leaves an extended study's budget as it is."""
    from tuner.store import StoreError, get_study

    straight, extended = f"sqlite:///{tmp_path / 'straight.db'}", f"sqlite:///{tmp_path / 'extended.db'}"
    new_study(straight, max_trials=5)
    run_worker(straight, "s", trial_fn=quick_trial, worker_id="w0", log=lambda m: None)
    store = new_study(extended, max_trials=3)
    run_worker(extended, "s", trial_fn=quick_trial, worker_id="w0", log=lambda m: None)
    assert_consistent(store, "s", 3)

    with pytest.raises(StoreError) as err:
        new_study(extended, max_trials=2)
    assert str(err.value) == ("--max-trials 2: study 's' has a budget of 3 trials (3 run) and a budget only grows; "
                              "give at least 3, or a new --study")
    assert get_study(store, "s").settings.search.max_trials == 3
    fresh = new_study(straight.replace("straight", "fresh"), max_trials=6)
    with pytest.raises(StoreError, match="budget of 6 trials [(]0 run[)]"):
        new_study(straight.replace("straight", "fresh"), max_trials=4)
    assert get_study(fresh, "s").settings.search.max_trials == 6

    new_study(extended, max_trials=5)
    assert get_study(store, "s").settings.search.max_trials == 5
    run_worker(extended, "s", trial_fn=quick_trial, worker_id="w1", log=lambda m: None)
    rows = assert_consistent(store, "s", 5)
    assert [r.params for r in rows] == [r.params for r in list_trials(open_store(straight), "s")]
    assert [r.worker for r in rows] == ["w0"] * 3 + ["w1"] * 2

    settings = search_settings({"oracle": "random", "objective": "score", "direction": "max", "max_trials": 4,
                                "seed": 7, "retries": 1}, "study 's'")
    kept = create_or_resume_custom_study(store, "s", SPACE, hyperparameters(), settings, heartbeat_timeout=3.0,
                                         budget="extend")
    assert kept.settings.search.max_trials == 5 == get_study(store, "s").settings.search.max_trials
    status = subprocess.run([sys.executable, "-m", "tuner.cli", "status", "--study", "s", "--storage", extended],
                            capture_output=True, text=True, timeout=120)
    assert "random oracle, 5/5 trials" in status.stdout, status.stdout + status.stderr


def test_an_extended_bayesian_study_keeps_its_random_start(sqlite_url):
    from tuner.search.oracle import new_oracle
    from tuner.store import get_study

    store = new_study(sqlite_url, oracle="bayesian", max_trials=8)
    new_study(sqlite_url, oracle="bayesian", max_trials=40)
    study = get_study(store, "s")
    assert study.settings.search.max_trials == 40 and study.settings.initial_points == 3  # max(3, 8 // 4)
    assert new_oracle(study).num_initial_points == 3


def test_concurrent_workers_refresh_their_oracle_copies_from_each_others_writes(tmp_path):
    """Two workers (threads here) alternate on one study, each bringing its cached oracle up to
    date from the rows the other wrote: the random oracle hands out exactly the sequence one
    worker alone would."""
    straight, shared = f"sqlite:///{tmp_path / 'straight.db'}", f"sqlite:///{tmp_path / 'shared.db'}"
    stores = [new_study(url, max_trials=12) for url in (straight, shared)]
    run_worker(straight, "s", trial_fn=quick_trial, worker_id="w0", log=lambda m: None)

    def paced(ctx):
        time.sleep(0.05)
        return quick_trial(ctx)

    from side_by_side import run_workers_side_by_side  # here: worker processes load this file without tests/ on their path

    run_workers_side_by_side(shared, "s", paced)
    a, b = (list_trials(s, "s") for s in stores)
    assert [r.params for r in a] == [r.params for r in b]
    assert Counter(r.worker for r in b)["w1"] >= 3 and Counter(r.worker for r in b)["w0"] >= 3
    assert_consistent(stores[1], "s", 12)


def test_conditional_hyperparameters_survive_restores_and_repeated_reads(sqlite_url):
    """keras-tuner's from_config rewrites a config's conditions in place; stored settings and
    a context's hyperparameters must still rebuild every time."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    hp.Choice("strategy", ["in_batch", "mns"])
    with hp.conditional_scope("strategy", ["mns"]):
        hp.Choice("mns_batch_size", [128, 512])
    store = open_store(sqlite_url)
    create_or_resume_custom_study(store, "s", SPACE, hp, search_settings(
        {"oracle": "grid", "objective": "score", "direction": "max", "max_trials": None}, "study 's'"))
    stop = threading.Event()

    def trial(ctx):
        stop.set()
        first, second = ctx.hyperparameters, ctx.hyperparameters
        assert first.values == second.values == {k: v for k, v in ctx.values.items()}
        return {"score": 1.0 if ctx.values["strategy"] == "mns" else 0.0}

    for restart in range(10):
        stop.clear()
        run_worker(sqlite_url, "s", trial_fn=trial, worker_id=f"w{restart}", stop_event=stop, log=lambda m: None)
        if not stop.is_set():
            break
    rows = assert_consistent(store, "s", 3)
    assert sorted(map(key, rows)) == [(("mns_batch_size", 128), ("strategy", "mns")),
                                      (("mns_batch_size", 512), ("strategy", "mns")), (("strategy", "in_batch"),)]


def test_hyperband_passes_its_epoch_budget_and_parent_trial(sqlite_url):
    store = new_study(sqlite_url, oracle="hyperband", max_trials=None, max_epochs=3, factor=3)
    seen = {}

    def trial(ctx):
        seen[ctx.number] = (ctx.epochs, ctx.initial_epoch, ctx.parent)
        for epoch in range(ctx.initial_epoch + 1, ctx.epochs + 1):
            ctx.report_epoch(epoch, {"score": score(ctx.values)})
        return {"score": score(ctx.values)}

    run_worker(sqlite_url, "s", trial_fn=trial, worker_id="w0", log=lambda m: None)
    rows = {r.number: r for r in assert_consistent(store, "s", 6)}
    # max_epochs 3, factor 3: bracket 1 runs 3 one-epoch trials and continues the best for 1 -> 3
    # epochs; bracket 0 runs 2 three-epoch trials.
    assert sorted(seen.values(), key=str) == sorted(
        [(1, 0, None)] * 3 + [(3, 1, seen[4][2])] + [(3, 0, None)] * 2, key=str)
    best_first_round = max((rows[n] for n in (1, 2, 3)), key=lambda r: r.objective)
    assert seen[4][2] == best_first_round.number
    assert rows[4].params["tuner/trial_id"] == best_first_round.kt_trial_id
    assert rows[4].params["x"] == best_first_round.params["x"]
    epochs = Counter(m.number for m in list_metrics(store, "s") if m.epoch is not None)
    assert epochs == {1: 1, 2: 1, 3: 1, 4: 2, 5: 3, 6: 3}


def test_bayesian_needs_scikit_learn_or_runs(sqlite_url):
    import importlib.util

    if importlib.util.find_spec("sklearn") is None:
        with pytest.raises(ConfigError, match="bayesian needs sklearn"):
            new_study(sqlite_url, oracle="bayesian")
    else:
        store = new_study(sqlite_url, oracle="bayesian", max_trials=4)
        run_worker(sqlite_url, "s", trial_fn=quick_trial, worker_id="w0", log=lambda m: None)
        assert_consistent(store, "s", 4)


@pytest.mark.parametrize("settings, message", [
    ({"oracle": "cmaes"}, "study 's': search.oracle: 'cmaes' is not one of random, bayesian, hyperband, grid, tpe"),
    ({"direction": "up"}, "study 's': search.direction: 'up' is not one of max, min"),
    ({"max_trials": 0}, "study 's': search.max_trials: must be >= 1 (got 0)"),
    ({"oracle": "hyperband", "max_epochs": None}, "study 's': search.max_epochs: must be >= 1 for hyperband"),
    ({"retries": -1}, "study 's': search.retries: must be >= 0 (got -1)"),
    ({"trials_per_process": 0}, "study 's': search.trials_per_process: must be >= 1 (got 0)"),
    ({"trials_per_process": "often"}, "study 's': search.trials_per_process: expected int or null, got 'often'"),
])
def test_bad_search_settings_are_one_line_errors(sqlite_url, settings, message):
    with pytest.raises(ConfigError) as err:
        new_study(sqlite_url, **settings)
    assert str(err.value) == message


@pytest.mark.parametrize("spec, message", [
    ("no_colon", "trial function: 'no_colon' is not 'package.module:function' or 'path/to/file.py:function'"),
    ("tuner.nosuchmodule:f", "cannot import tuner.nosuchmodule"),
    ("tuner.config:nosuchfunction", "tuner.config has no function 'nosuchfunction'"),
    ("/nonexistent/trials.py:f", "file not found"),
])
def test_trial_function_specs(spec, message):
    with pytest.raises(ConfigError, match=message):
        load_trial_fn(spec)


def test_trial_functions_load_from_a_file_or_a_module():
    ctx = TrialContext(number=1, values={"x": 0.3, "units": 8}, study="s", space="", objective="score",
                       direction="max", trial_id=1, kt_trial_id="0", parent=None, store_url="", hp_config={})
    assert load_trial_fn(f"{HERE}:quick_trial")(ctx)["score"] == pytest.approx(-0.008)
    assert load_trial_fn("tuner.search.local:gpu_count")() >= 0


def test_local_workers_refuse_a_masked_url():
    with pytest.raises(ConfigError, match="a masked URL"):
        start_local_workers(1, "postgresql+psycopg://alice:***@db.example/tuner", "s", f"{HERE}:quick_trial")


def test_a_trial_can_run_in_a_fresh_child_process(sqlite_url):
    """The seam that keeps a long study's memory flat: the trial runs in a spawned child that
    reports epochs through the pickled context."""
    store = new_study(sqlite_url, max_trials=1)
    run_worker(sqlite_url, "s", trial_fn=in_subprocess(f"{HERE}:pid_trial"), worker_id="w0", log=lambda m: None)
    (trial,) = assert_consistent(store, "s", 1)
    metrics = {(m.epoch, m.name): m.value for m in list_metrics(store, "s")}
    assert metrics[(1, "pid")] == metrics[(None, "pid")] != os.getpid()


def test_worker_env_pins_gpus_or_splits_cpu_threads():
    assert worker_env(3, 4, gpus=2) == {"CUDA_VISIBLE_DEVICES": "1"}
    assert worker_env(0, 4, gpus=0, cores=2)["TF_NUM_INTRAOP_THREADS"] == "1"
    assert worker_env(0, 2, gpus=0, cores=8) == {"TF_NUM_INTRAOP_THREADS": "4", "TF_NUM_INTEROP_THREADS": "4",
                                                 "OMP_NUM_THREADS": "4"}


# --- worker processes ------------------------------------------------------------------------


def start_workers(n, url, tmp_path, sleep):
    """start_local_workers in a thread (it blocks); returns (thread, exit codes list)."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {"TEST_BARRIER": str(barrier), "TEST_WORKERS": str(n), "TEST_SLEEP": str(sleep)}
    codes = []
    thread = threading.Thread(target=lambda: codes.extend(start_local_workers(n, url, "s", f"{HERE}:slow_trial",
                                                                              env=env)))
    thread.start()
    return thread, codes


def test_a_worker_hands_over_to_a_fresh_process_every_n_trials_and_every_trial_runs_once(sqlite_url):
    """Memory stays flat when a worker's process ends every few trials: the launcher starts a
    fresh one with the same worker id, which no other worker may take for a lost one."""
    store = new_study(sqlite_url, max_trials=5, heartbeat_timeout=3.0)
    assert start_local_workers(1, sqlite_url, "s", f"{HERE}:pid_trial", trials_per_process=2) == [0]
    rows = assert_consistent(store, "s", 5)
    assert len(rows) == 5 and {r.worker for r in rows} == {"w0"}  # nothing failed, lost or re-run
    pids = [m.value for m in sorted(list_metrics(store, "s"), key=lambda m: m.number) if m.epoch is None and m.name == "pid"]
    assert [pids.index(pid) for pid in pids] == [0, 0, 2, 2, 4]  # trials 1-2, 3-4 and 5: three processes


def test_a_worker_that_runs_the_study_s_last_trial_leaves_without_a_fresh_process(sqlite_url, capfd):
    """Four trials, two per process: the second process runs the last two and then ends the
    study itself; before, a third process started only to find nothing left."""
    store = new_study(sqlite_url, max_trials=4, heartbeat_timeout=3.0)
    assert start_local_workers(1, sqlite_url, "s", f"{HERE}:pid_trial", trials_per_process=2) == [0]
    assert len(assert_consistent(store, "s", 4)) == 4
    out = "".join(capfd.readouterr())
    assert out.count("a fresh one takes its place") == 1 and out.count("has no more trials to run") == 1


def test_a_worker_whose_memory_grows_hands_over_before_its_count_of_trials(sqlite_url):
    """Each trial leaves 0.6 GiB behind: after its third a process holds over 1.25x and 1 GiB more
    than after its first, and a fresh one takes over, though 10 trials were allowed."""
    store = new_study(sqlite_url, max_trials=4, heartbeat_timeout=3.0)
    assert start_local_workers(1, sqlite_url, "s", f"{HERE}:leaky_trial", trials_per_process=10) == [0]
    rows = assert_consistent(store, "s", 4)
    assert len(rows) == 4 and {r.worker for r in rows} == {"w0"}
    pids = [m.value for m in sorted(list_metrics(store, "s"), key=lambda m: m.number) if m.epoch is None and m.name == "pid"]
    assert [pids.index(pid) for pid in pids] == [0, 0, 0, 3]


@pytest.mark.postgres
def test_three_worker_processes_share_a_postgresql_study(postgres_url, tmp_path):
    store = new_study(postgres_url, max_trials=9)
    thread, codes = start_workers(3, postgres_url, tmp_path, sleep=0.3)
    thread.join(timeout=240)
    assert codes == [0, 0, 0]
    rows = assert_consistent(store, "s", 9)
    assert {r.worker for r in rows} == {"w0", "w1", "w2"}
    assert len(rows) == 9


def test_a_worker_killed_mid_trial_is_noticed_and_its_trial_rerun(sqlite_url, tmp_path):
    """Three processes on one SQLite study; one is killed with SIGKILL while its trial runs.
    Another notices the stale heartbeat, fails the trial and the oracle hands its values out
    again; the study still completes every trial once."""
    store = new_study(sqlite_url, max_trials=9, retries=1, heartbeat_timeout=3.0)
    thread, codes = start_workers(3, sqlite_url, tmp_path, sleep=0.6)
    victim = wait_for(lambda: running_with_a_curve(store, "s"), 180, "a running trial with an epoch reported")
    os.kill(victim.pid, signal.SIGKILL)
    thread.join(timeout=240)
    assert sorted(codes) == [-signal.SIGKILL, 0, 0]

    rows = assert_consistent(store, "s", 9)
    lost = next(r for r in rows if r.number == victim.number)
    assert lost.status == FAILED
    assert lost.error.startswith("worker lost: heartbeat stale since ") and lost.error.endswith("; re-queued")
    assert lost.ended == lost.heartbeat  # its duration stops at its last heartbeat, not when the loss was seen
    assert any(m.epoch == 1 for m in list_metrics(store, "s", lost.number))  # its curve survived
    (rerun,) = [r for r in rows if r.kt_trial_id == lost.kt_trial_id and r.number != lost.number]
    assert rerun.status == COMPLETED and rerun.retries == 1 and rerun.params == lost.params
    assert rerun.pid != victim.pid
    assert len(rows) == 10  # nine trials, one of them run twice
    assert {r.worker for r in rows} == {"w0", "w1", "w2"}


@pytest.mark.postgres
def test_a_worker_killed_mid_trial_on_postgresql_leaves_every_trial_recorded_once(postgres_url, tmp_path):
    """Three worker processes on one PostgreSQL study; one gets SIGKILL while its trial runs, its
    connection dropping with it. The study finishes with every trial recorded once: each number
    once, no values or result completed twice, and every row COMPLETED except the killed trial,
    FAILED and re-queued, whose values then completed once on another worker."""
    store = new_study(postgres_url, max_trials=9, retries=1, heartbeat_timeout=3.0)
    thread, codes = start_workers(3, postgres_url, tmp_path, sleep=0.6)
    victim = wait_for(lambda: running_with_a_curve(store, "s"), 180, "a running trial with an epoch reported")
    os.kill(victim.pid, signal.SIGKILL)
    thread.join(timeout=240)
    assert not thread.is_alive()
    assert sorted(codes) == [-signal.SIGKILL, 0, 0]

    rows = assert_consistent(store, "s", 9)
    assert len(rows) == 10  # nine trials, the killed one run twice
    assert Counter(r.status for r in rows) == {COMPLETED: 9, FAILED: 1}
    (lost,) = [r for r in rows if r.status == FAILED]
    assert lost.number == victim.number and lost.pid == victim.pid
    assert lost.error.startswith("worker lost: heartbeat stale since ") and lost.error.endswith("; re-queued")
    (rerun,) = [r for r in rows if r.kt_trial_id == lost.kt_trial_id and r.number != lost.number]
    assert rerun.status == COMPLETED and rerun.retries == 1 and rerun.params == lost.params
    assert rerun.pid != victim.pid and rerun.number > lost.number
    done = [r for r in rows if r.status == COMPLETED]
    assert len({r.number for r in done}) == len({r.objective for r in done}) == 9  # no result recorded twice
    finals = [(m.number, m.name) for m in list_metrics(store, "s") if m.epoch is None]
    assert len(finals) == len(set(finals))  # each final metric written once
    assert {number for number, _ in finals} == {r.number for r in done}  # and none for the lost trial
    assert victim.pid not in {r.pid for r in done}


@pytest.mark.parametrize("how", ["ctrl-c to start_local_workers", "sigterm to a worker"])
def test_an_interrupted_trial_is_rerun_on_resume_and_nothing_runs_twice(sqlite_url, monkeypatch, how):
    """Ctrl-C reaches start_local_workers, which forwards it to its worker; SIGTERM goes to a
    worker directly. Either way the running trial is marked INTERRUPTED and a resume runs it
    again, keeps every completed trial and runs none of them twice."""
    store = new_study(sqlite_url, max_trials=5)
    spec = f"{HERE}:slow_trial"
    if how.startswith("ctrl-c"):
        command = ["-c", f"from tuner.search import start_local_workers; "
                         f"start_local_workers(1, {sqlite_url!r}, 's', {spec!r})"]
        sent = signal.SIGINT
    else:
        command = ["-m", "tuner.search.local", "--storage", sqlite_url, "--study", "s", "--trial-fn", spec,
                   "--worker-id", "w0"]
        sent = signal.SIGTERM
    env = {**os.environ, "TEST_SLEEP": "0.4"}
    env.pop("TEST_BARRIER", None)
    proc = subprocess.Popen([sys.executable, *command], env=env)
    try:
        def two_done_and_one_running():
            return len(list_trials(store, "s", status=COMPLETED)) >= 2 and running_with_a_curve(store, "s")
        victim = wait_for(two_done_and_one_running, 180, "two completed trials and a running one")
        proc.send_signal(sent)
        code = proc.wait(timeout=90)
    finally:
        proc.kill()
    if sent == signal.SIGTERM:
        assert code == 130
    before = list_trials(store, "s")
    interrupted = next(r for r in before if r.number == victim.number)
    assert interrupted.status == INTERRUPTED and "interrupted" in interrupted.error
    finished_before = {r.number: (r.objective, r.ended) for r in before if r.status == COMPLETED}

    monkeypatch.setenv("TEST_SLEEP", "0.01")
    run_worker(sqlite_url, "s", trial_fn=slow_trial, worker_id="w1", log=lambda m: None)
    rows = assert_consistent(store, "s", 5)
    assert {r.number: (r.objective, r.ended) for r in rows if r.number in finished_before} == finished_before
    (rerun,) = [r for r in rows if r.kt_trial_id == interrupted.kt_trial_id and r.status == COMPLETED]
    assert rerun.worker == "w1" and rerun.params == interrupted.params
    assert rerun.retries == 0  # an interruption is not a failure: it uses up no retry
    assert len(rows) == 6


# --- clocks ----------------------------------------------------------------------------------

# A worker whose machine clock is `hours` off, as far as tuner can see: this machine's time as
# the store reads it (`api.utcnow`) and time.time are shifted once TensorFlow is loaded
# (replacing datetime.datetime itself makes TensorFlow's import crash).
SKEWED_WORKER = """
import datetime, sys, time
import tuner.search.oracle
from tuner.search.local import main
from tuner.store import api
shift = datetime.timedelta(hours=float(sys.argv[1]))
real_utcnow, real_time = api.utcnow, time.time
api.utcnow = lambda: real_utcnow() + shift
time.time = lambda: real_time() + shift.total_seconds()
sys.exit(main(sys.argv[2:]))
"""


def test_heartbeats_are_judged_on_the_database_clock_whatever_the_workers_clocks(store_url, tmp_path):
    """One worker's clock runs 3 hours ahead, the other's 3 hours behind. Neither declares the
    other's live trials lost, and when the one ahead is killed mid-trial, the one behind still
    notices within the timeout: start, heartbeat and end times all come from the database."""
    from tuner.store import api

    store = new_study(store_url, max_trials=12, retries=1, heartbeat_timeout=3.0)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "TEST_BARRIER": str(barrier), "TEST_WORKERS": "2", "TEST_SLEEP": "0.6"}
    procs = {name: subprocess.Popen([sys.executable, "-c", SKEWED_WORKER, hours, "--storage", store_url,
                                     "--study", "s", "--trial-fn", f"{HERE}:slow_trial", "--worker-id", name],
                                    env=env)
             for name, hours in (("ahead", "3"), ("behind", "-3"))}
    try:
        def running_ahead():  # after the one ahead completed a trial beside the one behind
            if {r.worker for r in list_trials(store, "s", status=COMPLETED)} != {"ahead", "behind"}:
                return None
            curves = {m.number for m in list_metrics(store, "s") if m.epoch == 1}
            return next((r for r in list_trials(store, "s", status=RUNNING)
                         if r.worker == "ahead" and r.number in curves), None)

        victim = wait_for(running_ahead, 180, "a second running trial of the worker whose clock is ahead")
        os.kill(victim.pid, signal.SIGKILL)
        assert procs["behind"].wait(timeout=240) == 0
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    rows = assert_consistent(store, "s", 12)
    failed = [r for r in rows if r.status == FAILED]
    assert [r.number for r in failed] == [victim.number], [(r.number, r.worker, r.error) for r in failed]
    assert failed[0].error.startswith("worker lost: heartbeat stale since ") and failed[0].error.endswith("; re-queued")
    (rerun,) = [r for r in rows if r.kt_trial_id == victim.kt_trial_id and r.number != victim.number]
    assert rerun.status == COMPLETED and rerun.worker == "behind"
    assert {r.worker for r in rows if r.status == COMPLETED} == {"ahead", "behind"}
    with store.read() as conn:
        now = conn.execute(sa.select(api.database_now())).scalar_one()
    for r in rows:  # the database's clock: minutes from its now, never hours
        assert all(abs(t - now) < timedelta(minutes=10) for t in (r.started, r.heartbeat, r.ended)), r


def test_a_failed_heartbeat_is_logged_and_retried(sqlite_url):
    """The heartbeat thread swallows a database error only after logging it, and beats again."""
    import sqlite3

    from tuner.search.trial import Heartbeat

    store = new_study(sqlite_url, max_trials=1)
    seen = []

    def trial(ctx):
        lines = []
        beat = Heartbeat(ctx, 0.1, log=lines.append)
        db = sqlite_url.removeprefix("sqlite:///")
        with sqlite3.connect(db) as conn:  # the trials table disappears for a moment
            conn.execute("ALTER TABLE trials RENAME TO trials_away")
        beat.start()
        wait_for(lambda: lines, 30, "a logged heartbeat failure")
        with sqlite3.connect(db) as conn:
            conn.execute("ALTER TABLE trials_away RENAME TO trials")
        before = len(lines)
        time.sleep(0.5)
        beat.stop()
        seen.extend(lines[:before])
        assert len(lines) == before and not ctx._lost  # beating again once the table is back
        return quick_trial(ctx)

    run_worker(sqlite_url, "s", trial_fn=trial, worker_id="w0", log=lambda m: None)
    assert seen and all(line.startswith("trial 1: heartbeat failed, retrying in 0.1 s: ") for line in seen), seen
    assert "trials" in seen[0]
    (row,) = assert_consistent(store, "s", 1)
    assert row.status == COMPLETED
