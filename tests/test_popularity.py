"""How much popularity, and from which period, the served scores keep: `retrieval.logq_weight` and
`retrieval.logq_window`, trained on MovieLens-100K. The in-batch softmax learns
u·v/τ ≈ log p(item | user) − log q_sampled + w·log q_logq: the weight scales the popularity left in,
the window counts q over the end of the training log only."""
from __future__ import annotations

import numpy as np
import pytest

import tuner  # noqa: F401
import tensorflow as tf

from tuner.config import from_dict
from tuner.errors import ConfigError
from tuner.model.sampling import unigram_probabilities, window_counts, window_rows
from tuner.train import build_model_for, prepare_split, run


def trained(split, model=None, **retrieval):
    """A 2-epoch normalised model (`model`: more model settings) and its split."""
    cfg = from_dict({"split": {"method": split}, "model": {"embedding_dim": 16, "normalize": True, **(model or {})},
                     "retrieval": {"temperature": 0.1, "logq": "counts", **retrieval},
                     "training": {"epochs": 2}, "evaluation": {"every_epoch": False}})
    data = prepare_split(cfg)
    model = build_model_for(cfg, data)
    run(cfg, data, log=lambda message: None, model=model)
    return model, data


def top10(model, data, users: np.ndarray) -> np.ndarray:
    """Item indices [users, 10] of the best scores (nothing masked)."""
    queries = model.query_tower({"user": tf.constant(users, tf.int32)}).numpy()
    items = model.candidate_tower(tf.range(1, data.dataset.num_items + 1)).numpy()
    return np.argsort(-(queries @ items.T), axis=1)[:, :10] + 1


def test_a_larger_weight_recommends_more_popular_items():
    popularity = {}
    for weight in (0.0, 1.0, 2.0):
        model, data = trained("random", logq_weight=weight)
        top = top10(model, data, np.flatnonzero(data.user_counts() > 0))
        popularity[weight] = float(np.log(np.maximum(data.item_counts()[top], 1)).mean())
    # measured 2.04, 4.97, 5.42 (mean log training count of the top 10): w = 0 learns
    # log p − log q, popularity subtracted (why logq none loses to MostPopular)
    assert popularity[0.0] < popularity[1.0] - 1.0 and popularity[2.0] > popularity[1.0] + 0.2, popularity


def test_window_counts_count_the_end_of_the_stream():
    items = np.array([1, 1, 2, 3, 3, 3, 4, 4])
    assert window_counts(items, 5, 1.0).tolist() == [0, 2, 1, 3, 2, 0]
    assert window_counts(items, 5, 0.5).tolist() == [0, 0, 0, 2, 2, 0]  # the last 4
    assert window_counts(items, 5, 0.01).tolist() == [0, 0, 0, 0, 1, 0]  # never empty


# 0.55 * 100 and 0.07 * 100 are 55.00000000000001 and 7.000000000000001 in floating point
@pytest.mark.parametrize("share, n, rows", [(0.55, 100, 55), (0.07, 100, 7), (0.29, 100, 29), (0.5, 3, 2),
                                            (1.0, 7, 7), (0.01, 8, 1)])
def test_a_window_counts_exactly_the_share_of_rows_written(share, n, rows):
    assert window_rows(share, n) == rows
    assert window_counts(np.arange(1, n + 1), n, share).sum() == rows


def test_a_window_favours_items_on_the_rise_for_new_users():
    """Temporal split: two thirds of the test users are new; a window of the last quarter of the
    training log shifts what they are served toward items whose popularity rose."""
    trend = {}
    for window in (1.0, 0.25):
        # user features and a trained out-of-vocabulary row: what new users are served
        model, data = trained("temporal", {"user_features": True, "id_dropout": 0.05}, logq_window=window)
        recent = unigram_probabilities(window_counts(data.train.item, data.dataset.num_items, 0.25))
        np.testing.assert_allclose(model.probability(tf.range(1, 50)).numpy(),
                                   (recent if window < 1 else unigram_probabilities(data.item_counts()))[1:50])
        cold = np.unique(data.test.user[data.user_counts()[data.test.user] == 0])
        top = top10(model, data, cold)
        trend[window] = float(np.log(recent[top] / unigram_probabilities(data.item_counts())[top]).mean())
    assert trend[0.25] > trend[1.0] + 0.1, trend  # measured −0.08 and 0.16: mean log(q_recent / q_all) of the top 10


@pytest.mark.parametrize("retrieval, message", [
    ({"logq_weight": 1.5}, "retrieval.logq_weight: scales the logQ correction: set retrieval.logq"),
    ({"logq": "counts", "logq_weight": -1}, "retrieval.logq_weight: must be >= 0"),
    ({"logq": "counts", "logq_window": 0}, "retrieval.logq_window: must be in (0, 1]"),
    ({"logq": "streaming", "logq_window": 0.5}, "retrieval.logq_window: a share of the training log to count q over"),
])
def test_bad_popularity_settings_are_one_line_errors(retrieval, message):
    with pytest.raises(ConfigError) as error:
        from_dict({"retrieval": retrieval})
    assert str(error.value).startswith(f"config: {message}") and "\n" not in str(error.value)
