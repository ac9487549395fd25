"""A score blend of the searched two-tower and a product baseline (ALS, EASE); validation only.

ALS is a factorisation, so tt/τ + α·als is the dot product of concatenated vectors
[u_tt/τ, α·u_als]·[v_tt, v_als]: still a two-tower, served by the same nearest-neighbour index.
Each model's scores are first put on one scale, then blended as (1 − w)·tt + w·baseline:
- `global`: each model divided by the std of its scores over all (user, item) pairs, one constant
  per model: exactly the raw blend above with α = w/(1 − w)·σ_tt/σ_als (printed);
- `z_row`: z-scored per user row; the row mean is a per-user constant (it cannot change a ranking)
  and the row std scales the user's vector, so this too is a dot product of concatenated vectors;
- `rank`: each model's rank of the item in the user's row, as a share of the catalog; not a
  dot product (it needs a rerank of both models' candidates).
The two-tower is `experiments/best/random/best-tpe50.yaml` trained with its own epochs (seeds 42
and 7); ALS and EASE are fitted with the settings `tuner baselines` chooses on val for that seed
(`tuner.baselines.baselines_for`, its disk cache). Every score goes through
`tuner.baselines.score`, the ranking every baseline goes through. w is chosen on seed 42's val
ndcg@10 (the searches' monitor) for each pair and scale; seed 7 shows what the same w gives.
The ALS + EASE blend (no two-tower) is the control: how much any two-model ensemble gains; the
three together (z_row, weights on a simplex grid) bound what blending these models can give.

    nice -n 10 python3 experiments/models/blend.py [--seeds 42,7]

Prints, per seed, val recall@10 and ndcg@10 of ALS, EASE and the two-tower alone, then each
pair's grid over w per scale, then the summary table (markdown) with the ratios to ALS; for the
three-way blend w is (w_ALS, w_EASE).
"""
from __future__ import annotations

import argparse
import dataclasses

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf

from tuner import config
from tuner.baselines import FAMILIES, baselines_for, score
from tuner.evaluate import encode
from tuner.train import build_model_for, prepare_split, run

CONFIG = "experiments/best/random/best-tpe50.yaml"
KS = [10, 100]
METRICS = ("recall@10", "ndcg@10")
MONITOR = "ndcg@10"
WEIGHTS = tuple(round(float(w), 2) for w in np.arange(0.0, 1.001, 0.05))  # w on the baseline; 0 = two-tower alone
# all three, z-scored per row: (w_ALS, w_EASE) on a 0.1 grid of the simplex, the two-tower 1 − both
TRIPLES = tuple((round(float(a), 1), round(float(e), 1)) for a in np.arange(0.0, 1.01, 0.1) for e in np.arange(0.0, 1.01 - a, 0.1))
PAIRS = (("two-tower", "ALS"), ("two-tower", "EASE"), ("ALS", "EASE"))


def two_tower_scores(cfg, split) -> tuple[np.ndarray, dict]:
    """Trains `cfg` (val scored, test not) and returns its dense [num_users + 1, num_items]
    scores u·v (cosines: the model's normalised towers) and its val metrics from `run`."""
    model = build_model_for(cfg, split)
    result = run(cfg, split, model=model, test=False, measured={"most_popular": {}, "baselines": {}},
                 log=lambda line: print("  " + line, flush=True))
    num_users, num_items = split.dataset.num_users, split.dataset.num_items
    users = encode(lambda s, e: model.query_tower({"user": tf.range(s, e, dtype=tf.int32)}, training=False),
                   num_users + 1)
    items = encode(lambda s, e: model.candidate_tower(tf.range(s + 1, e + 1, dtype=tf.int32), training=False),
                   num_items)
    return np.asarray(tf.matmul(users, items, transpose_b=True)), result["val"]


def baseline_scores(cfg, split) -> dict[str, np.ndarray]:
    """Dense scores of ALS and EASE at the settings the product chooses on val for `cfg.seed`."""
    chosen = baselines_for(dataclasses.replace(cfg, evaluation=dataclasses.replace(
        cfg.evaluation, baselines=["als", "ease"])), split, parts=("val",))
    rows = np.arange(split.dataset.num_users + 1)
    out = {}
    for name, entry in chosen.items():
        module = FAMILIES[name]
        print(f"  {module.NAME}: {entry['chosen']} (chosen on {entry['chosen_on']})", flush=True)
        out[module.NAME] = module.Model(split, cfg.seed).fit(entry["chosen"])(rows, "val")
    return out


def scaled(scores: np.ndarray, how: str) -> np.ndarray:
    """`scores` on the scale `how` names, in float64: float32 blends of ranks make ties."""
    scores = scores.astype(np.float64)
    if how == "global":
        return scores / scores.std()
    if how == "z_row":
        return (scores - scores.mean(1, keepdims=True)) / np.maximum(scores.std(1, keepdims=True), 1e-12)
    ranks = np.argsort(np.argsort(scores, axis=1, kind="stable"), axis=1, kind="stable")  # 0 = lowest
    return ranks / scores.shape[1]


def val_metrics(split, scores: np.ndarray) -> dict:
    metrics = score(split, "val", KS, lambda rows, part: scores[rows])
    return {k: metrics[k] for k in METRICS}


def measure_seed(cfg, split) -> dict:
    """{"alone": {model: metrics}, "grid": {(pair, scale): {w: metrics}}, "alpha": {...}} for one seed."""
    print(f"seed {cfg.seed}: training the two-tower", flush=True)
    tt, run_val = two_tower_scores(cfg, split)
    dense = {"two-tower": tt, **baseline_scores(cfg, split)}
    alone = {name: val_metrics(split, s) for name, s in dense.items()}
    print(f"  two-tower from run(): recall@10 {run_val['recall@10']:.4f}, ndcg@10 {run_val['ndcg@10']:.4f} "
          f"(dense scores here: {alone['two-tower']['recall@10']:.4f}, {alone['two-tower']['ndcg@10']:.4f})")
    grid, alpha = {}, {}
    for a, b in PAIRS:
        for how in ("global", "z_row", "rank"):
            sa, sb = scaled(dense[a], how), scaled(dense[b], how)
            grid[(a, b, how)] = {w: val_metrics(split, (1 - w) * sa + w * sb) for w in WEIGHTS}
            if how == "global":  # the raw blend's α on tt/τ + α·b: w/(1 − w) · σ(tt/τ)/σ(b)
                alpha[(a, b)] = dense[a].std() / cfg.retrieval.temperature / dense[b].std() \
                    if a == "two-tower" else dense[a].std() / dense[b].std()
            line = "  ".join(f"{w:g}: {m['recall@10']:.4f}/{m['ndcg@10']:.4f}" for w, m in grid[(a, b, how)].items())
            print(f"  {a}+{b} {how}  {line}", flush=True)
    z = {name: scaled(s, "z_row") for name, s in dense.items()}
    grid[("two-tower", "ALS + EASE", "z_row")] = {
        (a, e): val_metrics(split, (1 - a - e) * z["two-tower"] + a * z["ALS"] + e * z["EASE"]) for a, e in TRIPLES}
    return {"alone": alone, "grid": grid, "alpha": alpha}


def ratio(m: dict, reference: dict) -> str:
    return ", ".join(f"{m[k] / reference[k]:.3f}×" for k in METRICS)


def summary(results: dict[int, dict], chooser: int) -> list[str]:
    seeds = list(results)
    head = " | ".join(f"seed {s}: recall@10, ndcg@10 (/ ALS)" for s in seeds)
    lines = [f"| val | w (on baseline) | {head} |", "|---|---|" + "---|" * len(seeds)]

    def cells(get):
        return " | ".join(f"{get(s)['recall@10']:.4f}, {get(s)['ndcg@10']:.4f} "
                          f"({ratio(get(s), results[s]['alone']['ALS'])})" for s in seeds)

    for name in ("ALS", "EASE", "two-tower"):
        lines.append(f"| {name} alone | – | {cells(lambda s: results[s]['alone'][name])} |")
    for key, by_w in results[chooser]["grid"].items():
        w = max(by_w, key=lambda w: by_w[w][MONITOR])  # the first on ties: the lower w
        own = "; ".join(f"seed {s}'s own best w {max(results[s]['grid'][key], key=lambda x: results[s]['grid'][key][x][MONITOR])}"
                        for s in seeds if s != chooser)
        lines.append(f"| {key[0]} + {key[1]}, {key[2]} | {w} ({own}) | "
                     f"{cells(lambda s: results[s]['grid'][key][w])} |")
    alphas = "; ".join(f"{a}+{b}: σ ratio {results[chooser]['alpha'][(a, b)]:.3f}" for a, b in PAIRS)
    lines.append(f"\nglobal scale, seed {chooser}: raw α = w/(1 − w) × the σ ratio ({alphas})")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="42,7", help="comma-separated model seeds; w is chosen on the first")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    base = config.load(CONFIG)
    split = prepare_split(base)  # the split reads split.seed, not the model's seed
    results = {seed: measure_seed(dataclasses.replace(base, seed=seed), split) for seed in seeds}
    print("\n".join(summary(results, seeds[0])))


if __name__ == "__main__":
    main()
