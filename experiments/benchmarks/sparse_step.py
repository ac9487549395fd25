"""Optimizer step time against catalog size: tf-keras Adam (`dense_adam`) beside the row-sparse
optimizers `training.optimizer` names, measured side by side in one run.

    python experiments/benchmarks/sparse_step.py [--rows 10000 150000 1000000] [--batch 1024]
                                                 [--dim 32] [--steps 30] [--rounds 3] [--threads 1]

One step: gather `--batch` ids (uniform over the table) from a `--dim`-wide embedding table,
pass them through a dense [dim, dim] kernel (a tower's dense path), a squared loss, and the
optimizer's update of both. Only the table grows between sizes, so a step whose cost follows
the batch keeps its time and one that touches every row grows with the catalog. Each round
times every optimizer at every size back to back; ms/step is the best round. The last line is
one JSON object: ms/step per optimizer and size, and each optimizer's step time at the largest
size over the smallest (`adam_step_1m_over_10k` with the default sizes; target ≤ 1.3).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

import tuner  # noqa: F401
import tensorflow as tf

from tuner.model.optimizers import build_optimizer

OPTIMIZERS = ("dense_adam", "adam", "adagrad", "sgd")


def step_function(rows: int, dim: int, optimizer_name: str):
    """A compiled step over a fresh table of `rows` rows, and its optimizer, built by the first call."""
    rng = np.random.default_rng(0)
    table = tf.Variable(rng.normal(0, 0.05, (rows, dim)).astype(np.float32), name="embeddings")
    kernel = tf.Variable(rng.normal(0, 0.2, (dim, dim)).astype(np.float32), name="kernel")
    optimizer = build_optimizer(optimizer_name, 0.01)

    @tf.function
    def step(ids):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(tf.matmul(tf.gather(table, ids), kernel) - 0.1))
        optimizer.apply_gradients(zip(tape.gradient(loss, [table, kernel]), [table, kernel]))
        return loss

    return step


def time_steps(step, rows: int, batch: int, steps: int) -> float:
    """Milliseconds per step over `steps` steps, each on fresh uniform ids."""
    ids = tf.random.stateless_uniform([steps, batch], seed=[rows, 1], maxval=rows, dtype=tf.int32)
    step(ids[0]).numpy()  # trace and build outside the clock
    started = time.perf_counter()
    for i in range(steps):
        loss = step(ids[i])
    loss.numpy()
    return (time.perf_counter() - started) / steps * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 150_000, 1_000_000])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    steps = {(name, rows): step_function(rows, args.dim, name) for rows in args.rows for name in OPTIMIZERS}
    best = {key: float("inf") for key in steps}
    for _ in range(args.rounds):
        for (name, rows), step in steps.items():
            best[name, rows] = min(best[name, rows], time_steps(step, rows, args.batch, args.steps))

    smallest, largest = min(args.rows), max(args.rows)
    print(f"ms/step, {args.batch} ids a step, dim {args.dim}, {args.threads} thread(s), best of {args.rounds} rounds")
    print(f"{'optimizer':<12}" + "".join(f"{rows:>12,}" for rows in args.rows) + f"{'largest/smallest':>18}")
    result = {"batch": args.batch, "dim": args.dim, "threads": args.threads, "ms_per_step": {}}
    for name in OPTIMIZERS:
        ratio = best[name, largest] / best[name, smallest]
        print(f"{name:<12}" + "".join(f"{best[name, rows]:>12.2f}" for rows in args.rows) + f"{ratio:>18.2f}")
        result["ms_per_step"][name] = {str(rows): round(best[name, rows], 3) for rows in args.rows}
        result[f"{name}_step_{label(largest)}_over_{label(smallest)}"] = round(ratio, 3)
    print(json.dumps(result))


def label(rows: int) -> str:
    """10000 → "10k", 1000000 → "1m": the sizes as the JSON keys name them."""
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}m"
    return f"{rows // 1000}k" if rows % 1000 == 0 else str(rows)


if __name__ == "__main__":
    main()
