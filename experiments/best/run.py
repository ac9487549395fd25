"""The tuned model against the TFRS tutorial config, the hand-tuned config and MostPopular.

    python experiments/best/run.py [--max-trials 20]

1. `tuner search --space full` (Bayesian, objective val_recall@100) into experiments/best/study.db;
   re-running resumes the study.
2. `tuner best` writes experiments/best/best.yaml.
3. Trains, on the same split (random 70/10/20, seed 42): the best config, the TFRS tutorial's
   hyperparameters, and the hand-tuned config; MostPopular comes with every run.
4. Writes results.json and prints the test table (hit_rate@10/100, recall@10/100, ndcg@10).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
METRICS = ("hit_rate@10", "hit_rate@100", "recall@10", "recall@100", "ndcg@10")


def tuner(*args: str) -> None:
    print("$ tuner " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "tuner.cli", *args], cwd=REPO, check=True)


def same_split(path: Path, out: Path) -> Path:
    """A config with the search's split (the tutorial's own protocol has no validation part)."""
    cfg = yaml.safe_load(path.read_text())
    cfg["split"] = {"method": "random", "val_fraction": 0.1, "test_fraction": 0.2, "seed": 42}
    cfg.setdefault("evaluation", {})["monitor"] = "recall@10"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-trials", default="20")
    parser.add_argument("--study", default="full2", help="study name in study.db")
    args = parser.parse_args()
    storage = f"sqlite:///{HERE / 'study.db'}"
    tuner("search", "--space", "full", "--study", args.study, "--max-trials", args.max_trials, "--storage", storage)
    tuner("best", "--study", args.study, "--storage", storage, "--out", str(HERE / "best.yaml"))
    tuner("report", "--study", args.study, "--storage", storage, "--out", str(HERE / "report.html"))
    runs = {
        "tuned (full.yaml search)": HERE / "best.yaml",
        "hand-tuned": REPO / "experiments/movielens/tuned.yaml",
        "TFRS tutorial hyperparameters": same_split(REPO / "experiments/movielens/tfrs_tutorial.yaml",
                                                    HERE / "tutorial_same_split.yaml"),
    }
    results = {}
    for name, config in runs.items():
        out = HERE / "runs" / name.split()[0].replace("-", "_")
        tuner("train", "--config", str(config), "--out", str(out))
        metrics = json.loads((out / "metrics.json").read_text())
        results[name] = metrics["test"]
        results["MostPopular"] = metrics["most_popular"]["test"]
    (HERE / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\n{'test':<32}" + "".join(f"{m:>14}" for m in METRICS))
    for name, row in results.items():
        print(f"{name:<32}" + "".join(f"{row[m]:>14.4f}" for m in METRICS))


if __name__ == "__main__":
    main()
