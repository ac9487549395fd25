"""Catalog scale in one run: the four ratios that say whether training and searching keep their
cost when the catalog grows, each measured side by side in this run.

    python experiments/benchmarks/catalog_scale.py [--quick]

- `adam_step_1m_over_10k`: an Adam step (`training.optimizer: adam`, row-sparse) on a 1M-row
  embedding table over the same step on a 10k-row one: same batch of ids, same dense kernel,
  timed round-robin, best of 7 rounds (`sparse_step.py`; on a shared machine single rounds vary
  severalfold). Target ≤ 1.3. What is left at 1M rows is memory, not a sweep over the table: the
  batch's rows of the table and both moments are cache misses there (384 MB against 3.8 MB),
  and Adagrad's step grows alike (1.2-1.7x here).
- `worker_rss_50_over_5`: a search worker's RSS after trial 50 over after trial 5, one-epoch
  MovieLens-100K trials, the worker started as `tuner search` starts it, with the default
  `search.trials_per_process` (`worker_memory.py`). Target ≤ 1.25.
- `pruned_trial_over_epoch`: a trial of the `temp` space stopped after epoch 1, whole, over that
  epoch; median over the trials (`pruned_trial.py`). Target ≤ 1.3.
- `eval_fraction_of_gemm_peak_1m`: full-corpus exact top-K evaluation of an untrained dim-32
  model on the synthetic 1M-item corpus, queries/s × 2·d·N, over the FLOP/s of a 4096³ float32
  `tf.matmul` timed in the same process on the same threads, the two alternating, the fastest
  of 5 rounds each, both after an untimed call (`eval_throughput.py`). Target ≥ 0.5. Beside it,
  in the JSON, `fraction_of_cpu_time`: the same ratio with FLOP per second of the process's CPU
  time, which other work on the machine changes far less than the wall time.

Everything runs with TensorFlow's default threads (all cores) in this process; the worker runs
in its own processes. `--quick` shrinks the sizes (fewer steps and rounds; 12 worker trials,
whose ratio is then after trial 12; a 4-trial pruned run; a 200k-item corpus, whose ratio keeps
the `_1m` name) to check the script end to end in a few minutes: its numbers are not the
figures. The last line is one JSON object with the four ratios, `quick` and the sizes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import eval_throughput
import pruned_trial
import sparse_step
import worker_memory

SIZES = {
    "full": {"rows": (10_000, 1_000_000), "batch": 1024, "dim": 32, "steps": 50, "rounds": 7,
             "worker_trials": 50, "pruned_trials": 6, "items": 1_000_000, "interactions": 2_000_000,
             "users": 20_000, "test_fraction": 0.0012, "eval_repeats": 5},
    "quick": {"rows": (10_000, 1_000_000), "batch": 1024, "dim": 32, "steps": 10, "rounds": 2,
              "worker_trials": 12, "pruned_trials": 4, "items": 200_000, "interactions": 400_000,
              "users": 5_000, "test_fraction": 0.005, "eval_repeats": 2},
}
GEMM_N = 4096


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def adam_steps(rows: tuple[int, int], batch: int, dim: int, steps: int, rounds: int) -> dict:
    """ms per Adam step at both sizes, best of `rounds` round-robin rounds, and their ratio."""
    functions = {n: sparse_step.step_function(n, dim, "adam") for n in rows}
    best = {n: float("inf") for n in rows}
    for _ in range(rounds):
        for n, step in functions.items():
            best[n] = min(best[n], sparse_step.time_steps(step, n, batch, steps))
    log("adam: " + ", ".join(f"{n:,} rows {ms:.2f} ms/step" for n, ms in best.items()))
    small, large = rows
    return {"ms_per_step": {sparse_step.label(n): round(ms, 3) for n, ms in best.items()},
            "ratio": round(best[large] / best[small], 3)}


def gemm_flops(n: int = GEMM_N) -> tuple[float, float]:
    """FLOP/s of one [n, n] × [n, n] float32 product, and its FLOP per second of the process's CPU
    time (all threads): best of three each, after a warm-up."""
    import tensorflow as tf

    a = tf.random.stateless_normal([n, n], seed=[1, 2])
    b = tf.random.stateless_normal([n, n], seed=[3, 4])
    tf.matmul(a, b).numpy()
    best = best_cpu = float("inf")
    for _ in range(3):
        started, cpu = time.perf_counter(), time.process_time()
        tf.matmul(a, b).numpy()
        best, best_cpu = min(best, time.perf_counter() - started), min(best_cpu, time.process_time() - cpu)
    return 2 * n**3 / best, 2 * n**3 / best_cpu


def eval_against_gemm(sizes: dict) -> dict:
    """Queries/s of full-corpus evaluation and the GEMM FLOP/s, alternating; the fastest of each.
    The first evaluation in a process ran ~15% slower (one-off costs: 1,547 against 1,819-1,823
    queries/s), so it is not timed."""
    import numpy as np

    corpus = argparse.Namespace(**{k: sizes[k] for k in ("items", "interactions", "users", "test_fraction")})
    split, model, load_s = eval_throughput.corpus_and_model(corpus)
    evaluate = eval_throughput.scorers(model, split)["model"]
    queries, dim = len(np.unique(split.test.user)), eval_throughput.config(corpus).model.embedding_dim
    qps = flops = qpcs = flops_cpu = 0.0  # qpcs: queries per second of CPU time
    evaluate(512)  # a warm-up, as the GEMM's: the first call in a process also pays one-off costs
    for round_number in range(sizes["eval_repeats"]):
        gemm, gemm_cpu = gemm_flops()
        flops, flops_cpu = max(flops, gemm), max(flops_cpu, gemm_cpu)
        started, cpu = time.perf_counter(), time.process_time()
        evaluate(512)
        qps = max(qps, queries / (time.perf_counter() - started))
        qpcs = max(qpcs, queries / (time.process_time() - cpu))
        log(f"round {round_number + 1}: gemm {flops / 1e9:.0f} GFLOP/s, evaluation {qps:,.0f} queries/s "
            f"({queries:,} queries, {split.dataset.num_items:,} items, dim {dim}; load average {os.getloadavg()[0]:.1f})")
    achieved = qps * 2 * dim * split.dataset.num_items
    # per CPU-second, both: other processes on the cores lengthen the wall time, hardly the CPU time
    fraction_cpu = qpcs * 2 * dim * split.dataset.num_items / flops_cpu
    return {"queries_per_s": round(qps, 1), "gemm_gflops": round(flops / 1e9, 1), "eval_gflops": round(achieved / 1e9, 1),
            "items": split.dataset.num_items, "dim": dim, "queries": queries, "load_s": round(load_s, 1),
            "fraction": round(achieved / flops, 3), "fraction_of_cpu_time": round(fraction_cpu, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the script in a few minutes")
    args = parser.parse_args()
    sizes = SIZES["quick" if args.quick else "full"]
    started = time.perf_counter()

    from tuner.settings import TRIALS_PER_PROCESS

    adam = adam_steps(sizes["rows"], sizes["batch"], sizes["dim"], sizes["steps"], sizes["rounds"])
    worker = worker_memory.measure(sizes["worker_trials"], TRIALS_PER_PROCESS, log=log)
    pruned = pruned_trial.measure("temp", sizes["pruned_trials"], log=log)
    evaluation = eval_against_gemm(sizes)

    print(f"{'figure':<34}{'value':>8}{'target':>10}")
    figures = {"adam_step_1m_over_10k": (adam["ratio"], "<= 1.3"),
               "worker_rss_50_over_5": (worker["rss_n_over_5"], "<= 1.25"),
               "pruned_trial_over_epoch": (pruned["pruned_trial_over_epoch"], "<= 1.3"),
               "eval_fraction_of_gemm_peak_1m": (evaluation["fraction"], ">= 0.5")}
    for name, (value, target) in figures.items():
        print(f"{name:<34}{value:>8.3f}{target:>10}")
    print(f"{'quick: small sizes, not the figures; ' if args.quick else ''}{time.perf_counter() - started:.0f} s, "
          f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f}")
    print(json.dumps({**{name: value for name, (value, _) in figures.items()}, "quick": args.quick,
                      "adam": adam, "worker": worker, "pruned": pruned, "evaluation": evaluation,
                      "sizes": sizes}))


if __name__ == "__main__":
    main()
