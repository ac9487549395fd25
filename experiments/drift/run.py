"""Feature drift of the candidate tower over training (CBNS paper, Wang et al. 2021, Eq. 5).

    python experiments/drift/run.py [--epochs 10] [--plot-only]

D(t; Δt) = Σ_items ||g_v(I; θ_t) − g_v(I; θ_{t−Δt})||_2 for Δt in {1, 5, 10}, after every
training step t, on MovieLens-100K (random split, seed 42, val 0.1, test 0.2) with the in-batch
model (normalised towers, τ 0.05, logQ from counts, Adam 0.01, dim 32). CBNS reuses bank
embeddings that are up to M/B steps old, so the drift at those lags is the error the bank
introduces; the warm-up (NegativesConfig.cbns_warmup_steps) should last until it is small.
Runs: an id-only candidate tower and one with item features and a [64] MLP, at batch 256 and
1024. All items are encoded after every step (1682 x 32, cheap) and the last 10 snapshots
are kept in a ring. Then CBNS itself (default bank M = 4096) with warm-ups of 0, 200 and 800
steps, and once with a bank re-encoded every step (no staleness), to see what the warm-up
buys. Writes results.json, drift.png and drift_cbns.png next to this file; --plot-only
regenerates the plots and the printed tables from results.json.
"""
from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

import tuner  # noqa: F401  (before TensorFlow: selects tf-keras)
import numpy as np
import tensorflow as tf

from tuner.config import NegativesConfig, from_dict
from tuner.data.pipeline import train_dataset
from tuner.evaluate import evaluate, most_popular
from tuner.model.retrieval import TwoTowerModel
from tuner.train import SplitKeeper, build_model_for

HERE = Path(__file__).resolve().parent
LAGS = (1, 5, 10)
BATCHES = (256, 1024)
TOWERS = {"id": {}, "features_mlp": {"item_features": True, "candidate_layers": [64]}}
WARMUP = NegativesConfig().cbns_warmup_steps  # the default under test
EVAL_STEPS = (0, 25, 50, 100, 150, 200, 300, 400, 600, 800, 1200, 1600, 2000, 2500)
# (tower, batch, warm-up steps): no warm-up, the default, and one past where the id tower's
# drift flattens at batch 256 (800 steps is past the end of a batch-1024 run)
CBNS_RUNS = [(t, 256, w, False) for t in TOWERS for w in (0, WARMUP, 800)] + [
    (t, 1024, w, False) for t in TOWERS for w in (0, WARMUP)] + [(t, 256, WARMUP, True) for t in TOWERS]
SMOOTH = 25  # steps in the trailing median used to find where the drift flattens
FLAT = 1.5  # "flat": the smoothed D(t; 1) stays within this factor of its last-epoch median


def make_config(tower: str, batch: int, epochs: int, negatives: dict | None = None):
    return from_dict({
        "dataset": {"name": "movielens-100k"},
        "split": {"method": "random", "seed": 42, "val_fraction": 0.1, "test_fraction": 0.2},
        "model": {"embedding_dim": 32, "normalize": True, **TOWERS[tower]},
        "retrieval": {"temperature": 0.05, "logq": "counts"},
        "negatives": negatives or {"strategy": "in_batch"},
        "training": {"optimizer": "adam", "learning_rate": 0.01, "batch_size": batch, "epochs": epochs},
        "evaluation": {"ks": [10]},
    }, "experiments/drift/run.py")


class DriftProbe(tf.keras.callbacks.Callback):
    """Encodes every item after each step and records the drift against the last 10 snapshots.

    Steps are counted here, one per training batch: `optimizer.iterations` runs one ahead
    after the first epoch (fit on the pipeline's unknown-cardinality stream counts one extra
    iteration while it learns the epoch length; the weights do not change).
    """

    def __init__(self, split, items: tf.Tensor):
        super().__init__()
        self.split, self.items = split, items
        self.ring: collections.deque = collections.deque(maxlen=max(LAGS))
        self.raw_prev: np.ndarray | None = None
        self.step = 0
        self.rows: list[dict] = []
        self.recall: list[dict] = []
        self.epoch_loss: list[float] = []

    def on_train_begin(self, logs=None):
        tower = self.model.candidate_tower
        self.encode = tf.function(lambda: tower(self.items, training=False))

        def unnormalised():  # traced once with the tower's final L2 normalisation switched off
            tower.normalize = False
            try:
                return tower(self.items, training=False)
            finally:
                tower.normalize = True

        self.encode_raw = tf.function(unnormalised)
        self.ring.append(self.encode().numpy())
        self.raw_prev = self.encode_raw().numpy()
        self._evaluate()

    def _evaluate(self):
        value = evaluate(self.model, self.split, "val", [10])["recall@10"]
        self.recall.append({"step": self.step, "val_recall@10": value})

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        now, raw = self.encode().numpy(), self.encode_raw().numpy()
        row = {"step": self.step, "mean_norm": float(np.linalg.norm(now, axis=1).mean()),
               "raw_mean_norm": float(np.linalg.norm(raw, axis=1).mean()),
               "raw_D1": float(np.linalg.norm(raw - self.raw_prev, axis=1).sum())}
        for lag in LAGS:
            if len(self.ring) >= lag:
                row[f"D{lag}"] = float(np.linalg.norm(now - self.ring[-lag], axis=1).sum())
        self.ring.append(now)
        self.raw_prev = raw
        self.rows.append(row)
        if self.step in EVAL_STEPS:
            self._evaluate()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_loss.append(float(logs["loss"]))
        if self.step not in EVAL_STEPS:
            self._evaluate()


class FreshBankModel(TwoTowerModel):
    """CBNS whose bank rows are re-encoded by the current tower every step: the same negatives
    with zero drift. If CBNS still loses to in-batch with it, staleness is not the cause."""

    def bank(self):
        _, ids, log_q = super().bank()
        return tf.stop_gradient(self.candidate_tower(ids, training=True)), ids, log_q


def top10_popularity(model, split) -> float:
    """Median training count of the items in the val users' top 10 (is the model popularity-biased?)."""
    users = np.unique(split.val.user)
    queries = model.query_tower({"user": tf.constant(users, tf.int32)}, training=False)
    items = model.candidate_tower(tf.range(1, split.dataset.num_items + 1, dtype=tf.int32), training=False)
    top = tf.math.top_k(tf.matmul(queries, items, transpose_b=True), 10).indices.numpy() + 1
    return float(np.median(split.item_counts()[top]))


def train_one(splits: SplitKeeper, tower: str, batch: int, epochs: int, warmup: int | None = None,
              fresh_bank: bool = False) -> dict:
    """Trains one config with the drift probe attached; `warmup` set = CBNS with that warm-up."""
    negatives = None if warmup is None else {"strategy": "cbns", "cbns_warmup_steps": warmup}
    cfg = make_config(tower, batch, epochs, negatives)
    split = splits.split_for(cfg)
    num_items = split.dataset.num_items
    model = build_model_for(cfg, split, model_cls=FreshBankModel if fresh_bank else TwoTowerModel)
    stream = train_dataset(split.train, batch, cfg.seed, num_items)
    probe = DriftProbe(split, tf.range(1, num_items + 1, dtype=tf.int32))
    started = time.perf_counter()
    model.fit(stream, epochs=epochs, verbose=0, callbacks=[probe])
    seconds = time.perf_counter() - started
    test_recall = evaluate(model, split, "test", [10])["recall@10"]
    rows = probe.rows
    out = {"tower": tower, "batch_size": batch, "epochs": epochs,
           "strategy": cfg.negatives.strategy + (" (fresh bank)" if fresh_bank else ""),
           "warmup": warmup, "memory_size": cfg.negatives.cbns_memory_size if warmup is not None else None,
           "num_items": num_items, "steps_per_epoch": -(-len(split.train) // batch), "seconds": round(seconds, 1),
           "step": [r["step"] for r in rows], "mean_norm": [round(r["mean_norm"], 6) for r in rows],
           "raw_mean_norm": [round(r["raw_mean_norm"], 5) for r in rows],
           "raw_D1": [round(r["raw_D1"], 5) for r in rows],
           "epoch_loss": [round(x, 5) for x in probe.epoch_loss], "val_recall@10": probe.recall,
           "test_recall@10": test_recall, "top10_median_train_count": top10_popularity(model, split)}
    for lag in LAGS:  # total D(t; Δt); null where t < Δt
        out[f"D{lag}"] = [round(r[f"D{lag}"], 5) if f"D{lag}" in r else None for r in rows]
    return out


def epoch_recall(run: dict, epochs: int) -> list[float]:
    """Val recall@10 at the end of each of the first `epochs` epochs."""
    spe = run["steps_per_epoch"]
    at = {r["step"]: r["val_recall@10"] for r in run["val_recall@10"]}
    return [at[e * spe] for e in range(1, epochs + 1)]


def epoch_drift(run: dict, epoch: int) -> float:
    """Median per-item D(t; 1) over the steps of one epoch (1-based)."""
    st, d = series(run, 1, "per_item")
    spe = run["steps_per_epoch"]
    return float(np.median(d[(st > (epoch - 1) * spe) & (st <= epoch * spe)]))


def cbns_table(cbns: list[dict], runs: list[dict]) -> str:
    """CBNS beside in-batch after the same number of epochs: recall and per-step drift."""
    in_batch = {(r["tower"], r["batch_size"]): r for r in runs}
    lines = ["| run | negatives | warm-up steps | bank on from epoch | val recall@10 best (epoch) | "
             "val recall@10 last epoch | D(t;1)/item, last epoch | vs in-batch | "
             "peak D(t;1)/item within 50 steps after the bank turns on | median train count of top-10 items |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key in dict.fromkeys((r["tower"], r["batch_size"]) for r in cbns):
        ib = in_batch[key]
        epochs = next(r["epochs"] for r in cbns if (r["tower"], r["batch_size"]) == key)
        base = epoch_drift(ib, epochs)
        for r in [ib] + [r for r in cbns if (r["tower"], r["batch_size"]) == key]:
            curve = epoch_recall(r, epochs)
            best = int(np.argmax(curve))
            drift = epoch_drift(r, epochs)
            spike = "-"
            if r["warmup"] and r["warmup"] < epochs * r["steps_per_epoch"]:
                st, d = series(r, 1, "per_item")
                smooth = trailing_median(d, SMOOTH // 5)  # 5 steps: keeps a short spike visible
                before = np.median(d[(st > r["warmup"] - 50) & (st <= r["warmup"])])
                peak = smooth[(st > r["warmup"]) & (st <= r["warmup"] + 50)].max()
                spike = f"{peak:.4f} ({peak / before:.1f}× the 50 steps before)"
            on = "-" if r["warmup"] is None else (
                f"{r['warmup'] / r['steps_per_epoch']:.1f}" if r["warmup"] < epochs * r["steps_per_epoch"] else "never")
            lines.append(f"| {key[0]} B={key[1]} | {r['strategy']} | {'-' if r['warmup'] is None else r['warmup']} | "
                         f"{on} | {curve[best]:.4f} ({best + 1}) | {curve[-1]:.4f} | {drift:.4f} | "
                         f"{drift / base:.2f}× | {spike} | {r['top10_median_train_count']:g} |")
    return "\n".join(lines)


# --- analysis (also used by --plot-only) ----------------------------------------------------


def series(run: dict, lag: int, kind: str = "total") -> tuple[np.ndarray, np.ndarray]:
    """(steps, D) where defined; kind: total, per_item (/ num_items), relative (/ mean norm too)."""
    step, d, norm = np.array(run["step"]), run[f"D{lag}"], np.array(run["mean_norm"])
    ok = np.array([x is not None for x in d])
    value = np.array([x for x in d if x is not None], float)
    if kind in ("per_item", "relative"):
        value = value / run["num_items"]
    if kind == "relative":
        value = value / norm[ok]
    return step[ok], value


def trailing_median(x: np.ndarray, window: int) -> np.ndarray:
    return np.array([np.median(x[max(0, i - window + 1):i + 1]) for i in range(len(x))])


def summarise(run: dict) -> dict:
    """Numbers the README quotes: per-item drift at chosen steps, where it flattens, recall."""
    spe = run["steps_per_epoch"]
    s = {"label": f"{run['tower']} B={run['batch_size']}", "steps": run["step"][-1], "steps_per_epoch": spe}
    step, d1 = series(run, 1, "per_item")
    smooth = trailing_median(d1, SMOOTH)
    plateau = float(np.median(d1[step > step[-1] - spe]))
    s["plateau_D1_per_item"] = plateau
    s["peak_D1_per_item"] = float(d1.max())
    s["peak_step"] = int(step[d1.argmax()])
    above = np.flatnonzero(smooth > FLAT * plateau)
    s["flat_step"] = int(step[above[-1] + 1]) if len(above) and above[-1] + 1 < len(step) else int(step[0])
    half = np.flatnonzero(smooth <= 0.5 * smooth.max())
    s["half_step"] = int(step[half[half > smooth.argmax()][0]]) if (half > smooth.argmax()).any() else None
    for lag in LAGS:
        st, d = series(run, lag, "per_item")
        s[f"D{lag}_per_item"] = {int(t): float(np.median(d[(st > t - 5) & (st <= t + 5)]))
                                for t in (10, 50, 100, 200, 400) if t <= st[-1]}
        s[f"D{lag}_per_item"]["last_epoch"] = float(np.median(d[st > st[-1] - spe]))
    s["mean_norm_last"] = run["mean_norm"][-1]
    raw_norm, raw_rel = np.array(run["raw_mean_norm"]), np.array(run["raw_D1"]) / run["num_items"]
    raw_rel = raw_rel / raw_norm
    s["raw"] = {t: (float(raw_norm[step == t][0]), float(np.median(raw_rel[(step > t - 5) & (step <= t + 5)])))
                for t in (10, 50, 100, 200, 400) if t <= step[-1]}
    s["raw"]["last_epoch"] = (float(raw_norm[-1]), float(np.median(raw_rel[step > step[-1] - spe])))
    rec = {r["step"]: r["val_recall@10"] for r in run["val_recall@10"]}
    s["val_recall@10"] = rec
    best = max(rec.values())
    s["best_val_recall@10"] = best
    s["best_recall_step"] = max(rec, key=rec.get)
    s["recall_at_warmup"] = rec.get(WARMUP)
    s["first_step_recall_90pct_of_best"] = min(t for t, v in rec.items() if v >= 0.9 * best)
    return s


def tables(runs: list[dict]) -> str:
    """Markdown tables for the README."""
    sums = [summarise(r) for r in runs]
    lines = ["| run | steps (epochs) | peak D(t;1)/item (step) | half of peak at | flat (≤1.5× last-epoch) from | "
             "last-epoch D(t;1)/item | D(200;1)/item | D(200;10)/item | last-epoch D(t;10)/item |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s, r in zip(sums, runs):
        lines.append(
            f"| {s['label']} | {s['steps']} ({r['epochs']}) | {s['peak_D1_per_item']:.4f} ({s['peak_step']}) | "
            f"{s['half_step']} | {s['flat_step']} | {s['plateau_D1_per_item']:.4f} | "
            f"{s['D1_per_item'].get(200, float('nan')):.4f} | {s['D10_per_item'].get(200, float('nan')):.4f} | "
            f"{s['D10_per_item']['last_epoch']:.4f} |")
    lines += ["", "Per-item drift (median over steps t−4..t+5), Δt = 1 / 5 / 10:", "",
              "| run | t=10 | t=50 | t=100 | t=200 | t=400 | last epoch |", "|---|---|---|---|---|---|---|"]
    for s in sums:
        cells = []
        for t in (10, 50, 100, 200, 400, "last_epoch"):
            if t in s["D1_per_item"]:
                cells.append(" / ".join(f"{s[f'D{lag}_per_item'][t]:.3f}" for lag in LAGS))
            else:
                cells.append("-")
        lines.append(f"| {s['label']} | " + " | ".join(cells) + " |")
    lines += ["", "Before the L2 normalisation: mean output norm, and per-step drift per item relative to it "
              "(raw D(t;1) / items / mean norm):", "",
              "| run | t=10 | t=50 | t=100 | t=200 | t=400 | last epoch (norm at the last step) |",
              "|---|---|---|---|---|---|---|"]
    for s in sums:
        lines.append(f"| {s['label']} | " + " | ".join(
            f"{s['raw'][t][0]:.2f}, {s['raw'][t][1]:.4f}" if t in s["raw"] else "-"
            for t in (10, 50, 100, 200, 400, "last_epoch")) + " |")
    steps = sorted({t for s in sums for t in s["val_recall@10"]})
    lines += ["", "Val recall@10 during training:", "",
              "| step | " + " | ".join(s["label"] for s in sums) + " |", "|---|" + "---|" * len(sums)]
    for t in steps:
        lines.append(f"| {t} | " + " | ".join(f"{s['val_recall@10'][t]:.4f}" if t in s["val_recall@10"] else ""
                                            for s in sums) + " |")
    lines += ["", "| run | best val recall@10 (step) | recall at step 200 | first step ≥ 90% of best | s |",
              "|---|---|---|---|---|"]
    for s, r in zip(sums, runs):
        at = f"{s['recall_at_warmup']:.4f}" if s["recall_at_warmup"] is not None else "-"
        lines.append(f"| {s['label']} | {s['best_val_recall@10']:.4f} ({s['best_recall_step']}) | {at} | "
                     f"{s['first_step_recall_90pct_of_best']} | {r['seconds']} |")
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(runs) // 2, figsize=(6 * len(runs) // 2, 8.5), squeeze=False)
    colours = {1: "tab:blue", 5: "tab:orange", 10: "tab:green"}
    for ax, run in zip(axes.T.ravel(), runs):
        for lag in LAGS:
            st, d = series(run, lag)
            ax.plot(st, d, color=colours[lag], alpha=0.25, lw=0.6)
            ax.plot(st, trailing_median(d, SMOOTH), color=colours[lag], lw=1.6, label=f"Δt = {lag}")
        ax.axvline(WARMUP, color="k", ls="--", lw=1, label=f"default warm-up ({WARMUP} steps)")
        for e in range(1, run["epochs"]):
            ax.axvline(e * run["steps_per_epoch"], color="0.85", lw=0.6, zorder=0)
        ax.set_yscale("log")
        ax.set_title(f"{run['tower']} candidate tower, batch {run['batch_size']}")
        ax.set_xlabel("training step t (grey lines: epochs)")
        ax.set_ylabel(f"D(t; Δt) over {run['num_items']} items")
        sec = ax.secondary_yaxis("right", functions=(lambda y, n=run["num_items"]: y / n,
                                                     lambda y, n=run["num_items"]: y * n))
        sec.set_ylabel("per item (unit-norm embeddings)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    fig.suptitle("Candidate-tower feature drift on MovieLens-100K (in-batch, τ 0.05, Adam 0.01); "
                 f"faint: per step, bold: trailing median of {SMOOTH} steps")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cbns(cbns: list[dict], runs: list[dict], baseline: float, path: Path) -> None:
    """Per-step drift and val recall of CBNS runs beside in-batch, one column per tower and batch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(dict.fromkeys((r["tower"], r["batch_size"]) for r in cbns))
    in_batch = {(r["tower"], r["batch_size"]): r for r in runs}
    fig, axes = plt.subplots(2, len(keys), figsize=(4.6 * len(keys), 7.5), squeeze=False)
    colours = {0: "tab:red", WARMUP: "tab:purple", 800: "tab:olive"}
    for col, key in enumerate(keys):
        group = [r for r in cbns if (r["tower"], r["batch_size"]) == key]
        steps = group[0]["epochs"] * group[0]["steps_per_epoch"]
        for r in [in_batch[key]] + group:
            fresh = "fresh" in r["strategy"]
            colour = "k" if r["warmup"] is None else "tab:cyan" if fresh else colours.get(r["warmup"])
            label = "in-batch" if r["warmup"] is None else f"CBNS{' fresh bank' if fresh else ''}, warm-up {r['warmup']}"
            st, d = series(r, 1, "per_item")
            keep = st <= steps
            axes[0, col].plot(st[keep], trailing_median(d, SMOOTH)[keep], color=colour, lw=1.3, label=label)
            rec = [x for x in r["val_recall@10"] if x["step"] <= steps]
            axes[1, col].plot([x["step"] for x in rec], [x["val_recall@10"] for x in rec], ".-", color=colour,
                              lw=1, ms=3, label=label)
            if r["warmup"]:
                for ax in axes[:, col]:
                    ax.axvline(r["warmup"], color=colour, ls=":", lw=1)
        axes[1, col].axhline(baseline, color="0.5", ls="--", lw=1, label="MostPopular")
        axes[0, col].set_yscale("log")
        axes[0, col].set_title(f"{key[0]} candidate tower, batch {key[1]}")
        axes[0, col].set_ylabel(f"D(t; 1) per item (median of {SMOOTH} steps)")
        axes[1, col].set_ylabel("val recall@10")
        for ax in axes[:, col]:
            ax.set_xlabel("training step (dotted: end of warm-up)")
            ax.grid(True, which="both", alpha=0.3)
        axes[1, col].legend(fontsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"CBNS (bank M = {cbns[0]['memory_size']}) vs in-batch: per-step drift and val recall@10")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the in-batch drift runs")
    parser.add_argument("--cbns-epochs", type=int, default=5, help="epochs of each CBNS run; 0 skips them")
    parser.add_argument("--plot-only", action="store_true", help="redraw and re-tabulate results.json")
    args = parser.parse_args()
    results = HERE / "results.json"
    if args.plot_only:
        doc = json.loads(results.read_text())
        runs, cbns, baseline = doc["runs"], doc["cbns"], doc["most_popular_val_recall@10"]
    else:
        if 0 < args.cbns_epochs > args.epochs:
            parser.error("--cbns-epochs must not exceed --epochs (CBNS runs are compared at equal epochs)")
        splits = SplitKeeper()  # every run's towers read the same split
        split = splits.split_for(make_config("id", BATCHES[0], args.epochs))
        baseline = most_popular(split, "val", [10])["recall@10"]
        runs, cbns = [], []

        def save():
            results.write_text(json.dumps({"lags": LAGS, "warmup_default": WARMUP,
                                           "most_popular_val_recall@10": baseline, "runs": runs, "cbns": cbns}))

        for tower in TOWERS:
            for batch in BATCHES:
                print(f"in-batch: {tower} tower, batch {batch}, {args.epochs} epochs ...", flush=True)
                runs.append(train_one(splits, tower, batch, args.epochs))
                s = summarise(runs[-1])
                print(f"  {runs[-1]['seconds']} s; flat from step {s['flat_step']}, "
                      f"best val recall@10 {s['best_val_recall@10']:.4f}", flush=True)
                save()
        for tower, batch, warmup, fresh in CBNS_RUNS if args.cbns_epochs else []:
            print(f"CBNS{' (fresh bank)' if fresh else ''}: {tower} tower, batch {batch}, warm-up {warmup}, "
                  f"{args.cbns_epochs} epochs ...", flush=True)
            cbns.append(train_one(splits, tower, batch, args.cbns_epochs, warmup, fresh))
            curve = epoch_recall(cbns[-1], args.cbns_epochs)
            print(f"  {cbns[-1]['seconds']} s; val recall@10 best {max(curve):.4f}, last {curve[-1]:.4f}", flush=True)
            save()
    plot(runs, HERE / "drift.png")
    print(tables(runs))
    print(f"\nMostPopular val recall@10 on the same split: {baseline:.4f}")
    if cbns:
        plot_cbns(cbns, runs, baseline, HERE / "drift_cbns.png")
        print("\nCBNS beside in-batch after the same number of epochs:\n")
        print(cbns_table(cbns, runs))
    print(f"wrote {HERE / 'drift.png'}" + (f" and {HERE / 'drift_cbns.png'}" if cbns else ""))


if __name__ == "__main__":
    main()
