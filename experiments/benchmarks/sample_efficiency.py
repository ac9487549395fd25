"""Sample efficiency: the best validation objective each oracle finds after 10, 20 and 40 trials.

    python experiments/benchmarks/sample_efficiency.py [--arms random bayesian tpe] [--seeds 1 2 3 4 5]
        [--trials 40] [--jobs 2] [--out DIR] [--no-run] [--base-first] [--stop-at N]

`tuner/spaces/full.yaml` on MovieLens-100K, as it was when the stores began (frozen in
`sample_efficiency/space.yaml`: `recent` pooling, added since, is not among its values, so every
seed of every arm searches one space), searched by each oracle (arm) once per seed: Keras
Tuner's random search and Gaussian-process Bayesian optimisation, and Optuna's TPE. Every arm
prunes with the same `early_terminate` ({type: hyperband, min_iter: 1, eta: 3}) and searches the
same epochs, half of full's own (training.epochs values 2, 4, 6 instead of 4, 8, 12) so that the
whole run fits in a few hours on 2 cores. Everything else is that full.yaml (objective
val_recall@100).

Each arm × seed is one study on its own SQLite store in DIR (default
experiments/benchmarks/sample_efficiency), run by one worker (the loop `tuner worker` runs, one
TensorFlow thread) in trial order, so a study's first n trials are an n-trial search; `--jobs`
studies run side by side (one per core), seed by seed so that a partial run compares the arms on
the same seeds. A finished study is read, not run again, and a stopped one continues from its
store: rerunning the same command resumes. `--no-run` prints the tables from the stores as they are.

`--base-first`: every study of every arm runs the space's own config first (its epochs halved
as the searched ones are), as `search.base_first` does in a search (stores in
DIR/base-first; the default stores predate that setting and start cold). `--stop-at N` runs each
study to its first N trials only, so that a pass gives every seed's 20-trial search before any
study goes on to 40; rerunning without it continues them.

Per arm, over its seeds: mean ± sd of the best val objective of the completed trials among the
first 10, 20 and 40 (the count of studies that got that far in brackets), and the trial-seconds
(sum of end - start of each trial, from the store; indicative: the machine is shared). Then, over
all arms and seeds, what the completed trials at or above 0.6 have in common (`region`). The last
line is one JSON object with `tpe_at_20_over_random_at_40`, `tpe_at_40_over_random_at_40` and
the like: ratios of the means of the best val objective.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

import tuner  # noqa: F401  (before TensorFlow: selects tf-keras)
from time_to_quality import FINISHED, read_trials, run_queue, start_worker
from tuner import safe_yaml
from tuner.settings import TRIALS_PER_PROCESS
from tuner.store import COMPLETED, PRUNED, list_studies, list_trials, open_store

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = Path(__file__).resolve().parent / "sample_efficiency"
SPACE = DEFAULT_OUT / "space.yaml"  # full.yaml, frozen
ARMS = ("random", "bayesian", "tpe")
PRUNER = {"type": "hyperband", "min_iter": 1, "eta": 3}
EPOCHS = [2, 4, 6]  # full.yaml searches 4, 8, 12
CHECKPOINTS = (10, 20, 40)
REGION = 0.6  # the level of the best region of the space, reached in some seeds only


def study_name(arm: str, seed: int) -> str:
    return f"se-{arm}-s{seed}"


def store_url(out: Path, arm: str, seed: int) -> str:
    return f"sqlite:///{out / study_name(arm, seed)}.db"


def base_config(out: Path) -> Path:
    """The space's own base config with its epochs halved as the searched ones are (8 to 4),
    written into `out` for `search.enqueue`: what the engineer who wrote the space runs today."""
    space = safe_yaml.read(SPACE)
    base = {k: v for k, v in space.items() if k not in ("parameters", "search")}
    base["training"] = {**base["training"], "epochs": base["training"]["epochs"] // 2}
    path = out / "base.yaml"
    path.write_text("# sample_efficiency/space.yaml's base config, epochs halved (sample_efficiency.py --base-first)\n"
                    + yaml.safe_dump(base, sort_keys=False, default_flow_style=None))
    return path


def space_text(arm: str, seed: int, trials: int, enqueue: Path | None = None) -> str:
    """full.yaml searched by `arm` with `seed`, `trials` trials, the shared pruner and epochs;
    `enqueue`: a config every arm runs as its first trial."""
    space = safe_yaml.read(SPACE)
    space["parameters"]["training.epochs"] = {"values": EPOCHS}
    space["search"] = {**space["search"], "oracle": arm, "seed": seed, "max_trials": trials, "early_terminate": PRUNER}
    if enqueue is not None:
        space["search"]["enqueue"] = [enqueue.name]  # relative to the store's folder (start_study)
    else:  # cold, as the default stores began (their epochs 8 would be outside 2, 4, 6 anyway)
        space["search"]["base_first"] = False
    return f"# full.yaml, oracle {arm}, seed {seed} (experiments/benchmarks/sample_efficiency.py)\n" + \
        yaml.safe_dump(space, sort_keys=False, default_flow_style=None)


def finished(url: str, study: str) -> int:
    with open_store(url) as store:
        if study not in {s.name for s in list_studies(store)}:
            return 0
        return sum(t.status in FINISHED for t in list_trials(store, study))


def start_study(out: Path, name: str, trials: int, trials_per_process: int, stop_at: int | None = None,
                enqueue: Path | None = None) -> subprocess.Popen | None:
    """Starts (or resumes) study `name` ("arm-seed") in a worker process, unless it is finished
    or has its first `stop_at` trials (a pass that gives every study that many before any gets more)."""
    from tuner.search import create_or_resume_study
    from tuner.space import load_space_text

    arm, seed = name.rsplit("-", 1)
    url, study, text = store_url(out, arm, int(seed)), study_name(arm, int(seed)), space_text(arm, int(seed), trials, enqueue)
    done = finished(url, study)
    if done >= min(trials, stop_at or trials):
        return None
    if stop_at is not None:
        trials_per_process = min(trials_per_process, stop_at - done)
    with open_store(url) as store:
        create_or_resume_study(store, study, load_space_text(text, str(out / f"{study}.yaml")))
    print(f"{study}: {done} of {trials} trials finished, running the rest", file=sys.stderr, flush=True)
    return start_worker(url, study, name, out / f"{study}.log", trials_per_process)


def study_rows(out: Path, arm: str, seed: int, trials: int) -> list[dict]:
    """The study's first `trials` finished trials (`time_to_quality.read_trials`); none without a store."""
    url, study = store_url(out, arm, seed), study_name(arm, seed)
    if not (out / f"{study}.db").exists() or not finished(url, study):
        return []
    return read_trials(url, study)[:trials]


def best_after(rows: list[dict], n: int) -> float | None:
    """The best objective of the completed trials among the first n finished; None before n finished."""
    if len(rows) < n:
        return None
    values = [r["objective"] for r in rows[:n] if r["status"] == COMPLETED and r["objective"] is not None]
    return max(values, default=float("nan"))


def mean_sd(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(out: Path, arms: list[str], seeds: list[int], trials: int) -> dict[str, dict[int, float]]:
    """Prints one row per arm; returns each arm's mean best objective per checkpoint."""
    checkpoints = [c for c in CHECKPOINTS if c <= trials]
    header = (f"{'oracle':<9} {'seeds':>5} " + " ".join(f"{f'best after {c}':>22}" for c in checkpoints)
              + f" {'trial-s per study':>20} {'completed':>9} {'pruned':>6}")
    print(f"full.yaml on MovieLens-100K (epochs {', '.join(map(str, EPOCHS))}), early_terminate {PRUNER}, "
          f"{trials} trials per study, one worker, one TF thread, {os.cpu_count()} CPU cores; "
          "objective val_recall@100, mean ± sd over seeds (studies that got that far)")
    print(header)
    print("-" * len(header))
    means: dict[str, dict[int, float]] = {}
    for arm in arms:
        studies = [rows for s in seeds if (rows := study_rows(out, arm, s, trials))]
        cells, means[arm] = [], {}
        for c in checkpoints:
            values = [v for rows in studies if (v := best_after(rows, c)) is not None]
            mean, sd = mean_sd(values)
            means[arm][c] = mean
            cells.append(f"{mean:.4f} ± {sd:.4f} ({len(values)})")
        seconds = mean_sd([sum(r["seconds"] for r in rows) for rows in studies if len(rows) >= trials])
        counts = [sum(r["status"] == status for rows in studies for r in rows) for status in (COMPLETED, PRUNED)]
        print(f"{arm:<9} {len(studies):>5} " + " ".join(f"{cell:>22}" for cell in cells)
              + f" {f'{seconds[0]:.0f} ± {seconds[1]:.0f}':>20} {counts[0]:>9} {counts[1]:>6}")
    print("best after n: the best val objective of the completed trials among a study's first n; trial-s: "
          f"sum of trial end - start over a finished study's {trials} trials (indicative: the machine is shared)")
    return means


def region(out: Path, arms: list[str], seeds: list[int], trials: int, level: float = REGION) -> None:
    """What the completed trials at or above `level` share, over every arm and seed: per parameter
    of a few values, the completed trials with each value and how many of them reached `level`
    (the parameters whose values split it most first), and how well epoch 1 ranks the completed
    trials' final objectives (Spearman), i.e. how safe pruning after epoch 1 is in this space."""
    from scipy.stats import spearmanr

    rows = [r for arm in arms for s in seeds for r in study_rows(out, arm, s, trials)
            if r["status"] == COMPLETED and r["objective"] is not None]
    if not rows:
        return
    counts: dict[str, dict[str, list[int]]] = {}
    for r in rows:
        for name, value in r["config"].items():
            cell = counts.setdefault(name, {}).setdefault(json.dumps(value), [0, 0])
            cell[0] += 1
            cell[1] += r["objective"] >= level

    def spread(by_value):  # the gap between the values' shares at or above level
        shares = [hits / n for n, hits in by_value.values()]
        return max(shares) - min(shares)
    print(f"completed trials at or above {level}: {sum(r['objective'] >= level for r in rows)} of {len(rows)}; "
          "per value: completed / at or above")
    choices = {name: by_value for name, by_value in counts.items() if len(by_value) <= 8}  # not the ranges
    for name, by_value in sorted(choices.items(), key=lambda item: -spread(item[1]))[:5]:
        print(f"  {name}: " + ", ".join(f"{v} {n} / {hits}" for v, (n, hits) in by_value.items()))
    paired = [(r["first"], r["objective"]) for r in rows if r["first"] is not None]
    rho = spearmanr(*zip(*paired)).statistic if len(paired) > 2 else float("nan")
    print(f"epoch 1 against the final objective of the completed trials: Spearman {rho:.2f} ({len(paired)} trials)")


def ratios(means: dict[str, dict[int, float]]) -> dict[str, float | None]:
    """Ratios of mean best objectives: each arm after each checkpoint over random after the last."""
    if "random" not in means or not means["random"]:
        return {}
    last = max(means["random"])
    base = means["random"][last]
    out = {}
    for arm, by_n in means.items():
        for n, mean in by_n.items():
            if arm != "random" or n != last:
                ok = math.isfinite(mean) and math.isfinite(base) and base != 0
                out[f"{arm}_at_{n}_over_random_at_{last}"] = round(mean / base, 4) if ok else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=2, help="studies run side by side (one worker process each)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="stores and logs (kept with the benchmark, so a stopped run resumes anywhere)")
    parser.add_argument("--no-run", action="store_true", help="only print the tables of the stores as they are")
    parser.add_argument("--base-first", action="store_true",
                        help="every study runs the space's base config first (search.enqueue); default --out "
                             "sample_efficiency/base-first")
    parser.add_argument("--stop-at", type=int, help="run each study only to this many trials (rerun without it to go on)")
    parser.add_argument("--trials-per-process", type=int, default=TRIALS_PER_PROCESS,
                        help="a fresh worker process after this many trials (search.trials_per_process)")
    args = parser.parse_args()
    if args.base_first and args.out == DEFAULT_OUT:
        args.out = DEFAULT_OUT / "base-first"
    args.out.mkdir(parents=True, exist_ok=True)
    enqueue = base_config(args.out) if args.base_first else None
    names = [f"{arm}-{seed}" for seed in args.seeds for arm in args.arms]  # seed by seed: partial runs compare
    run_queue([] if args.no_run else names, args.jobs, args.out,
              lambda name: start_study(args.out, name, args.trials, args.trials_per_process, args.stop_at, enqueue))
    means = table(args.out, args.arms, args.seeds, args.trials)
    region(args.out, args.arms, args.seeds, args.trials)
    print(json.dumps(ratios(means)))


if __name__ == "__main__":
    main()
