"""Negative sampling against batch size: in-batch vs mixed negative sampling (MNS, B' corpus-uniform
negatives per batch) vs cross-batch negative sampling (CBNS, a FIFO bank of M recent candidate
embeddings; `balanced` and `paper` gradients), at equal epochs and at equal training time.

    python experiments/negatives/run.py --step-cost                      # MovieLens-100K
    python experiments/negatives/run.py --corpus synthetic --step-cost   # 100,000 items, 2M interactions
    python experiments/negatives/run.py [--corpus synthetic] --plot-only # tables and plots only

Every run goes through `tuner.train.run` (the code path of `tuner train` and of search trials):
normalised towers, dim 32, logQ counts, τ from the temperature experiment. The split (random
70/10/20, seed 42) is fixed; the config `seed` (initialisation, shuffling, MNS draws; on the
synthetic corpus also the generated data) varies. Val is evaluated after every epoch (the
learning curves the equal-time view reads); "fit_s" sums the epochs' own wall seconds, without
those evaluations. Equal time is counted in CPU seconds: steps × the CPU ms per step of a
separate timing pass (`--step-cost`), because wall time on a shared machine swings with the
other jobs. Results are saved after every run; a rerun skips the runs its results file has.
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
TEMPERATURE = 0.2  # see experiments/temperature: 0.2-0.5 is best with logQ counts at batch 1024
# Bank rows are at most M/B steps old, so staleness is a matter of steps, not epochs: the first
# steps, where the optimizer moves the random initial embeddings most, are kept in-batch at every B.
WARMUP = 100


def cbns(memory: int, gradient: str):
    return lambda b: {"strategy": "cbns", "cbns_memory_size": memory * b, "cbns_warmup_steps": WARMUP,
                      "cbns_gradient": gradient}


# (label, negatives section as a function of the batch size B)
STRATEGIES = [
    ("in_batch", lambda b: {"strategy": "in_batch"}),
    ("mns B'=B", lambda b: {"strategy": "mns", "mns_batch_size": b}),
    ("mns B'=4B", lambda b: {"strategy": "mns", "mns_batch_size": 4 * b}),
    ("cbns balanced M=4B", cbns(4, "balanced")),
    ("cbns balanced M=16B", cbns(16, "balanced")),
    ("cbns paper M=4B", cbns(4, "paper")),
    ("cbns paper M=16B", cbns(16, "paper")),
]
NEGATIVES = dict(STRATEGIES)
METRICS = ["recall@10", "ndcg@10", "recall@100"]
COSTS = HERE / "step_cost.json"  # {corpus: {"<strategy> B=<b>": {"cpu_ms": .., "wall_ms": ..}}}
EVAL_USERS = 5000  # synthetic: val and test metrics on a seeded sample of this many users each
CORPORA = {
    "movielens": {
        "dataset": {"name": "movielens-100k"},
        "batches": [64, 128, 256, 512], "epochs": 4, "seeds": [1, 2, 3],
        "optimizer": {"optimizer": "adam", "learning_rate": 0.01},
        "strategies": [label for label, _ in STRATEGIES],
        "repeated": ("in_batch", "cbns balanced M=16B"),  # the noise yardstick: every seed
        "results": HERE / "results.json", "plots": ("negatives.png", "negatives_time.png", "negatives_curves.png"),
    },
    "synthetic": {
        "dataset": {"name": "synthetic", "num_users": 50_000, "num_items": 100_000, "num_interactions": 2_000_000,
                    "num_clusters": 20, "popularity_exponent": 1.0},
        "batches": [128, 512], "epochs": 3, "seeds": [1, 2],
        # Adam updates every row of its moment tables each step: 40 ms of CPU per step for the
        # 150,000 id rows here, against 3 ms for Adagrad's sparse update (B = 512, in_batch).
        # 0.05 was the best of 0.02, 0.05, 0.1, 0.3 (in_batch, B = 512, 1 epoch, val recall@10).
        "optimizer": {"optimizer": "adagrad", "learning_rate": 0.05},
        "strategies": ["in_batch", "mns B'=B", "cbns balanced M=16B", "cbns paper M=16B"],
        "repeated": ("in_batch",), "data_seeds": True,
        "results": HERE / "results_synthetic.json",
        "plots": ("synthetic.png", "synthetic_time.png", "synthetic_curves.png"),
    },
}


def config(corpus: str, label: str, batch: int, seed: int, epochs: int) -> dict:
    return {
        "seed": seed,
        "dataset": CORPORA[corpus]["dataset"],
        "split": {"method": "random", "val_fraction": 0.1, "test_fraction": 0.2, "seed": 42},
        "model": {"embedding_dim": 32, "normalize": True},
        "retrieval": {"temperature": TEMPERATURE, "logq": "counts"},
        "negatives": NEGATIVES[label](batch),
        "training": {**CORPORA[corpus]["optimizer"], "batch_size": batch, "epochs": epochs},
        # 64 MiB chunks: the shared machine had 1-2 GiB free, and tuner's memory check plans for them
        "evaluation": {"ks": [10, 100], "monitor": "recall@10", "every_epoch": True, "memory_mb": 64},
    }


def grid(corpus: str, seeds: list[int]) -> list[dict]:
    """Every strategy with the first seed; later seeds repeat only the corpus's `repeated`
    strategies (the noise yardstick), which keeps the run lean. Seed outermost: the kept split
    is loaded again when the seed changes."""
    c = CORPORA[corpus]
    return [{"strategy": label, "batch": b, "seed": s} for i, s in enumerate(seeds) for b in c["batches"]
            for label in c["strategies"] if i == 0 or label in c["repeated"]]


def key(run: dict) -> str:
    return f"{run['strategy']} B={run['batch']} seed={run['seed']}"


def columns(label: str, batch: int) -> int:
    """Score columns per query (B plus the extra negatives): at dim 32 a step's cost grows with
    the B × columns score block, a load-independent measure of what a strategy asks per step."""
    n = NEGATIVES[label](batch)
    return batch + {"in_batch": 0, "mns": n.get("mns_batch_size", 0), "cbns": n.get("cbns_memory_size", 0)}[n["strategy"]]


def evaluation_split(split, corpus: str):
    """The split with val and test cut to EVAL_USERS sampled users each on the synthetic corpus
    (a full ranking over 100,000 items for ~45,000 users per part would outlast the training);
    MovieLens keeps every user. Training data is untouched."""
    if corpus == "movielens":
        return split
    from tuner.heldout import only_users, sample_users

    for part in ("val", "test"):
        split = only_users(split, part, sample_users(split, part, EVAL_USERS, 42))
    return split


def train_all(corpus: str, epochs: int, seeds: list[int], path: Path) -> dict:
    import tensorflow as tf
    from tuner import train
    from tuner.config import from_dict

    if corpus == "synthetic":
        # EASE is skipped above 20,000 items; ALS's 24-setting grid on 1.4M rows would cost more
        # than the runs it stands beside. MostPopular stays the reference.
        train.baselines_for = lambda cfg, split, log=None: {}
    doc = json.loads(path.read_text()) if path.exists() else {}
    if [doc.get(k) for k in ("corpus", "epochs", "temperature", "warmup_steps")] != [corpus, epochs, TEMPERATURE, WARMUP]:
        doc = {"corpus": corpus, "epochs": epochs, "temperature": TEMPERATURE, "warmup_steps": WARMUP, "runs": []}
    doc["machine"] = f"{platform.machine()}, TensorFlow {tf.__version__} CPU"
    done = {key(r) for r in doc["runs"]}
    todo = [r for r in grid(corpus, seeds) if key(r) not in done]
    started = time.perf_counter()
    splits, cut = train.SplitKeeper(), {}
    progress = (lambda message: print(f"  {message}", flush=True)) if corpus == "synthetic" else (lambda message: None)
    for i, spec in enumerate(todo, 1):
        tf.keras.backend.clear_session()
        cfg = from_dict(config(corpus, spec["strategy"], spec["batch"], spec["seed"], epochs),
                        "experiments/negatives/run.py")
        split = splits.split_for(cfg)
        if id(split) not in cut:
            cut = {id(split): evaluation_split(split, corpus)}
        split = cut[id(split)]
        try:
            model = train.build_model_for(cfg, split)
            result = train.run(cfg, split, log=progress, model=model)
            row = {**spec, "status": "ok", "val": result["val"], "test": result["test"],
                   "loss": result["epochs"][-1]["loss"], "train_s": result["timings"]["train_s"],
                   "epoch_s": [e["seconds"] for e in result["epochs"]],
                   "val_curve": [e["val"]["recall@10"] for e in result["epochs"]],
                   "item_mean_cosine": item_mean_cosine(model, split.dataset.num_items)}
            row["fit_s"] = round(sum(row["epoch_s"]), 3)
            doc["most_popular"] = result["most_popular"]
            doc["baselines"] = {k: v for k, v in result["baselines"].items() if "skipped" not in v}
            doc["train_rows"] = len(split.train)
            doc["eval_users"] = {part: int(len(np.unique(getattr(split, part).user))) for part in ("val", "test")}
            summary = (f"val recall@10 {row['val']['recall@10']:.4f}  test recall@10 {row['test']['recall@10']:.4f}  "
                       f"fit {row['fit_s']:.1f}s  epochs {row['epoch_s']}")
        except train.TrainingDiverged as exc:
            row = {**spec, "status": "diverged", "error": str(exc)}
            summary = f"DIVERGED: {exc}"
        doc["runs"].append(row)
        path.write_text(json.dumps(doc, indent=1))
        print(f"[{i}/{len(todo)}] {key(spec)}: {summary}  (total {(time.perf_counter() - started) / 60:.1f} min)",
              flush=True)
    return doc


def item_mean_cosine(model, num_items: int) -> float:
    """Mean cosine between two distinct item embeddings (0 = spread, 1 = all alike): how far the
    item tower has bunched, the symptom of the paper-form CBNS gradient."""
    import tensorflow as tf

    items = model.candidate_tower(tf.range(1, num_items + 1), training=False).numpy().astype(np.float64)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    n = len(items)
    return float((np.square(items.sum(0)).sum() - n) / (n * (n - 1)))


# --- aggregation, tables, plots -------------------------------------------------------------


def aggregate(doc: dict) -> dict:
    """{(strategy, batch): {"n": ok runs, "diverged": n, "<part>_<metric>": (mean, std), "fit_s": .., "curve": ..}}."""
    groups: dict[tuple, list[dict]] = {}
    for r in doc["runs"]:
        groups.setdefault((row_label(doc, r), r["batch"]), []).append(r)
    out = {}
    for k, rows in groups.items():
        ok = [r for r in rows if r["status"] == "ok"]
        entry = {"n": len(ok), "diverged": len(rows) - len(ok)}
        series = {f"{part}_{m}": [r[part][m] for r in ok] for part in ("val", "test") for m in METRICS}
        series["fit_s"] = [r["fit_s"] for r in ok]
        series["item_mean_cosine"] = [r["item_mean_cosine"] for r in ok]
        for name, values in series.items():
            v = np.array(values, dtype=float)
            entry[name] = ((float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)
                           if len(v) else (math.nan, math.nan))
        entry["curve"] = np.mean([r["val_curve"] for r in ok], axis=0).tolist() if ok else []
        out[k] = entry
    return out


def fmt(pair, digits: int = 4) -> str:
    mean, std = pair
    if math.isnan(mean):
        return "diverged"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std else f"{mean:.{digits}f}"


def order(doc: dict) -> list[str]:
    """Table rows: the strategies, then (synthetic) in_batch on each further data seed."""
    c = CORPORA[doc["corpus"]]
    return c["strategies"] + [f"in_batch, data seed {s}" for s in c["seeds"][1:] if c.get("data_seeds")]


def row_label(doc: dict, run: dict) -> str:
    """On the synthetic corpus the config seed also generates the data: a later seed is another
    corpus, shown on its own row, not averaged into the seed-1 runs the strategies compare with."""
    c = CORPORA[doc["corpus"]]
    if c.get("data_seeds") and run["seed"] != c["seeds"][0]:
        return f"{run['strategy']}, data seed {run['seed']}"
    return run["strategy"]


def tables(doc: dict) -> str:
    agg = aggregate(doc)
    cols = [f"{part} {m}" for part in ("val", "test") for m in METRICS]
    lines = ["| B | strategy | n | " + " | ".join(cols) + " | fit s | columns per query | "
             "item cosine | vs in_batch (test recall@10) |",
             "|---|---|---|" + "---|" * (len(cols) + 4)]
    for b in CORPORA[doc["corpus"]]["batches"]:
        base = agg.get(("in_batch", b), {}).get("test_recall@10", (math.nan, 0))[0]
        for label in order(doc):
            e = agg.get((label, b))
            if e is None:
                continue
            n = f"{e['n']}" + (f" (+{e['diverged']} diverged)" if e["diverged"] else "")
            cells = [fmt(e[f"{part}_{m}"]) for part in ("val", "test") for m in METRICS]
            gain = e["test_recall@10"][0] - base
            lines.append(f"| {b} | {label} | {n} | " + " | ".join(cells) + f" | {fmt(e['fit_s'], 1)} | "
                         f"{columns(label.split(',')[0], b)} | {fmt(e['item_mean_cosine'], 3)} | "
                         + ("" if label.startswith("in_batch") else f"{gain:+.4f} ({gain / base * 100:+.0f}%)") + " |")
    references = {"MostPopular": doc["most_popular"], **{k.upper(): v for k, v in doc.get("baselines", {}).items()}}
    for name, ref in references.items():
        lines.append(f"| | {name} | | " + " | ".join(f"{ref[part][m]:.4f}" for part in ("val", "test") for m in METRICS)
                     + " | | | | |")
    return "\n".join(lines)


def cpu_seconds(doc: dict, costs: dict, label: str, batch: int, epochs: float) -> float:
    """Training cost of `epochs` epochs in CPU seconds: steps × the timed CPU ms per step."""
    return epochs * math.ceil(doc["train_rows"] / batch) * costs[f"{label} B={batch}"]["cpu_ms"] / 1000


def equal_time(doc: dict, costs: dict) -> str:
    """Val recall@10 each strategy reaches in the CPU time in_batch takes for all its epochs at
    the same B: with a step r times as costly, it completes E / r epochs in that time (E = the
    epoch budget), and its val recall@10 there is read from its learning curve (after-epoch
    values, linear in between; none below one epoch). Costs come from the step-timing pass
    (`--step-cost`), not from the loaded runs."""
    agg, epochs = aggregate(doc), doc["epochs"]
    lines = [f"| B | strategy | CPU ms per step | step cost vs in_batch | epochs in in_batch's {epochs}-epoch time | "
             "val recall@10 at equal time | in_batch val recall@10 | difference |", "|---|---|---|---|---|---|---|---|"]
    for b in CORPORA[doc["corpus"]]["batches"]:
        base = agg.get(("in_batch", b))
        if not base or f"in_batch B={b}" not in costs:
            continue
        base_ms = costs[f"in_batch B={b}"]["cpu_ms"]
        lines.append(f"| {b} | in_batch | {base_ms:.1f} | 1 | {epochs} | {base['curve'][-1]:.4f} | | |")
        for label in CORPORA[doc["corpus"]]["strategies"][1:]:
            e = agg.get((label, b))
            if not e or not e["n"] or f"{label} B={b}" not in costs:
                continue
            ms = costs[f"{label} B={b}"]["cpu_ms"]
            done = min(epochs, epochs * base_ms / ms)
            ok = done >= 1
            value = float(np.interp(done, np.arange(1, len(e["curve"]) + 1), e["curve"])) if ok else math.nan
            cell = f"{value:.4f}" if ok else "(not one epoch)"
            diff = f"{value - base['curve'][-1]:+.4f}" if ok else ""
            lines.append(f"| {b} | {label} | {ms:.1f} | {ms / base_ms:.2f}× | {done:.1f} | {cell} | {base['curve'][-1]:.4f} | {diff} |")
    return "\n".join(lines)


def step_costs(corpus: str, blocks: int = 3, steps: int = 30) -> dict:
    """CPU ms per training step of every (strategy, B) of the corpus: the fastest of `blocks`
    blocks of `steps` steps, in process CPU time (all threads, the input pipeline included),
    after 20 untimed steps (tracing; a CBNS bank of 16B rows is full after 16). CPU time is
    less disturbed by the other jobs of a shared machine than wall time (not immune: it grows
    with contention); wall ms are kept beside."""
    import tensorflow as tf
    from tuner import train
    from tuner.config import from_dict
    from tuner.data.pipeline import train_dataset

    c, out, splits = CORPORA[corpus], {}, train.SplitKeeper()
    for b in c["batches"]:
        for label in c["strategies"]:
            tf.keras.backend.clear_session()
            data = config(corpus, label, b, 1, 1)
            data["negatives"]["cbns_warmup_steps"] = 0
            cfg = from_dict(data, "experiments/negatives/run.py")
            split = splits.split_for(cfg)
            model = train.build_model_for(cfg, split)
            n = cfg.negatives
            stream = iter(train_dataset(split.train, b, 1, split.dataset.num_items,
                                        uniform_negatives=n.mns_batch_size if n.strategy == "mns" else 0).repeat())
            step = model.make_train_function()
            for _ in range(20):
                step(stream)
            cpu, wall = [], []
            for _ in range(blocks):
                c0, w0 = time.process_time(), time.perf_counter()
                for _ in range(steps):
                    step(stream)
                cpu.append((time.process_time() - c0) / steps * 1000)
                wall.append((time.perf_counter() - w0) / steps * 1000)
            out[f"{label} B={b}"] = {"cpu_ms": round(min(cpu), 3), "wall_ms": round(float(np.median(wall)), 3)}
            print(f"step cost {label} B={b}: {out[f'{label} B={b}']}", flush=True)
    return out


def noise(doc: dict) -> str:
    """Seed-to-seed spread of one configuration: the yardstick for single-seed differences."""
    agg = aggregate(doc)
    stds = {m: [e[f"test_{m}"][1] for e in agg.values() if e["n"] > 1] for m in ("recall@10", "ndcg@10")}
    if not stds["recall@10"]:
        return "\n(one seed per configuration: no noise estimate)"
    return (f"\nseed-to-seed std (sample, over {len(stds['recall@10'])} configurations with >1 seed): "
            + ", ".join(f"test {m} median {np.median(v):.4f}, max {np.max(v):.4f}" for m, v in stds.items()))


STYLES = {"in_batch": ("black", "o", "-"), "mns B'=B": ("tab:blue", "s", "--"), "mns B'=4B": ("tab:cyan", "s", "--"),
          "cbns balanced M=4B": ("tab:green", "^", "-"), "cbns balanced M=16B": ("tab:olive", "D", "-"),
          "cbns paper M=4B": ("tab:red", "v", ":"), "cbns paper M=16B": ("tab:pink", "d", ":")}


def plot(doc: dict, costs: dict) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    c = CORPORA[doc["corpus"]]
    agg, batches, name = aggregate(doc), c["batches"], c["dataset"]["name"]
    opt = c["optimizer"]
    title = (f"{name}, normalised, τ={doc['temperature']:g}, logQ counts, {opt['optimizer']} {opt['learning_rate']:g}, "
             f"{doc['epochs']} epochs, "
             f"CBNS warm-up {doc['warmup_steps']} steps")
    out = [HERE / p for p in c["plots"]]

    panels = [("val", "recall@10"), ("test", "recall@10"), ("test", "ndcg@10"), ("test", "recall@100")]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    for ax, (part, m) in zip(axes.flat, panels):
        for i, label in enumerate(c["strategies"]):
            bs = [b for b in batches if (label, b) in agg and agg[(label, b)]["n"]]
            mean = [agg[(label, b)][f"{part}_{m}"][0] for b in bs]
            std = [agg[(label, b)][f"{part}_{m}"][1] for b in bs]
            x = [b * (1 + 0.015 * (i - 3)) for b in bs]  # a small offset keeps error bars apart
            color, marker, ls = STYLES[label]
            ax.errorbar(x, mean, yerr=std, color=color, marker=marker, capsize=3, ls=ls, label=label)
        ax.axhline(doc["most_popular"][part][m], color="gray", ls=":", label="MostPopular")
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_title(f"{part} {m}")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("batch size B")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title + " (mean ± std over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out[0], dpi=110)

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for label in c["strategies"]:
        color, marker, _ = STYLES[label]
        for j, b in enumerate(batches):
            e = agg.get((label, b))
            if not e or not e["n"]:
                continue
            x = cpu_seconds(doc, costs, label, b, doc["epochs"])
            ax.errorbar(x, e["test_recall@10"][0], yerr=e["test_recall@10"][1],
                        color=color, marker=marker, ms=4 + 2 * j, capsize=2, label=label if j == 0 else None)
            ax.annotate(str(b), (x, e["test_recall@10"][0]), fontsize=7, textcoords="offset points", xytext=(4, 4))
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel(f"training CPU seconds, {doc['epochs']} epochs (steps × timed CPU ms per step)")
    ax.set_ylabel("test recall@10")
    ax.set_title(f"{name}: test recall@10 vs training cost (label: batch size)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out[1], dpi=110)

    # Learning curves: val recall@10 after each epoch, against epochs and against the cumulative
    # training CPU seconds (steps × timed CPU ms per step): the equal-time view.
    fig, axes = plt.subplots(2, len(batches), figsize=(3.6 * len(batches) + 1, 7), sharey=True, squeeze=False)
    for j, b in enumerate(batches):
        for label in c["strategies"]:
            e = agg.get((label, b))
            if not e or not e["n"]:
                continue
            color, marker, ls = STYLES[label]
            ep = np.arange(1, len(e["curve"]) + 1)
            axes[0][j].plot(ep, e["curve"], color=color, marker=marker, ls=ls, ms=4, label=label)
            axes[1][j].plot(cpu_seconds(doc, costs, label, b, ep), e["curve"], color=color, marker=marker, ls=ls, ms=4)
        axes[1][j].axvline(cpu_seconds(doc, costs, "in_batch", b, doc["epochs"]), color="gray", lw=0.8)
        axes[0][j].set_title(f"B = {b}")
        axes[0][j].set_xlabel("epochs")
        axes[1][j].set_xlabel("training CPU seconds")
        for row in axes:
            row[j].grid(alpha=0.3)
    axes[0][0].set_ylabel("val recall@10")
    axes[1][0].set_ylabel("val recall@10")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out[2], dpi=110)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="movielens")
    parser.add_argument("--plot-only", action="store_true", help="tables and plots from the results file; no training")
    parser.add_argument("--step-cost", action="store_true", help="time the training steps of every setting first "
                        f"(CPU ms per step, into {COSTS.name}, the fastest of all passes; the equal-time view reads them)")
    parser.add_argument("--epochs", type=int, help="default: the corpus's")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: the corpus's")
    args = parser.parse_args()
    c = CORPORA[args.corpus]
    epochs = args.epochs or c["epochs"]
    # Another epoch count gets its own file and no plots, so it cannot overwrite the main run.
    main_run = epochs == c["epochs"]
    path = c["results"] if main_run else c["results"].with_name(f"{c['results'].stem}_{epochs}ep.json")
    all_costs = json.loads(COSTS.read_text()) if COSTS.exists() else {}
    if args.step_cost:
        # Each pass keeps, per setting, the fastest of this and earlier passes: like the fastest
        # block within a pass, the least disturbed estimate of a step's own cost.
        earlier, now = all_costs.get(args.corpus, {}), step_costs(args.corpus)
        all_costs[args.corpus] = {k: min(v, earlier.get(k, v), key=lambda cost: cost["cpu_ms"]) for k, v in now.items()}
        COSTS.write_text(json.dumps(all_costs, indent=1))
    doc = json.loads(path.read_text()) if args.plot_only else train_all(args.corpus, epochs, args.seeds or c["seeds"], path)
    costs = all_costs.get(args.corpus, {})
    print(tables(doc))
    print(noise(doc))
    if costs:
        print("\n" + equal_time(doc, costs))
    if main_run and costs:
        print("wrote " + ", ".join(str(p) for p in plot(doc, costs)))


if __name__ == "__main__":
    main()
