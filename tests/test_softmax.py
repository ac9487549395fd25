"""The sampled softmax pieces against NumPy written from the definitions: balanced and paper CBNS
gradients, the logQ floor at scale, and the one accidental-hit rule (on the model's own loss)."""
from __future__ import annotations

import numpy as np
import pytest

import tuner  # noqa: F401
import tensorflow as tf

from tuner.config import from_dict
from tuner.data.types import Dataset, Interactions, Split
from tuner.model import build_model
from tuner.model.softmax import (accidental_hits, balanced_cross_batch_loss, corrected_logits, cross_entropy,
                                 diagonal_cross_entropy)


def softmax_reference(queries, columns, positives, column_ids, temperature, log_q=None, remove_hits=True,
                      weights=None):
    """(loss, dL/dqueries, dL/dcolumns) of L = (1/B) Σ_i w_i·(log Σ_j exp z_ij − z_ii), z = u·c / τ − log q.

    Column j is left out of query i's softmax when hit removal is on, j ≠ i and column j holds i's
    positive. The gradient of each row's cross-entropy w.r.t. its logits is softmax − one-hot.
    """
    queries, columns = np.asarray(queries, np.float64), np.asarray(columns, np.float64)
    b = len(positives)
    z = queries @ columns.T / temperature - (0.0 if log_q is None else np.asarray(log_q, np.float64))
    keep = np.ones_like(z, bool)
    if remove_hits:
        for i in range(b):
            for j in range(len(column_ids)):
                keep[i, j] = j == i or column_ids[j] != positives[i]
    e = np.where(keep, np.exp(z - z.max(axis=1, keepdims=True)), 0.0)
    p = e / e.sum(axis=1, keepdims=True)
    w = np.ones(b) if weights is None else np.asarray(weights, np.float64)
    loss = np.sum(w * -np.log(p[np.arange(b), np.arange(b)])) / b
    dz = (p - np.eye(b, len(column_ids))) * w[:, None] / b
    return loss, dz @ columns / temperature, dz.T @ queries / temperature


def cbns_case(seed=0, b=5, m=7, d=4):
    """Normalised embeddings, a bank, log q per column, weights; item 3 sits in the batch twice and in the bank."""
    rng = np.random.default_rng(seed)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    u, v, bank = (unit(rng.normal(size=(n, d))).astype(np.float32) for n in (b, b, m))
    ids = np.array([3, 8, 3, 5, 9], np.int32)
    bank_ids = np.array([11, 3, 12, 13, 5, 14, 15], np.int32)
    log_q = np.log(rng.uniform(1e-4, 1e-2, b + m)).astype(np.float32)
    weights = rng.uniform(0.5, 2.0, b).astype(np.float32)
    return u, v, bank, ids, bank_ids, log_q, weights


def gradients(loss_fn, u, v):
    queries, positives = tf.Variable(u), tf.Variable(v)
    with tf.GradientTape() as tape:
        value = loss_fn(queries, positives)
    du, dv = tape.gradient(value, [queries, positives])
    return float(value), du.numpy(), dv.numpy()


@pytest.mark.parametrize("remove_hits", [True, False])
def test_balanced_cbns_trains_queries_on_the_full_softmax_and_items_on_the_in_batch_softmax(remove_hits):
    u, v, bank, ids, bank_ids, log_q, weights = cbns_case()
    columns, column_ids, tau = np.concatenate([v, bank]), np.concatenate([ids, bank_ids]), 0.1
    hits = accidental_hits(tf.constant(ids), tf.constant(column_ids)) if remove_hits else None
    value, du, dv = gradients(lambda q, p: balanced_cross_batch_loss(
        q, p, tf.constant(bank), tau, tf.constant(log_q), hits, tf.constant(weights)), u, v)

    full_loss, full_du, _ = softmax_reference(u, columns, ids, column_ids, tau, log_q, remove_hits, weights)
    _, _, batch_dv = softmax_reference(u, v, ids, ids, tau, log_q[:5], remove_hits, weights)
    assert value == pytest.approx(full_loss, rel=1e-5)  # the value is the full softmax's loss
    np.testing.assert_allclose(du, full_du, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dv, batch_dv, rtol=1e-4, atol=1e-6)
    # In-batch, the item gradients of each query cancel: they sum to zero over the batch's items.
    unweighted = softmax_reference(u, v, ids, ids, tau, log_q[:5], remove_hits=False)[2]
    np.testing.assert_allclose(unweighted.sum(axis=0), 0.0, atol=1e-6)


def test_paper_cbns_trains_both_towers_on_one_softmax_and_its_item_gradients_do_not_cancel():
    u, v, bank, ids, bank_ids, log_q, weights = cbns_case(seed=1)
    columns, column_ids, tau = np.concatenate([v, bank]), np.concatenate([ids, bank_ids]), 0.1
    hits = accidental_hits(tf.constant(ids), tf.constant(column_ids))

    def paper(q, p):
        candidates = tf.concat([p, tf.stop_gradient(tf.constant(bank))], 0)
        return cross_entropy(corrected_logits(q, candidates, tau, tf.constant(log_q)), hits, tf.constant(weights))

    value, du, dv = gradients(paper, u, v)
    full_loss, full_du, full_dc = softmax_reference(u, columns, ids, column_ids, tau, log_q, True, weights)
    assert value == pytest.approx(full_loss, rel=1e-5)
    np.testing.assert_allclose(du, full_du, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dv, full_dc[:5], rtol=1e-4, atol=1e-6)
    # The bank's share of the mass leaves a net pull on the items: Σ_j dL/dv_j = −Σ_i m_i·u_i/(Bτ).
    balanced_dv = gradients(lambda q, p: balanced_cross_batch_loss(
        q, p, tf.constant(bank), tau, tf.constant(log_q), hits, tf.constant(weights)), u, v)[2]
    assert np.abs(dv - balanced_dv).max() > 1e-3
    assert np.linalg.norm(dv.sum(axis=0)) > 1e-2


def test_diagonal_cross_entropy_equals_tensorflows_and_stays_finite_far_from_the_positive():
    rng = np.random.default_rng(2)
    z = rng.normal(scale=3.0, size=(4, 9)).astype(np.float32)
    z[1, 1], z[1, 5] = -300.0, 300.0  # the positive's probability underflows to 0 in float32
    hits = np.zeros((4, 9), bool)
    hits[2, [0, 7]] = True
    logits = tf.Variable(z)
    with tf.GradientTape(persistent=True) as tape:
        ours = diagonal_cross_entropy(logits, tf.constant(hits))
        theirs = tf.nn.softmax_cross_entropy_with_logits(np.eye(4, 9), tf.where(hits, -1e30, logits))
        weights = tf.constant([1.0, 0.5, 2.0, 0.0])
        ours_total, theirs_total = tf.reduce_sum(ours * weights), tf.reduce_sum(theirs * weights)
    assert np.isfinite(ours.numpy()).all() and ours.numpy()[1] == pytest.approx(600.0, rel=1e-5)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5)
    ours_gradient, theirs_gradient = tape.gradient(ours_total, logits), tape.gradient(theirs_total, logits)
    np.testing.assert_allclose(ours_gradient.numpy(), theirs_gradient.numpy(), rtol=1e-5, atol=1e-7)
    assert (ours_gradient.numpy()[hits] == 0).all()


# --- on the model -------------------------------------------------------------------------


def toy_split(counts: np.ndarray, num_users: int = 6) -> Split:
    """A split whose training item counts are exactly `counts` (index 0 = padding)."""
    item = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    n = len(item)
    user = (np.arange(n) % num_users + 1).astype(np.int32)
    inter = Interactions(user, item, np.arange(n, dtype=np.int64), np.ones(n, np.float32))
    dataset = Dataset("toy", np.array([""] + [f"u{i}" for i in range(num_users)]),
                      np.array([""] + [f"i{i}" for i in range(len(counts) - 1)]), inter)
    empty = inter.take(np.arange(0))
    return Split(dataset, inter, empty, empty)


COUNTS = np.array([0, 6, 4, 3, 2, 2, 1, 1, 1, 1, 1])


def make_model(split=None, **sections):
    cfg = {"model": {"embedding_dim": 8, "normalize": True}, "training": {"batch_size": 4}, "seed": 3}
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    tf.keras.utils.set_random_seed(cfg["seed"])
    return build_model(from_dict(cfg), split or toy_split(COUNTS))


def features(users, items, **extra):
    out = {"user": tf.constant(users, tf.int32), "item": tf.constant(items, tf.int32)}
    out.update({k: tf.constant(v, tf.int32) for k, v in extra.items()})
    return out


def embed(model, batch, columns):
    return (model.query_tower({"user": batch["user"]}).numpy(),
            model.candidate_tower(tf.constant(columns, tf.int32)).numpy())


def tower_gradients(model, batch):
    with tf.GradientTape() as tape:
        value = model.compute_loss(batch)
    towers = (model.query_tower.trainable_variables, model.candidate_tower.trainable_variables)
    grads = tape.gradient(value, list(towers[0]) + list(towers[1]))
    as_dense = [tf.convert_to_tensor(g).numpy() for g in grads]
    return as_dense[:len(towers[0])], as_dense[len(towers[0]):]


def same_weights(model, source, batch):
    model.compute_loss(batch)  # builds the towers (no state changes outside training)
    model.query_tower.set_weights(source.query_tower.get_weights())
    model.candidate_tower.set_weights(source.candidate_tower.get_weights())


def test_balanced_model_item_tower_learns_as_in_batch_and_query_tower_as_paper():
    batch = features([1, 2, 3, 4], [2, 9, 10, 4])
    models = {}
    for kind in ("balanced", "paper", "in_batch"):
        strategy = {"strategy": "in_batch"} if kind == "in_batch" else {
            "strategy": "cbns", "cbns_memory_size": 8, "cbns_warmup_steps": 0, "cbns_gradient": kind}
        models[kind] = make_model(negatives=strategy, retrieval={"logq": "counts", "temperature": 0.2})
        models[kind].compile(optimizer=tf.keras.optimizers.SGD(0.0))  # steps count, weights stay put
        same_weights(models[kind], models["balanced"], batch)
    for kind in ("balanced", "paper"):  # the same bank rows in both: items 1..8
        for items in ([1, 2, 3, 4], [5, 6, 7, 8]):
            models[kind].compute_loss(features([1, 2, 3, 4], items), training=True)
    balanced, paper = models["balanced"], models["paper"]
    assert balanced.cbns_bank.read()[1].numpy().tolist() == list(range(1, 9))
    assert float(balanced.compute_loss(batch)) == pytest.approx(float(paper.compute_loss(batch)), rel=1e-6)
    query_b, item_b = tower_gradients(balanced, batch)
    query_p, item_p = tower_gradients(paper, batch)
    _, item_i = tower_gradients(models["in_batch"], batch)
    for ours, theirs in zip(item_b, item_i):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-7)
    for ours, theirs in zip(query_b, query_p):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-7)
    assert max(np.abs(a - b).max() for a, b in zip(item_b, item_p)) > 1e-4


def test_logq_tells_one_count_from_two_in_two_million_interactions():
    """TFRS clips q at 1e-6; one count in 2M is 5e-7 and two are 1e-6, the same q after its clip."""
    counts = np.array([0, 1, 2, 1_999_997])
    model = make_model(toy_split(counts), retrieval={"logq": "counts", "temperature": 0.5})
    corrections = -np.log(model.probability(tf.constant([1, 2])).numpy().astype(np.float64))
    assert corrections[0] - corrections[1] == pytest.approx(np.log(2), rel=1e-4)
    batch = features([1, 2, 3], [1, 2, 3])
    u, c = embed(model, batch, [1, 2, 3])
    q = counts[[1, 2, 3]] / counts.sum()
    expected = softmax_reference(u, c, [1, 2, 3], [1, 2, 3], 0.5, np.log(q))[0]
    assert float(model.compute_loss(batch)) == pytest.approx(expected, rel=1e-5)
    clipped = softmax_reference(u, c, [1, 2, 3], [1, 2, 3], 0.5, np.log(np.clip(q, 1e-6, 1)))[0]
    assert abs(expected - clipped) > 1e-4


def test_accidental_hits_mark_every_copy_of_the_positive_but_its_own_column():
    positives, columns = [3, 8, 3, 5], [3, 8, 3, 5, 5, 3, 7]
    expected = [[j != i and columns[j] == positives[i] for j in range(len(columns))] for i in range(4)]
    assert accidental_hits(tf.constant(positives), tf.constant(columns)).numpy().tolist() == expected


@pytest.mark.parametrize("remove_hits", [True, False])
def test_one_hit_rule_for_in_batch_and_mns_columns(remove_hits):
    """Item 3 twice in the batch and once among the uniform draws; item 8 drawn too."""
    model = make_model(negatives={"strategy": "mns", "mns_batch_size": 3},
                       retrieval={"remove_accidental_hits": remove_hits, "temperature": 0.3})
    batch = features([1, 2, 3, 4], [3, 8, 3, 5], uniform_negatives=[3, 8, 10])
    columns = [3, 8, 3, 5, 3, 8, 10]
    u, c = embed(model, batch, columns)
    expected = softmax_reference(u, c, [3, 8, 3, 5], columns, 0.3, remove_hits=remove_hits)[0]
    assert float(model.compute_loss(batch)) == pytest.approx(expected, rel=1e-5)
    other = softmax_reference(u, c, [3, 8, 3, 5], columns, 0.3, remove_hits=not remove_hits)[0]
    assert abs(expected - other) > 1e-4


@pytest.mark.parametrize("remove_hits", [True, False])
def test_one_hit_rule_for_cbns_bank_columns(remove_hits):
    model = make_model(negatives={"strategy": "cbns", "cbns_memory_size": 4, "cbns_warmup_steps": 0},
                       retrieval={"remove_accidental_hits": remove_hits, "temperature": 0.3})
    model.compute_loss(features([1, 2, 3, 4], [3, 6, 7, 5]), training=True)  # bank: 3, 6, 7, 5
    batch = features([1, 2, 3, 4], [3, 8, 3, 5])
    bank, bank_ids, _ = (t.numpy() for t in model.cbns_bank.read())
    columns = [3, 8, 3, 5] + bank_ids.tolist()
    u, v = embed(model, batch, [3, 8, 3, 5])
    c = np.concatenate([v, bank])
    expected = softmax_reference(u, c, [3, 8, 3, 5], columns, 0.3, remove_hits=remove_hits)[0]
    assert float(model.compute_loss(batch)) == pytest.approx(expected, rel=1e-5)
    other = softmax_reference(u, c, [3, 8, 3, 5], columns, 0.3, remove_hits=not remove_hits)[0]
    assert abs(expected - other) > 1e-4
