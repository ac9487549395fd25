"""A searched two-tower per split against MostPopular, EASE, ALS, the hand-tuned and the tutorial config.

    python experiments/best/run.py --split {random,temporal,leave_last_out} [--max-trials 50] [--study NAME]

1. Writes <split>/space-<study>.yaml: tuner/spaces/full.yaml (read now, so it stays in sync) with only
   the split, the objective (val_ndcg@10), the monitor, the trial budget and Hyperband pruning (eta 3,
   first rung --min-iter) changed. (Studies before full.yaml had retrieval.logq_weight and
   logq_window added them here; their space-<study>.yaml files keep what each searched.)
2. `tuner search` (--workers, default 1) into <split>/study.db; re-running resumes the study.
3. `tuner best` writes <split>/best.yaml, `tuner report` <split>/report.html.
4. `tuner train` on that split: the best config, the hand-tuned experiments/movielens/tuned.yaml and
   the TFRS tutorial's hyperparameters (experiments/movielens/tfrs_tutorial.yaml), the last two
   rewritten to the split as <split>/hand_tuned.yaml and <split>/tutorial.yaml.
5. Writes <split>/results.json (test metrics of the three models, MostPopular, EASE and ALS, read
   from metrics.json) and prints the table with each row's ratio to the better of EASE and ALS.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

import tuner
from tuner import config as tuner_config

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FULL = Path(tuner.__file__).parent / "spaces" / "full.yaml"
METRICS = ("recall@10", "ndcg@10", "recall@100", "hit_rate@10", "hit_rate@100")
OBJECTIVE = "ndcg@10"  # the target's metrics are top-10 ones; ndcg@10 also weighs the order within them


def run_tuner(*args: str) -> None:
    print("$ tuner " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "tuner.cli", *args], cwd=REPO, check=True)


def split_of(method: str) -> dict:
    """full.yaml's split (70/10/20, seed 42) with another method."""
    return {**yaml.safe_load(FULL.read_text())["split"], "method": method}


def derived_space(method: str, max_trials: int, min_iter: int, out: Path) -> Path:
    space = yaml.safe_load(FULL.read_text())
    space["split"] = split_of(method)
    space["evaluation"]["monitor"] = OBJECTIVE
    space["search"].update(objective=f"val_{OBJECTIVE}", max_trials=max_trials,
                           early_terminate={"type": "hyperband", "min_iter": min_iter, "eta": 3})
    out.write_text(f"# tuner/spaces/full.yaml on the {method} split, objective val_{OBJECTIVE}; "
                   "written by experiments/best/run.py\n" + yaml.safe_dump(space, sort_keys=False))
    return out


def on_split(path: Path, method: str, out: Path) -> Path:
    """A config trained on the search's split (the tutorial's own protocol has no validation part)."""
    cfg = yaml.safe_load(path.read_text())
    cfg["split"] = split_of(method)
    cfg.setdefault("evaluation", {})["monitor"] = OBJECTIVE
    out.write_text(f"# {path.relative_to(REPO)} on the {method} split; written by experiments/best/run.py\n"
                   + yaml.safe_dump(cfg, sort_keys=False))
    return out


def trained(config: Path, out: Path) -> bool:
    """Whether out/metrics.json was trained from this config (same config hash)."""
    done = out / "metrics.json"
    return done.exists() and json.loads(done.read_text())["config_hash"] == tuner_config.load(config).hash()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", required=True, choices=("random", "temporal", "leave_last_out"))
    parser.add_argument("--max-trials", type=int, default=50, choices=range(1, 51), metavar="N (<= 50)")
    parser.add_argument("--study", default="full", help="study name in <split>/study.db")
    parser.add_argument("--min-iter", type=int, default=1, help="first pruning rung (epochs); then ×3")
    parser.add_argument("--workers", type=int, default=1, help="search workers (one per core)")
    parser.add_argument("--reuse", action="store_true", help="skip a training whose metrics.json has the same config")
    parser.add_argument("--no-search", action="store_true", help="only train and compare the study's best")
    args = parser.parse_args()
    where = HERE / args.split
    where.mkdir(exist_ok=True)
    storage = f"sqlite:///{(where / 'study.db').relative_to(REPO)}"  # relative: best.yaml's header stays portable
    if not args.no_search:
        space = derived_space(args.split, args.max_trials, args.min_iter, where / f"space-{args.study}.yaml")
        run_tuner("search", "--space", str(space.relative_to(REPO)), "--study", args.study, "--workers",
                  str(args.workers), "--storage", storage)
    run_tuner("best", "--study", args.study, "--storage", storage, "--out", str((where / "best.yaml").relative_to(REPO)))
    run_tuner("report", "--study", args.study, "--storage", storage, "--out", str((where / "report.html").relative_to(REPO)))
    runs = {
        "tuned": where / "best.yaml",
        "hand-tuned": on_split(REPO / "experiments/movielens/tuned.yaml", args.split, where / "hand_tuned.yaml"),
        "TFRS tutorial": on_split(REPO / "experiments/movielens/tfrs_tutorial.yaml", args.split,
                                  where / "tutorial.yaml"),
    }
    results = {}
    for name, config in runs.items():
        out = where / "runs" / name.split()[-1].replace("-", "_")
        if not (args.reuse and trained(config, out)):
            run_tuner("train", "--config", str(config.relative_to(REPO)), "--out", str(out.relative_to(REPO)))
        metrics = json.loads((out / "metrics.json").read_text())
        results[name] = metrics["test"]
    results["MostPopular"] = metrics["most_popular"]["test"]
    for baseline in ("ease", "als"):
        results[baseline.upper()] = metrics["baselines"][baseline]["test"]
    (where / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results, args.split))


def table(results: dict, split: str) -> str:
    """Markdown test table; `/peer` is the ratio to the better of EASE and ALS on that metric."""
    peer = {m: max(results["EASE"][m], results["ALS"][m]) for m in ("recall@10", "ndcg@10")}
    lines = [f"| {split} (test) | " + " | ".join(METRICS) + " | recall@10 / peer | ndcg@10 / peer |",
             "|---" * (len(METRICS) + 3) + "|"]
    for name, row in results.items():
        ratios = [f"{row[m] / peer[m]:.2f}×" for m in peer]
        lines.append(f"| {name} | " + " | ".join(f"{row[m]:.4f}" for m in METRICS) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
