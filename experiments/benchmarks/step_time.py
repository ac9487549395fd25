"""Training throughput of each negative-sampling strategy, measured side by side in one run.

    python experiments/benchmarks/step_time.py [--tower content|light] [--batch 128] [--steps 150] [--rounds 3]
                                               [--threads N]

Corpus: a synthetic 20,000-item dataset. Two tower shapes (`--tower`): `light` (ids, one
feature per side, 64-unit MLPs) and `content` (attention over the last 20 items and a
256-128 query MLP; item features and a 512-256 candidate MLP), the setting of the seed
thread, where re-encoding the corpus per batch fell from 72 to 2 steps/s. CBNS adds a fixed
B x (B + M) score block per step, so its ratio shrinks as the towers grow; the naive MNS
encodes the corpus through the candidate tower, so its ratio grows with that tower. Strategies: in_batch; mns with B' = B (uniform negatives from a tf.data stream);
cbns with M = 16 B, with the balanced gradient (the default) and with the paper's; and the
naive MNS that encodes the whole corpus every batch and samples B' of its rows. Each round
times every strategy back to back, in wall time and in CPU time (all threads of the process);
ms/step is the best round, a ratio the median over rounds of the ratio within a round. The
last line is one JSON object of step-time ratios.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

import tuner  # noqa: F401
import tensorflow as tf

from tuner.config import from_dict
from tuner.data.pipeline import train_dataset
from tuner.model import retrieval
from tuner.train import build_model_for, prepare_split


class NaiveMNSModel(retrieval.TwoTowerModel):
    """MNS as this project first wrote it: the whole corpus is encoded on every step."""

    def negative_embeddings(self, ids, training=False):
        corpus = self.candidate_tower(tf.range(self.num_items + 1, dtype=tf.int32), training=training)
        return tf.gather(corpus, ids)


TOWERS = {
    # ids and one categorical feature per side, small MLPs: cheap towers, fixed per-step costs dominate
    "light": {"embedding_dim": 32, "item_features": True, "user_features": True, "query_layers": [64],
              "candidate_layers": [64], "normalize": True},
    # a content-style model: attention over the last 20 items, deeper candidate tower
    "content": {"embedding_dim": 32, "item_features": True, "user_features": True, "history_length": 20,
                "history_pooling": "attention", "query_layers": [256, 128], "candidate_layers": [512, 256],
                "normalize": True},
}


def config(strategy: str, batch: int, tower: str):
    return from_dict({
        "dataset": {"name": "synthetic", "num_users": 5000, "num_items": 20000, "num_interactions": 200_000},
        "split": {"method": "random", "val_fraction": 0.0, "test_fraction": 0.0},
        "model": TOWERS[tower],
        "retrieval": {"temperature": 0.05, "logq": "counts"},
        "negatives": {"strategy": {"naive_mns": "mns", "cbns_paper": "cbns"}.get(strategy, strategy),
                      "mns_batch_size": batch, "cbns_memory_size": 16 * batch, "cbns_warmup_steps": 0,
                      "cbns_gradient": "paper" if strategy == "cbns_paper" else "balanced"},
        "training": {"batch_size": batch, "epochs": 1},
    }, "step_time.py")


def prepare(strategy: str, batch: int, tower: str, warmup: int = 20):
    """A compiled model and its endless stream, past tracing and the bank's filling."""
    cfg = config(strategy, batch, tower)
    split = prepare_split(cfg)
    model = build_model_for(cfg, split, model_cls=NaiveMNSModel if strategy == "naive_mns" else retrieval.TwoTowerModel)
    stream = train_dataset(split.train, batch, cfg.seed, split.dataset.num_items,
                           uniform_negatives=batch if cfg.negatives.strategy == "mns" else 0).repeat()
    model.fit(stream, steps_per_epoch=warmup, epochs=1, verbose=0)
    return model, stream


def seconds_per_step(model, stream, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds per step. CPU time (all of this process's threads) counts only the
    work done, so it is far less disturbed than wall time by other jobs on a shared machine."""
    start, cpu = time.perf_counter(), time.process_time()
    model.fit(stream, steps_per_epoch=steps, epochs=1, verbose=0)
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tower", choices=sorted(TOWERS), default="content")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra-op threads (0: its default, every core)")
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    strategies = ("in_batch", "mns", "cbns", "cbns_paper", "naive_mns")
    prepared = {name: prepare(name, args.batch, args.tower) for name in strategies}
    wall = {name: [] for name in strategies}
    cpu = {name: [] for name in strategies}
    for _ in range(args.rounds):  # round robin: each round times every strategy back to back
        for name in strategies:
            steps = max(10, args.steps // 10) if name == "naive_mns" else args.steps
            wall_s, cpu_s = seconds_per_step(*prepared[name], steps)
            wall[name].append(wall_s)
            cpu[name].append(cpu_s)

    def ratio(times: dict, name: str, base: str = "in_batch") -> float:
        """Median over rounds of the ratio within each round: strategies timed seconds apart see
        nearly the same load from other jobs, which a ratio of best-of times would not."""
        return float(np.median(np.array(times[name]) / np.array(times[base])))

    print(f"{args.tower} towers, batch {args.batch}, 20,000 items, "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads, {args.rounds} rounds")
    print(f"{'strategy':<12}{'ms/step':>10}{'examples/s':>12}{'vs in_batch':>13}{'cpu ms/step':>13}{'cpu vs in_batch':>17}")
    for name in strategies:
        best = min(wall[name])
        print(f"{name:<12}{best * 1e3:>10.2f}{args.batch / best:>12,.0f}{ratio(wall, name):>13.2f}"
              f"{min(cpu[name]) * 1e3:>13.2f}{ratio(cpu, name):>17.2f}")
    print(json.dumps({
        "mns_vs_in_batch": round(ratio(wall, "mns"), 3),
        "cbns_vs_in_batch": round(ratio(wall, "cbns"), 3),
        "cbns_paper_vs_in_batch": round(ratio(wall, "cbns_paper"), 3),
        "naive_mns_vs_mns": round(ratio(wall, "naive_mns", "mns"), 3),
        "cbns_vs_in_batch_cpu": round(ratio(cpu, "cbns"), 3),
    }))

if __name__ == "__main__":
    main()
