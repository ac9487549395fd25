"""The retrieval loss against a NumPy softmax cross-entropy written from the papers, not from TFRS.

Tiny hand-built datasets keep every case a few milliseconds; embeddings come from the model's
own towers, and the reference recomputes scores, temperature, logQ (MNS mixture, CBNS stored
q), accidental-hit masking, hard-negative selection, weights and the per-query mean.
"""
from __future__ import annotations

import numpy as np
import pytest

import tuner  # noqa: F401
import tensorflow as tf

from tuner.config import from_dict
from tuner.data.types import Dataset, Feature, Interactions, Split
from tuner.model import build_model

NUM_USERS, NUM_ITEMS, HISTORY = 6, 10, 4
# Training counts of items 0..10: item 6 and 10 never occur (they get the 0.5-count floor).
COUNTS = np.array([0, 6, 4, 3, 2, 2, 0, 1, 1, 1, 0])


def make_split(rows: int | None = None) -> Split:
    """A split whose training item counts are exactly COUNTS, with histories and side features."""
    rng = np.random.default_rng(0)
    item = np.repeat(np.arange(NUM_ITEMS + 1), COUNTS).astype(np.int32)
    if rows is not None:  # a learnable stream: user u always picks item u + 2
        user = rng.integers(1, NUM_USERS + 1, rows).astype(np.int32)
        item = user + 2
    else:
        user = rng.integers(1, NUM_USERS + 1, len(item)).astype(np.int32)
    n = len(item)
    history = rng.integers(0, NUM_ITEMS + 1, (n, HISTORY)).astype(np.int32)
    inter = Interactions(user, item, np.arange(n, dtype=np.int64), np.ones(n, np.float32), history)
    dataset = Dataset(
        "toy", np.array([""] + [f"u{i}" for i in range(NUM_USERS)]),
        np.array([""] + [f"i{i}" for i in range(NUM_ITEMS)]), inter,
        user_features={"age": Feature(rng.integers(0, 3, NUM_USERS + 1), 3)},
        item_features={"genres": Feature(rng.integers(0, 5, (NUM_ITEMS + 1, 3)), 5)},
    )
    empty = inter.take(np.arange(0))
    return Split(dataset, inter, empty, empty)


def make_model(split=None, **sections):
    cfg = {"model": {"embedding_dim": 8}, "training": {"batch_size": 4}, "seed": 1}
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    tf.keras.utils.set_random_seed(cfg["seed"])
    return build_model(from_dict(cfg), split or make_split())


def batch(users, items, weights=None, history=None, **extra):
    out = {"user": tf.constant(users, tf.int32), "item": tf.constant(items, tf.int32)}
    if weights is not None:
        out["weight"] = tf.constant(weights, tf.float32)
    if history is not None:
        out["history"] = tf.constant(history, tf.int32)
    out.update({k: tf.constant(v, tf.int32) for k, v in extra.items()})
    return out


def embed(model, features, items):
    query = {k: features[k] for k in ("user", "history") if k in features}
    return (model.query_tower(query).numpy().astype(np.float64),
            model.candidate_tower(tf.constant(items, tf.int32)).numpy().astype(np.float64))


def unigram(items):
    p = np.where(COUNTS > 0, COUNTS, 0.5) / COUNTS.sum()
    return p[np.asarray(items)]


def reference_loss(queries, candidates, positives, column_ids, temperature=1.0, q=None, weights=None,
                   remove_hits=False, num_batch=None, hard=0):
    """Mean over queries of w_i · (logsumexp over kept columns - positive score).

    Scores are u·v / τ - log q. Column j is dropped for query i when it is not i's own column and
    carries i's positive id, if hit removal is on, or if j is an extra (beyond-batch) column.
    With `hard` > 0 only the `hard` highest-scoring kept negatives stay.
    """
    scores = queries @ candidates.T / temperature
    if q is not None:
        scores = scores - np.log(np.clip(q, 1e-6, 1.0))
    b = len(positives)
    num_batch = b if num_batch is None else num_batch
    weights = np.ones(b) if weights is None else np.asarray(weights, np.float64)
    losses = []
    for i in range(b):
        negatives = []
        for j in range(len(column_ids)):
            if j == i:
                continue
            hit = column_ids[j] == positives[i]
            if hit and (remove_hits or j >= num_batch):
                continue
            negatives.append(scores[i, j])
        negatives = np.sort(negatives)[::-1]
        if hard:
            negatives = negatives[:hard]
        row = np.concatenate([[scores[i, i]], negatives])
        top = row.max()
        losses.append(top + np.log(np.exp(row - top).sum()) - scores[i, i])
    return float(np.sum(weights * np.array(losses)) / b)


def loss(model, features, training=False):
    return float(model.compute_loss(features, training=training))


# --- in-batch -----------------------------------------------------------------------------


@pytest.mark.parametrize("remove_hits", [False, True])
def test_in_batch_temperature_and_counts_logq(remove_hits):
    model = make_model(retrieval={"temperature": 0.3, "logq": "counts", "remove_accidental_hits": remove_hits})
    users, items = [1, 2, 3, 4, 5], [1, 3, 1, 6, 9]  # item 1 twice (an accidental hit); 6 never seen
    features = batch(users, items)
    qe, ce = embed(model, features, items)
    expected = reference_loss(qe, ce, items, items, temperature=0.3, q=unigram(items), remove_hits=remove_hits)
    assert loss(model, features) == pytest.approx(expected, rel=1e-5)
    # The floor and the logQ term matter: without them the loss differs.
    assert abs(expected - reference_loss(qe, ce, items, items, temperature=0.3, remove_hits=remove_hits)) > 1e-3


def test_sample_weights_and_mean_per_query():
    model = make_model()
    users, items, weights = [1, 2, 3, 4], [2, 4, 5, 8], [1.0, 2.0, 0.0, 0.5]
    features = batch(users, items, weights=weights)
    qe, ce = embed(model, features, items)
    assert loss(model, features) == pytest.approx(reference_loss(qe, ce, items, items, weights=weights), rel=1e-5)
    assert loss(model, batch(users, items)) == pytest.approx(reference_loss(qe, ce, items, items), rel=1e-5)


def test_loss_is_a_mean_independent_of_batch_size():
    """k identical rows: each query sees its positive and the same uniform negatives (the other
    rows are accidental hits), so every per-query loss is equal and the mean must not grow with k."""
    model = make_model(negatives={"strategy": "mns", "mns_batch_size": 3},
                       retrieval={"remove_accidental_hits": True}, model={"normalize": True})
    values = [loss(model, batch([2] * k, [3] * k, uniform_negatives=[1, 5, 7])) for k in (1, 2, 4)]
    assert values[0] > 0.1
    assert values == pytest.approx([values[0]] * 3, rel=1e-5)


def test_hard_negatives_keep_the_top_k():
    model = make_model(retrieval={"hard_negatives": 2, "temperature": 0.5},
                       model={"embedding_dim": 8}, training={"batch_size": 6})
    users, items = [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7]
    features = batch(users, items)
    qe, ce = embed(model, features, items)
    expected = reference_loss(qe, ce, items, items, temperature=0.5, hard=2)
    assert loss(model, features) == pytest.approx(expected, rel=1e-5)
    assert expected < reference_loss(qe, ce, items, items, temperature=0.5) - 1e-4


# --- MNS ----------------------------------------------------------------------------------


def test_mns_mixture_probabilities_and_hits_on_uniform_columns():
    model = make_model(negatives={"strategy": "mns", "mns_batch_size": 3},
                       retrieval={"logq": "counts", "temperature": 0.2}, model={"normalize": True})
    users, items, uniform = [1, 2, 3, 4], [1, 2, 4, 7], [7, 10, 2]  # 7 and 2 are accidental hits
    features = batch(users, items, uniform_negatives=uniform)
    columns = items + uniform
    qe, ce = embed(model, features, columns)
    b, b_uniform = len(items), len(uniform)
    mixture = (b * unigram(columns) + b_uniform / NUM_ITEMS) / (b + b_uniform)
    expected = reference_loss(qe, ce, items, columns, temperature=0.2, q=mixture, num_batch=b)
    assert loss(model, features) == pytest.approx(expected, rel=1e-5)
    # The uniform columns are really used, and unigram q alone would be a different loss.
    in_batch = reference_loss(qe, ce[:b], items, items, temperature=0.2, q=mixture[:b])
    assert abs(expected - in_batch) > 1e-3
    assert abs(expected - reference_loss(qe, ce, items, columns, temperature=0.2, q=unigram(columns),
                                         num_batch=b)) > 1e-3


@pytest.mark.parametrize("weight", [0.0, 1.5])
def test_logq_weight_scales_every_columns_correction(weight):
    """w·log q = log q^w: the in-batch and the uniform (mixture) columns alike."""
    model = make_model(negatives={"strategy": "mns", "mns_batch_size": 3},
                       retrieval={"logq": "counts", "logq_weight": weight, "temperature": 0.2})
    items, uniform = [1, 2, 4, 7], [7, 10, 2]
    features = batch([1, 2, 3, 4], items, uniform_negatives=uniform)
    columns = items + uniform
    qe, ce = embed(model, features, columns)
    mixture = (4 * unigram(columns) + 3 / NUM_ITEMS) / 7
    expected = reference_loss(qe, ce, items, columns, temperature=0.2, q=mixture ** weight, num_batch=4)
    assert loss(model, features) == pytest.approx(expected, rel=1e-5)
    unweighted = reference_loss(qe, ce, items, columns, temperature=0.2, q=mixture, num_batch=4)
    assert abs(expected - unweighted) > 1e-3


def test_mns_without_logq_has_no_correction():
    model = make_model(negatives={"strategy": "mns", "mns_batch_size": 2})
    users, items, uniform = [1, 2, 3], [1, 2, 4], [5, 9]
    features = batch(users, items, uniform_negatives=uniform)
    qe, ce = embed(model, features, items + uniform)
    assert loss(model, features) == pytest.approx(
        reference_loss(qe, ce, items, items + uniform, num_batch=3), rel=1e-5)


def test_mns_needs_uniform_negatives():
    model = make_model(negatives={"strategy": "mns"})
    with pytest.raises(ValueError, match="uniform_negatives"):
        model.compute_loss(batch([1, 2], [1, 2]))


# --- CBNS ---------------------------------------------------------------------------------


def cbns_model(**retrieval):
    model = make_model(negatives={"strategy": "cbns", "cbns_memory_size": 6, "cbns_warmup_steps": 2},
                       retrieval={"logq": "counts", **retrieval})
    model.compile(optimizer=tf.keras.optimizers.SGD(0.0))  # steps advance, weights stay put
    return model


def test_cbns_bank_is_a_fifo_of_the_last_candidates():
    model = cbns_model()
    batches = [[1, 2, 3, 4], [5, 7, 8, 9], [2, 3, 10, 1]]
    seen = []
    for items in batches:
        model.compute_loss(batch([1, 2, 3, 4], items), training=True)
        seen += items
        assert model.cbns_bank.count.numpy() == min(len(seen), 6)
    assert model.cbns_bank.oldest_first()[1].numpy().tolist() == seen[-6:]  # oldest first
    _, expected = embed(model, batch([1], [1]), seen[-6:])
    np.testing.assert_allclose(model.cbns_bank.oldest_first()[0].numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.cbns_bank.oldest_first()[2].numpy(), np.log(unigram(seen[-6:])), rtol=1e-5)
    # Evaluation passes never touch the bank.
    model.compute_loss(batch([1, 2, 3, 4], [6, 6, 6, 6]), training=False)
    assert model.cbns_bank.oldest_first()[1].numpy().tolist() == seen[-6:]


def test_cbns_uses_the_bank_only_after_warmup_with_stored_q_and_hits_masked():
    model = cbns_model(temperature=0.5)
    first, second = batch([1, 2, 3, 4], [1, 2, 3, 4]), batch([5, 6, 1, 2], [5, 7, 8, 9])
    model.train_step(first)
    assert int(model.optimizer.iterations) == 1 and model.cbns_bank.count.numpy() == 4
    probe_items = [2, 5, 6, 9]  # 5 and 9 will also sit in the bank: accidental hits by id
    probe = batch([3, 4, 5, 6], probe_items)
    qe, ce = embed(model, probe, probe_items)
    before_warmup = reference_loss(qe, ce, probe_items, probe_items, temperature=0.5, q=unigram(probe_items))
    assert loss(model, probe) == pytest.approx(before_warmup, rel=1e-5)

    model.train_step(second)  # step 2: warm-up over, bank = [3, 4, 5, 7, 8, 9]
    bank_ids = model.cbns_bank.oldest_first()[1].numpy().tolist()
    assert bank_ids == [3, 4, 5, 7, 8, 9]
    columns = probe_items + bank_ids
    bank = model.cbns_bank.oldest_first()[0].numpy().astype(np.float64)
    q = np.concatenate([unigram(probe_items), np.exp(model.cbns_bank.oldest_first()[2].numpy())])
    expected = reference_loss(qe, np.concatenate([ce, bank]), probe_items, columns, temperature=0.5, q=q,
                              num_batch=4)
    value = loss(model, probe)
    assert np.isfinite(value) and value == pytest.approx(expected, rel=1e-5)
    assert abs(expected - before_warmup) > 1e-3
    unmasked = reference_loss(qe, np.concatenate([ce, bank]), probe_items, columns, temperature=0.5, q=q,
                              num_batch=len(columns))
    assert abs(expected - unmasked) > 1e-3


def test_cbns_empty_bank_after_zero_warmup_is_finite():
    model = make_model(negatives={"strategy": "cbns", "cbns_memory_size": 8, "cbns_warmup_steps": 0})
    features = batch([1, 2, 3], [1, 2, 3])
    qe, ce = embed(model, features, [1, 2, 3])
    value = loss(model, features, training=True)
    assert value == pytest.approx(reference_loss(qe, ce, [1, 2, 3], [1, 2, 3]), rel=1e-5)


def test_no_gradient_flows_into_the_bank():
    model = cbns_model()
    model.compute_loss(batch([1, 2, 3, 4], [1, 2, 3, 4]), training=True)
    model.optimizer.iterations.assign(5)
    bank_vars = [model.cbns_bank.embeddings, model.cbns_bank.log_q]
    assert not any(v.trainable for v in bank_vars)
    assert {v.ref() for v in bank_vars}.isdisjoint({v.ref() for v in model.trainable_variables})
    with tf.GradientTape() as tape:
        tape.watch(bank_vars)
        value = model.compute_loss(batch([5, 6, 1, 2], [5, 7, 8, 9]))
    assert all(g is None for g in tape.gradient(value, bank_vars))


# --- streaming logQ -----------------------------------------------------------------------


def test_streaming_logq_updates_only_in_training():
    model = make_model(retrieval={"logq": "streaming", "estimator_buckets": 64, "estimator_alpha": 0.1,
                                  "remove_accidental_hits": False})
    items = [1, 1, 2, 3]
    features = batch([1, 2, 3, 4], items)
    qe, ce = embed(model, features, items)
    # Step 1: item 1 twice -> B = (1-α)·1, items 2 and 3 once -> B = 1; p = 1 / (B · batch_size 4).
    p = 1.0 / (np.array([0.9, 0.9, 1.0, 1.0]) * 4)
    assert loss(model, features, training=True) == pytest.approx(reference_loss(qe, ce, items, items, q=p), rel=1e-5)
    np.testing.assert_allclose(model.estimator.probability(tf.constant(items)).numpy(), p, rtol=1e-6)
    loss(model, batch([1, 2], [7, 8]))  # evaluation: no update
    assert model.estimator.last_seen.numpy()[7] == 0


# --- towers -------------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["mean", "max", "attention", "gru", "recent"])
def test_history_pooling_masks_padding(pooling):
    model = make_model(model={"history_length": HISTORY, "history_pooling": pooling, "user_features": True,
                              "item_features": True, "query_layers": [16]})
    users = [1, 1, 1, 2]
    history = [[0, 0, 3, 5], [0, 3, 0, 5], [3, 0, 0, 5], [0, 0, 0, 0]]
    out = model.query_tower({"user": tf.constant(users), "history": tf.constant(history)}).numpy()
    np.testing.assert_allclose(out[1], out[0], atol=1e-6)
    np.testing.assert_allclose(out[2], out[0], atol=1e-6)
    # No history at all (serving by user id) pools like an all-padding one.
    no_history = model.query_tower({"user": tf.constant([2])}).numpy()
    np.testing.assert_allclose(no_history[0], out[3], atol=1e-6)
    # Whatever the padding row (history slot 0, feature-bag slot 0) embeds to, nothing changes.
    table = model.query_tower.history_embedding.embeddings
    table.assign(tf.tensor_scatter_nd_update(table, [[0]], [tf.fill([8], 7.0)]))
    bag = model.query_tower.features[0].embedding.embeddings
    bag.assign(tf.tensor_scatter_nd_update(bag, [[0]], [tf.fill([8], -5.0)]))
    after = model.query_tower({"user": tf.constant(users), "history": tf.constant(history)}).numpy()
    np.testing.assert_allclose(after, out, atol=1e-6)
    # A real item does change the query (so the checks above can fail).
    other = model.query_tower({"user": tf.constant([1]), "history": tf.constant([[0, 0, 4, 5]])}).numpy()
    assert np.abs(other[0] - out[0]).max() > 1e-4
    features = batch(users, [1, 2, 3, 4], history=history)
    assert np.isfinite(loss(model, features, training=True))


@pytest.mark.parametrize("share", [True, False])
def test_shared_item_embedding_shares_variables(share):
    model = make_model(model={"history_length": HISTORY, "share_item_embedding": share})
    query = {"user": tf.constant([1]), "history": tf.constant([[0, 0, 0, 3]])}
    before = model.query_tower(query).numpy()
    model.candidate_tower(tf.constant([1]))
    candidate_table = model.candidate_tower.item_embedding.embeddings
    history_table = model.query_tower.history_embedding.embeddings
    assert (history_table is candidate_table) == share
    tables = [v for v in model.trainable_variables if v.shape == (NUM_ITEMS + 1, 8)]
    assert len(tables) == (1 if share else 2)
    candidate_table.assign(tf.tensor_scatter_nd_update(candidate_table, [[3]], [tf.ones([8])]))
    changed = np.abs(model.query_tower(query).numpy() - before).max() > 1e-4
    assert changed == share


def test_training_needs_the_history():
    model = make_model(model={"history_length": HISTORY})
    with pytest.raises(ValueError, match="history"):
        model.compute_loss(batch([1, 2], [1, 2]), training=True)


def test_l2_normalisation_gives_unit_norms():
    model = make_model(model={"normalize": True, "query_layers": [16], "candidate_layers": [12],
                              "user_features": True, "item_features": True, "history_length": HISTORY,
                              "history_pooling": "attention"})
    query = model.query_tower({"user": tf.constant([1, 2, 3]), "history": tf.constant([[0, 1, 2, 3]] * 3)})
    candidates = model.candidate_tower(tf.range(1, NUM_ITEMS + 1))
    np.testing.assert_allclose(np.linalg.norm(query.numpy(), axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(candidates.numpy(), axis=1), 1.0, rtol=1e-5)
    assert query.shape == (3, 8) and candidates.shape == (NUM_ITEMS, 8)


def test_feature_flags_need_features_in_the_dataset():
    split = make_split()
    split.dataset.user_features = {}
    with pytest.raises(ValueError, match="model.user_features"):
        make_model(split, model={"user_features": True})


@pytest.mark.parametrize("strategy", ["in_batch", "mns", "cbns"])
def test_fit_reduces_the_loss(strategy):
    split = make_split(rows=256)
    model = make_model(split, model={"embedding_dim": 16, "history_length": HISTORY, "share_item_embedding": True},
                       negatives={"strategy": strategy, "cbns_memory_size": 64, "cbns_warmup_steps": 3,
                                  "mns_batch_size": 8},
                       retrieval={"logq": "counts", "remove_accidental_hits": True}, training={"batch_size": 32})
    model.compile(optimizer=tf.keras.optimizers.Adam(0.02))
    t = split.train
    data = {"user": t.user, "item": t.item, "weight": t.weight, "history": t.history}
    stream = tf.data.Dataset.from_tensor_slices(data).shuffle(256, seed=0).batch(32)
    negatives = tf.data.Dataset.range(1, NUM_ITEMS + 1).repeat().shuffle(64, seed=0).map(lambda i: tf.cast(i, tf.int32))
    if strategy == "mns":
        stream = tf.data.Dataset.zip(stream, negatives.batch(8)).map(lambda b, n: {**b, "uniform_negatives": n})
    probe = {k: tf.constant(v[:32]) for k, v in data.items()}
    probe["uniform_negatives"] = tf.range(1, 9)
    before = loss(model, probe)
    model.fit(stream, epochs=6, verbose=0)
    after = loss(model, probe)
    assert model.strategy != "cbns" or model.cbns_bank.count.numpy() == 64
    assert np.isfinite(after) and after < 0.5 * before
