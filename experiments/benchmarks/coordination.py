"""Coordination benchmark: trials per minute that N workers get through the store.

Trials only sleep (0.5 s), so the numbers measure the store and the oracle visits, not
training. Worker processes import keras_tuner (and so TensorFlow) and then wait at a start
barrier, so all N run together; throughput covers the span from the first trial's start to
the last one's end (store timestamps). Startup is reported apart: the import, and the time
from the barrier to the first trial (a fresh process's first database round trips). Per-trial
overhead = span x workers / trials - sleep. PostgreSQL runs on a throwaway local server
(tests/throwaway_postgres.py, the tests' own).

    python experiments/benchmarks/coordination.py [--sleep 0.5] [--workers 1 4 8]

The last line printed is one JSON object with the headline numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import timezone
from pathlib import Path

import tuner  # noqa: F401  (before TensorFlow: selects tf-keras)
from tuner.memory import resident_bytes
from tuner.store import COMPLETED, list_trials, open_store


def sleep_trial(ctx) -> dict:
    time.sleep(float(os.environ["BENCH_SLEEP"]))
    return {"score": float(ctx.values["x"])}


def _rss_mb() -> float:
    return (resident_bytes() or float("nan")) / 2**20


def child(args) -> None:
    """One worker: pay the imports, wait at the barrier, run until the study is done."""
    started = time.time()
    import keras_tuner  # noqa: F401  (the oracle's import cost, paid once per worker)

    from tuner.search import run_worker
    from tuner.store import get_study

    with open_store(args.url) as store:  # the drivers' and SQLAlchemy's imports, before the barrier
        get_study(store, "bench")

    ready = Path(args.dir) / f"ready-{args.index}"
    ready.with_suffix(".tmp").write_text(json.dumps({"import_s": time.time() - started, "rss_mb": _rss_mb()}))
    ready.with_suffix(".tmp").rename(ready)
    go = Path(args.dir) / "go"
    while not go.exists():
        time.sleep(0.01)
    run_worker(args.url, "bench", trial_fn=sleep_trial, worker_id=f"w{args.index}", log=lambda message: None)


def run_case(url: str, workers: int, trials: int, sleep: float) -> dict:
    import keras_tuner as kt

    from tuner.search import create_or_resume_custom_study, worker_env
    from tuner.settings import search_settings

    hp = kt.HyperParameters()
    hp.Float("x", 0.0, 1.0)
    hp.Int("units", 8, 512)
    hp.Choice("optimizer", ["adam", "sgd", "adagrad"])
    store = open_store(url)
    settings = {"oracle": "random", "objective": "score", "direction": "max", "max_trials": trials, "seed": 1}
    create_or_resume_custom_study(store, "bench", "benchmark: sleep trials\n", hp, search_settings(settings, "bench"))
    with tempfile.TemporaryDirectory(prefix="tuner-bench-") as barrier:
        procs = [subprocess.Popen([sys.executable, __file__, "--child", "--url", url, "--dir", barrier,
                                   "--index", str(i)],
                                  env={**os.environ, **worker_env(i, workers, 0), "BENCH_SLEEP": str(sleep)})
                 for i in range(workers)]
        launched = time.time()
        readies = [Path(barrier) / f"ready-{i}" for i in range(workers)]
        while not all(r.exists() for r in readies):
            if any(p.poll() not in (None, 0) for p in procs):
                raise SystemExit(f"a benchmark worker failed (exit codes {[p.poll() for p in procs]})")
            time.sleep(0.05)
        startup = time.time() - launched
        go = time.time()
        (Path(barrier) / "go").write_text("")
        codes = [p.wait() for p in procs]
        info = [json.loads(r.read_text()) for r in readies]
    rows = list_trials(store, "bench")
    store.close()
    done = [r for r in rows if r.status == COMPLETED]
    if codes != [0] * workers or len(done) != trials or len({r.kt_trial_id for r in done}) != trials:
        raise SystemExit(f"{url}: {workers} workers: exit codes {codes}, {len(done)} of {trials} trials completed")
    first = min(r.started for r in rows).replace(tzinfo=timezone.utc).timestamp()
    span = (max(r.ended for r in done) - min(r.started for r in rows)).total_seconds()
    return {"workers": workers, "trials": trials, "seconds": span, "per_min": trials / span * 60,
            "overhead_ms": (span * workers / trials - sleep) * 1000, "launch_s": startup,
            "first_s": first - go, "import_s": max(i["import_s"] for i in info),
            "rss_mb": max(i["rss_mb"] for i in info)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sleep", type=float, default=0.5, help="seconds each trial sleeps")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--trials-per-worker", type=int, default=20)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # the tests' throwaway server
    import throwaway_postgres

    results: dict[str, list[dict]] = {}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tuner-bench-")))
        for backend in args.backends:
            admin = stack.enter_context(throwaway_postgres.temporary_server()) if backend == "postgresql" else None
            for n in args.workers:
                url = (throwaway_postgres.create_database(admin, "bench") if admin else f"sqlite:///{tmp}/bench-{n}.db")
                result = run_case(url, n, args.trials_per_worker * n, args.sleep)
                results.setdefault(backend, []).append(result)
                print(f"{backend:<10} {n} workers: {result['per_min']:.0f} trials/min", file=sys.stderr, flush=True)

    print(f"trial = sleep {args.sleep} s; {os.cpu_count()} CPU cores; seconds = first trial start to last trial end")
    header = (f"{'backend':<10} {'workers':>7} {'trials':>6} {'seconds':>8} {'trials/min':>10} {'speedup':>7} "
              f"{'overhead ms':>11} {'launch s':>8} {'import s':>8} {'1st trial s':>11} {'RSS MB':>7}")
    print(header)
    print("-" * len(header))
    summary = {}
    for backend, rows in results.items():
        base = rows[0]["per_min"] if rows[0]["workers"] == 1 else float("nan")
        for r in rows:
            speedup = r["per_min"] / base
            print(f"{backend:<10} {r['workers']:>7} {r['trials']:>6} {r['seconds']:>8.1f} {r['per_min']:>10.0f} "
                  f"{speedup:>7.2f} {r['overhead_ms']:>11.1f} {r['launch_s']:>8.1f} {r['import_s']:>8.1f} "
                  f"{r['first_s']:>11.2f} {r['rss_mb']:>7.0f}")
            if r["workers"] == 8:
                summary[f"{backend}_speedup_8"] = round(speedup, 2)
            if r["workers"] == 1:
                summary[f"{backend}_overhead_ms"] = round(r["overhead_ms"], 1)
    print("launch: start of the processes to all at the barrier; import: keras_tuner (it imports TensorFlow) in the "
          "slowest worker; 1st trial: barrier to the first trial's start; RSS: per worker after the import")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
