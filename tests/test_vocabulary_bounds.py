"""Ids beyond the vocabulary at catalog scale: every id lookup reads the unknown row for an index
outside its table (a CPU gather would fail the step), and the MNS stream draws exactly the items
1..N, also where N passes float32's exact integers (2**24)."""
from __future__ import annotations

import numpy as np
import pytest

import tuner  # noqa: F401
import tensorflow as tf

from tuner.data.pipeline import train_dataset
from tuner.data.types import Feature, Interactions
from tuner.model.towers import FeatureEmbedding, OovEmbedding

MILLION = 1_000_000


def test_an_item_table_of_a_million_rows_reads_the_oov_row_for_every_index_beyond_it():
    table = OovEmbedding(MILLION + 1, 2, name="item_embedding")  # items 1..1M, row 0 the OOV row
    inside = tf.constant([1, MILLION], tf.int32)
    beyond32 = tf.constant([MILLION + 1, MILLION + 2, 2**24 + 1, 2**31 - 1, -1, -7], tf.int32)
    beyond64 = tf.constant([2**32 + 5, 2**40, MILLION + 1], tf.int64)  # 2**32 + 5 would wrap to item 5 as int32
    oov = table(tf.constant([0], tf.int32)).numpy()
    np.testing.assert_array_equal(table(beyond32).numpy(), np.repeat(oov, 6, axis=0))
    np.testing.assert_array_equal(table(beyond64).numpy(), np.repeat(oov, 3, axis=0))
    np.testing.assert_array_equal(table(inside).numpy(), table.embeddings.numpy()[[1, MILLION]])
    assert not np.allclose(table(inside).numpy(), oov)


def test_a_feature_of_an_index_beyond_its_table_embeds_as_unknown():
    feature = FeatureEmbedding("cluster", Feature(np.array([0, 1, 2, 1], np.int32), 3), dim=2)
    out = feature(tf.constant([1, 4, 2**31 - 1, -1], tf.int32)).numpy()
    assert np.any(out[0] != 0)
    np.testing.assert_array_equal(out[1:], 0.0)  # unknown (0) is masked out of the bag: zeros


def uniform_negatives(num_items: int, draws: int, batches: int = 4) -> np.ndarray:
    n = 8
    inter = Interactions(np.ones(n, np.int32), np.ones(n, np.int32), np.arange(n, dtype=np.int64),
                         np.ones(n, np.float32))
    stream = train_dataset(inter, 2, seed=3, num_items=num_items, uniform_negatives=draws)
    return np.concatenate([b["uniform_negatives"].numpy() for b in stream.take(batches)])


@pytest.mark.parametrize("num_items", [MILLION, 2**24 - 1, 2**24, 2**24 + 1, 2**31 - 2])
def test_mns_negatives_stay_within_the_items_at_and_beyond_float32_exact_integers(num_items):
    drawn = uniform_negatives(num_items, 50_000)
    assert drawn.min() >= 1 and drawn.max() <= num_items
    assert drawn.max() > num_items - num_items // 1000  # the top of the range is drawn: no shrunken maxval


def test_mns_negatives_draw_every_item_including_the_last():
    assert set(uniform_negatives(3, 1000).tolist()) == {1, 2, 3}
