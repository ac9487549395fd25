"""EASE and ALS baselines: the closed form against NumPy, selection on val, the cache, the command
(the counting peers, recent popularity and transitions: test_recent_baselines.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import tuner  # noqa: F401  (before TensorFlow: selects tf-keras)
from tuner import config
from tuner.baselines import als, baselines_for, ease, score, tune
from tuner.baselines.history import user_items
from tuner.data import load_dataset, make_split
from tuner.data.types import Dataset, Interactions, Split
from tuner.errors import ConfigError
from tuner.evaluate import evaluate, most_popular

import tensorflow as tf  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KS = [5, 10]


def interactions(user, item) -> Interactions:
    n = len(user)
    return Interactions(np.asarray(user, np.int32), np.asarray(item, np.int32), np.arange(n, dtype=np.int64),
                        np.ones(n, np.float32))


def hand_split(train, val, test, num_users, num_items) -> Split:
    dataset = Dataset("hand", np.array([""] + [f"u{i}" for i in range(1, num_users + 1)]),
                      np.array([""] + [f"i{i}" for i in range(1, num_items + 1)]), interactions(*train))
    return Split(dataset, interactions(*train), interactions(*val), interactions(*test))


# 5 users x 6 items, every user with training items; rows are (users, items)
HAND = hand_split(([1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 5, 5], [1, 2, 3, 2, 4, 1, 3, 5, 5, 6, 1, 2, 4, 6]),
                  ([1, 2, 3, 4, 5], [4, 1, 2, 1, 3]),
                  ([1, 1, 2, 3, 4, 4, 5], [5, 6, 3, 6, 2, 3, 5]), 5, 6)


def synthetic_config(tmp_path: Path, seed: int = 42) -> dict:
    return {"seed": 42, "dataset": {"name": "synthetic", "num_users": 300, "num_items": 120,
                                    "num_interactions": 6000, "num_clusters": 6, "cache_dir": str(tmp_path)},
            "split": {"method": "random", "val_fraction": 0.1, "test_fraction": 0.2, "seed": seed},
            "evaluation": {"ks": KS, "monitor": "recall@10"}}


def synthetic_split(cfg) -> Split:
    return make_split(load_dataset(cfg.dataset, seed=cfg.seed), cfg.split, cfg.model.history_length)


class Towers:
    """A two-tower model whose dot product is X·B: user rows of X against item columns of B."""

    def __init__(self, x: np.ndarray, b: np.ndarray):
        self.users = tf.constant(x, tf.float32)
        self.items = tf.constant(np.concatenate([np.zeros((1, b.shape[0])), b.T]), tf.float32)

    def query_tower(self, features, training=False):
        return tf.gather(self.users, features["user"])

    def candidate_tower(self, ids, training=False):
        return tf.gather(self.items, ids)


def closed_form(x: np.ndarray, lam: float) -> np.ndarray:
    """Steck 2019, eq. 8, written out independently: B = I - P diag(1/diag(P)), P = (XᵀX + λI)⁻¹."""
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    return np.eye(x.shape[1]) - p @ np.diag(1.0 / np.diag(p))


def test_ease_on_a_handmade_matrix_equals_its_closed_form():
    x = np.zeros((6, 6))  # row 0: padding user
    x[HAND.train.user, HAND.train.item - 1] = 1.0
    np.testing.assert_array_equal(user_items(HAND).toarray(), x)
    for lam in (0.5, 3.0):
        expected = closed_form(x[1:], lam)
        assert np.allclose(np.diag(expected), 0.0)
        np.testing.assert_allclose(ease.item_weights(x.T @ x, lam), expected, atol=1e-12)
        scores = ease.Model(HAND, seed=0).fit({"lambda": lam})(np.arange(1, 6), "val")
        np.testing.assert_allclose(scores, x[1:] @ expected, rtol=1e-5, atol=1e-6)
        # and its metrics are the model path's metrics for towers computing the same scores
        towers = Towers(x, expected)
        for part in ("val", "test"):
            assert score(HAND, part, KS, ease.Model(HAND, 0).fit({"lambda": lam})) == \
                pytest.approx(evaluate(towers, HAND, part, KS))


def test_users_without_training_items_get_most_popular_scores():
    cold = hand_split(([1, 1, 2, 2, 3], [1, 2, 2, 3, 4]), ([], []), ([4, 4, 5], [1, 5, 3]), 5, 5)
    scorer = ease.Model(cold, 0).fit({"lambda": 1.0})
    assert score(cold, "test", KS, scorer) == most_popular(cold, "test", KS)
    assert score(cold, "val", KS, scorer) == {}


def test_lambda_is_the_val_best_of_the_grid(tmp_path):
    cfg = config.from_dict(synthetic_config(tmp_path), "test")
    split = synthetic_split(cfg)
    result = tune(ease, split, KS, "recall@10", cfg.seed)
    assert [{"lambda": g["lambda"]} for g in result["grid"]] == list(ease.GRID)
    values = [g["val_recall@10"] for g in result["grid"]]
    assert len(set(values)) > 1, values  # the grid matters on this split, so the choice is tested
    best = ease.GRID[int(np.argmax(values))]
    assert result["chosen"] == best and result["chosen_on"] == "val_recall@10"
    fitted = ease.Model(split, 0).fit(best)
    assert overall(result["val"]) == score(split, "val", KS, fitted)
    assert result["val"]["recall@10"] == max(values)
    assert overall(result["test"]) == score(split, "test", KS, fitted)
    for part in ("val", "test"):  # cold users reported as for the model and MostPopular
        held = getattr(split, part)
        assert result[part].get("cold_users", 0) == len(set(held.user[split.user_counts()[held.user] == 0]))
    assert result["test"]["recall@10"] > most_popular(split, "test", KS)["recall@10"]


def test_without_a_val_part_the_default_is_used(tmp_path):
    raw = synthetic_config(tmp_path)
    raw["split"]["val_fraction"] = 0.0
    cfg = config.from_dict(raw, "test")
    result = tune(ease, synthetic_split(cfg), KS, "recall@10", cfg.seed)
    assert result["chosen"] == ease.DEFAULT and result["grid"] == [] and result["val"] == {}
    assert result["chosen_on"].startswith("default") and result["test"]["recall@10"] > 0


def overall(metrics: dict) -> dict:
    return {name: value for name, value in metrics.items() if not name.startswith("cold_")}


def test_ease_is_skipped_with_its_reason_above_the_item_limit():
    assert ease.skip_reason(ease.MAX_ITEMS) is None
    assert ease.skip_reason(20_001) == "20,001 items > 20,000: EASE needs a dense items×items inverse"


def implicit_or_skip():
    reason = als.skip_reason(0)
    if reason is not None:
        if os.environ.get("TUNER_REQUIRE_BASELINES") == "1":
            pytest.fail(f"TUNER_REQUIRE_BASELINES=1 but {reason}", pytrace=False)
        pytest.skip(reason)


def test_als_is_seeded_chosen_on_val_and_beats_most_popular(tmp_path):
    implicit_or_skip()
    cfg = config.from_dict(synthetic_config(tmp_path), "test")
    split = synthetic_split(cfg)
    params = {"factors": 16, "regularization": 10.0, "alpha": 5.0}
    first = als.Model(split, 7).fit(params)(np.arange(1, 50), "val")
    np.testing.assert_array_equal(first, als.Model(split, 7).fit(params)(np.arange(1, 50), "val"))
    assert not np.array_equal(first, als.Model(split, 8).fit(params)(np.arange(1, 50), "val"))

    result = tune(als, split, KS, "recall@10", cfg.seed)
    values = [g["val_recall@10"] for g in result["grid"]]
    assert len(values) == len(als.GRID) and len(set(values)) > 1
    assert result["chosen"] == als.GRID[int(np.argmax(values))]
    assert result["val"]["recall@10"] == max(values)
    refit = als.Model(split, cfg.seed).fit(result["chosen"])
    assert overall(result["test"]) == score(split, "test", KS, refit)
    assert result["test"]["recall@10"] > most_popular(split, "test", KS)["recall@10"]


def test_without_implicit_als_states_how_to_install_it():
    code = "import sys; sys.modules['implicit'] = None\nfrom tuner.baselines import als; print(als.skip_reason(10))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "the implicit library is not installed: pip install 'tuner[baselines]'"


def test_results_are_cached_per_split_and_read_back_without_recomputing(tmp_path):
    cfg = config.from_dict(synthetic_config(tmp_path), "test")
    split = synthetic_split(cfg)
    logged = []
    first = baselines_for(cfg, split, log=logged.append)
    files = sorted((tmp_path / "baselines").glob("ease-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == first["ease"]
    assert any(line.startswith("baseline EASE:") for line in logged)

    # a value only the file holds: the second call must read it, not fit again
    cached = json.loads(files[0].read_text())
    cached["test"]["recall@10"] = -1.0
    files[0].write_text(json.dumps(cached))
    logged.clear()
    second = baselines_for(cfg, split, log=logged.append)
    assert second["ease"]["test"]["recall@10"] == -1.0
    assert not any(line.startswith("baseline EASE:") for line in logged)

    other = config.from_dict(synthetic_config(tmp_path, seed=43), "test")  # another split: its own entry
    third = baselines_for(other, synthetic_split(other))
    assert third["ease"]["test"]["recall@10"] > 0
    assert len(list((tmp_path / "baselines").glob("ease-*.json"))) == 2


def test_evaluation_baselines_chooses_which_run_and_an_empty_list_fits_none(tmp_path):
    data = synthetic_config(tmp_path)
    only_ease = config.from_dict({**data, "evaluation": {**data["evaluation"], "baselines": ["ease"]}}, "test")
    split = synthetic_split(only_ease)
    assert list(baselines_for(only_ease, split)) == ["ease"]
    none = config.from_dict({**data, "evaluation": {**data["evaluation"], "baselines": []}}, "test")
    logged = []
    assert baselines_for(none, split, log=logged.append) == {} and logged == []
    assert list((tmp_path / "baselines").glob("*.json")) == list((tmp_path / "baselines").glob("ease-*.json"))
    with pytest.raises(ConfigError, match=r"^c.yaml: evaluation.baselines: 'knn' is not one of ease, als, "
                                          r"recent_popularity, transitions$"):
        config.from_dict({"evaluation": {"baselines": ["knn"]}}, "c.yaml")


def tuner_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuner.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600)


def test_baselines_command_prints_them_and_a_second_process_reads_the_cache(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(synthetic_config(tmp_path)))
    first = tuner_cli("baselines", "--config", str(path))
    assert first.returncode == 0, first.stderr[-3000:]
    header = first.stdout.splitlines()
    assert "val:" in header and "test:" in header
    columns = next(line for line in header if line.startswith("metric")).split()
    assert columns[:3] == ["metric", "MostPopular", "EASE"] and columns[-2:] == ["RecentPopularity", "Transitions"]
    assert ("ALS" in columns) == (als.skip_reason(0) is None)
    assert any(line.startswith("EASE: λ ") and "chosen on val_recall@10 from 6 settings" in line for line in header)
    assert "baseline EASE:" in first.stderr  # fitted in this process

    cfg = config.load(str(path))
    expected = baselines_for(cfg, synthetic_split(cfg))  # the first process's cache entry
    test_rows = first.stdout.split("test:")[1].splitlines()
    recall = next(row.split() for row in test_rows if row.startswith("recall@10"))
    assert float(recall[2]) == pytest.approx(expected["ease"]["test"]["recall@10"], abs=5e-5)
    assert float(recall[1]) == pytest.approx(most_popular(synthetic_split(cfg), "test", KS)["recall@10"], abs=5e-5)

    second = tuner_cli("baselines", "--config", str(path))
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout == first.stdout
    assert "baseline EASE:" not in second.stderr  # read from the first process's cache


def test_baselines_command_refuses_a_bad_config_in_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("dataset: {name: nowhere}\n")
    done = tuner_cli("baselines", "--config", str(path))
    assert done.returncode == 2
    assert done.stderr.strip().startswith("tuner: error:") and len(done.stderr.strip().splitlines()) == 1


def test_train_reports_the_baselines_beside_the_model(tmp_path):
    raw = {**synthetic_config(tmp_path), "training": {"epochs": 1, "batch_size": 256}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    done = tuner_cli("train", "--config", str(path), "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["baselines"]) == {"ease", "als", "recent_popularity", "transitions"}
    ease_entry = metrics["baselines"]["ease"]
    assert ease_entry["chosen"] in ease.GRID and ease_entry["chosen_on"] == "val_recall@10"
    assert set(overall(ease_entry["test"])) == set(overall(metrics["test"]))
    cfg = config.load(str(path))
    assert metrics["baselines"] == baselines_for(cfg, synthetic_split(cfg))  # the entry `tuner baselines` reads
    header = next(line for line in done.stderr.split("test:")[1].splitlines() if line.startswith("metric")).split()
    assert header[:4] == ["metric", "model", "MostPopular", "EASE"] and header[-2:] == ["RecentPopularity", "Transitions"]
    assert ("ALS" in header) == (als.skip_reason(0) is None)


def test_processes_starting_together_compute_once(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(synthetic_config(tmp_path)))
    command = [sys.executable, "-m", "tuner.cli", "baselines", "--config", str(path)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    running = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [process.communicate(timeout=600) for process in running]
    assert [process.returncode for process in running] == [0, 0], [err[-2000:] for _, err in outputs]
    assert sum("baseline EASE: fitting" in err for _, err in outputs) == 1  # the other waited on the lock
    if als.skip_reason(0) is None:  # 24 fits: the likeliest place for the two to overlap
        assert sum("baseline ALS: fitting" in err for _, err in outputs) == 1
    assert outputs[0][0] == outputs[1][0]
