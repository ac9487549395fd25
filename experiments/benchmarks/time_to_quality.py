"""Time to quality: the compute a pruned search spends to find what an unpruned one finds.

    python experiments/benchmarks/time_to_quality.py [--trials 40] [--variants none hyperband median]
        [--jobs 3] [--out DIR] [--no-run] [--replay hyperband median hyperband2] [--source URL STUDY]
        [--trials-per-process 10]

`tuner/spaces/full.yaml` on MovieLens-100K, searched by the same seeded random oracle once per
variant: `none` (every trial runs all its epochs), `hyperband` ({type: hyperband, min_iter: 1,
eta: 3}), `median` ({type: median, min_iter: 2}) and, when named, `hyperband2` ({type:
hyperband, min_iter: 2, eta: 3}). Each variant is one worker (the loop `tuner worker` runs,
one TensorFlow thread) on its own SQLite store in DIR (default experiments/benchmarks/time_to_quality); `--jobs`
variants run side by side. A worker process hands its place to a fresh one after
`--trials-per-process` trials (`search.trials_per_process`, as `tuner search` runs them). A finished store is read, not run again, so a stopped run resumes where
it was; `--no-run` prints the tables of the stores as they are.

Training is deterministic and one worker runs the trials in order, so a variant's first n
trials are exactly an n-trial study: the tables compare the first n trials every variant
finished (n is printed; a configuration that failed in any variant is left out of all). For
the same reason a pruner's decisions can be replayed on an unpruned study's recorded epochs
(`--replay`; `--source` replays on another store's unpruned study, e.g. an earlier search):
the same worker loop, pruner and store, training replaced by the recorded curves, compute in
epochs only.

Per variant: trial-seconds (sum of each trial's end - start, from the store), epochs trained
(per-epoch objective rows: compute that the machine's load does not change), the best val
objective of the completed trials, and the trial-seconds and epochs spent, in trial order,
until a completed trial first reached 95% of the unpruned best. Ratios are against `none`.
The last line is one JSON object: {"hyperband_compute_ratio": .., "hyperband_best_ratio": ..,
"median_compute_ratio": .., "median_best_ratio": .., ...}: compute ratios in trial-seconds
(null for a variant only replayed), the *_epoch_ratio keys in epochs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

import tuner  # noqa: F401  (before TensorFlow: selects tf-keras)
from tuner import safe_yaml
from tuner.search.worker import HAND_OVER_EXIT
from tuner.settings import TRIALS_PER_PROCESS
from tuner.store import COMPLETED, FAILED, PRUNED, get_study, list_metrics, list_studies, list_trials, open_store

ROOT = Path(__file__).resolve().parents[2]
SPACE = ROOT / "tuner/spaces/full.yaml"
SEED = 7
VARIANTS = {"none": None, "hyperband": {"type": "hyperband", "min_iter": 1, "eta": 3},
            "median": {"type": "median", "min_iter": 2}, "hyperband2": {"type": "hyperband", "min_iter": 2, "eta": 3}}
FINISHED = (COMPLETED, PRUNED, FAILED)
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}


def space_text(variant: str, trials: int) -> str:
    """full.yaml with a seeded random oracle, `trials` trials and the variant's pruner."""
    space = safe_yaml.read(SPACE)
    space["search"] = {**space["search"], "oracle": "random", "seed": SEED, "max_trials": trials}
    if VARIANTS[variant]:
        space["search"]["early_terminate"] = VARIANTS[variant]
    return f"# {SPACE.name}, variant {variant} (experiments/benchmarks/time_to_quality.py)\n" + \
        yaml.safe_dump(space, sort_keys=False, default_flow_style=None)


def start_variant(out: Path, variant: str, trials: int, trials_per_process: int) -> subprocess.Popen | None:
    """Starts (or resumes) the variant's study in a worker process, unless `trials` trials finished."""
    from tuner.search import create_or_resume_study
    from tuner.space import load_space_text

    url, study = store_url(out, variant), f"ttq-{variant}"
    text = space_text(variant, trials)
    (out / f"{variant}.yaml").write_text(text)
    with open_store(url) as store:
        if finished(store, study) >= trials:
            return None
        create_or_resume_study(store, study, load_space_text(text, f"{variant}.yaml"))
        print(f"{variant}: {finished(store, study)} of {trials} trials finished, running the rest",
              file=sys.stderr, flush=True)
    return start_worker(url, study, variant, out / f"{variant}.log", trials_per_process)


def start_worker(url: str, study: str, worker_id: str, log_path: Path, trials_per_process: int) -> subprocess.Popen:
    """One worker process of a study, as `tuner search` starts it (`python -m tuner.search.local`,
    one TensorFlow thread); it hands over after `trials_per_process` trials and `run_queue` starts
    a fresh one."""
    with open(log_path, "a") as log:
        return subprocess.Popen([sys.executable, "-m", "tuner.search.local", "--study", study, "--worker-id",
                                 worker_id, "--trials-per-process", str(trials_per_process)],
                                env={**os.environ, **ONE_THREAD, "TUNER_STORAGE": url}, stdout=log,
                                stderr=subprocess.STDOUT)


def run_queue(names: list[str], jobs: int, out: Path, start) -> None:
    """Runs `start(name)` (a worker process, or None when the name's study is finished) for each
    name, `jobs` at a time; a worker that ended (or handed over) is followed by a fresh one until
    its study is done."""
    pending, running = list(names), {}
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            proc = start(name)
            if proc:
                running[proc] = name
        time.sleep(5 if running else 0)
        for proc in [p for p in running if p.poll() is not None]:
            if proc.returncode not in (0, HAND_OVER_EXIT):
                raise SystemExit(f"a worker failed (exit code {proc.returncode}): see the logs in {out}")
            name = running.pop(proc)
            again = start(name)  # a fresh worker, if any trial is left
            if again:
                running[again] = name


def store_url(out: Path, variant: str) -> str:
    return f"sqlite:///{out / variant}.db"


def finished(store, study: str) -> int:
    if study not in {s.name for s in list_studies(store)}:
        return 0
    return sum(t.status in FINISHED for t in list_trials(store, study))


def read_trials(url: str, study: str) -> list[dict]:
    """A study's finished trials in order: values, status, objective, seconds, epochs trained, and
    the objective after epoch 1 (`first`: what the first rung of a pruner judged)."""
    with open_store(url) as store:
        objective = get_study(store, study).objective
        epochs: dict[int, int] = {}
        first: dict[int, float] = {}
        for m in list_metrics(store, study):
            if m.epoch is not None and m.name == objective:
                epochs[m.number] = epochs.get(m.number, 0) + 1
                if m.epoch == 1:
                    first[m.number] = m.value
        return [{"config": {k: v for k, v in t.params.items() if not k.startswith("tuner/")},
                 "status": t.status, "objective": t.objective, "seconds": t.duration, "epochs": epochs.get(t.number, 0),
                 "first": first.get(t.number)}
                for t in list_trials(store, study) if t.status in FINISHED]


def summarize(variant: str, rows: list[dict]) -> dict:
    return {"variant": variant, "trials": rows, "seconds": sum(r["seconds"] for r in rows),
            "epochs": sum(r["epochs"] for r in rows), "completed": sum(r["status"] == COMPLETED for r in rows),
            "pruned": sum(r["status"] == PRUNED for r in rows),
            "best": max((r["objective"] for r in rows if r["status"] == COMPLETED and r["objective"] is not None),
                        default=float("nan"))}


def until(summary: dict, level: float) -> tuple[float | None, int | None]:
    """Trial-seconds and epochs spent, in trial order, until a completed trial reached `level`."""
    seconds = epochs = 0
    for r in summary["trials"]:
        seconds, epochs = seconds + r["seconds"], epochs + r["epochs"]
        if r["status"] == COMPLETED and r["objective"] is not None and r["objective"] >= level:
            return seconds, epochs
    return None, None


def replay(source: tuple[str, str], variant: str, n: int, path: Path) -> list[dict]:
    """A pruned search over the first n completed trials of an unpruned study `source` (URL,
    name), in their order, with training replaced by their recorded epochs: the same worker
    loop, pruner and store as a real run, and the decisions a real run makes, since training
    is deterministic. Compute in epochs only (no real seconds)."""
    import keras_tuner as kt

    from tuner.search import create_or_resume_custom_study, run_worker
    from tuner.settings import search_settings

    url, study = source
    with open_store(url) as store:
        objective = get_study(store, study).objective
        recorded: dict[int, dict] = {}
        for m in list_metrics(store, study):
            recorded.setdefault(m.number, {}).setdefault(m.epoch, {})[m.name] = m.value
        curves = [recorded[t.number] for t in list_trials(store, study, status=COMPLETED)][:n]

    def trial_fn(ctx) -> dict:
        curve = curves[ctx.values["i"]]
        epochs = sorted(e for e in curve if e is not None)
        for epoch in epochs:  # a completed trial's curve: its last epoch is the trial's last, as in a real run
            if ctx.report_epoch(epoch, curve[epoch], last=epoch == epochs[-1]):
                return curve[epoch]
        return curve[None]

    hp = kt.HyperParameters()
    hp.Int("i", 0, len(curves) - 1)  # the grid oracle visits 0, 1, ...: the recorded order
    settings = {"oracle": "grid", "objective": objective, "direction": "max", "max_trials": len(curves),
                "early_terminate": VARIANTS[variant]}
    path.unlink(missing_ok=True)
    with open_store(f"sqlite:///{path}") as store:
        create_or_resume_custom_study(store, study, f"replay of {study}\n", hp, search_settings(settings, variant))
    run_worker(f"sqlite:///{path}", study, trial_fn=trial_fn, worker_id="replay", log=lambda message: None)
    configs = [t["config"] for t in read_trials(url, study) if t["status"] == COMPLETED]
    return [{**t, "config": configs[i], "seconds": float("nan")}
            for i, t in enumerate(read_trials(f"sqlite:///{path}", study))]


def key(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def table(title: str, results: list[dict]) -> dict:
    """Prints the variants against the first (unpruned) one; returns their ratios."""
    base = results[0]
    level = 0.95 * base["best"]
    configs = [t["config"] for t in base["trials"]]
    print(f"{title}; 95% of the unpruned best = {level:.4f}")
    header = (f"{'variant':<20} {'completed':>9} {'pruned':>6} {'epochs':>6} {'trial-s':>8} {'best':>7} "
              f"{'s to 95%':>8} {'ep to 95%':>9} {'compute (s)':>11} {'compute (ep)':>12} {'best ratio':>10}")
    print(header)
    print("-" * len(header))
    ratios = {}
    for r in results:
        seconds_95, epochs_95 = until(r, level)
        compute, compute_ep, best = (ratio(r[key], base[key]) for key in ("seconds", "epochs", "best"))
        print(f"{r['variant']:<20} {r['completed']:>9} {r['pruned']:>6} {r['epochs']:>6} {r['seconds']:>8.0f} "
              f"{r['best']:>7.4f} {seconds_95 or float('nan'):>8.0f} {epochs_95 or float('nan'):>9.0f} "
              f"{compute:>11.3f} {compute_ep:>12.3f} {best:>10.3f}")
        ratios[r["variant"]] = {"compute_ratio": round(compute, 3), "best_ratio": round(best, 3),
                                "epoch_ratio": round(compute_ep, 3)}
    same = all([t["config"] for t in r["trials"]] == configs for r in results)
    print(f"same {len(configs)} configurations in the same order in every variant: {'yes' if same else 'NO'}")
    leader = max((i for i, t in enumerate(base["trials"]) if t["status"] == COMPLETED),
                 key=lambda i: base["trials"][i]["objective"], default=None)
    for r in results[1:]:
        if leader is not None and leader < len(r["trials"]):
            t, best = r["trials"][leader], base["trials"][leader]
            print(f"{r['variant']}: the unpruned best (no. {leader + 1} of these, {best['objective']:.4f} after "
                  f"{best['epochs']} epochs) is {t['status']} after {t['epochs']} epochs at {t['objective']:.4f}")
    print()
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--variants", nargs="+", default=["none", "hyperband", "median"], choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "time_to_quality",
                        help="stores and logs (kept with the benchmark, so a stopped run resumes anywhere)")
    parser.add_argument("--jobs", type=int, default=1, help="variants run side by side (one worker each)")
    parser.add_argument("--no-run", action="store_true", help="only print the tables of the stores as they are")
    parser.add_argument("--replay", nargs="*", default=[], choices=[v for v in VARIANTS if v != "none"],
                        help="also replay these pruners on the unpruned run's recorded epochs (epochs only)")
    parser.add_argument("--source", nargs=2, metavar=("URL", "STUDY"),
                        help="replay on this unpruned study's trials instead (e.g. an earlier search's store)")
    parser.add_argument("--trials-per-process", type=int, default=TRIALS_PER_PROCESS,
                        help="a fresh worker process after this many trials (search.trials_per_process)")
    args = parser.parse_args()
    variants = ["none"] + [v for v in args.variants if v != "none"]  # the reference first
    args.out.mkdir(parents=True, exist_ok=True)
    run_queue([] if args.no_run or args.source else list(variants), args.jobs, args.out,
              lambda variant: start_variant(args.out, variant, args.trials, args.trials_per_process))

    if args.source:
        url, study = args.source
        rows = [t for t in read_trials(url, study) if t["status"] == COMPLETED][:args.trials]
        n, name = len(rows), study
    else:
        trials = {v: read_trials(store_url(args.out, v), f"ttq-{v}") for v in variants}
        # With one worker a variant's first n trials are exactly an n-trial study: compare the common prefix.
        n = min(len(rows) for rows in trials.values())
        # A trial that failed (e.g. refused by the memory check while the machine was short of memory) in
        # any variant is left out of all, so every variant is compared on the same configurations.
        failed = {key(t["config"]) for rows in trials.values() for t in rows[:n] if t["status"] == FAILED}
        trials = {v: [t for t in rows[:n] if key(t["config"]) not in failed] for v, rows in trials.items()}
        n = len(trials["none"])
        ratios = table(f"full.yaml on MovieLens-100K, {n} trials (the first that every variant finished; "
                       f"{len(failed)} failed and left out), random oracle seed {SEED}, one worker, one TF thread, "
                       f"{os.cpu_count()} CPU cores; objective val_recall@100",
                       [summarize(v, rows) for v, rows in trials.items()])
        url, study, rows, name = store_url(args.out, "none"), "ttq-none", trials["none"], "the unpruned run"
    if args.replay:
        ratios = {**table(f"replayed on the first {n} trials of {name}, in their order (compute in epochs only)",
                          [summarize("none", rows)] + [summarize(f"{v} (replay)", replay(
                              (url, study), v, n, args.out / f"replay-{study}-{v}.db")) for v in args.replay]),
                  **(ratios if not args.source else {})}
    print("trial-s: sum of trial end - start (indicative: the machine is shared); epochs: epochs trained; "
          "to 95%: spent in trial order until a completed trial reached 95% of the unpruned best; "
          "compute: trial-s (s) or epochs (ep) over the unpruned run's; best ratio: best / unpruned best")
    if not args.source:  # the variants run for real; those only replayed have no seconds
        summary = {}
        for v in dict.fromkeys(variants[1:] + args.replay):
            real = ratios.get(v) or {**ratios[f"{v} (replay)"], "compute_ratio": None}
            summary.update({f"{v}_{k}": real[k] for k in ("compute_ratio", "best_ratio", "epoch_ratio")})
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
