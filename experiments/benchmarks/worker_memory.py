"""A worker's resident memory over a long study: RSS after trial 5 against after trial N.

    python experiments/benchmarks/worker_memory.py [--trials 50] [--trials-per-process 10 0]

One worker runs a random-search study of one-epoch MovieLens-100K trials (temperature,
embedding size and negative strategy vary, so graphs of different shapes are built), started as
`tuner search` starts it (`tuner.search.start_local_workers`: a worker process that hands its
place to a fresh one after `search.trials_per_process` trials), once per `--trials-per-process`
value (0: one process for the whole study), through the trial function `tuner search` uses
(`tuner.search.hypermodel.TrialRunner`). After each trial the worker process notes its RSS, pid
and when the trial started and ended. "trial s" is the median time from one trial's end to the
next one's (the oracle's visit included); a fresh process in the place of one that handed over
pays for its start (Python, TensorFlow, the data, the first trace): "start s" is the median of
its first trial's time from the last process's last trial, minus "trial s".
The last line is one JSON object: per setting, {"rss_mb_after_5", "rss_mb_after_n", "processes",
"start_s", "trial_s"} and `worker_rss_<n>_over_5` (n = --trials).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import tuner  # noqa: F401
from tuner.memory import resident_bytes
from tuner.search import create_or_resume_study, start_local_workers
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
NOTES_ENV = "WORKER_MEMORY_NOTES"  # the file each worker process appends its per-trial notes to


def rss_mb() -> float:
    """Current resident set size (ru_maxrss would only ever grow)."""
    return (resident_bytes() or float("nan")) / 2**20


_runner = None  # one TrialRunner per worker process, as `run_worker` keeps one


def measured_trial(ctx) -> dict:
    """The built-in trial, then one JSON line of notes: what the worker process holds after it."""
    global _runner
    from tuner.search.hypermodel import TrialRunner

    if _runner is None:
        _runner = TrialRunner(load_space_text(ctx.space, "worker_memory"))
    started = time.time()
    result = _runner(ctx)
    note = {"trial": ctx.number, "pid": os.getpid(), "rss_mb": rss_mb(), "started": started, "ended": time.time()}
    with open(os.environ[NOTES_ENV], "a") as notes:
        notes.write(json.dumps(note) + "\n")
    return result


def measure(trials: int, trials_per_process: int | None, log=print) -> dict:
    """One worker through a `trials`-trial study on a fresh SQLite store; its notes summarised."""
    with tempfile.TemporaryDirectory() as tmp:
        url, notes = f"sqlite:///{tmp}/memory.db", Path(tmp, "notes.jsonl")
        with open_store(url) as store:
            create_or_resume_study(store, "memory", load_space_text(SPACE % trials, "worker_memory"))
        codes = start_local_workers(1, url, "memory", f"{Path(__file__).resolve()}:measured_trial",
                                    env={NOTES_ENV: str(notes)}, trials_per_process=trials_per_process)
        if codes != [0]:
            raise SystemExit(f"the worker failed (exit codes {codes})")
        rows = [json.loads(line) for line in notes.read_text().splitlines()]
    for before, row in zip([None] + rows, rows):  # a trial's cost: from the end of the one before
        row["seconds"] = row["ended"] - (row["started"] if before is None else before["ended"])
        log(f"trial {row['trial']:>3}: pid {row['pid']:>7}  rss {row['rss_mb']:8.1f} MB  {row['seconds']:6.1f} s")
    firsts = {row["pid"]: i for i, row in reversed(list(enumerate(rows)))}  # each process's first trial
    others = [row["seconds"] for i, row in enumerate(rows) if i not in firsts.values()]
    later = statistics.median(others) if others else float("nan")
    handed = [rows[i]["seconds"] - later for i in firsts.values() if i > 0]  # a fresh process in the place of one
    start = statistics.median(handed) if handed else float("nan")
    after_5, after_n = rows[min(4, len(rows) - 1)]["rss_mb"], rows[-1]["rss_mb"]
    return {"trials_per_process": trials_per_process, "trials": len(rows), "processes": len(firsts),
            "rss_mb_after_5": round(after_5, 1), "rss_mb_after_n": round(after_n, 1),
            "rss_mb_peak": round(max(row["rss_mb"] for row in rows), 1),
            "rss_n_over_5": round(after_n / after_5, 3), "start_s": round(start, 1), "trial_s": round(later, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--trials-per-process", type=int, nargs="+", default=[10, 0],
                        help="one run per value; 0: one process for the whole study")
    args = parser.parse_args()
    results = [measure(args.trials, n or None) for n in args.trials_per_process]
    print(f"{'trials/process':<16}{'processes':>10}{'RSS@5 MB':>10}{f'RSS@{args.trials} MB':>12}{'peak MB':>9}"
          f"{'ratio':>7}{'start s':>9}{'trial s':>9}")
    for r in results:
        print(f"{r['trials_per_process'] or 'one process':<16}{r['processes']:>10}{r['rss_mb_after_5']:>10.1f}"
              f"{r['rss_mb_after_n']:>12.1f}{r['rss_mb_peak']:>9.1f}{r['rss_n_over_5']:>7.3f}{r['start_s']:>9.1f}"
              f"{r['trial_s']:>9.1f}")
    print(json.dumps({f"worker_rss_{args.trials}_over_5": results[0]["rss_n_over_5"], "runs": results}))


if __name__ == "__main__":
    main()
