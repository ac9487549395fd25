"""Training throughput of each negative-sampling strategy, measured side by side in one run.

    python experiments/benchmarks/step_time.py [--steps 150] [--batch 256]

Corpus: a synthetic 20,000-item dataset whose candidate tower has item features and an MLP
(the setting of the seed thread, where re-encoding the corpus per batch fell from 72 to 2
steps/s). Strategies: in_batch; mns with B' = B (uniform negatives from a tf.data stream);
cbns with M = 16 B; and the naive MNS that encodes the whole corpus every batch and samples
B' of its rows. The last line is one JSON object of step-time ratios.
"""
from __future__ import annotations

import argparse
import json
import time

import tuner  # noqa: F401
import tensorflow as tf

from tuner.config import from_dict
from tuner.data.pipeline import train_dataset
from tuner.model import retrieval
from tuner.train import make_optimizer, prepare_split


class NaiveMNSModel(retrieval.TwoTowerModel):
    """MNS as first attempted in the seed thread: the whole corpus is encoded on every step."""

    def negative_embeddings(self, ids, training=False):
        corpus = self.candidate_tower(tf.range(self.num_items + 1, dtype=tf.int32), training=training)
        return tf.gather(corpus, ids)


def config(strategy: str, batch: int):
    return from_dict({
        "dataset": {"name": "synthetic", "num_users": 5000, "num_items": 20000, "num_interactions": 200_000},
        "split": {"method": "random", "val_fraction": 0.0, "test_fraction": 0.0},
        "model": {"embedding_dim": 32, "item_features": True, "candidate_layers": [64], "normalize": True},
        "retrieval": {"temperature": 0.05, "logq": "counts"},
        "negatives": {"strategy": "mns" if strategy == "naive_mns" else strategy,
                      "mns_batch_size": batch, "cbns_memory_size": 16 * batch, "cbns_warmup_steps": 0},
        "training": {"batch_size": batch, "epochs": 1},
    }, "step_time.py")


def measure(strategy: str, batch: int, steps: int, warmup: int = 20) -> float:
    """Seconds per training step after `warmup` steps (tracing and the bank filling)."""
    cfg = config(strategy, batch)
    split = prepare_split(cfg)
    tf.keras.utils.set_random_seed(cfg.seed)
    model_cls = NaiveMNSModel if strategy == "naive_mns" else retrieval.TwoTowerModel
    model = retrieval.build_model(cfg, split, model_cls=model_cls)
    model.compile(optimizer=make_optimizer(cfg))
    stream = train_dataset(split.train, batch, cfg.seed, split.dataset.num_items,
                           uniform_negatives=batch if cfg.negatives.strategy == "mns" else 0).repeat()
    model.fit(stream, steps_per_epoch=warmup, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(stream, steps_per_epoch=steps, epochs=1, verbose=0)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    rows = {}
    for strategy in ("in_batch", "mns", "cbns", "naive_mns"):
        steps = max(10, args.steps // 10) if strategy == "naive_mns" else args.steps
        rows[strategy] = measure(strategy, args.batch, steps)
    print(f"batch {args.batch}, 20,000 items, {tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads")
    print(f"{'strategy':<12}{'ms/step':>10}{'examples/s':>12}{'vs in_batch':>13}")
    for name, seconds in rows.items():
        print(f"{name:<12}{seconds * 1e3:>10.2f}{args.batch / seconds:>12,.0f}{seconds / rows['in_batch']:>13.2f}")
    print(json.dumps({
        "mns_vs_in_batch": round(rows["mns"] / rows["in_batch"], 3),
        "cbns_vs_in_batch": round(rows["cbns"] / rows["in_batch"], 3),
        "naive_mns_vs_mns": round(rows["naive_mns"] / rows["mns"], 3),
    }))


if __name__ == "__main__":
    main()
