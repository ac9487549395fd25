"""User tables (CSV, TSV, Parquet) → `Dataset`, plus the helpers every loader shares.

All loaders end in `assemble` (raw ids → dense indices, stable time sort) and encode
features with `categorical`, `buckets` and `bag`, so MovieLens, user files and synthetic
data follow the same id and vocabulary rules.
"""
from __future__ import annotations

import codecs
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tuner.errors import DataError
from tuner.safe_yaml import quote
from tuner.data.types import Dataset, Feature, Interactions

SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".parquet": None}
NUM_BUCKETS = 10  # quantile buckets for a numeric feature
MAX_DISTINCT = 20  # numeric columns with more distinct values than this are bucketed
WEIGHT_MAX = float(np.finfo(np.float32).max)  # weights train as float32
MAX_BAG = 32  # longer bags keep their first tokens: one long text column must not blow up [N+1, L]
_WORD = re.compile(r"\w+(?:'\w+)*")


# --- reading ------------------------------------------------------------------------------


def read_table(path, id_columns=()) -> pd.DataFrame:
    """One table by suffix; `id_columns` are read as strings so '007' stays '007'."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SEPARATORS:
        raise DataError(f"{path}: unsupported file suffix {suffix or '(none)'!r} (allowed: {', '.join(SEPARATORS)})")
    if not path.is_file():  # a device or a pipe would be read without end
        raise DataError(f"{path}: {'not a regular file' if path.exists() else 'file not found'}")
    if suffix != ".parquet":
        check_text(path)
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, sep=SEPARATORS[suffix], dtype={c: str for c in id_columns})
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file") from None
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot read {suffix[1:]}: {reason}") from None
    df.columns = [str(c).strip() for c in df.columns]
    if len(df) == 0:
        raise DataError(f"{path}: empty file (a header but no rows)")
    return df


def check_text(path: Path, block: int = 1 << 20) -> None:
    """A CSV/TSV must be UTF-8 text: pandas would read NUL bytes into ids, and name a decoding
    error by its offset in a parser buffer rather than in the file."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as f:
        while data := f.read(block):
            nul = data.find(b"\x00")
            if nul >= 0:
                raise DataError(f"{path}: not a text file (NUL byte at offset {offset + nul}); expected UTF-8 "
                                f"{path.suffix[1:].upper()}")
            try:
                decoder.decode(data)
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                                f"{offset + exc.start}); save it as UTF-8") from None
            offset += len(data)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (it ends inside a character); save it as UTF-8") from None


def require_columns(df: pd.DataFrame, path, columns) -> None:
    for col in columns:
        if col not in df.columns:
            raise DataError(f"{path}: missing column '{col}' (found: {', '.join(map(str, df.columns))})")


def id_column(df: pd.DataFrame, col: str, path) -> np.ndarray:
    """Raw ids as str; integral float ids (Parquet) print as '3', not '3.0'."""
    s = df[col]
    missing = s.isna()
    if missing.any():
        raise DataError(f"{path}: column '{col}' is empty in row {_first(missing) + 1}")
    if pd.api.types.is_float_dtype(s) and (s % 1 == 0).all():
        s = s.astype(np.int64)
    text = s.astype(str)
    if not pd.api.types.is_numeric_dtype(s):
        blank = text.str.strip() == ""
        if blank.any():
            raise DataError(f"{path}: column '{col}' is empty in row {_first(blank) + 1}")
    return text.to_numpy(dtype=str)


def numeric_column(df: pd.DataFrame, col: str, path) -> np.ndarray:
    """float64 values; datetime columns (Parquet) become Unix seconds."""
    s = df[col]
    if pd.api.types.is_datetime64_any_dtype(s) and s.notna().all():
        return s.astype("datetime64[s]").astype(np.int64).to_numpy(np.float64)
    values = pd.to_numeric(s, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{path}: column '{col}' must be numeric; row {i + 1} has {_show(s.iloc[i])}")
    return values


def timestamp_column(df: pd.DataFrame, col: str, path) -> np.ndarray:
    """Timestamps in an order-preserving form: int64 as read when the column is integral (so
    nanosecond times stay distinct, as float64 would not keep them), else `numeric_column`'s
    float64. Times beyond int64 cannot be ordered exactly and are refused."""
    s = df[col]
    if pd.api.types.is_signed_integer_dtype(s):
        return s.to_numpy(np.int64)
    values = numeric_column(df, col, path)
    beyond = np.abs(values) >= 2.0**63
    if beyond.any():
        i = _first(beyond)
        raise DataError(f"{path}: column '{col}' row {i + 1} has {_show(s.iloc[i])}, outside the 64-bit integer "
                        f"range timestamps must fit (|t| < 2^63, e.g. Unix seconds or nanoseconds)")
    return values


def _show(value) -> str:
    """A cell as an error line shows it: text quoted and cut, numbers as written."""
    return quote(value) if isinstance(value, str) else str(value)


def _first(mask) -> int:
    return int(np.argmax(np.asarray(mask)))


def _few(values, n: int = 3) -> str:
    return ", ".join(repr(str(v)) for v in list(values)[:n])


# --- ids and interactions ------------------------------------------------------------------


def assemble(name: str, users, items, timestamp=None, weight=None) -> Dataset:
    """Dense indices 1..N by first appearance (0 = padding), interactions sorted stably by time.

    Timestamps that are not whole numbers are replaced by their dense rank, which keeps the
    only things the splits and histories use: order and ties.
    """
    user_codes, user_ids = pd.factorize(np.asarray(users))
    item_codes, item_ids = pd.factorize(np.asarray(items))
    n = len(user_codes)
    if timestamp is None:
        ts = np.arange(n, dtype=np.int64)
    else:
        ts = np.asarray(timestamp)
        if ts.dtype.kind == "f":
            ts = ts.astype(np.int64) if np.all(ts % 1 == 0) else np.unique(ts, return_inverse=True)[1].astype(np.int64)
        ts = ts.astype(np.int64, copy=False)
    w = np.ones(n, np.float32) if weight is None else np.asarray(weight, np.float32)
    order = np.argsort(ts, kind="stable")
    inter = Interactions(
        user=(user_codes[order] + 1).astype(np.int32),
        item=(item_codes[order] + 1).astype(np.int32),
        timestamp=ts[order],
        weight=w[order],
    )
    pad = lambda ids: np.concatenate([np.array([""]), np.asarray(ids).astype(str)])  # noqa: E731
    return Dataset(name, pad(user_ids), pad(item_ids), inter)


def align(df: pd.DataFrame, key: str, ids: np.ndarray, path) -> pd.DataFrame:
    """A feature table's rows in index order 1..N (all-NaN rows where an id has no row).

    Rows whose ids never occur in the interactions cannot be indexed and are dropped; a table
    in which none occur is almost surely keyed differently, so that is an error.
    """
    require_columns(df, path, [key])
    keys = id_column(df, key, path)
    index = pd.Index(keys)
    if index.has_duplicates:
        raise DataError(f"{path}: duplicate {key} values: {_few(index[index.duplicated()].unique())}")
    known = pd.Index(ids[1:])
    unknown = ~index.isin(known)
    if unknown.all():
        raise DataError(f"{path}: none of its {key} values occur in the interactions "
                        f"(table has {_few(keys)}; interactions have {_few(known)})")
    if unknown.any():
        print(f"{path}: ignoring {int(unknown.sum())} rows whose {key} never occurs in the interactions "
              f"(e.g. {_few(keys[unknown])})", file=sys.stderr)
    return df.drop(columns=[key]).set_index(index).reindex(known)


# --- features -------------------------------------------------------------------------------


def _padded(codes: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], codes]).astype(np.int32)


def categorical(values) -> Feature:
    """One category per row, vocabulary sorted; missing → 0."""
    codes, uniques = pd.factorize(pd.Series(values), sort=True)
    return Feature(_padded(codes + 1), len(uniques) + 1)


def buckets(values, num_buckets: int = NUM_BUCKETS) -> Feature:
    """Quantile buckets 1..B of a numeric column; missing → 0."""
    x = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
    known = np.isfinite(x)
    edges = np.unique(np.quantile(x[known], np.linspace(0, 1, num_buckets + 1)[1:-1])) if known.any() else np.empty(0)
    codes = np.where(known, np.searchsorted(edges, x, side="right") + 1, 0)
    return Feature(_padded(codes), len(edges) + 2)


def bag(token_lists) -> Feature:
    """A [N + 1, L] bag of tokens per row, right-padded with 0, vocabulary sorted."""
    token_lists = [list(t)[:MAX_BAG] for t in token_lists]
    lengths = np.array([len(t) for t in token_lists], dtype=np.int64)
    codes, uniques = pd.factorize(np.array([tok for t in token_lists for tok in t], dtype=object), sort=True)
    width = max(int(lengths.max(initial=0)), 1)
    values = np.zeros((len(token_lists) + 1, width), np.int32)
    rows = np.repeat(np.arange(1, len(token_lists) + 1), lengths)
    cols = np.arange(len(codes)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    values[rows, cols] = codes + 1
    return Feature(values, len(uniques) + 1)


def words(text) -> list[str]:
    """Lowercased words of a text; missing → none."""
    return _WORD.findall(text.lower()) if isinstance(text, str) else []


def column_feature(name: str, values: pd.Series) -> Feature:
    """The encoding a user table's column gets: bag of words, quantile buckets or categories."""
    present = values.dropna()
    is_text = pd.api.types.is_string_dtype(values) or values.dtype == object
    if name == "title" or (is_text and present.astype(str).str.contains(r"\s").any()):
        return bag(words(v) for v in values)
    is_number = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if is_number and present.nunique() > MAX_DISTINCT:
        return buckets(values)
    return categorical(values)


def table_features(table: pd.DataFrame) -> dict[str, Feature]:
    return {str(col): column_feature(str(col), table[col]) for col in table.columns}


# --- the "files" dataset ----------------------------------------------------------------------


def load_files(cfg) -> Dataset:
    """cfg.interactions (user_id, item_id[, timestamp, weight]) and optional feature tables."""
    if not cfg.interactions:
        raise DataError("dataset.interactions: required for dataset.name files (CSV, TSV or Parquet)")
    path = cfg.interactions
    df = read_table(path, ("user_id", "item_id"))
    require_columns(df, path, ("user_id", "item_id"))
    timestamp = timestamp_column(df, "timestamp", path) if "timestamp" in df.columns else None
    weight = numeric_column(df, "weight", path) if "weight" in df.columns else None
    if weight is not None and (weight < 0).any():
        i = _first(weight < 0)
        raise DataError(f"{path}: column 'weight' must be >= 0; row {i + 1} has {_show(weight[i])}")
    if weight is not None and (weight > WEIGHT_MAX).any():
        i = _first(weight > WEIGHT_MAX)
        raise DataError(f"{path}: column 'weight' must be <= {WEIGHT_MAX:.3g} (weights train as float32); "
                        f"row {i + 1} has {_show(weight[i])}")
    ds = assemble("files", id_column(df, "user_id", path), id_column(df, "item_id", path), timestamp, weight)
    if cfg.user_features:
        table = align(read_table(cfg.user_features, ("user_id",)), "user_id", ds.user_ids, cfg.user_features)
        ds.user_features = table_features(table)
    if cfg.item_features:
        table = align(read_table(cfg.item_features, ("item_id",)), "item_id", ds.item_ids, cfg.item_features)
        ds.item_features = table_features(table)
        if "title" in table.columns:
            titles = table["title"].fillna("").astype(str).to_numpy(dtype=str)
            ds.item_titles = np.concatenate([np.array([""]), titles])
    return ds
