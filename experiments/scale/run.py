"""A search at catalog scale, end to end on one core: tuner/spaces/negatives.yaml on a synthetic corpus.

    nice -n 10 python experiments/scale/run.py                     # 1M items, 2M interactions; a re-run resumes
    python experiments/scale/run.py --items 50000 --interactions 100000 --users 2000 --out /tmp/scale-small

Everything in --out (default: this folder):

1. space.yaml: tuner/spaces/negatives.yaml (read now, so it stays in sync; in_batch, mns and cbns
   among `negatives.strategy`'s values) with only these changed: the dataset (synthetic, --items,
   --interactions, --users: the corpus of experiments/benchmarks/eval_throughput.py), the budget
   (--trials), Hyperband pruning {min_iter 1, eta 3}, training.epochs (--epochs), and evaluation
   kept affordable: per-epoch validation on a sample of --val-users users, no EASE/ALS baselines
   (EASE's item-item matrix cannot exist at 1M items; ALS's grid costs minutes per fit).
   `search.enqueue` runs the space's base config once per strategy (enqueue-<strategy>.yaml)
   before the oracle's own trials: the Bayesian oracle starts with max(3, trials // 4) random
   trials, and at 10 trials its first study here never drew CBNS (3 random draws, then the
   Gaussian process stayed with MNS and in-batch).
2. `tuner search --workers 1` into study.db (SQLite); its output is appended to search.log. A
   re-run continues the study from the store. The search runs on one core (--cores, default the
   last core this process may use): `tuner search` then gives its worker one TensorFlow thread.
3. Meanwhile every second: VmHWM (the kernel's peak RSS) of each worker process, found as the
   children of `tuner search` in /proc (a worker hands over to a fresh process after
   search.trials_per_process trials; each process is listed).
4. When the search ends or is stopped: the store back to journal_mode=DELETE (one file to commit),
   `tuner report` into report.html, and results.json: per run its wall time and workers' peak RSS;
   over all runs the trials by status, the best val objective, and training steps/s from the
   epochs in search.log (steps = ceil(train interactions / batch size); an epoch's seconds are
   those of `tuner.train`'s epoch line: training only, validation excluded; the first epoch of a
   trial includes tracing the step).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

import tuner
from tuner.store import list_metrics, open_store

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NEGATIVES = Path(tuner.__file__).parent / "spaces" / "negatives.yaml"
STRATEGIES = ("in_batch", "mns", "cbns")
DATA_LINE = re.compile(r"trial (\d+): data: .*; train ([\d,]+) /")
EPOCH_LINE = re.compile(r"trial (\d+): epoch (\d+)/(\d+)\s+loss \S+\s+[\d,]+ ex/s\s+([\d.]+)s")


def shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def derived_space(args) -> Path:
    space = yaml.safe_load(NEGATIVES.read_text())
    searched = space["parameters"]["negatives.strategy"]["values"]
    missing = [s for s in ("mns", "cbns") if s not in searched]
    if missing:
        sys.exit(f"{NEGATIVES}: negatives.strategy no longer searches {', '.join(missing)}")
    space["dataset"] = {"name": "synthetic", "num_items": args.items, "num_interactions": args.interactions,
                        "num_users": args.users}
    space["training"]["epochs"] = args.epochs
    space["evaluation"] = {**space["evaluation"], "val_users": args.val_users, "baselines": []}
    base = {key: value for key, value in space.items() if key not in ("parameters", "search")}
    enqueue = []
    for strategy in STRATEGIES:  # each strategy once at the space's own settings, then the oracle
        name = f"enqueue-{strategy}.yaml"
        config = {**base, "negatives": {**base["negatives"], "strategy": strategy}}
        (args.out / name).write_text(f"# space.yaml's base config with negatives.strategy {strategy}: a first "
                                     "trial of the study; written by experiments/scale/run.py\n"
                                     + yaml.safe_dump(config, sort_keys=False))
        enqueue.append(name)  # relative to the space's folder
    space["search"] = {**space["search"], "max_trials": args.trials, "enqueue": enqueue,
                       "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 3}}
    out = args.out / "space.yaml"
    out.write_text(f"# tuner/spaces/negatives.yaml on a synthetic corpus of {args.items:,} items, "
                   f"{args.interactions:,} interactions, {args.users:,} users; {args.trials} trials, hyperband "
                   f"pruning, {args.epochs} epochs; written by experiments/scale/run.py\n"
                   + yaml.safe_dump(space, sort_keys=False))
    return out


def status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and status(int(entry.name)).get("PPid", "").strip() == str(parent):
            found.append(int(entry.name))
    return found


def _mb(field: str) -> float:
    return round(int(field.split()[0]) / 1024, 1)  # "123456 kB"


def worker_id(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return "?"
    return argv[argv.index("--worker-id") + 1] if "--worker-id" in argv else "?"


class PeakRss(threading.Thread):
    """Every second, the peak RSS (VmHWM, kept by the kernel) of each worker process of `parent`:
    the last value read before a process ends is its lifetime's peak, up to one second late."""

    def __init__(self, parent: int):
        super().__init__(daemon=True)
        self.parent, self.done, self.seen = parent, threading.Event(), {}

    def run(self):
        started, tick = time.perf_counter(), 0
        while not self.done.wait(1.0):
            tick += 1
            for pid in children(self.parent):
                now = status(pid)
                if "VmHWM" in now:
                    entry = self.seen.setdefault(pid, {"pid": pid, "worker": worker_id(pid), "peak_rss_mb": 0.0,
                                                       "rss_mb_every_30_s": []})
                    entry["peak_rss_mb"] = max(entry["peak_rss_mb"], _mb(now["VmHWM"]))
                    if tick % 30 == 0:  # [seconds since the search started, RSS]: growth over the trials
                        entry["rss_mb_every_30_s"].append([round(time.perf_counter() - started), _mb(now["VmRSS"])])

    def stop(self) -> list[dict]:
        self.done.set()
        self.join()
        return list(self.seen.values())


def search(args, space: Path, storage: str) -> dict:
    """`tuner search` with one worker on `args.cores`; its wall time and the workers' peak RSS."""
    cores = args.cores

    def pin():
        os.sched_setaffinity(0, cores)

    log = (args.out / "search.log").open("a")
    started = datetime.now(timezone.utc)
    log.write(f"=== {started:%Y-%m-%d %H:%M:%S} UTC: tuner search on cores {sorted(cores)}\n")
    log.flush()
    cmd = [sys.executable, "-m", "tuner.cli", "search", "--space", shown(space), "--study", args.study,
           "--storage", storage, "--workers", "1"]
    clock = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin)
    rss = PeakRss(proc.pid)
    rss.start()

    def forward(signum, frame):  # `tuner search` turns SIGINT into its workers' clean stop
        proc.send_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, forward)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        code = proc.wait()
    wall = time.perf_counter() - clock
    log.close()
    return {"started": f"{started:%Y-%m-%d %H:%M:%S}", "wall_s": round(wall, 1), "exit_code": code,
            "cores": sorted(cores), "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "workers": rss.stop()}


def epochs_from_log(path: Path, batch_size: int) -> list[dict]:
    """Every epoch line of search.log with its training steps/s (a re-run trial counts again)."""
    train_rows, rows = {}, []
    for line in path.read_text().splitlines():
        if m := DATA_LINE.search(line):
            train_rows[int(m[1])] = int(m[2].replace(",", ""))
        elif (m := EPOCH_LINE.search(line)) and int(m[1]) in train_rows:
            steps = math.ceil(train_rows[int(m[1])] / batch_size)
            rows.append({"trial": int(m[1]), "epoch": int(m[2]), "seconds": float(m[4]),
                         "steps_per_s": round(steps / float(m[4]), 2)})
    return rows


def tuner_json(*args: str):
    out = subprocess.run([sys.executable, "-m", "tuner.cli", *args], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def summary(args, storage: str, space: Path, runs: list[dict]) -> dict:
    trials = tuner_json("status", "--study", args.study, "--storage", storage, "--json")["trials"]
    batch = yaml.safe_load(space.read_text())["training"]["batch_size"]
    epochs = epochs_from_log(args.out / "search.log", batch)
    strategy = {t["number"]: t["params"].get("negatives.strategy") for t in trials}
    later = [e for e in epochs if e["epoch"] > 1]  # no tracing in them
    interrupted = {t["number"] for t in trials if t["status"] == "INTERRUPTED"}
    counts: dict[str, int] = {}
    for t in trials:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    best = next((t for t in trials if t["best"]), None)
    objective = yaml.safe_load(space.read_text())["search"]["objective"]
    with open_store(storage, read_only=True) as store:  # MostPopular's value, measured beside every trial
        popular = next((m.value for m in list_metrics(store, args.study)
                        if m.epoch is None and m.name == f"most_popular_{objective}"), None)
    peaks = [w for run in runs for w in run["workers"]]
    return {
        "study": args.study, "storage": storage, "space": shown(space),
        "corpus": {"items": args.items, "interactions": args.interactions, "users": args.users},
        "wall_s": round(sum(r["wall_s"] for r in runs), 1),
        "peak_rss_mb_per_worker": {w: max(p["peak_rss_mb"] for p in peaks if p["worker"] == w)
                                   for w in sorted({p["worker"] for p in peaks})},
        "trials": counts,
        "trials_by_strategy": {s: sum(1 for v in strategy.values() if v == s) for s in STRATEGIES},
        "best": None if best is None else {"number": best["number"], "objective": best["objective"],
                                           "params": best["params"]},
        f"most_popular_{objective}": popular,
        "epochs_trained": len(epochs),
        # the rest of a trial: building the model, per-epoch and final validation, the first
        # trial's data and MostPopular; a trial interrupted by a stop counts in neither
        "trial_s": round(sum(t["duration_s"] or 0 for t in trials if t["status"] != "INTERRUPTED"), 1),
        "training_s": round(sum(e["seconds"] for e in epochs if e["trial"] not in interrupted), 1),
        "steps_per_s": {
            "median_all_epochs": _median([e["steps_per_s"] for e in epochs]),
            "median_after_first_epoch": _median([e["steps_per_s"] for e in later]),
            "by_strategy_all_epochs": {
                s: _median([e["steps_per_s"] for e in epochs if strategy.get(e["trial"]) == s]) for s in STRATEGIES},
            "by_strategy_after_first_epoch": {
                s: _median([e["steps_per_s"] for e in later if strategy.get(e["trial"]) == s]) for s in STRATEGIES},
        },
        "epochs": [{**e, "strategy": strategy.get(e["trial"])} for e in epochs],
        "trial_rows": [{k: t[k] for k in ("number", "status", "objective", "duration_s", "params", "error")}
                       for t in trials],
        "runs": runs,
    }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def single_file(db: Path) -> None:
    """The store out of WAL mode, so that one file holds it all (and can be committed)."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--interactions", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=9, help="training.epochs of every trial (hyperband rungs 1, 3, 9)")
    parser.add_argument("--val-users", type=int, default=2000, help="evaluation.val_users: the per-epoch sample")
    parser.add_argument("--study", default="scale-1m")
    parser.add_argument("--cores", type=int, nargs="+", help="cores for the search (default: the last one allowed)")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--no-search", action="store_true", help="only the report and results of the store as it is")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    args.cores = set(args.cores or [max(os.sched_getaffinity(0))])
    db = args.out / "study.db"
    storage = f"sqlite:///{shown(db)}"
    results_file = args.out / "results.json"
    runs = json.loads(results_file.read_text())["runs"] if results_file.exists() else []
    space = derived_space(args) if not args.no_search else args.out / "space.yaml"
    if not args.no_search:
        runs.append(search(args, space, storage))
        results_file.write_text(json.dumps(summary(args, storage, space, runs), indent=2) + "\n")
    single_file(db)
    subprocess.run([sys.executable, "-m", "tuner.cli", "report", "--study", args.study, "--storage", storage,
                    "--out", shown(args.out / "report.html")], cwd=REPO, check=True)
    results = summary(args, storage, space, runs)
    results_file.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("wall_s", "peak_rss_mb_per_worker", "trials", "best", "steps_per_s")}))


if __name__ == "__main__":
    main()
