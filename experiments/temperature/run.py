"""Temperature sweep on MovieLens-100K: normalised two-tower model, τ from 0.001 to 1, with and
without logQ, three seeds each, beside the unnormalised model (τ = 1) and MostPopular.

    python experiments/temperature/run.py              # train everything, then tables and plots
    python experiments/temperature/run.py --plot-only  # tables and plots from results.json

Every run goes through `tuner.train.run` (the code path of `tuner train` and of search trials).
The split (random, seed 42) is fixed; only the config `seed` (initialisation, shuffling)
varies. A diverged run (NaN/inf loss) is recorded with status "diverged" and left out of the
means. Results are saved after every run, and a rerun skips the runs results.json already has.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np

import tuner  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
TEMPERATURES = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
LOGQ = ["counts", "none"]
SEEDS = [1, 2, 3]
EPOCHS = 6  # τ 0.2-0.5 is within ~2% of its 12-epoch plateau by epoch 6 (see README)
METRICS = ["recall@10", "ndcg@10", "recall@100", "hit_rate@100"]


def config(temperature: float, logq: str, normalize: bool, seed: int, epochs: int) -> dict:
    return {
        "seed": seed,
        "dataset": {"name": "movielens-100k"},
        "split": {"method": "random", "val_fraction": 0.1, "test_fraction": 0.2, "seed": 42},
        "model": {"embedding_dim": 32, "normalize": normalize},
        "retrieval": {"temperature": temperature, "logq": logq},
        "negatives": {"strategy": "in_batch"},
        "training": {"optimizer": "adam", "learning_rate": 0.01, "batch_size": 1024, "epochs": epochs},
        "evaluation": {"ks": [10, 100], "monitor": "recall@10", "every_epoch": True},
    }


def grid(seeds: list[int]) -> list[dict]:
    """Every run: seed outermost, so the kept split is reused (the seed is among its inputs)."""
    runs = []
    for seed in seeds:
        for logq in LOGQ:
            runs.append({"normalize": False, "temperature": 1.0, "logq": logq, "seed": seed})
            runs += [{"normalize": True, "temperature": t, "logq": logq, "seed": seed} for t in TEMPERATURES]
    return runs


def popular_items(split, top_fraction: float = 0.1) -> np.ndarray:
    """Mask over item indices of the `top_fraction` most frequent training items."""
    n = split.dataset.num_items
    popular = np.zeros(n + 1, bool)
    popular[np.argsort(-split.item_counts()[1:n + 1], kind="stable")[:int(n * top_fraction)] + 1] = True
    return popular


def popular_share(model, split, k: int = 10) -> float:
    """Share of the model's top-k slots (val users, train items excluded as in recall@k) that go to
    the 10% most popular training items: how popularity-leaning its rankings are."""
    import tensorflow as tf

    n = split.dataset.num_items
    popular = popular_items(split)
    users = np.unique(split.val.user)
    queries = model.query_tower({"user": tf.constant(users, tf.int32)}, training=False).numpy()
    items = model.candidate_tower(tf.range(1, n + 1, dtype=tf.int32), training=False).numpy()
    scores = queries @ items.T  # column j is item index j + 1
    row = np.full(split.dataset.num_users + 1, -1)
    row[users] = np.arange(len(users))
    seen = row[split.train.user] >= 0
    scores[row[split.train.user][seen], split.train.item[seen] - 1] = -np.inf
    top = np.argpartition(-scores, k, axis=1)[:, :k] + 1
    return float(popular[top].mean())


def key(run: dict) -> str:
    return f"norm={run['normalize']} tau={run['temperature']:g} logq={run['logq']} seed={run['seed']}"


def train_all(epochs: int, seeds: list[int], path: Path) -> dict:
    import tensorflow as tf
    from tuner.config import from_dict
    from tuner.errors import TrainingDiverged
    from tuner.train import SplitKeeper, build_model_for, run

    doc = json.loads(path.read_text()) if path.exists() else {}
    if doc.get("epochs") != epochs:
        doc = {"epochs": epochs, "runs": []}
    doc["machine"] = f"{platform.machine()}, TensorFlow {tf.__version__} CPU"
    done = {key(r) for r in doc["runs"]}
    todo = [r for r in grid(seeds) if key(r) not in done]
    started = time.perf_counter()
    splits = SplitKeeper()
    for i, spec in enumerate(todo, 1):
        tf.keras.backend.clear_session()
        cfg = from_dict(config(spec["temperature"], spec["logq"], spec["normalize"], spec["seed"], epochs),
                        "experiments/temperature/run.py")
        t0 = time.perf_counter()
        try:
            split = splits.split_for(cfg)
            model = build_model_for(cfg, split)  # run() would build the same; we keep a handle
            result = run(cfg, split, log=lambda message: None, model=model)
            row = {**spec, "status": "ok", "val": result["val"], "test": result["test"],
                   "popular_share@10": popular_share(model, split),
                   "val_curve": [e["val"]["recall@10"] for e in result["epochs"]],
                   "loss": result["epochs"][-1]["loss"], "train_s": result["timings"]["train_s"]}
            if not all(math.isfinite(v) for part in ("val", "test") for v in row[part].values()):
                row["status"] = "diverged"  # a finite loss but non-finite scores
            doc["most_popular"] = result["most_popular"]
            doc["val_popular_share"] = float(popular_items(split)[split.val.item].mean())
            summary = f"val recall@10 {row['val']['recall@10']:.4f}  test recall@10 {row['test']['recall@10']:.4f}"
        except TrainingDiverged as exc:
            row = {**spec, "status": "diverged", "error": str(exc)}
            summary = f"DIVERGED: {exc}"
        doc["runs"].append(row)
        path.write_text(json.dumps(doc, indent=1))
        elapsed = time.perf_counter() - started
        print(f"[{i}/{len(todo)}] {key(spec)}: {summary}  ({time.perf_counter() - t0:.1f}s, "
              f"total {elapsed / 60:.1f} min)", flush=True)
    return doc


# --- aggregation, tables, plots -------------------------------------------------------------


def aggregate(doc: dict) -> dict:
    """{(normalize, τ, logq): {"n": ok runs, "diverged": n, "val_recall@10": (mean, std), ...}}."""
    groups: dict[tuple, list[dict]] = {}
    for r in doc["runs"]:
        groups.setdefault((r["normalize"], r["temperature"], r["logq"]), []).append(r)
    out = {}
    for k, rows in groups.items():
        ok = [r for r in rows if r["status"] == "ok"]
        entry = {"n": len(ok), "diverged": len(rows) - len(ok)}
        for part in ("val", "test"):
            for m in METRICS:
                values = np.array([r[part][m] for r in ok])
                entry[f"{part}_{m}"] = ((float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0)
                                        if len(values) else (math.nan, math.nan))
        shares = np.array([r["popular_share@10"] for r in ok])
        entry["popular_share@10"] = ((float(shares.mean()), float(shares.std(ddof=1)) if len(shares) > 1 else 0.0)
                                     if len(shares) else (math.nan, math.nan))
        if ok:
            entry["val_curve"] = np.mean([r["val_curve"] for r in ok], axis=0).tolist()
        out[k] = entry
    return out


def fmt(pair) -> str:
    mean, std = pair
    return "diverged" if math.isnan(mean) else f"{mean:.4f} ± {std:.4f}"


def tables(doc: dict) -> str:
    agg = aggregate(doc)
    lines = []
    for part in ("val", "test"):
        extra = " | top-10 popular share" if part == "val" else ""
        lines += [f"\n**{part}** (mean ± std over seeds; n = finished runs)\n",
                  "| model | τ | logQ | n | " + " | ".join(METRICS) + extra + " |",
                  "|---|---|---|---|" + "---|" * (len(METRICS) + bool(extra))]
        for (normalize, t, logq), e in sorted(agg.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
            name = "normalised" if normalize else "unnormalised"
            n = f"{e['n']}" + (f" (+{e['diverged']} diverged)" if e["diverged"] else "")
            cells = [fmt(e[f"{part}_{m}"]) for m in METRICS] + ([fmt(e["popular_share@10"])] if extra else [])
            lines.append(f"| {name} | {t:g} | {logq} | {n} | " + " | ".join(cells) + " |")
        mp = doc["most_popular"][part]
        lines.append("| MostPopular | | | | " + " | ".join(f"{mp[m]:.4f}" for m in METRICS) + (" | ≈1" if extra else "") + " |")
    lines.append(f"\ntop-10 popular share: share of the top-10 slots (val users, train items excluded) held by the "
                 f"10% most frequent training items; {doc['val_popular_share']:.3f} of val interactions are with them.")
    return "\n".join(lines)


def comparisons(doc: dict) -> str:
    """Best τ per logQ setting against τ = 1 (normalised) and the unnormalised model, val-selected."""
    agg = aggregate(doc)
    lines = ["\n| logQ | best τ (val recall@10) | metric | best τ | τ=1 normalised | gain | unnormalised | gain |",
             "|---|---|---|---|---|---|---|---|"]
    for logq in LOGQ:
        sweep = {t: e for (norm, t, lq), e in agg.items() if norm and lq == logq and e["n"]}
        best = max(sweep, key=lambda t: sweep[t]["val_recall@10"][0])
        for part in ("val", "test"):
            for m in ("recall@10", "ndcg@10"):
                b, one, un = (sweep[best][f"{part}_{m}"][0], sweep[1.0][f"{part}_{m}"][0],
                              agg[(False, 1.0, logq)][f"{part}_{m}"][0])
                lines.append(f"| {logq} | {best:g} | {part} {m} | {b:.4f} | {one:.4f} | {b - one:+.4f} "
                             f"({(b / one - 1) * 100:+.0f}%) | {un:.4f} | {b - un:+.4f} ({(b / un - 1) * 100:+.0f}%) |")
    return "\n".join(lines)


def plot(doc: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(doc)
    colors = {"counts": "tab:blue", "none": "tab:orange"}
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    for row, part in enumerate(("val", "test")):
        for col, m in enumerate(("recall@10", "ndcg@10")):
            ax = axes[row][col]
            for logq in LOGQ:
                ts = sorted(t for (norm, t, lq) in agg if norm and lq == logq)
                mean = np.array([agg[(True, t, logq)][f"{part}_{m}"][0] for t in ts])
                std = np.array([agg[(True, t, logq)][f"{part}_{m}"][1] for t in ts])
                ax.plot(ts, mean, "o-", color=colors[logq], label=f"normalised, logQ {logq}")
                ax.fill_between(ts, mean - std, mean + std, color=colors[logq], alpha=0.2)
                div = [t for t in ts if agg[(True, t, logq)]["diverged"]]
                if div:
                    ax.plot(div, [0] * len(div), "x", color=colors[logq], ms=10, label=f"diverged runs ({logq})")
                un = agg.get((False, 1.0, logq))
                if un and un["n"]:
                    ax.axhline(un[f"{part}_{m}"][0], color=colors[logq], ls="--", lw=1,
                               label=f"unnormalised τ=1, logQ {logq}")
            ax.axhline(doc["most_popular"][part][m], color="black", ls=":", lw=1.5, label="MostPopular")
            ax.set_xscale("log")
            ax.set_title(f"{part} {m}")
            ax.grid(alpha=0.3, which="both")
            if row == 1:
                ax.set_xlabel("temperature τ (log scale)")
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"MovieLens-100K, in-batch softmax, dim 32, Adam 0.01, batch 1024, {doc['epochs']} epochs "
                 f"(mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(HERE / "temperature.png", dpi=110)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    cmap = plt.get_cmap("viridis")
    for ax, logq in zip(axes, LOGQ):
        ts = sorted(t for (norm, t, lq) in agg if norm and lq == logq and agg[(norm, t, lq)]["n"])
        for i, t in enumerate(ts):
            curve = agg[(True, t, logq)]["val_curve"]
            ax.plot(range(1, len(curve) + 1), curve, "o-", ms=3, color=cmap(i / max(len(ts) - 1, 1)), label=f"τ={t:g}")
        ax.set_title(f"normalised, logQ {logq}: val recall@10 per epoch (seed mean)")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(HERE / "learning_curves.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot-only", action="store_true", help="tables and plots from results.json; no training")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    args = parser.parse_args()
    # A probe with another epoch count gets its own file and no plots, so it cannot overwrite the sweep.
    path = RESULTS if args.epochs == EPOCHS else HERE / f"results_{args.epochs}ep.json"
    doc = json.loads(path.read_text()) if args.plot_only else train_all(args.epochs, args.seeds, path)
    print(tables(doc))
    print(comparisons(doc))
    if path == RESULTS:
        plot(doc)
        print(f"wrote {HERE / 'temperature.png'} and {HERE / 'learning_curves.png'}")


if __name__ == "__main__":
    main()
