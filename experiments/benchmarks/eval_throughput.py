"""Full-corpus evaluation throughput on a 1M-item corpus: queries per second, the previous ranking beside it.

    python experiments/benchmarks/eval_throughput.py [--items 1000000] [--interactions 2000000]
        [--users 20000] [--test-fraction 0.0012] [--memory-mb 512] [--repeats 3]
        [--scorers model most_popular "model (previous)" "most_popular (previous)"] [--sample-users N]

`tuner.evaluate.evaluate` scores every test query against every item (brute force) and ranks
the corpus with `tuner.topk` (tiles of items, group maxima, a running threshold); `most_popular`
ranks the same queries through the same code. "previous" is the ranking `tuner.evaluate` used
before: a chunk's whole score matrix from `tf.matmul` (or `tf.broadcast_to` of the counts),
the seen items scattered to -inf, `tf.math.top_k` over the 1M-wide rows; it is kept here, as
`previous_rank`, only to be measured against. All four run in ONE process, round-robin, best
of `--repeats` each: the machine may be shared, and alternating keeps the ratios fair when the
load moves. Every pair must give identical metrics (checked, printed). `--memory-mb` bounds
the previous ranking's chunks of whole score rows; `tuner.topk` never holds one, so the model and
MostPopular run alike at any value.

The model is a freshly built, untrained TwoTowerModel (dim 32, id embeddings only): the work
per query (a product with 1M candidates, the mask of the user's training items, a top-100) does
not depend on the weights. "cpu ms/query" is the process's CPU time per query (all threads):
less sensitive to other processes than the wall time. "RSS +GB" is the highest RSS a sampling
thread saw during the call minus the RSS before it (memory freed by an earlier call is reused
first, so run one scorer alone, `--scorers model`, for a process's own peak, printed last).
`--sample-users N` adds "model (sample)": the model on a seeded sample of N test users, as the
per-epoch validation of `evaluation.val_users` runs. The 1-minute load average before and after
each call is printed too: on 2 cores a load above 2 slows every number here. The last line printed is one JSON object with the headline numbers
(at the first memory_mb).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time

from tuner.memory import resident_bytes  # light: no TensorFlow

KS = [10, 100]
SCORERS = ("model", "most_popular", "model (previous)", "most_popular (previous)")


def _rss_gb() -> float:
    return (resident_bytes() or float("nan")) / 2**30


class PeakRss:
    """Highest RSS seen every 5 ms while the block runs."""

    def __enter__(self):
        self.before = self.peak = _rss_gb()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while not self.done.wait(0.005):
            self.peak = max(self.peak, _rss_gb())

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


def config(args):
    from tuner.config import from_dict

    return from_dict({
        "dataset": {"name": "synthetic", "num_items": args.items, "num_interactions": args.interactions,
                      "num_users": args.users},
        "split": {"method": "random", "val_fraction": 0.0, "test_fraction": args.test_fraction},
        "model": {"embedding_dim": 32},
        "evaluation": {"ks": KS},
    }, "eval_throughput.py")


def corpus_and_model(args):
    """The synthetic corpus of `args` (items, interactions, users, test_fraction) split, an untrained
    dim-32 model over it, and the seconds the corpus took to load."""
    import tuner  # noqa: F401  (before TensorFlow: selects tf-keras)
    from tuner.train import build_model_for, prepare_split

    cfg = config(args)
    started = time.perf_counter()
    split = prepare_split(cfg)
    return split, build_model_for(cfg, split), time.perf_counter() - started


def previous_rank(scores, q, num_items, ks, memory_mb):
    """The ranking before `tuner.topk` (but for logging): whole score rows through tf.math.top_k."""
    import numpy as np
    import tensorflow as tf

    from tuner.ranking import NOT_FOUND, chunk_pairs, chunk_rows, metrics_from_positions, record_positions

    kmax = min(max(ks), num_items)
    num_rows, chunk = len(q.user), chunk_rows(num_items, memory_mb)
    hit_pos = np.full(len(q.item), NOT_FOUND, np.int64)
    relevant_pos = np.full(len(q.relevant_item), NOT_FOUND, np.int64)
    for start in range(0, num_rows, chunk):
        end = min(start + chunk, num_rows)
        c = chunk_pairs(q, start, end)
        matrix = scores(start, end)
        target = tf.gather_nd(matrix, np.stack([c.rows, c.items - 1], axis=1)).numpy()
        x_index = np.stack([c.x_rows, c.x_items - 1], axis=1)
        x_scores = tf.gather_nd(matrix, x_index).numpy()
        if len(x_index):
            matrix = tf.tensor_scatter_nd_update(matrix, x_index, tf.fill([len(x_index)], -np.inf))
        values, index = tf.math.top_k(matrix, k=kmax, sorted=True)
        top_items, top_values = index.numpy().astype(np.int64) + 1, values.numpy()
        top_items[np.isneginf(top_values)] = 0
        del matrix
        record_positions(c, top_items, top_values, target, x_scores, kmax, hit_pos, relevant_pos)
    return metrics_from_positions(hit_pos, relevant_pos, q.relevant_user, q.num_users, ks)


def scorers(model, split, sample_users=None):
    """name -> fn(memory_mb) -> metrics, for the new and the previous ranking (and, with
    `sample_users`, the model on a seeded sample of that many test users: per-epoch validation)."""
    import numpy as np
    import tensorflow as tf

    from tuner.evaluate import encode, evaluate, most_popular
    from tuner.heldout import queries_of, sample_users as sample

    q = queries_of(split, "test", KS)
    num_items = split.dataset.num_items
    candidates = encode(lambda s, e: model.candidate_tower(tf.range(s + 1, e + 1, dtype=tf.int32), training=False),
                         num_items)

    def previous_model(memory_mb):
        query_emb = encode(lambda s, e: model.query_tower({"user": tf.constant(q.user[s:e], tf.int32)},
                                                           training=False), len(q.user))
        return previous_rank(lambda s, e: tf.matmul(query_emb[s:e], candidates, transpose_b=True),
                             q, num_items, KS, memory_mb)

    def previous_popular(memory_mb):
        counts = tf.constant(split.item_counts()[1:num_items + 1].astype(np.float32)[None, :])
        return previous_rank(lambda s, e: tf.broadcast_to(counts, [e - s, num_items]), q, num_items, KS, memory_mb)

    users = None if sample_users is None else sample(split, "test", sample_users, 0)
    return {"model": lambda memory_mb: evaluate(model, split, "test", KS, memory_mb),
            "most_popular": lambda memory_mb: most_popular(split, "test", KS, memory_mb),
            "model (previous)": previous_model,
            "most_popular (previous)": previous_popular,
            "model (sample)": lambda memory_mb: evaluate(model, split, "test", KS, memory_mb, users=users)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--interactions", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--test-fraction", type=float, default=0.0012)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement; the fastest counts")
    parser.add_argument("--memory-mb", type=int, nargs="+", default=[512])
    parser.add_argument("--scorers", nargs="+", default=list(SCORERS), choices=SCORERS)
    parser.add_argument("--sample-users", type=int, help="also time the model on a seeded sample of this many test users")
    args = parser.parse_args()

    import numpy as np

    split, model, load_s = corpus_and_model(args)
    fns = scorers(model, split, args.sample_users)
    queries = len(np.unique(split.test.user))
    names = list(args.scorers) + (["model (sample)"] if args.sample_users else [])
    runs = {(name, memory_mb): [] for memory_mb in args.memory_mb for name in names}
    counts = {name: queries for name in names}  # distinct users: one query each
    if args.sample_users:
        counts["model (sample)"] = min(args.sample_users, queries)
    for round_number in range(args.repeats):  # round-robin, so that a change of load hits every scorer alike
        for (name, memory_mb), results in runs.items():
            load_before = os.getloadavg()[0]
            with PeakRss() as rss:
                started, cpu = time.perf_counter(), time.process_time()
                metrics = fns[name](memory_mb)
                seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            results.append({"seconds": seconds, "cpu": cpu, "peak_gb": rss.peak - rss.before, "metrics": metrics,
                            "load": (load_before, os.getloadavg()[0])})
            print(f"round {round_number + 1}: {name}, memory_mb {memory_mb}: {seconds:.2f} s "
                  f"({counts[name] / seconds:,.0f} queries/s), load {load_before:.1f}", file=sys.stderr, flush=True)

    rows = []
    for (name, memory_mb), results in runs.items():
        best = min(results, key=lambda r: r["seconds"])
        previous = runs.get((name + " (previous)", memory_mb))
        same = None if previous is None else all(r["metrics"] == previous[0]["metrics"] for r in results + previous)
        loads = [x for r in results for x in r["load"]]
        rows.append({"scorer": name, "memory_mb": memory_mb,
                     "seconds": round(best["seconds"], 2), "all_seconds": [round(r["seconds"], 2) for r in results],
                     "queries": counts[name], "qps": round(counts[name] / best["seconds"], 1), "peak_gb": round(max(r["peak_gb"] for r in results), 2),
                     "cpu_ms": round(min(r["cpu"] for r in results) / counts[name] * 1e3, 3),
                     "load": (round(min(loads), 1), round(max(loads), 1)), "same_metrics": same,
                     "recall@100": round(best["metrics"]["recall@100"], 5)})
    by_key = {(r["scorer"], r["memory_mb"]): r for r in rows}
    for r in rows:
        previous = by_key.get((r["scorer"] + " (previous)", r["memory_mb"]))
        r["speedup"] = round(r["qps"] / previous["qps"], 2) if previous else None

    print(f"synthetic corpus: {split.dataset.num_items:,} items, {len(split.train):,} train interactions "
          f"(loaded in {load_s:.0f} s); test: {len(split.test):,} interactions from {queries:,} distinct users "
          f"(queries); K = {KS}; model untrained (dim 32); {len(os.sched_getaffinity(0))} cores; "
          f"seconds: fastest of {args.repeats} round-robin calls")
    print(f"{'scorer':<25}{'memory_mb':>10}{'queries':>9}{'seconds':>9}{'queries/s':>11}{'speedup':>9}{'cpu ms/query':>14}"
          f"{'RSS +GB':>9}{'load avg':>11}  same metrics as previous")
    for r in rows:
        speedup = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        same = {None: "-", True: "yes", False: "NO"}[r["same_metrics"]]
        print(f"{r['scorer']:<25}{r['memory_mb']:>10}{r['queries']:>9,}{r['seconds']:>9.2f}{r['qps']:>11,.1f}"
              f"{speedup:>9}{r['cpu_ms']:>14.3f}{r['peak_gb']:>9.2f}{'%.1f-%.1f' % r['load']:>11}  {same}")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")
    head = args.memory_mb[0]

    def value(name, field):
        return by_key[(name, head)][field] if (name, head) in by_key else None

    print(json.dumps({"eval_qps_1m_items": value("model", "qps"), "most_popular_qps_1m_items": value("most_popular", "qps"),
                      "previous_eval_qps": value("model (previous)", "qps"),
                      "previous_most_popular_qps": value("most_popular (previous)", "qps"),
                      "model_speedup": value("model", "speedup"), "most_popular_speedup": value("most_popular", "speedup"),
                      "model_cpu_ms_per_query": value("model", "cpu_ms"),
                      "same_metrics": None if all(r["same_metrics"] is None for r in rows)
                      else all(r["same_metrics"] for r in rows if r["same_metrics"] is not None),
                      "memory_mb": head, "queries": queries,
                      "load_avg": [min(r["load"][0] for r in rows), max(r["load"][1] for r in rows)]}))


if __name__ == "__main__":
    main()
