"""Validation quality of row-sparse Adam (`adam`) against tf-keras Adam (`dense_adam`), seed by seed.

    python experiments/benchmarks/sparse_quality.py [--seeds 1 2 3] [--weight-decay 0]

Two MovieLens-100K configs, random 70/10/20 split (seed 42): the hand-tuned one
(`experiments/movielens/tuned.yaml`: features, τ 0.05, 5 epochs) and the base of
`search_spaces/full.yaml` (ids only, τ 0.1, 8 epochs), where the id tables are all there is.
Each is trained from each model seed with both optimizers, all epochs, and scored on val only
(recall@10 and ndcg@10 of the final weights; test is never read). The last line is one JSON
object with every run and the mean ± sd per config and optimizer.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import tuner  # noqa: F401
import tensorflow as tf

from tuner.config import from_dict
from tuner.data.pipeline import train_dataset
from tuner.evaluate import evaluate
from tuner.safe_yaml import read
from tuner.train import SplitKeeper, build_model_for

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {"tuned": ROOT / "experiments/movielens/tuned.yaml", "full_base": ROOT / "search_spaces/full.yaml"}
OPTIMIZERS = ("dense_adam", "adam")


def val_metrics(settings: dict, keeper: SplitKeeper) -> dict[str, float]:
    cfg = from_dict(settings)
    split = keeper.split_for(cfg)
    model = build_model_for(cfg, split)
    t = cfg.training
    model.fit(train_dataset(split.train, t.batch_size, cfg.seed, split.dataset.num_items), epochs=t.epochs, verbose=0)
    return evaluate(model, split, "val", [10])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--weight-decay", type=float, default=0.0)
    args = parser.parse_args()
    keeper, runs = SplitKeeper(), []
    for name, path in CONFIGS.items():
        base = {k: v for k, v in read(path).items() if k not in ("parameters", "search")}
        for seed in args.seeds:
            for optimizer in OPTIMIZERS:
                training = {**base["training"], "optimizer": optimizer, "weight_decay": args.weight_decay}
                metrics = val_metrics({**base, "seed": seed, "training": training}, keeper)
                runs.append({"config": name, "seed": seed, "optimizer": optimizer, **metrics})
                print(f"{name:<10} seed {seed}  {optimizer:<10}  val recall@10 {metrics['recall@10']:.4f}  "
                      f"ndcg@10 {metrics['ndcg@10']:.4f}", flush=True)
    summary = {}
    print(f"\n{'config':<10} {'optimizer':<10} {'val recall@10':>18} {'val ndcg@10':>18}")
    for name in CONFIGS:
        for optimizer in OPTIMIZERS:
            mine = [r for r in runs if r["config"] == name and r["optimizer"] == optimizer]
            stats = {m: (float(np.mean([r[m] for r in mine])), float(np.std([r[m] for r in mine], ddof=1)))
                     for m in ("recall@10", "ndcg@10")}
            summary[f"{name}/{optimizer}"] = {m: {"mean": round(a, 4), "sd": round(b, 4)}
                                              for m, (a, b) in stats.items()}
            print(f"{name:<10} {optimizer:<10}" + "".join(f"{a:>11.4f} ± {b:.4f}" for a, b in stats.values()))
    print(json.dumps({"weight_decay": args.weight_decay, "summary": summary, "runs": runs}))


if __name__ == "__main__":
    main()
