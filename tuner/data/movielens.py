"""MovieLens-100K: RecBole's atomic files from the recbole==1.2.1 wheel, or a GroupLens folder.

The wheel is on PyPI, the one network source the project may use, and carries the dataset
as plain files; installing recbole would pull PyTorch, so the wheel is only unzipped. Both
sources give the same `Dataset`: rating as weight, users' age (bucketed), gender and
occupation, items' title words, release year and genres.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from tuner.errors import DataError
from tuner.data.files import align, assemble, bag, buckets, categorical, numeric_column, require_columns, words
from tuner.data.types import Dataset

WHEEL = "recbole==1.2.1"
MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{}"
PARTS = ("inter", "item", "user")
# u.genre of the GroupLens release, used when a folder lacks that file.
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western")
_TITLE_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")


def cache_dir(cfg) -> Path:
    """cfg.cache_dir, else $TUNER_CACHE_DIR, else ~/.cache/tuner; the files live in its ml-100k/."""
    root = cfg.cache_dir or os.environ.get("TUNER_CACHE_DIR") or "~/.cache/tuner"
    return Path(root).expanduser() / "ml-100k"


def fetch(folder: Path) -> None:
    """Downloads the wheel once and unpacks the three files into `folder`.

    Each file is written under a private name and renamed, so workers starting together
    never read a half-written file.
    """
    if all((folder / f"ml-100k.{part}").is_file() for part in PARTS):
        return
    print(f"downloading MovieLens-100K (PyPI wheel {WHEEL}) into {folder}", file=sys.stderr, flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", tmp],
                              capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("recbole-*.whl"))
        if done.returncode or not wheels:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise DataError(f"{folder}: MovieLens-100K needs the PyPI wheel {WHEEL}, and pip download failed: "
                            f"{lines[-1] if lines else f'exit code {done.returncode}'}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for part in PARTS:
                partial = folder / f".ml-100k.{part}.{os.getpid()}"
                partial.write_bytes(wheel.read(MEMBER.format(part)))
                os.replace(partial, folder / f"ml-100k.{part}")


def _read(path: Path, sep: str, names=None, encoding: str = "utf-8") -> pd.DataFrame:
    """All fields as str, every line checked for its field count; without `names` the first
    line is a RecBole header (typed names like `user_id:token`)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        text = path.read_bytes().decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not {encoding} text ({exc.reason} at byte {exc.start})") from None
    lines = [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    if names is None and lines:
        names = [c.split(":")[0] for c in lines[0][1].split(sep)]
        lines = lines[1:]
    if not lines:
        raise DataError(f"{path}: empty file")
    rows = [line.split(sep) for _, line in lines]
    for (n, _), row in zip(lines, rows):
        if len(row) != len(names):
            raise DataError(f"{path}: line {n} has {len(row)} {sep!r}-separated fields, expected {len(names)} "
                            f"({', '.join(names)})")
    return pd.DataFrame(rows, columns=list(names))


def _movie_dataset(name: str, ratings: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame,
                   paths: dict[str, Path]) -> Dataset:
    """Builds the shared shape from ratings (user_id, item_id, rating, timestamp), users (user_id,
    age, gender, occupation) and items (item_id, title with or without '(year)', year, genres as lists)."""
    ds = assemble(name, ratings["user_id"].to_numpy(dtype=str), ratings["item_id"].to_numpy(dtype=str),
                  numeric_column(ratings, "timestamp", paths["ratings"]),
                  numeric_column(ratings, "rating", paths["ratings"]))
    u = align(users, "user_id", ds.user_ids, paths["users"])
    ds.user_features = {"age": buckets(u["age"]), "gender": categorical(u["gender"]),
                        "occupation": categorical(u["occupation"])}
    it = align(items, "item_id", ds.item_ids, paths["items"])
    title = it["title"].fillna("").astype(str)
    year = it["year"].fillna("").astype(str)
    year = year.where(year.str.fullmatch(r"\d{4}"))
    ds.item_features = {
        "title_words": bag(words(_TITLE_YEAR.sub("", t)) for t in title),
        "year": categorical(year),
        "genres": bag(g if isinstance(g, list) else [] for g in it["genres"]),
    }
    shown = [t if not isinstance(y, str) or _TITLE_YEAR.search(t) else f"{t} ({y})" for t, y in zip(title, year)]
    ds.item_titles = np.array([""] + shown, dtype=str)
    return ds


def load_movielens(cfg) -> Dataset:
    """MovieLens-100K from the cached RecBole files, downloading the wheel the first time."""
    folder = cache_dir(cfg)
    fetch(folder)
    paths = {"ratings": folder / "ml-100k.inter", "items": folder / "ml-100k.item", "users": folder / "ml-100k.user"}
    tables = {key: _read(path, "\t") for key, path in paths.items()}
    require_columns(tables["ratings"], paths["ratings"], ("user_id", "item_id", "rating", "timestamp"))
    require_columns(tables["users"], paths["users"], ("user_id", "age", "gender", "occupation"))
    require_columns(tables["items"], paths["items"], ("item_id", "movie_title", "release_year", "class"))
    items = tables["items"].rename(columns={"movie_title": "title", "release_year": "year"})
    items["genres"] = items.pop("class").str.split()
    return _movie_dataset("movielens-100k", tables["ratings"], tables["users"], items, paths)


def load_grouplens(cfg) -> Dataset:
    """The GroupLens ml-100k folder: u.data (tab), u.item and u.user ('|', latin-1), optional u.genre."""
    if not cfg.path:
        raise DataError("dataset.path: required for dataset.name grouplens (a folder with u.data, u.item, u.user)")
    folder = Path(cfg.path)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found (expected a GroupLens ml-100k folder with u.data, u.item, u.user)")
    paths = {"ratings": folder / "u.data", "items": folder / "u.item", "users": folder / "u.user"}
    genres = GENRES
    if (folder / "u.genre").is_file():
        genres = tuple(_read(folder / "u.genre", "|", ("genre", "index"), "latin-1")["genre"])
    ratings = _read(paths["ratings"], "\t", ("user_id", "item_id", "rating", "timestamp"))
    users = _read(paths["users"], "|", ("user_id", "age", "gender", "occupation", "zip_code"), "latin-1")
    flags = [f"genre_{i}" for i in range(len(genres))]
    items = _read(paths["items"], "|", ("item_id", "title", "release_date", "video_release_date", "url", *flags),
                  "latin-1")
    on = items[flags].to_numpy() == "1"
    items["genres"] = [[g for g, f in zip(genres, row) if f] for row in on]
    items["year"] = items["release_date"].str[-4:]
    return _movie_dataset("grouplens", ratings, users, items[["item_id", "title", "year", "genres"]], paths)
