"""The search service end to end through the `tuner` command, with real training on MovieLens-100K."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tuner import config

REPO = Path(__file__).resolve().parents[1]
TEMP_SPACE = REPO / "search_spaces" / "temp.yaml"


def tuner(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuner.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=timeout)


def small_space(tmp_path: Path, name: str = "small", **search) -> Path:
    """The quick-start space, shrunk: 2 epochs of a 16-dimensional model per trial, no pruning."""
    space = yaml.safe_load(TEMP_SPACE.read_text())
    del space["search"]["early_terminate"]
    space["model"]["embedding_dim"] = 16
    space["training"]["epochs"] = 2
    space["search"].update({"max_trials": 4, **search})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_two_workers_best_config_round_trip(tmp_path):
    space = small_space(tmp_path)
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    result = tuner("search", "--space", str(space), "--study", "t", "--workers", "2", "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "study 't' finished: 4/4 done, 0 running, 0 failed | best" in result.stdout, result.stdout

    trials = rows(db, "SELECT number, status, kt_trial_id, params, worker FROM trials ORDER BY number")
    assert [t[0] for t in trials] == [1, 2, 3, 4]
    assert all(t[1] == "COMPLETED" for t in trials)
    assert len({t[2] for t in trials}) == 4, "a trial ran twice"
    temperatures = [json.loads(t[3])["retrieval.temperature"] for t in trials]
    assert len(set(temperatures)) == 4 and all(0.001 <= x <= 1 for x in temperatures)
    assert {t[4] for t in trials} == {"w0", "w1"}, "both workers should have run trials"
    epochs = rows(db, "SELECT COUNT(*) FROM metrics WHERE epoch IS NOT NULL AND name = 'val_recall@10'")
    assert epochs[0][0] == 4 * 2  # every epoch of every trial kept

    status = tuner("status", "--study", "t", "--storage", url, "--json", cwd=tmp_path)
    table = json.loads(status.stdout)
    best = [t for t in table["trials"] if t["best"]]
    assert len(best) == 1 and best[0]["objective"] == max(t["objective"] for t in table["trials"])

    out = tuner("best", "--study", "t", "--storage", url, "--out", "best.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    text = (tmp_path / "best.yaml").read_text()
    assert text.startswith("# Best config of study 't'") and f"trial {best[0]['number']}" in text
    cfg = config.load(tmp_path / "best.yaml")  # a valid training config
    assert cfg.retrieval.temperature == pytest.approx(best[0]["params"]["retrieval.temperature"])

    report = tuner("report", "--study", "t", "--storage", url, cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    assert report.stdout.splitlines()[0] == "reports/t.html" and (tmp_path / "reports" / "t.html").stat().st_size > 100_000
    assert "parameter importance over 4 trials:" in report.stdout and "retrieval.temperature" in report.stdout
    studies = tuner("studies", "--storage", url, cwd=tmp_path)
    assert studies.stdout.startswith("t ") and "4 completed" in studies.stdout
    text_status = tuner("status", "--storage", url, cwd=tmp_path)  # the newest study by default
    assert text_status.stdout.count("COMPLETED") == 4 and text_status.stdout.count("* ") == 1

    # test is touched once: no trial measured it; training the exported best config does
    assert rows(db, "SELECT COUNT(*) FROM metrics WHERE name LIKE '%test%'") == [(0,)]
    train = tuner("train", "--config", "best.yaml", "--out", "run", cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val"]["recall@10"] == pytest.approx(best[0]["objective"], rel=0.02)
    assert metrics["test"]["recall@10"] > 0 and metrics["most_popular"]["test"]["recall@10"] > 0
    assert all(entry["test"] for entry in metrics["baselines"].values() if "skipped" not in entry)
    assert "test:\n" in train.stderr  # the table of test metrics, beside the baselines'


def test_resume_after_interrupt_runs_no_trial_twice(tmp_path):
    space = small_space(tmp_path, max_trials=3)
    db = tmp_path / "study.db"
    args = [sys.executable, "-m", "tuner.cli", "search", "--space", str(space), "--study", "r", "--workers", "1",
            "--storage", f"sqlite:///{db}"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # interrupt once the first trial completed and the second runs
        if db.exists():
            try:
                done = rows(db, "SELECT COUNT(*) FROM trials WHERE status = 'COMPLETED'")[0][0]
                running = rows(db, "SELECT COUNT(*) FROM trials WHERE status = 'RUNNING'")[0][0]
            except sqlite3.OperationalError:
                done = running = 0
            if done >= 1 and running:
                break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the search never got to its second trial")
    os.killpg(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output[-2000:]
    statuses = [r[0] for r in rows(db, "SELECT status FROM trials")]
    assert "RUNNING" not in statuses and "INTERRUPTED" in statuses, statuses
    completed_before = rows(db, "SELECT kt_trial_id FROM trials WHERE status = 'COMPLETED'")

    result = tuner("search", "--space", str(space), "--study", "r", "--workers", "1", "--storage", f"sqlite:///{db}",
                   cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming" in result.stdout
    completed = rows(db, "SELECT kt_trial_id FROM trials WHERE status = 'COMPLETED'")
    assert set(completed_before) <= set(completed)
    assert len(completed) == len(set(completed)) == 3


def test_hyperband_honours_its_epoch_budget(tmp_path):
    space = small_space(tmp_path, oracle="hyperband", max_epochs=3, factor=3)
    data = yaml.safe_load(space.read_text())
    del data["search"]["max_trials"]
    space.write_text(yaml.safe_dump(data))
    db = tmp_path / "hb.db"
    result = tuner("search", "--space", str(space), "--study", "hb", "--workers", "2", "--storage", f"sqlite:///{db}",
                   cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = rows(db, "SELECT id, params FROM trials WHERE status = 'COMPLETED'")
    assert len(trials) >= 3
    for trial_id, params in trials:
        budget = json.loads(params)["tuner/epochs"]
        assert 1 <= budget <= 3
        trained = rows(db, f"SELECT MAX(epoch) FROM metrics WHERE trial_id = {trial_id}")[0][0]
        assert trained == budget


def test_a_trial_that_trained_all_its_epochs_is_completed_not_pruned(tmp_path):
    """Real tiny training, one worker in this process: with one epoch per trial, hyperband's
    rung 1 is every trial's last epoch. The second trial (τ 0.05) is below the first (τ 1.0)
    after one epoch, which would stop it at any earlier epoch; it trained in full, so it completes."""
    from tuner.search import create_or_resume_study, run_worker
    from tuner.space import load_space
    from tuner.store import list_trials, open_store

    space = yaml.safe_load(TEMP_SPACE.read_text())
    space["model"]["embedding_dim"] = 8
    space["training"]["epochs"] = 1
    space["evaluation"]["baselines"] = []
    base = {key: value for key, value in space.items() if key not in ("parameters", "search")}
    for name, temperature in (("flat", 1.0), ("sharp", 0.05)):
        config = {**base, "retrieval": {**base["retrieval"], "temperature": temperature}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    space["search"].update({"max_trials": 2, "base_first": False, "enqueue": ["flat.yaml", "sharp.yaml"]})
    path = tmp_path / "last.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    url = f"sqlite:///{tmp_path / 'last.db'}"
    store = open_store(url)
    create_or_resume_study(store, "last", load_space(str(path)))
    run_worker(url, "last", worker_id="w0", log=lambda line: None)

    trials = list_trials(store, "last")
    assert [t.params["retrieval.temperature"] for t in trials] == [1.0, 0.05]
    assert trials[1].objective < trials[0].objective, "the second trial must lose at the rung for this test"
    assert [t.status for t in trials] == ["COMPLETED", "COMPLETED"], [t.error for t in trials]
    decisions = rows(tmp_path / "last.db", "SELECT value FROM metrics WHERE name = 'tuner/continue' ORDER BY trial_id")
    assert decisions == [(1.0,), (1.0,)]


@pytest.mark.parametrize("parameters, expected", [
    ({"retrieval.temperature": {"distribution": "normal", "min": 0.01, "max": 1}}, "distribution"),
    ({"retrieval.temperature": {"distribution": "log_uniform_values", "min": 0.5, "max": 0.1}}, "min"),
    ({"retrieval.temperature": {"distribution": "log_uniform_values", "min": 0.0, "max": 1}}, "min"),
    ({"retrieval.temperatur": {"values": [0.1]}}, "retrieval.temperature"),
    ({"negatives.mns_batch_size": {"values": [64], "when": {"negatives.strategi": "mns"}}}, "when"),
])
def test_space_errors_stop_before_any_trial(tmp_path, parameters, expected):
    space = yaml.safe_load(TEMP_SPACE.read_text())
    space["parameters"] = parameters
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(space))
    db = tmp_path / "bad.db"
    result = tuner("search", "--space", str(path), "--storage", f"sqlite:///{db}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and str(path) in result.stderr and expected in result.stderr, result.stderr
    assert not db.exists() or rows(db, "SELECT COUNT(*) FROM trials")[0][0] == 0


def test_bare_space_name_and_unknown_name(tmp_path):
    result = tuner("search", "--space", "no-such-space", "--storage", f"sqlite:///{tmp_path}/x.db", cwd=tmp_path)
    assert result.returncode == 2
    assert "built-in: custom_towers, full, negatives, temp" in result.stderr


def test_conditional_space_restores_across_trials(tmp_path):
    """Conditional parameters survive the oracle's save/restore through the store on every trial."""
    space = yaml.safe_load(small_space(tmp_path).read_text())
    space["parameters"] = {
        "negatives.strategy": {"values": ["in_batch", "mns", "cbns"]},
        "negatives.mns_batch_size": {"values": [128, 512], "when": {"negatives.strategy": "mns"}},
        "negatives.cbns_memory_size": {"values": [2048, 4096], "when": {"negatives.strategy": "cbns"}},
    }
    space["search"].update({"max_trials": 4, "seed": 3})
    path = tmp_path / "conditional.yaml"
    path.write_text(yaml.safe_dump(space))
    db = tmp_path / "c.db"
    result = tuner("search", "--space", str(path), "--study", "c", "--workers", "1", "--storage", f"sqlite:///{db}",
                   cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = [json.loads(p) for (p,) in rows(db, "SELECT params FROM trials WHERE status = 'COMPLETED'")]
    assert len(trials) == 4
    for params in trials:
        strategy = params["negatives.strategy"]
        assert ("negatives.mns_batch_size" in params) == (strategy == "mns"), params
        assert ("negatives.cbns_memory_size" in params) == (strategy == "cbns"), params


@pytest.mark.postgres
def test_worker_joins_a_postgresql_study_through_the_cli(tmp_path, postgres_url):
    """`tuner search` on one "machine" and `tuner worker` on another share one PostgreSQL study."""
    space = small_space(tmp_path, max_trials=6)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TUNER_STORAGE": postgres_url}
    search = subprocess.Popen([sys.executable, "-m", "tuner.cli", "search", "--space", str(space), "--study", "pg",
                               "--workers", "1"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    joiner = None
    deadline = time.monotonic() + 300
    while joiner is None and time.monotonic() < deadline:  # join once the study exists
        if "pg " in tuner("studies", "--storage", postgres_url, cwd=tmp_path).stdout:
            joiner = subprocess.Popen([sys.executable, "-m", "tuner.cli", "worker", "--study", "pg",
                                       "--worker-id", "remote"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        time.sleep(1)
    assert joiner is not None, "the study never appeared in the store"
    search_out, _ = search.communicate(timeout=600)
    joiner_out, _ = joiner.communicate(timeout=600)
    assert search.returncode == 0, search_out[-3000:]
    assert joiner.returncode == 0, joiner_out[-3000:]
    table = json.loads(tuner("status", "--study", "pg", "--storage", postgres_url, "--json", cwd=tmp_path).stdout)
    assert [t["status"] for t in table["trials"]] == ["COMPLETED"] * 6
    assert sorted(t["number"] for t in table["trials"]) == [1, 2, 3, 4, 5, 6]
    assert len({json.dumps(t["params"], sort_keys=True) for t in table["trials"]}) == 6
    assert "remote" in {t["worker"] for t in table["trials"]}, "the joining worker ran no trial"


def test_a_trial_builds_its_config_once_and_a_worker_loads_its_split_once(tmp_path, monkeypatch):
    """The built-in trial path in this process: each trial's Config is made once from its values,
    and the worker loads and splits the data once for all its trials. The counters wrap the
    real functions (they still run); the worker's own log lines mark where each trial starts
    and ends."""
    from tuner import train
    from tuner.search import create_or_resume_study, run_worker
    from tuner.space import load_space
    from tuner.store import list_trials, open_store

    space = yaml.safe_load(TEMP_SPACE.read_text())
    space["model"]["embedding_dim"] = 8
    space["training"]["epochs"] = 1
    space["evaluation"]["every_epoch"] = False
    space["search"]["max_trials"] = 2
    path = tmp_path / "once.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    url = f"sqlite:///{tmp_path / 'once.db'}"
    store = open_store(url)
    create_or_resume_study(store, "once", load_space(str(path)))

    counts = {"configs": 0, "loads": 0}
    real_init, real_load = config.Config.__init__, train.load_dataset

    def counting_init(self, *args, **kwargs):
        counts["configs"] += 1
        real_init(self, *args, **kwargs)

    def counting_load(*args, **kwargs):
        counts["loads"] += 1
        return real_load(*args, **kwargs)

    monkeypatch.setattr(config.Config, "__init__", counting_init)
    monkeypatch.setattr(train, "load_dataset", counting_load)
    builds_per_trial, started = [], {}

    def log(line):
        words = line.split()
        if len(words) > 3 and words[1] == "trial" and words[3] == "started:":
            started[words[2]] = counts["configs"]
        elif len(words) > 3 and words[1] == "trial" and words[3] in ("completed", "FAILED"):
            builds_per_trial.append(counts["configs"] - started[words[2]])

    run_worker(url, "once", worker_id="w0", log=log)
    assert [t.status for t in list_trials(store, "once")] == ["COMPLETED", "COMPLETED"]
    assert builds_per_trial == [1, 1]
    assert counts["loads"] == 1


def test_search_trials_measure_validation_only_and_a_worker_ranks_its_references_once(tmp_path, monkeypatch):
    """Validation chooses, test is touched once: the trials of a real search (one worker, this
    process) store no test metric, neither the model's nor a baseline's, and evaluate no test part.
    The worker ranks MostPopular and reads the baselines once for its split, not once per trial,
    and a trial's final val metrics are its last epoch's (every val user): not evaluated again."""
    from tuner import train
    from tuner.search import create_or_resume_study, run_worker
    from tuner.space import load_space
    from tuner.store import list_metrics, list_trials, open_store

    space = yaml.safe_load(TEMP_SPACE.read_text())
    space["model"]["embedding_dim"] = 8
    space["training"]["epochs"] = 2
    space["evaluation"]["baselines"] = ["ease"]
    space["search"]["max_trials"] = 2
    del space["search"]["early_terminate"]
    path = tmp_path / "honest.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    url = f"sqlite:///{tmp_path / 'honest.db'}"
    store = open_store(url)
    create_or_resume_study(store, "honest", load_space(str(path)))

    parts, references = [], []
    real_evaluate, real_references = train.evaluate, train.references

    def counting_evaluate(model, split, part, *args, **kwargs):
        parts.append(part)
        return real_evaluate(model, split, part, *args, **kwargs)

    def counting_references(*args, **kwargs):
        references.append(args[2])
        return real_references(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate", counting_evaluate)
    monkeypatch.setattr(train, "references", counting_references)
    run_worker(url, "honest", worker_id="w0", log=lambda line: None)

    assert [t.status for t in list_trials(store, "honest")] == ["COMPLETED", "COMPLETED"]
    finals = {}
    for m in list_metrics(store, "honest"):
        if m.epoch is None:
            finals.setdefault(m.number, {})[m.name] = m.value
    for metrics in finals.values():
        assert not [name for name in metrics if "test_" in name], sorted(metrics)
        assert {"val_recall@10", "val_ndcg@100", "most_popular_val_recall@10", "ease_val_recall@10"} <= set(metrics)
    assert parts == ["val"] * 4  # two epochs of two trials; the final val metrics are the last epoch's
    assert references == [("val",)]  # once for the worker's split


def test_a_hyperband_child_starts_from_its_parents_weights_and_checkpoints_are_cleaned_up(tmp_path, monkeypatch):
    """Real tiny training, one worker in this process. A trial continuing a parent (Keras Tuner's
    tuner/trial_id) trains only epochs initial_epoch+1.. from the parent's checkpoint: its first
    epoch's loss is below the parent's first (same values and seed, so from scratch it would
    repeat it). Checkpoints of trials no bracket needs go during the study, the rest at its end;
    a missing checkpoint trains from scratch with a warning."""
    from tuner.search import artifacts, create_or_resume_study, run_worker
    from tuner.space import load_space
    from tuner.store import list_metrics, list_trials, open_store

    space = yaml.safe_load(TEMP_SPACE.read_text())
    space["model"]["embedding_dim"] = 8
    space["evaluation"]["every_epoch"] = True
    space["parameters"] = {"retrieval.temperature": {"values": [0.05, 0.2, 1.0]}}
    space["search"] = {"oracle": "hyperband", "max_epochs": 3, "factor": 3, "objective": "val_recall@10"}
    path = tmp_path / "hbc.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    url = f"sqlite:///{tmp_path / 'hbc.db'}"
    store = open_store(url)
    create_or_resume_study(store, "hbc", load_space(str(path)))
    folder = tmp_path / "art"

    dropped, restored, lines = [], [], []
    real_remove, real_restore = artifacts.remove_unneeded, artifacts.restore

    def remove_unneeded(study_folder, drop):
        dropped.append(sorted(drop))
        return real_remove(study_folder, drop)

    def restore(model, trial_folder):
        found = real_restore(model, trial_folder)
        restored.append((trial_folder.name, found))
        return found

    monkeypatch.setattr(artifacts, "remove_unneeded", remove_unneeded)
    monkeypatch.setattr(artifacts, "restore", restore)
    run_worker(url, "hbc", worker_id="w0", log=lines.append, artifacts=str(folder))

    trials = list_trials(store, "hbc")
    assert all(t.status == "COMPLETED" for t in trials), [(t.status, t.error) for t in trials]
    curves = {}
    for m in list_metrics(store, "hbc"):
        if m.epoch is not None and m.name == "loss":
            curves.setdefault(m.number, {})[m.epoch] = m.value
    children = [t for t in trials if t.params.get("tuner/initial_epoch")]
    assert children, "Hyperband handed out no trial that continues another"
    by_kt = {t.kt_trial_id: t for t in trials}
    for child in children:
        parent = by_kt[child.params["tuner/trial_id"]]
        start = child.params["tuner/initial_epoch"]
        assert (str(parent.number), True) in restored
        assert sorted(curves[child.number]) == list(range(start + 1, child.params["tuner/epochs"] + 1))
        assert curves[child.number][start + 1] < 0.99 * curves[parent.number][1], (curves[child.number],
                                                                                     curves[parent.number])
    assert any(d for d in dropped[:-1]), "no checkpoint was removed while the study ran"
    assert not (folder / "hbc").exists() and not folder.exists()  # the study ended: nothing kept


def test_a_missing_parent_checkpoint_trains_from_scratch_with_a_warning(tmp_path):
    from tuner.search.hypermodel import TrialRunner
    from tuner.search.trial import TrialContext

    ctx = TrialContext(number=5, values={"tuner/epochs": 3, "tuner/initial_epoch": 1, "tuner/trial_id": "0001"},
                       study="s", space="", objective="val_recall@10", direction="max", trial_id=5,
                       kt_trial_id="0005", parent=2, store_url="sqlite:///unused.db", hp_config={},
                       artifacts=str(tmp_path / "s"))
    lines = []
    assert TrialRunner._continue(ctx, model=None, log=lines.append) == 0
    assert lines == [f"warning: no checkpoint of its parent trial 2 in {tmp_path / 's' / '2'}: training from "
                     "scratch (epochs 1-3 instead of 2-3)"]
