"""A worker's resident memory over a long study: RSS after trial 5 against after trial N.

    python experiments/benchmarks/worker_memory.py [--trials 50]

One worker runs a random-search study of one-epoch MovieLens-100K trials (temperature,
embedding size and negative strategy vary, so graphs of different shapes are built) in this
process, through the trial function `tuner search` uses (tuner.search.hypermodel.TrialRunner). The last line is one JSON object:
{"rss_mb_after_5": .., "rss_mb_after_n": .., "growth_mb": .., "growth_ratio": ..}.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

import tuner  # noqa: F401
from tuner.search import create_or_resume_study, run_worker
from tuner.search.hypermodel import TrialRunner
from tuner.space import load_space_text
from tuner.store import open_store

SPACE = """
dataset: {name: movielens-100k}
split: {method: random, val_fraction: 0.1, test_fraction: 0.2, seed: 42}
model: {embedding_dim: 16, normalize: true}
retrieval: {temperature: 0.05, logq: counts}
negatives: {strategy: in_batch, mns_batch_size: 256, cbns_memory_size: 4096, cbns_warmup_steps: 20}
training: {optimizer: adam, learning_rate: 0.01, batch_size: 2048, epochs: 1}
evaluation: {ks: [10], monitor: recall@10, every_epoch: false}
parameters:
  retrieval.temperature: {distribution: log_uniform_values, min: 0.01, max: 1.0}
  model.embedding_dim: {values: [8, 16, 32]}
  negatives.strategy: {values: [in_batch, mns, cbns]}
search: {oracle: random, objective: val_recall@10, max_trials: %d}
"""


def rss_mb() -> float:
    """Current resident set size from /proc (ru_maxrss would only ever grow)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    args = parser.parse_args()
    text = SPACE % args.trials
    space = load_space_text(text, "worker_memory")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/memory.db"
        store = open_store(url)
        create_or_resume_study(store, "memory", space)
        rss: list[float] = []
        trial = TrialRunner(space)

        def measured_trial(ctx):
            result = trial(ctx)
            rss.append(rss_mb())
            print(f"trial {len(rss):>3}: rss {rss[-1]:8.1f} MB", file=sys.stderr, flush=True)
            return result

        run_worker(url, "memory", trial_fn=measured_trial, worker_id="m0", log=lambda m: None)
    after_5, after_n = rss[4], rss[-1]
    print(f"{'after trial':<14}{'RSS MB':>10}")
    for i in (1, 5, 10, 20, len(rss)):
        if i <= len(rss):
            print(f"{i:<14}{rss[i - 1]:>10.1f}")
    print(json.dumps({"rss_mb_after_5": round(after_5, 1), "rss_mb_after_n": round(after_n, 1), "trials": len(rss),
                      "growth_mb": round(after_n - after_5, 1), "growth_ratio": round(after_n / after_5, 3)}))


if __name__ == "__main__":
    main()
