"""A query tower over the user's whole set of training items (a bag-of-items encoder, as in
Mult-DAE and FISM), trained with a softmax over the whole catalog; scored on validation only.

The split is the one `tuner train` builds from the config; the scores go through
`tuner.baselines.score`, the ranking every baseline and the model go through, so the user's
training items are masked from it. At validation the input is the user's whole training set.
Modes: `leave_out` trains on (user, item) pairs with that item removed from the input set;
`multinomial` trains on users, the input set under dropout and the target the multinomial over
it (Mult-DAE's loss). Each epoch is scored on val; training stops after PATIENCE epochs without a
better ndcg@10 and the best epoch is reported.

    nice -n 10 python3 experiments/models/set_query.py [--variants a,b] [--als]
"""
from __future__ import annotations

import argparse
import time

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf

from tuner import config
from tuner.baselines import als, score
from tuner.baselines.history import ColdUsers, user_items
from tuner.train import prepare_split

CONFIG = "experiments/best/random/best-tpe50.yaml"
KS = [10, 100]
MONITOR = "ndcg@10"
PATIENCE = 5
MAX_EPOCHS = 100
ALS_VAL = {"recall@10": 0.2212, "ndcg@10": 0.2303}  # experiments/models/README.md, random

BASE = dict(mode="leave_out", dim=64, tau=0.1, keep=1.0, user_id=False, layers=(), bias=True,
            optimizer="adam", lr=1e-3, batch=1024, passes=1, l2=0.0)
VARIANTS = {  # each changes BASE; measured on seed 42, ranked in experiments/models/README.md
    "leave_out_t0.1": {},
    "leave_out_t0.2": dict(tau=0.2),
    "leave_out_t0.3": dict(tau=0.3),
    "leave_out_t0.2_keep0.8": dict(tau=0.2, keep=0.8),
    "leave_out_keep0.5": dict(keep=0.5),
    "leave_out_d128": dict(dim=128),
    "leave_out_ids": dict(user_id=True),
    "leave_out_mlp": dict(layers=(128,)),
    "leave_out_dot": dict(tau=None),
    "leave_out_dot_l2": dict(tau=None, lr=3e-3, l2=1e-4),
    "multinomial_keep0.5": dict(mode="multinomial", keep=0.5, batch=128, passes=10),
    "multinomial_dot": dict(mode="multinomial", tau=None, keep=0.5, dim=200, batch=128, passes=10, l2=1e-4),
    "multinomial_dot_keep0.8": dict(mode="multinomial", tau=None, keep=0.8, dim=200, batch=128, passes=10, l2=1e-4),
    "multinomial_dot_d600": dict(mode="multinomial", tau=None, keep=0.5, dim=600, batch=128, passes=10, l2=1e-4),
}


class SetQuery(tf.Module):
    """Query = mean of the input set's item vectors (+ a user-id vector), through optional tanh
    layers; score = query · item vector (cosine / τ when τ is set) + a per-item bias."""

    def __init__(self, num_users: int, num_items: int, v: dict):
        super().__init__()
        init = tf.keras.initializers.RandomUniform(-0.05, 0.05, seed=42)
        self.v = v
        self.item_in = tf.Variable(init([num_items, v["dim"]]))
        self.item_out = tf.Variable(init([num_items, v["layers"][-1] if v["layers"] else v["dim"]]))
        self.bias = tf.Variable(tf.zeros([num_items]), trainable=v["bias"])
        self.user = tf.Variable(init([num_users + 1, v["dim"]])) if v["user_id"] else None
        self.dense = [tf.keras.layers.Dense(width, activation="tanh") for width in v["layers"]]

    def scores(self, x, users):
        """x [B, num_items] (0/1 input set), users [B] -> [B, num_items] logits."""
        query = tf.matmul(x, self.item_in) / tf.maximum(tf.reduce_sum(x, axis=1, keepdims=True), 1.0)
        if self.user is not None:
            query += tf.gather(self.user, users)
        for layer in self.dense:
            query = layer(query)
        items = self.item_out
        if self.v["tau"] is not None:
            query, items = tf.math.l2_normalize(query, -1), tf.math.l2_normalize(items, -1)
        logits = tf.matmul(query, items, transpose_b=True)
        return (logits / self.v["tau"] if self.v["tau"] is not None else logits) + self.bias


def train(split, v: dict, seed: int = 42, log=print) -> dict:
    """Trains variant `v` to its best val epoch: {"epoch", "recall@10", "ndcg@10", "seconds"}."""
    tf.keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    matrix = user_items(split)  # [num_users + 1, num_items], row 0 empty
    sets = tf.constant(matrix.toarray())
    pair_user, pair_item = (a.astype(np.int32) for a in matrix.nonzero())  # distinct training pairs
    users_with_items = np.flatnonzero(np.diff(matrix.indptr)).astype(np.int32)
    model = SetQuery(split.dataset.num_users, split.dataset.num_items, v)
    optimizer = {"adam": tf.keras.optimizers.Adam, "adagrad": tf.keras.optimizers.Adagrad}[v["optimizer"]](v["lr"])
    cold = ColdUsers(split)

    def dropped(x):
        return x if v["keep"] >= 1.0 else x * tf.cast(tf.random.uniform(tf.shape(x)) < v["keep"], x.dtype)

    @tf.function(reduce_retracing=True)
    def step(users, items):
        x = tf.gather(sets, users)
        with tf.GradientTape() as tape:
            if v["mode"] == "leave_out":
                x_in = dropped(x - tf.one_hot(items, x.shape[1]))
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(items, model.scores(x_in, users)))
            else:
                log_p = tf.nn.log_softmax(model.scores(dropped(x), users))
                loss = -tf.reduce_mean(tf.reduce_sum(x * log_p, axis=1))
            loss += v["l2"] * (tf.nn.l2_loss(model.item_in) + tf.nn.l2_loss(model.item_out))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    def scorer(users, part):
        logits = model.scores(tf.gather(sets, users), tf.constant(users, tf.int32))
        return cold.serve(np.array(logits, np.float32), users)

    best, since, started = None, 0, time.perf_counter()
    for epoch in range(1, MAX_EPOCHS + 1):
        losses = []
        for _ in range(v["passes"]):
            order = rng.permutation(len(pair_user) if v["mode"] == "leave_out" else len(users_with_items))
            for start in range(0, len(order), v["batch"]):
                batch = order[start:start + v["batch"]]
                if v["mode"] == "leave_out":
                    losses.append(float(step(pair_user[batch], pair_item[batch])))
                else:
                    users = users_with_items[batch]
                    losses.append(float(step(users, users)))  # the items argument is unused here
        metrics = score(split, "val", KS, scorer)
        log(f"  epoch {epoch}: loss {np.mean(losses):.4f}, val recall@10 {metrics['recall@10']:.4f}, "
            f"ndcg@10 {metrics['ndcg@10']:.4f}")
        if best is None or metrics[MONITOR] > best[MONITOR]:
            best, since = {"epoch": epoch, **metrics}, 0
        else:
            since += 1
            if since >= PATIENCE:
                break
    return {**best, "seconds": time.perf_counter() - started}


def row(name: str, m: dict, epoch="–") -> str:
    ratio = ", ".join(f"{m[k] / ALS_VAL[k]:.2f}×" for k in ("recall@10", "ndcg@10"))
    return f"| {name} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} | {epoch} | {ratio} |"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    parser.add_argument("--als", action="store_true", help="also fit ALS at its val-chosen setting")
    args = parser.parse_args()
    split = prepare_split(config.load(CONFIG))
    lines = ["| val | recall@10 | ndcg@10 | best epoch | / ALS (recall, ndcg) |", "|---|---|---|---|---|"]
    if args.als:
        lines.append(row(f"ALS {als.DEFAULT}", score(split, "val", KS, als.Model(split, 42).fit(als.DEFAULT))))
        print(lines[-1], flush=True)
    for name in args.variants.split(","):
        print(f"{name}: {VARIANTS[name]}", flush=True)
        best = train(split, {**BASE, **VARIANTS[name]})
        lines.append(row(f"{name} ({best['seconds']:.0f} s)", best, best["epoch"]))
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
