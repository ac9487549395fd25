"""Negative sampling at small batch sizes on MovieLens-100K: in-batch vs mixed negative sampling
(MNS, B' corpus-uniform negatives per batch) vs cross-batch negative sampling (CBNS, a FIFO bank
of M recent candidate embeddings), at equal epochs.

    python experiments/negatives/run.py              # train everything, then tables and plots
    python experiments/negatives/run.py --plot-only  # tables and plots from results.json

Every run goes through `tuner.train.run` (the code path of `tuner train` and of search trials):
normalised towers, dim 32, Adam 0.01, logQ counts, τ from the temperature experiment. The
split (random, seed 42) is fixed; the config `seed` (initialisation, shuffling, MNS draws)
varies. Validation is evaluated only after training, so the "train_s" timing is the fit alone
(including graph tracing). Results are saved after every run; a rerun skips the runs
results.json already has.
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
BATCHES = [64, 128, 512]
EPOCHS = 4
TEMPERATURE = 0.2  # see experiments/temperature: 0.2-0.5 is best with logQ counts at batch 1024
SEEDS = [1, 2, 3]  # see grid(): only REPEATED strategies get seeds 2 and 3
# (label, negatives section as a function of the batch size B)
STRATEGIES = [
    ("in_batch", lambda b: {"strategy": "in_batch"}),
    ("mns B'=B", lambda b: {"strategy": "mns", "mns_batch_size": b}),
    ("mns B'=4B", lambda b: {"strategy": "mns", "mns_batch_size": 4 * b}),
    ("cbns M=4B w=0", lambda b: {"strategy": "cbns", "cbns_memory_size": 4 * b, "cbns_warmup_steps": 0}),
    ("cbns M=4B w=200", lambda b: {"strategy": "cbns", "cbns_memory_size": 4 * b, "cbns_warmup_steps": 200}),
    ("cbns M=16B w=0", lambda b: {"strategy": "cbns", "cbns_memory_size": 16 * b, "cbns_warmup_steps": 0}),
    ("cbns M=16B w=200", lambda b: {"strategy": "cbns", "cbns_memory_size": 16 * b, "cbns_warmup_steps": 200}),
]
NEGATIVES = dict(STRATEGIES)
REPEATED = ("in_batch", "mns B'=B")  # run with every seed; the others with the first seed only
METRICS = ["recall@10", "ndcg@10", "recall@100"]
DIAGNOSE_BATCH = 64


def config(label: str, batch: int, seed: int, epochs: int, temperature: float) -> dict:
    return {
        "seed": seed,
        "dataset": {"name": "movielens-100k"},
        "split": {"method": "random", "val_fraction": 0.1, "test_fraction": 0.2, "seed": 42},
        "model": {"embedding_dim": 32, "normalize": True},
        "retrieval": {"temperature": temperature, "logq": "counts"},
        "negatives": NEGATIVES[label](batch),
        "training": {"optimizer": "adam", "learning_rate": 0.01, "batch_size": batch, "epochs": epochs},
        "evaluation": {"ks": [10, 100], "monitor": "recall@10", "every_epoch": False},
    }


def grid(seeds: list[int]) -> list[dict]:
    """Every strategy with the first seed; the later seeds repeat only in_batch and MNS B'=B (the
    close pair, and the noise yardstick), which keeps the run lean. Seed outermost: the kept
    split is loaded again when the seed changes."""
    return [{"strategy": label, "batch": b, "seed": s} for i, s in enumerate(seeds) for b in BATCHES
            for label, _ in STRATEGIES if i == 0 or label in REPEATED]


def key(run: dict) -> str:
    return f"{run['strategy']} B={run['batch']} seed={run['seed']}"


def train_all(epochs: int, seeds: list[int], temperature: float, path: Path) -> dict:
    import tensorflow as tf
    from tuner.config import from_dict
    from tuner.train import SplitKeeper, TrainingDiverged, run

    doc = json.loads(path.read_text()) if path.exists() else {}
    if (doc.get("epochs"), doc.get("temperature")) != (epochs, temperature):
        doc = {"epochs": epochs, "temperature": temperature, "runs": []}
    doc["machine"] = f"{platform.machine()}, TensorFlow {tf.__version__} CPU"
    done = {key(r) for r in doc["runs"]}
    todo = [r for r in grid(seeds) if key(r) not in done]
    started = time.perf_counter()
    splits = SplitKeeper()
    for i, spec in enumerate(todo, 1):
        tf.keras.backend.clear_session()
        cfg = from_dict(config(spec["strategy"], spec["batch"], spec["seed"], epochs, temperature),
                        "experiments/negatives/run.py")
        try:
            result = run(cfg, splits.split_for(cfg), log=lambda message: None)
            row = {**spec, "status": "ok", "val": result["val"], "test": result["test"],
                   "loss": result["epochs"][-1]["loss"], "train_s": result["timings"]["train_s"],
                   "epoch_s": [e["seconds"] for e in result["epochs"]]}
            doc["most_popular"] = result["most_popular"]
            doc["train_rows"] = len(splits.split_for(cfg).train)
            summary = (f"val recall@10 {row['val']['recall@10']:.4f}  test recall@10 {row['test']['recall@10']:.4f}  "
                       f"train {row['train_s']:.1f}s")
        except TrainingDiverged as exc:
            row = {**spec, "status": "diverged", "error": str(exc)}
            summary = f"DIVERGED: {exc}"
        doc["runs"].append(row)
        path.write_text(json.dumps(doc, indent=1))
        print(f"[{i}/{len(todo)}] {key(spec)}: {summary}  (total {(time.perf_counter() - started) / 60:.1f} min)",
              flush=True)
    return doc


def fresh_bank_model(keep_gradient: bool):
    """A CBNS model whose bank ids are re-encoded by the current candidate tower every step: no
    staleness; `keep_gradient` decides whether the bank negatives also push the candidate tower
    (the stored bank never does). Separates the two ways a bank differs from in-batch negatives."""
    import tensorflow as tf
    from tuner.model import retrieval

    class FreshBankModel(retrieval.TwoTowerModel):
        def bank(self):
            _, ids, log_q = super().bank()
            fresh = self.candidate_tower(ids, training=True)
            return (fresh if keep_gradient else tf.stop_gradient(fresh)), ids, log_q

    return FreshBankModel


def diagnose(doc: dict, epochs: int, temperature: float, path: Path) -> None:
    """Why CBNS trails here: popularity of its rankings, collapse of the item embeddings, how
    stale the bank is (cosine between a bank row and the same item's current embedding), and
    the two fresh-bank variants above."""
    import importlib.util

    import tensorflow as tf
    from tuner.config import from_dict
    from tuner.model import TwoTowerModel
    from tuner.train import SplitKeeper, build_model_for, run

    spec = importlib.util.spec_from_file_location("temperature_run", HERE.parent / "temperature" / "run.py")
    temperature_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(temperature_run)  # its popular_share: one definition for both experiments
    variants = [("in_batch", "in_batch", None), ("cbns M=4B w=0", "cbns M=4B w=0", None),
                ("cbns M=16B w=0", "cbns M=16B w=0", None),
                ("cbns M=4B w=0, fresh bank, no gradient", "cbns M=4B w=0", fresh_bank_model(False)),
                ("cbns M=4B w=0, fresh bank, with gradient", "cbns M=4B w=0", fresh_bank_model(True))]
    doc["diagnostics"] = []
    splits = SplitKeeper()
    for name, label, model_cls in variants:
        tf.keras.backend.clear_session()
        cfg = from_dict(config(label, DIAGNOSE_BATCH, 1, epochs, temperature), "experiments/negatives/run.py")
        split = splits.split_for(cfg)
        model = build_model_for(cfg, split, model_cls=model_cls or TwoTowerModel)
        result = run(cfg, split, log=lambda message: None, model=model)
        items = model.candidate_tower(tf.range(1, split.dataset.num_items + 1), training=False).numpy()
        n = len(items)
        row = {"strategy": name, "batch": DIAGNOSE_BATCH, "seed": 1, "val_recall@10": result["val"]["recall@10"],
               "test_recall@10": result["test"]["recall@10"], "train_s": result["timings"]["train_s"],
               "popular_share@10": temperature_run.popular_share(model, split),
               "item_mean_cosine": float((np.square(items.sum(0)).sum() - n) / (n * (n - 1)))}
        if model_cls is None and label.startswith("cbns"):
            bank, ids = model.cbns_bank.embeddings.numpy(), model.cbns_bank.ids.numpy()
            now = model.candidate_tower(tf.constant(ids), training=False).numpy()
            row["bank_cosine_to_current"] = float(np.mean(np.sum(bank * now, axis=1)))
        doc["diagnostics"].append(row)
        print(f"diagnostic {name} B={DIAGNOSE_BATCH}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float)), flush=True)
    path.write_text(json.dumps(doc, indent=1))


# --- aggregation, tables, plots -------------------------------------------------------------


def steady_epoch_s(run: dict, train_rows: int) -> float:
    """Fastest epoch after the first (graph tracing) and after any CBNS warm-up epoch: on a shared
    machine the minimum is the least disturbed estimate of an epoch's own cost."""
    warmup = NEGATIVES[run["strategy"]](run["batch"]).get("cbns_warmup_steps", 0)
    first = max(1, math.ceil(warmup / math.ceil(train_rows / run["batch"])))
    return min(run["epoch_s"][first:])


def aggregate(doc: dict) -> dict:
    """{(strategy, batch): {"n": ok runs, "diverged": n, "<part>_<metric>": (mean, std), "train_s": (mean, std)}}."""
    groups: dict[tuple, list[dict]] = {}
    for r in doc["runs"]:
        groups.setdefault((r["strategy"], r["batch"]), []).append(r)
    out = {}
    for k, rows in groups.items():
        ok = [r for r in rows if r["status"] == "ok"]
        entry = {"n": len(ok), "diverged": len(rows) - len(ok)}
        series = {f"{part}_{m}": [r[part][m] for r in ok] for part in ("val", "test") for m in METRICS}
        series["train_s"] = [r["train_s"] for r in ok]
        series["steady_epoch_s"] = [steady_epoch_s(r, doc["train_rows"]) for r in ok]
        for name, values in series.items():
            v = np.array(values, dtype=float)
            entry[name] = ((float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)
                           if len(v) else (math.nan, math.nan))
        out[k] = entry
    return out


def fmt(pair, digits: int = 4) -> str:
    mean, std = pair
    if math.isnan(mean):
        return "diverged"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std else f"{mean:.{digits}f}"


def tables(doc: dict) -> str:
    agg = aggregate(doc)
    order = [label for label, _ in STRATEGIES]
    cols = [f"{part} {m}" for part in ("val", "test") for m in METRICS]
    lines = ["| B | strategy | n | " + " | ".join(cols) + " | train s | steady epoch s | vs in_batch (test recall@10) |",
             "|---|---|---|" + "---|" * (len(cols) + 3)]
    for b in BATCHES:
        base = agg.get(("in_batch", b), {}).get("test_recall@10", (math.nan, 0))[0]
        for label in order:
            e = agg.get((label, b))
            if e is None:
                continue
            n = f"{e['n']}" + (f" (+{e['diverged']} diverged)" if e["diverged"] else "")
            cells = [fmt(e[f"{part}_{m}"]) for part in ("val", "test") for m in METRICS]
            gain = e["test_recall@10"][0] - base
            lines.append(f"| {b} | {label} | {n} | " + " | ".join(cells) + f" | {fmt(e['train_s'], 1)} | {fmt(e['steady_epoch_s'], 2)} | "
                         + ("" if label == "in_batch" else f"{gain:+.4f} ({gain / base * 100:+.0f}%)") + " |")
    mp = doc["most_popular"]
    lines.append("| | MostPopular | | " + " | ".join(f"{mp[part][m]:.4f}" for part in ("val", "test") for m in METRICS)
                 + " | | | |")
    return "\n".join(lines)


def diagnostics(doc: dict) -> str:
    rows = doc.get("diagnostics", [])
    if not rows:
        return ""
    lines = [f"\n| strategy (B={rows[0]['batch']}, seed 1) | val recall@10 | test recall@10 | train s | "
             "top-10 popular share | mean item-item cosine | bank row vs current embedding (cosine) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        bank = f"{r['bank_cosine_to_current']:.4f}" if "bank_cosine_to_current" in r else ""
        lines.append(f"| {r['strategy']} | {r['val_recall@10']:.4f} | {r['test_recall@10']:.4f} | {r['train_s']:.1f} | "
                     f"{r['popular_share@10']:.4f} | {r['item_mean_cosine']:.4f} | {bank} |")
    return "\n".join(lines)


def noise(doc: dict) -> str:
    """Seed-to-seed spread of one configuration: the yardstick for single-seed differences."""
    agg = aggregate(doc)
    stds = {m: [e[f"test_{m}"][1] for e in agg.values() if e["n"] > 1] for m in ("recall@10", "ndcg@10")}
    if not stds["recall@10"]:
        return "\n(one seed per configuration: no noise estimate)"
    return (f"\nseed-to-seed std (sample, over {len(stds['recall@10'])} configurations with >1 seed): "
            + ", ".join(f"test {m} median {np.median(v):.4f}, max {np.max(v):.4f}" for m, v in stds.items()))


def plot(doc: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(doc)
    styles = {label: (color, marker) for (label, _), color, marker in zip(
        STRATEGIES, ["black", "tab:blue", "tab:cyan", "tab:red", "tab:orange", "tab:purple", "tab:pink"],
        ["o", "s", "s", "^", "v", "D", "d"])}
    panels = [("val", "recall@10"), ("test", "recall@10"), ("test", "ndcg@10"), ("test", "recall@100")]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    for ax, (part, m) in zip(axes.flat, panels):
        for i, (label, _) in enumerate(STRATEGIES):
            bs = [b for b in BATCHES if (label, b) in agg and agg[(label, b)]["n"]]
            mean = [agg[(label, b)][f"{part}_{m}"][0] for b in bs]
            std = [agg[(label, b)][f"{part}_{m}"][1] for b in bs]
            x = [b * (1 + 0.015 * (i - 3)) for b in bs]  # a small offset keeps error bars apart
            color, marker = styles[label]
            ax.errorbar(x, mean, yerr=std, color=color, marker=marker, capsize=3, lw=1.5 if label == "in_batch" else 1,
                        ls="-" if label == "in_batch" else "--", label=label)
        ax.axhline(doc["most_popular"][part][m], color="gray", ls=":", label="MostPopular")
        ax.set_xscale("log", base=2)
        ax.set_xticks(BATCHES, [str(b) for b in BATCHES])
        ax.set_title(f"{part} {m}")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("batch size B")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"MovieLens-100K, normalised, τ={doc['temperature']:g}, logQ counts, Adam 0.01, "
                 f"{doc['epochs']} epochs (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(HERE / "negatives.png", dpi=110)

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for label, _ in STRATEGIES:
        color, marker = styles[label]
        for b in BATCHES:
            e = agg.get((label, b))
            if not e or not e["n"]:
                continue
            ax.errorbar(e["train_s"][0], e["test_recall@10"][0], xerr=e["train_s"][1], yerr=e["test_recall@10"][1],
                        color=color, marker=marker, ms=4 + 2 * BATCHES.index(b), capsize=2,
                        label=label if b == BATCHES[0] else None)
            ax.annotate(str(b), (e["train_s"][0], e["test_recall@10"][0]), fontsize=7,
                        textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel(f"training wall time, seconds ({doc['epochs']} epochs; shared 2-core CPU)")
    ax.set_ylabel("test recall@10")
    ax.set_title("test recall@10 vs training time (marker size and label: batch size)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "negatives_time.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot-only", action="store_true", help="tables and plots from results.json; no training")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    parser.add_argument("--temperature", type=float, default=TEMPERATURE)
    args = parser.parse_args()
    # Another epoch count or τ gets its own file and no plots, so it cannot overwrite the main run.
    main_run = (args.epochs, args.temperature) == (EPOCHS, TEMPERATURE)
    path = RESULTS if main_run else HERE / f"results_{args.epochs}ep_t{args.temperature:g}.json"
    doc = json.loads(path.read_text()) if args.plot_only else train_all(args.epochs, args.seeds, args.temperature, path)
    if not args.plot_only and "diagnostics" not in doc:
        diagnose(doc, args.epochs, args.temperature, path)
    print(tables(doc))
    print(noise(doc))
    print(diagnostics(doc))
    if main_run:
        plot(doc)
        print(f"wrote {HERE / 'negatives.png'} and {HERE / 'negatives_time.png'}")


if __name__ == "__main__":
    main()
