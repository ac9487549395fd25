"""The options for what the baselines of time-ordered splits catch: the full softmax
(`negatives.strategy: full`), recent-items pooling, the last item's own table, recency weights.

The loss is checked against a NumPy softmax over the whole catalog on the toy split of
test_loss_math; the memory refusal and the trainings go through the CLI, as a user would.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

import tuner  # noqa: F401
import tensorflow as tf

from test_loss_math import NUM_ITEMS, batch, embed, make_model, unigram
from tuner import cli, memory
from tuner.config import from_dict
from tuner.errors import ConfigError
from tuner.data.pipeline import recency_weights
from tuner.model.towers import HistoryPooling

CATALOG = list(range(1, NUM_ITEMS + 1))


def catalog_reference(queries, catalog, positives, temperature=1.0, prior=None, weights=None, hard=0):
    """Mean over queries of w_i·(logsumexp_j s_ij − s_i,pos) with s = u·v/τ − prior over every item."""
    scores = queries @ catalog.T / temperature - (0 if prior is None else prior)
    weights = np.ones(len(positives)) if weights is None else np.asarray(weights, np.float64)
    losses = []
    for i, item in enumerate(positives):
        positive = scores[i, item - 1]
        negatives = np.sort(np.delete(scores[i], item - 1))[::-1]
        row = np.concatenate([[positive], negatives[:hard] if hard else negatives])
        losses.append(row.max() + np.log(np.exp(row - row.max()).sum()) - positive)
    return float(np.sum(weights * np.array(losses)) / len(positives))


def test_full_softmax_equals_the_numpy_reference():
    """Item 3 is two queries' positive: in a full softmax it is one column, a negative of neither."""
    model = make_model(negatives={"strategy": "full"}, retrieval={"temperature": 0.3})
    users, items, weights = [1, 2, 3, 4], [1, 3, 3, 6], [1.0, 2.0, 0.5, 1.0]
    features = batch(users, items, weights=weights)
    queries, catalog = embed(model, features, CATALOG)
    expected = catalog_reference(queries, catalog, items, temperature=0.3, weights=weights)
    assert float(model.compute_loss(features)) == pytest.approx(expected, rel=1e-5)
    # every item is a column: the in-batch softmax over the 3 distinct positives is another loss
    assert expected > catalog_reference(queries, catalog[[0, 2, 5]], [1, 2, 2, 3], 0.3, weights=weights) + 0.1


@pytest.mark.parametrize("weight", [1.0, 2.0])
def test_full_softmax_prior_is_the_logq_settings_term(weight):
    """w·log q − log q over the whole log: 0 at w = 1 (logQ has nothing to correct), log q at w = 2."""
    model = make_model(negatives={"strategy": "full"}, retrieval={"logq": "counts", "logq_weight": weight,
                                                                  "hard_negatives": 3})
    users, items = [1, 2, 3], [2, 5, 9]
    features = batch(users, items)
    queries, catalog = embed(model, features, CATALOG)
    prior = (weight - 1) * np.log(unigram(CATALOG))
    expected = catalog_reference(queries, catalog, items, prior=prior, hard=3)
    assert float(model.compute_loss(features)) == pytest.approx(expected, rel=1e-5)
    if weight != 1:
        assert abs(expected - catalog_reference(queries, catalog, items, hard=3)) > 1e-3


def test_recent_pooling_weighs_the_last_item_most():
    pooling = HistoryPooling("recent", 4)
    x = tf.random.stateless_normal([2, 5, 4], seed=[1, 2])
    mask = tf.constant([[0, 0, 3, 7, 2], [1, 4, 2, 8, 5]]) > 0  # left-padded: the last slot is the latest item
    pooling(x, mask)
    weights = pooling.weights_of(mask).numpy()
    assert weights[0, :2].tolist() == [0.0, 0.0]
    assert weights.sum(axis=1) == pytest.approx([1.0, 1.0])
    for row, start in ((weights[0], 2), (weights[1], 0)):
        assert np.all(np.diff(row[start:]) > 0)  # each later item weighs more than the one before
    assert weights[1, -1] == pytest.approx(2 ** (1 / 3) * weights[1, -2], rel=1e-5)
    expected = (weights[..., None] * x.numpy()).sum(axis=1)
    assert pooling(x, mask).numpy() == pytest.approx(expected, rel=1e-5)


def test_last_item_makes_the_query_depend_on_order():
    """Mean pooling cannot tell [a, b] from [b, a]; the last item's own table can."""
    histories = [[0, 2, 5], [0, 5, 2]]
    for last_item, differ in ((False, False), (True, True)):
        model = make_model(model={"history_length": 3, "history_pooling": "mean", "last_item": last_item,
                                  "share_item_embedding": True})
        queries = model.query_tower({"user": tf.constant([1, 1]), "history": tf.constant(histories)}).numpy()
        assert (np.abs(queries[0] - queries[1]).max() > 1e-4) == differ
    with pytest.raises(ConfigError, match="model.last_item: needs model.history_length > 0"):
        from_dict({"model": {"last_item": True}}, "c.yaml")


def test_recency_weights_halve_every_half_life_and_average_one():
    weights = recency_weights(1000, 0.25)
    assert weights.mean() == pytest.approx(1.0, rel=1e-5)
    assert weights[-1] == weights.max() and np.all(np.diff(weights) > 0)
    assert weights[-1 - 250] == pytest.approx(weights[-1] / 2, rel=1e-5)


def test_full_softmax_refused_when_the_catalog_does_not_fit(monkeypatch):
    monkeypatch.setenv("TUNER_MEMORY_MB", "4096")
    data = {"dataset": {"name": "synthetic", "num_items": 2_000_000, "num_users": 100, "num_interactions": 1000},
            "model": {"embedding_dim": 8}, "negatives": {"strategy": "full"}}
    with pytest.raises(ConfigError) as error:
        memory.check(from_dict(data), "big.yaml")
    message = str(error.value)
    assert "\n" not in message and message.startswith("big.yaml: negatives.strategy: the run needs about")
    assert "a full softmax's scores 1,000 × 2,000,000" in message and "use negatives.strategy in_batch" in message
    memory.check(from_dict({**data, "negatives": {"strategy": "in_batch"}}), "big.yaml")  # sampled: it fits


def test_tuner_train_refuses_an_oversize_catalog_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TUNER_MEMORY_MB", "4096")
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump({"dataset": {"name": "synthetic", "num_items": 2_000_000, "num_users": 100,
                                                "num_interactions": 1000}, "negatives": {"strategy": "full"}}))
    assert cli.main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "negatives.strategy: the run needs about" in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_full_softmax_refuses_the_streaming_estimator():
    with pytest.raises(ConfigError, match="retrieval.logq: streaming estimates how often a column is sampled"):
        from_dict({"negatives": {"strategy": "full"}, "retrieval": {"logq": "streaming"}}, "c.yaml")


@pytest.mark.parametrize("sections", [
    {"negatives": {"strategy": "full"}, "model": {"item_features": True, "candidate_layers": [8]},
     "retrieval": {"logq": "counts", "logq_weight": 1.5, "logq_window": 0.5}},
    {"model": {"history_length": 4, "history_pooling": "recent", "last_item": True}},
    {"training": {"recency_half_life": 0.25}},
], ids=["full", "recent_last_item", "recency_weights"])
def test_a_tiny_training_runs(tmp_path, capsys, sections):
    config = {"dataset": {"name": "movielens-100k"}, "split": {"method": "leave_last_out"},
              "model": {"embedding_dim": 8, "normalize": True}, "retrieval": {"temperature": 0.1},
              "training": {"batch_size": 1024, "epochs": 2},
              "evaluation": {"every_epoch": False, "baselines": []}}
    for key, value in sections.items():
        config.setdefault(key, {}).update(value)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    losses = [epoch["loss"] for epoch in metrics["epochs"]]
    assert len(losses) == 2 and losses[1] < losses[0] - 0.05, losses  # it learns
    assert 0 <= metrics["val"]["recall@100"] <= 1 and metrics["test"]["recall@100"] > 0
