"""Will a run fit in memory? An estimate from the config and the data's size, made before
anything is built, so that a size that cannot fit is refused in a second rather than running
until the machine swaps or the kernel kills it (`model.history_length: 1000000` asked for a
29.8 GiB array; `negatives.mns_batch_size: 1000000000` ran until memory was gone).

The estimate counts the arrays that grow with a config key — embedding tables with their
optimizer slots, history tensors, the softmax's score blocks, the MNS and CBNS negatives,
the streaming estimator, MLP layers, evaluation chunks — plus the measured footprint of the
runtime. It is meant to catch sizes off by orders of magnitude, not to plan a tight fit: it
refuses only what exceeds the memory available, and names the key that dominates. Set
`TUNER_MEMORY_MB` to plan for another machine's memory.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from tuner.errors import ConfigError

FLOAT = 4  # bytes of a float32 or int32
RUNTIME_BYTES = 700 << 20  # `python -c "import tuner.train"`: max RSS 687,436 KB (TF 2.21, 2-core CPU)
ROW_BYTES = 64  # per interaction: ids, time, weight in the dataset, its split and the training tensors
SCORE_COPIES = 3  # a [B, C] score block lives as logits, softmax and gradient at the step's peak
SLOTS = {"adam": 2, "adagrad": 1, "rmsprop": 1, "sgd": 0}  # optimizer state per trained weight
MOVIELENS_100K = (943, 1682, 100_000)  # users, items, interactions: the published sizes
DATA_KEYS = {"synthetic": "dataset.num_interactions", "files": "dataset.interactions", "grouplens": "dataset.path"}


@dataclass(frozen=True)
class DataSize:
    """What the estimate needs of a dataset."""

    users: int
    items: int
    interactions: int
    feature_vocab: int = 0  # categories of all side features (user and item)
    user_features: int | None = None  # feature tables per user and per item; None: not known yet
    item_features: int | None = None


@dataclass(frozen=True)
class Part:
    key: str  # the config key that makes this part grow
    what: str
    bytes: int
    remedy: str = ""  # what to do when this part does not fit; default: lower `key`


def size_of_dataset(dataset) -> DataSize:
    """Exact sizes of a loaded `tuner.data.Dataset`."""
    vocab = sum(f.vocab_size for f in (*dataset.user_features.values(), *dataset.item_features.values()))
    return DataSize(dataset.num_users, dataset.num_items, len(dataset.interactions), vocab,
                    len(dataset.user_features), len(dataset.item_features))


def size_of_config(d) -> DataSize:
    """Sizes a `DatasetConfig` implies without loading it: exact for MovieLens-100K and synthetic
    data; for files, the rows are counted by lines, and users and items are at least 1 (an
    estimate from them can only be low: what it refuses cannot fit)."""
    if d.name == "movielens-100k":
        return DataSize(*MOVIELENS_100K)
    if d.name == "synthetic":
        return DataSize(d.num_users, d.num_items, d.num_interactions)
    path = Path(d.path or "", "u.data") if d.name == "grouplens" else Path(d.interactions or "")
    try:
        stat = path.stat()
    except (OSError, ValueError):
        return DataSize(1, 1, 0)  # its loader says why it cannot be read
    if not path.is_file():  # a device or a pipe would be read without end; its loader refuses it
        return DataSize(1, 1, 0)
    return DataSize(1, 1, _rows(str(path), stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=8)  # `tuner search` checks each searched value against the same file
def _rows(path: str, size: int, mtime_ns: int) -> int:
    """Rows of a CSV/TSV (its lines) or Parquet file (its metadata) of this size and time; 0 if it
    cannot be read (its loader then says why)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        lines = 0
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                lines += block.count(b"\n")
        return lines
    except Exception:  # noqa: BLE001 - an unreadable file is reported by its loader, with the reason
        return 0


def estimate(cfg, size: DataSize) -> list[Part]:
    """The parts of a run's memory that grow with the config, each with the key that drives it."""
    m, n, t, r, e = cfg.model, cfg.negatives, cfg.training, cfg.retrieval, cfg.evaluation
    d, rows = m.embedding_dim, size.interactions
    batch = max(1, min(t.batch_size, rows))  # the pipeline's batches never exceed the training rows
    trained = 1 + SLOTS.get(t.optimizer, 2)
    tables = size.users + 1 + 2 * (size.items + 1) + size.feature_vocab  # items: the tower and its export
    if m.history_length and not m.share_item_embedding:
        tables += size.items + 1
    if m.history_length and m.last_item:
        tables += size.items + 1
    parts = [
        Part(_table_key(cfg), f"embedding tables of {tables:,} rows × {d:,} with {t.optimizer}'s state",
             tables * d * FLOAT * trained),
        Part(DATA_KEYS.get(cfg.dataset.name, "dataset.name"), f"{rows:,} interactions", rows * ROW_BYTES),
    ]
    if m.history_length:
        length = m.history_length
        parts.append(Part("model.history_length", f"histories of {rows:,} interactions × {length:,} items",
                          3 * rows * length * FLOAT))
        parts.append(Part("model.history_length", f"a batch's history embeddings {batch:,} × {length:,} × {d:,}",
                          4 * batch * length * d * FLOAT))
    columns, key = batch, "training.batch_size"
    if n.strategy == "mns":
        columns += n.mns_batch_size
        key = "negatives.mns_batch_size" if n.mns_batch_size > batch else key
        parts.append(Part("negatives.mns_batch_size", f"{n.mns_batch_size:,} uniform negatives × {d:,}",
                          4 * n.mns_batch_size * d * FLOAT))
    elif n.strategy == "cbns":
        columns += n.cbns_memory_size
        key = "negatives.cbns_memory_size" if n.cbns_memory_size > batch else key
        parts.append(Part("negatives.cbns_memory_size", f"a bank of {n.cbns_memory_size:,} × {d:,}",
                          3 * n.cbns_memory_size * (d + 2) * FLOAT))
    if n.strategy == "full":
        parts += _full_softmax(cfg, size, batch)
    else:
        parts.append(Part(key, f"softmax scores {batch:,} × {columns:,}", SCORE_COPIES * batch * columns * FLOAT))
    if r.logq == "streaming":
        parts.append(Part("retrieval.estimator_buckets", f"{r.estimator_buckets:,} estimator buckets",
                          r.estimator_buckets * 3 * FLOAT))
    query_inputs = _features(size.user_features, m.user_features) + bool(m.history_length) + bool(m.last_item)
    item_inputs = _features(size.item_features, m.item_features)
    for key, hidden, extra in (("model.query_layers", m.query_layers, query_inputs),
                               ("model.candidate_layers", m.candidate_layers, item_inputs)):
        if hidden or extra:  # a tower without features and layers has no MLP
            widths = [(1 + extra) * d, *hidden, d]  # the concatenated inputs, the layers, the output
            weights = sum(a * b for a, b in zip(widths, widths[1:]))
            parts.append(Part(key, f"MLP layers {widths}", weights * FLOAT * trained + batch * sum(widths) * FLOAT))
    split = cfg.split
    held_out = 1.0 if split.method == "leave_last_out" else max(split.val_fraction, split.test_fraction)
    queries = max(1, round(rows * held_out))  # one evaluated part's interactions, at most
    chunk = min(max(e.memory_mb << 20, (size.items + 1) * FLOAT), queries * (size.items + 1) * FLOAT)
    parts.append(Part("evaluation.memory_mb", f"evaluation chunks of {chunk >> 20:,} MiB", SCORE_COPIES * chunk))
    return parts


def _full_softmax(cfg, size: DataSize, batch: int) -> list[Part]:
    """negatives.strategy full: each step scores the batch against every item, and the candidate
    tower encodes the whole catalog (its id rows, feature bags and layers) forward and backward."""
    m, items = cfg.model, size.items
    remedy = "use negatives.strategy in_batch, mns or cbns, or lower training.batch_size"
    width = m.embedding_dim * (1 + _features(size.item_features, m.item_features)) + sum(m.candidate_layers)
    return [Part("negatives.strategy", f"a full softmax's scores {batch:,} × {items:,} (every item a column)",
                 SCORE_COPIES * batch * items * FLOAT, remedy),
            Part("negatives.strategy", f"the whole catalog through the candidate tower each step, {items:,} × {width:,}",
                 SCORE_COPIES * items * (width + m.embedding_dim) * FLOAT, remedy)]


def _table_key(cfg) -> str:
    """What to lower when the tables do not fit: a synthetic corpus of ordinary width is too many rows."""
    d = cfg.dataset
    if d.name == "synthetic" and cfg.model.embedding_dim <= 1024:
        return "dataset.num_items" if d.num_items >= d.num_users else "dataset.num_users"
    return "model.embedding_dim"


def _features(count: int | None, used: bool) -> int:
    """Feature tables a tower concatenates; 3 when the data is not loaded yet (MovieLens has 3 a side)."""
    return 0 if not used else 3 if count is None else count


def available_bytes() -> int:
    """`TUNER_MEMORY_MB` if set, else what the machine (and its cgroup, in a container) can still give."""
    if os.environ.get("TUNER_MEMORY_MB"):
        try:
            return int(float(os.environ["TUNER_MEMORY_MB"]) * 2**20)
        except ValueError:
            raise ConfigError(f"TUNER_MEMORY_MB: expected a number of MiB, got "
                              f"{os.environ['TUNER_MEMORY_MB'][:50]!r}") from None
    free = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free.append(int(line.split()[1]) << 10)
    except OSError:
        free.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            stat = dict(line.split() for line in Path("/sys/fs/cgroup/memory.stat").read_text().splitlines())
            free.append(int(limit) - used + int(stat.get("file", 0)))  # page cache is given back on demand
    except (OSError, ValueError):
        pass
    return max(0, min(free))


def check(cfg, source: str = "config", dataset=None) -> None:
    """Refuses `cfg` with a one-line ConfigError if its estimate exceeds the memory available.
    `dataset`: the loaded data (exact sizes); without it, sizes come from the config (before
    loading: a synthetic or historied dataset can be the runaway itself)."""
    size = size_of_dataset(dataset) if dataset is not None else size_of_config(cfg.dataset)
    parts = estimate(cfg, size)
    total = RUNTIME_BYTES + sum(p.bytes for p in parts)
    budget = available_bytes()
    if total <= budget:
        return
    worst = max(parts, key=lambda p: p.bytes)
    data = ("" if dataset is None else
            f" for {size.users:,} users, {size.items:,} items and {size.interactions:,} interactions")
    raise ConfigError(f"{source}: {worst.key}: the run needs about {_gib(total)} of memory{data}, "
                      f"{_gib(worst.bytes)} of it for {worst.what}; this machine has {_gib(budget)} available "
                      f"({worst.remedy or f'lower {worst.key}'}, or set TUNER_MEMORY_MB to plan for a bigger machine)")


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:,.0f} MiB"


def check_space(space) -> None:
    """`check` for each searched value of a `tuner.space.Space` (both ends of a range), put into
    the base config under every combination of the conditions that activate it
    (`Space.configs_to_check`): a space whose largest embedding or batch cannot fit is refused
    before its first trial."""
    from tuner import config

    for where, data in space.configs_to_check():
        check(config.from_dict(data, where), where)


def resident_bytes() -> int | None:
    """This process's resident set size now (Linux's /proc; None elsewhere). Not ru_maxrss, which
    only ever grows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
