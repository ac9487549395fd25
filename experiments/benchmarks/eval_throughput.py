"""Full-corpus evaluation throughput on a 1M-item corpus: queries per second and peak memory.

    python experiments/benchmarks/eval_throughput.py [--items 1000000] [--interactions 2000000]
        [--users 20000] [--test-fraction 0.0012] [--memory-mb 512 128] [--repeats 3]

`tuner.evaluate.evaluate` scores every test query against every item (brute force) a chunk
of queries at a time, the chunk sized from `evaluation.memory_mb`; `most_popular` ranks the
same queries through the same code. The model is a freshly built, untrained TwoTowerModel
(dim 32, id embeddings only): the work per query (a matmul against 1M candidates, the
mask of the user's training items, a top-100) does not depend on the weights. Each
measurement runs in its own process so that its peak RSS (getrusage ru_maxrss) is its own;
that peak includes the process's baseline (TensorFlow, the synthetic log, the 1M x 32 item
table), shown apart as the RSS just before the timed call. The 1-minute load average before
and after each call is printed too: the machine may be shared, and on 2 cores a load above 2
slows every number here. The last line printed is one JSON object with the headline numbers
(the model at the default memory_mb).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

KS = [10, 100]


def _rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def config(args):
    from tuner.config import from_dict

    return from_dict({
        "dataset": {"name": "synthetic", "num_items": args.items, "num_interactions": args.interactions,
                    "num_users": args.users},
        "split": {"method": "random", "val_fraction": 0.0, "test_fraction": args.test_fraction},
        "model": {"embedding_dim": 32},
        "evaluation": {"ks": KS},
    }, "eval_throughput.py")


def measure(args) -> dict:
    """One timed `evaluate` or `most_popular` call over the test part, in this process."""
    import numpy as np

    import tuner  # noqa: F401  (before TensorFlow: selects tf-keras)
    from tuner.evaluate import chunk_rows, evaluate, most_popular
    from tuner.train import build_model_for, prepare_split

    cfg = config(args)
    started = time.perf_counter()
    split = prepare_split(cfg)
    load_s = time.perf_counter() - started
    model = build_model_for(cfg, split) if args.scorer == "model" else None
    rss_before = _rss_gb()
    load_before = os.getloadavg()[0]
    seconds = []
    for _ in range(args.repeats):  # best of N: the machine is shared, and the first call warms up
        started = time.perf_counter()
        if model is not None:
            metrics = evaluate(model, split, "test", KS, args.memory_mb)
        else:
            metrics = most_popular(split, "test", KS, args.memory_mb)
        seconds.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    queries = len(np.unique(split.test.user))
    return {"scorer": args.scorer, "memory_mb": args.memory_mb, "num_items": split.dataset.num_items,
            "train_interactions": len(split.train), "test_interactions": len(split.test), "queries": queries,
            "rows_per_chunk": chunk_rows(split.dataset.num_items, args.memory_mb), "load_s": round(load_s, 1),
            "seconds": round(min(seconds), 2), "all_seconds": [round(x, 2) for x in seconds],
            "qps": round(queries / min(seconds), 1),
            "rss_before_gb": round(rss_before, 3), "peak_rss_gb": round(peak, 3),
            "load_avg_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
            "hit_rate@100": round(metrics["hit_rate@100"], 5), "recall@100": round(metrics["recall@100"], 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--interactions", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--test-fraction", type=float, default=0.0012)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement; the fastest counts")
    parser.add_argument("--memory-mb", type=int, nargs="+", default=[512, 128])
    parser.add_argument("--scorer", choices=["model", "most_popular"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scorer:  # a child: one measurement, printed as JSON
        args.memory_mb = args.memory_mb[0]
        print(json.dumps(measure(args)), flush=True)
        return

    rows = []
    for scorer in ("model", "most_popular"):
        for memory_mb in args.memory_mb:
            command = [sys.executable, __file__, "--scorer", scorer, "--memory-mb", str(memory_mb),
                       "--items", str(args.items), "--interactions", str(args.interactions),
                       "--users", str(args.users), "--test-fraction", str(args.test_fraction),
                       "--repeats", str(args.repeats)]
            print(f"measuring {scorer}, memory_mb {memory_mb} ...", file=sys.stderr, flush=True)
            done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"  {r['all_seconds']} s, {r['qps']} queries/s, peak RSS {r['peak_rss_gb']} GB",
                  file=sys.stderr, flush=True)

    first = rows[0]
    print(f"synthetic corpus: {first['num_items']:,} items, {first['train_interactions']:,} train interactions; "
          f"test: {first['test_interactions']:,} interactions from {first['queries']:,} distinct users (queries); "
          f"K = {KS}; model untrained (dim 32); seconds: fastest of {args.repeats} calls")
    header = (f"{'scorer':<14}{'memory_mb':>10}{'rows/chunk':>11}{'seconds':>9}{'queries/s':>11}"
              f"{'RSS before GB':>15}{'peak RSS GB':>13}{'load avg':>12}")
    print(header)
    for r in rows:
        print(f"{r['scorer']:<14}{r['memory_mb']:>10}{r['rows_per_chunk']:>11}{r['seconds']:>9.2f}{r['qps']:>11,.1f}"
              f"{r['rss_before_gb']:>15.2f}{r['peak_rss_gb']:>13.2f}{'%.1f-%.1f' % tuple(r['load_avg_1min']):>12}")
    headline = next(r for r in rows if r["scorer"] == "model")
    popular = next(r for r in rows if r["scorer"] == "most_popular")
    print(json.dumps({"eval_qps_1m_items": headline["qps"], "eval_peak_rss_gb": headline["peak_rss_gb"],
                      "eval_memory_mb": headline["memory_mb"], "most_popular_qps_1m_items": popular["qps"],
                      "queries": headline["queries"],
                      "by_memory_mb": {r["memory_mb"]: {"qps": r["qps"], "peak_rss_gb": r["peak_rss_gb"]}
                                       for r in rows if r["scorer"] == "model"}}))


if __name__ == "__main__":
    main()
