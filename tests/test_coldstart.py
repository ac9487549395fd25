"""Cold start: ids unseen in training read a trained out-of-vocabulary row, the SavedModel serves
unknown users, and evaluation counts and measures the users without training interactions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import tuner  # noqa: F401
import tensorflow as tf

import tuner.evaluate as ev
from tuner import heldout
from tuner.config import from_dict
from tuner.data.types import Dataset, Interactions, Split
from tuner.model.towers import OovEmbedding
from tuner.train import build_model_for, prepare_split, run

REPO = Path(__file__).resolve().parents[1]
WARM, COLD, ITEMS, GROUPS = 8, 2, 20, 4


def write_files(folder: Path) -> dict:
    """A `files` dataset whose temporal test part holds the only interactions of users c1 and c2.

    Warm user wK picks items of group K mod 4 (items 5g+1..5g+5), ten times before the cut and
    once after; the cold users share groups with warm ones through the `group` user feature.
    """
    rows, t = [], 0
    for repeat in range(10):
        for k in range(1, WARM + 1):
            t += 1
            rows.append((f"w{k}", f"i{5 * (k % GROUPS) + (repeat + k) % 5 + 1}", t))
    for k in range(1, WARM + 1):  # after the cut: warm users' test rows
        t += 1
        rows.append((f"w{k}", f"i{5 * (k % GROUPS) + 1}", t))
    for c in range(1, COLD + 1):
        for j in range(1, 7):
            t += 1
            rows.append((f"c{c}", f"i{5 * (c % GROUPS) + j % 5 + 1}", t))
    inter = folder / "interactions.csv"
    inter.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{ts}\n" for u, i, ts in rows))
    users = folder / "users.csv"
    users.write_text("user_id,group\n" + "".join(f"w{k},g{k % GROUPS}\n" for k in range(1, WARM + 1))
                     + "".join(f"c{c},g{c % GROUPS}\n" for c in range(1, COLD + 1)))
    test_rows = WARM + 6 * COLD
    return {
        "dataset": {"name": "files", "interactions": str(inter), "user_features": str(users)},
        "split": {"method": "temporal", "val_fraction": 0.0, "test_fraction": test_rows / len(rows)},
        "model": {"embedding_dim": 8, "user_features": True, "normalize": True},
        "retrieval": {"temperature": 0.2},
        "training": {"batch_size": 16, "epochs": 6, "learning_rate": 0.05},
        "evaluation": {"ks": [5, 10], "every_epoch": False},
    }


@pytest.fixture(scope="module")
def files_config(tmp_path_factory) -> dict:
    return write_files(tmp_path_factory.mktemp("coldstart"))


def train(config: dict, id_dropout: float, out: Path | None = None):
    """(model, OOV user row at initialisation, metrics) of a real run with `model.id_dropout`."""
    cfg = from_dict({**config, "model": {**config["model"], "id_dropout": id_dropout}})
    split = prepare_split(cfg)
    model = build_model_for(cfg, split)
    model.query_tower({"user": tf.constant([1])})  # creates the (lazily built) tables
    initial = model.query_tower.user_embedding.embeddings.numpy()[0].copy()
    metrics = run(cfg, split, out_dir=out, model=model, log=lambda line: None)
    return model, initial, metrics, split


def index_of(split: Split, raw_id: str) -> int:
    return int(np.flatnonzero(split.dataset.user_ids == raw_id)[0])


def test_unseen_user_is_scored_with_the_trained_oov_row(files_config, tmp_path):
    model, initial, metrics, split = train(files_config, id_dropout=0.3, out=tmp_path / "run")
    table = model.query_tower.user_embedding.embeddings.numpy()
    assert np.abs(table[0] - initial).max() > 1e-3  # the OOV row was trained

    cold = index_of(split, "c1")
    assert split.user_counts()[cold] == 0 and split.user_counts()[index_of(split, "w1")] > 0
    served = model.query_tower({"user": tf.constant([cold])}).numpy()
    # The query of an unseen user, rebuilt by hand: OOV row + its own side feature, head, L2 norm.
    tower = model.query_tower
    parts = [table[0][None, :]] + [f(tf.constant([cold])) for f in tower.features]
    by_hand = tf.math.l2_normalize(tower.head(tf.concat(parts, axis=-1)), axis=-1).numpy()
    np.testing.assert_allclose(served, by_hand, atol=1e-6)
    # ... and not its own (never trained) row: with it the query would differ.
    own = [table[cold][None, :]] + parts[1:]
    assert np.abs(tf.math.l2_normalize(tower.head(tf.concat(own, axis=-1)), axis=-1).numpy() - served).max() > 1e-3

    # metrics.json counts the cold test users, beside MostPopular's numbers for them.
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["test"]["cold_users"] == COLD == written["most_popular"]["test"]["cold_users"]
    assert {"cold_recall@5", "cold_ndcg@10"} <= set(written["test"])
    assert written["test"] == pytest.approx(metrics["test"])


def test_without_id_dropout_the_oov_row_is_never_trained(files_config):
    model, initial, _, _ = train(files_config, id_dropout=0.0)
    np.testing.assert_array_equal(model.query_tower.user_embedding.embeddings.numpy()[0], initial)


def tuner_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuner.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600)


def test_saved_model_serves_unknown_users(files_config, tmp_path):
    from tuner.export import recommend

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({**files_config, "model": {**files_config["model"], "id_dropout": 0.3}}))
    trained = tuner_cli("train", "--config", str(path), "--out", str(tmp_path / "run"))
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "cold_recall@10" in trained.stderr  # the printed table has the cold users' rows

    model_dir = tmp_path / "run" / "model"
    warm, warm_note = recommend(model_dir, "w1", 5)
    assert len(warm) == 5 and warm_note is None
    for user, why in (("c1", "has no training interactions"), ("no-such-user", "is not in the model's data")):
        result = tuner_cli("recommend", "--model", str(model_dir), "--user", user, "-k", "5")
        assert result.returncode == 0, result.stderr[-2000:]
        assert len(result.stdout.strip().splitlines()) == 5
        note = [line for line in result.stderr.splitlines() if "out-of-vocabulary" in line]
        assert len(note) == 1 and user in note[0] and why in note[0], result.stderr[-2000:]
    # A user with features reads them beside the OOV row: c1 and an unknown id are served differently.
    c1, _ = recommend(model_dir, "c1", 20)
    unknown, _ = recommend(model_dir, "no-such-user", 20)
    assert [s for _, _, s in c1] != [s for _, _, s in unknown]


def test_saved_model_reads_unknown_history_items_through_the_oov_item_row(files_config, tmp_path):
    from tuner.export import export_model, recommend

    config = {**files_config, "model": {**files_config["model"], "history_length": 3},
              "training": {**files_config["training"], "epochs": 2}}
    model, _, _, split = train(config, id_dropout=0.3)
    export_model(model, split, tmp_path / "model", k=5)

    def top_scores(history: list[int]) -> np.ndarray:
        query = model.query_tower({"user": tf.constant([index_of(split, "w1")]), "history": tf.constant([history])})
        items = model.candidate_tower(tf.range(1, split.dataset.num_items + 1), training=False)
        return np.sort(tf.matmul(query, items, transpose_b=True).numpy()[0])[::-1][:5]

    served = {name: [s for _, _, s in recommend(tmp_path / "model", "w1", 5, history)[0]]
              for name, history in (("unknown", ["no-such-item"]), ("empty", [""]))}
    # An id the model never heard of pools the OOV item row (-1), not padding (0): the two differ.
    np.testing.assert_allclose(served["unknown"], top_scores([0, 0, -1]), atol=1e-5)
    np.testing.assert_allclose(served["empty"], top_scores([0, 0, 0]), atol=1e-5)
    assert np.abs(np.array(served["unknown"]) - served["empty"]).max() > 1e-4


def test_oov_embedding_reads_row_zero_for_unseen_unknown_and_dropped_ids():
    known = np.array([False, True, True, False, True])
    layer = OovEmbedding(5, 3, known, id_dropout=0.5)
    index = tf.constant([1, 2, 3, 4, 0, -1])
    out = layer(index).numpy()
    table = layer.embeddings.numpy()
    np.testing.assert_array_equal(out, table[[1, 2, 0, 4, 0, 0]])
    tf.keras.utils.set_random_seed(3)
    many = tf.constant(np.tile([1, 2, 4], 2000))
    dropped = np.all(layer(many, training=True).numpy() == table[0], axis=1).mean()
    assert 0.45 < dropped < 0.55  # share of ids replaced while training
    with pytest.raises(ValueError, match="known"):
        OovEmbedding(5, 3, np.ones(5, bool))  # row 0 must stay the OOV row


# --- cold-user metrics on a handmade split ----------------------------------------------------


def interactions(pairs) -> Interactions:
    user, item = (np.array(column, np.int32) for column in zip(*pairs))
    n = len(user)
    return Interactions(user, item, np.arange(n, dtype=np.int64), np.ones(n, np.float32))


def handmade_split() -> Split:
    """Training counts of items 1..5: 3, 2, 1, 0, 0. Users 4 and 5 never train; user 4 has a val item."""
    train = interactions([(1, 1), (1, 2), (2, 1), (2, 3), (3, 1), (3, 2)])
    val = interactions([(4, 2)])
    test = interactions([(2, 2), (3, 4), (4, 1), (4, 5), (5, 3)])
    dataset = Dataset("hand", np.array([""] + [f"u{i}" for i in range(1, 6)]),
                      np.array([""] + [f"i{i}" for i in range(1, 6)]), train)
    return Split(dataset, train, val, test)


def test_cold_user_metrics_count_exactly_the_users_without_training_interactions():
    split = handmade_split()
    test = heldout.with_cold_users(lambda s: ev.most_popular(s, "test", [1, 3]), split, "test")
    # MostPopular ranks 1, 2, 3, 4, 5. Cold user 4: item 2 excluded (val), ranking 1, 3, 4, 5,
    # relevant {1, 5}; cold user 5: ranking 1..5, relevant {3}.
    assert test["cold_users"] == 2
    assert test["cold_recall@1"] == pytest.approx((1 / 2 + 0) / 2)
    assert test["cold_recall@3"] == pytest.approx((1 / 2 + 1) / 2)
    ndcg_user4 = 1 / (1 + 1 / np.log2(3))
    assert test["cold_ndcg@3"] == pytest.approx((ndcg_user4 + 1 / np.log2(4)) / 2)
    # The overall numbers (users 2, 3, 4, 5) are untouched by the cold ones being added.
    assert test["recall@1"] == pytest.approx((1 + 0 + 1 / 2 + 0) / 4)
    assert ev.most_popular(split, "test", [1, 3]).items() <= test.items()

    val = heldout.with_cold_users(lambda s: ev.most_popular(s, "val", [1, 3]), split, "val")
    assert val["cold_users"] == 1  # user 4, the only val user
    assert (val["cold_recall@1"], val["cold_recall@3"]) == (0.0, 1.0) == (val["recall@1"], val["recall@3"])

    warm = Split(split.dataset, split.train, interactions([(1, 3)]), interactions([(2, 2), (3, 4)]))
    assert "cold_users" not in heldout.with_cold_users(lambda s: ev.most_popular(s, "test", [3]), warm, "test")
