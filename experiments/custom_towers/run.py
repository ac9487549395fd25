"""The example user towers (tuner/examples/towers.py, dcn.yaml) against the built-in towers on the same inputs
(builtin.yaml), MovieLens-100K, random 70/10/20 split (seed 42), a few initialisation seeds.

    python experiments/custom_towers/run.py            # train what results.json lacks, print the table
    python experiments/custom_towers/run.py --seeds 1 2 3

Every run goes through `tuner.train.run`, the code of `tuner train` and of search trials; each
seed's run of dcn.yaml is `tuner train --config experiments/custom_towers/dcn.yaml` with `seed:`
changed. Results are saved after every run; a rerun skips the runs results.json already has.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
CONFIGS = {"built-in towers": HERE / "builtin.yaml", "deep & cross towers": HERE / "dcn.yaml"}
METRICS = ["recall@10", "ndcg@10", "recall@100", "hit_rate@100"]


def train(name: str, seed: int) -> dict:
    import tensorflow as tf

    from tuner import config, train as training

    cfg = dataclasses.replace(config.load(CONFIGS[name]), seed=seed)
    started = time.perf_counter()
    result = training.run(cfg, training.prepare_split(cfg))
    tf.keras.backend.clear_session()
    return {"name": name, "seed": seed, "val": result["val"], "test": result["test"],
            "most_popular": result["most_popular"]["test"], "seconds": round(time.perf_counter() - started, 1),
            "train_s": result["timings"]["train_s"]}


def table(runs: list[dict]) -> str:
    lines = ["| towers | seeds | " + " | ".join(f"test {m}" for m in METRICS) + " | train s/run |",
             "|---|---|" + "---|" * (len(METRICS) + 1)]
    for name in CONFIGS:
        mine = [r for r in runs if r["name"] == name]
        if not mine:
            continue
        cells = []
        for metric in METRICS:
            values = np.array([r["test"][metric] for r in mine])
            cells.append(f"{values.mean():.4f} ± {values.std():.4f}" if len(values) > 1 else f"{values[0]:.4f}")
        seconds = np.mean([r["train_s"] for r in mine])
        lines.append(f"| {name} | {', '.join(str(r['seed']) for r in mine)} | {' | '.join(cells)} | {seconds:.0f} |")
    popular = runs[0]["most_popular"]
    lines.append("| MostPopular | | " + " | ".join(f"{popular[m]:.4f}" for m in METRICS) + " | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": []}
    saved["machine"] = f"{platform.machine()}, {platform.python_version()}"
    for seed in args.seeds:
        for name in CONFIGS:
            if any(r["name"] == name and r["seed"] == seed for r in saved["runs"]):
                continue
            saved["runs"].append(train(name, seed))
            RESULTS.write_text(json.dumps(saved, indent=2))
    print(table([r for r in saved["runs"] if r["seed"] in args.seeds]))


if __name__ == "__main__":
    main()
