"""The data layer on real files: MovieLens-100K from the recbole wheel, GroupLens files, user
tables, synthetic data, the three splits, histories and the training pipeline."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tuner.config import DatasetConfig, SplitConfig
from tuner.data import Dataset, Interactions, load_dataset, make_split
from tuner.data.files import assemble
from tuner.data.movielens import cache_dir
from tuner.data.split import histories
from tuner.errors import ConfigError, DataError


@pytest.fixture(scope="session")
def movielens_cfg():
    """One cache for the whole session (and across sessions): the wheel is downloaded once."""
    root = os.environ.get("TUNER_CACHE_DIR") or str(Path("~/.cache/tuner").expanduser())
    return DatasetConfig(name="movielens-100k", cache_dir=root)


@pytest.fixture(scope="session")
def movielens(movielens_cfg):
    return load_dataset(movielens_cfg)


def _triples(inter: Interactions) -> set:
    return set(zip(inter.user.tolist(), inter.item.tolist(), inter.timestamp.tolist()))


# --- MovieLens ------------------------------------------------------------------------------


def test_movielens_100k(movielens, movielens_cfg, capfd):
    ds = movielens
    inter = ds.interactions
    assert (len(inter), ds.num_users, ds.num_items) == (100_000, 943, 1682)
    assert ds.user_ids[0] == ds.item_ids[0] == ""
    # first row of ml-100k.inter is user 196, item 242, rating 3, time 881250949
    assert (ds.user_ids[1], ds.item_ids[1]) == ("196", "242")
    first = np.flatnonzero((inter.user == 1) & (inter.item == 1))
    assert inter.timestamp[first].tolist() == [881250949] and inter.weight[first].tolist() == [3.0]
    assert set(np.unique(inter.user)) == set(range(1, 944)) and set(np.unique(inter.item)) == set(range(1, 1683))
    assert np.all(np.diff(inter.timestamp) >= 0)
    assert set(np.unique(inter.weight).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert inter.user.dtype == inter.item.dtype == np.int32 and inter.timestamp.dtype == np.int64

    uf, itf = ds.user_features, ds.item_features
    assert set(uf) == {"age", "gender", "occupation"} and set(itf) == {"title_words", "year", "genres"}
    assert uf["gender"].vocab_size == 3 and uf["occupation"].vocab_size == 22
    assert 5 <= uf["age"].vocab_size <= 11 and uf["age"].values.shape == (944,)
    assert all(f.values[0].max() == 0 and f.values[1:].min() >= 0 and f.values.max() < f.vocab_size
               for f in (*uf.values(), *itf.values()))
    assert (uf["age"].values[1:] > 0).all() and (uf["occupation"].values[1:] > 0).all()

    idx = {raw: i for i, raw in enumerate(ds.item_ids)}
    toy, goldeneye, postino = idx["1"], idx["2"], idx["14"]  # 1995, 1995, 1994
    assert ds.item_titles[toy] == "Toy Story (1995)" and ds.item_titles[0] == ""
    assert ds.item_titles[idx["1412"]] == "Land Before Time III: The Time of the Great Giving (1995)"
    year = itf["year"].values
    assert year[toy] == year[goldeneye] != year[postino] and year[idx["267"]] == 0  # 267: year "unkonwn"
    words, genres = itf["title_words"].values, itf["genres"].values
    assert words.ndim == 2 and words.shape[0] == 1683 and (words[toy] > 0).sum() == 2  # toy, story
    assert (genres[toy] > 0).sum() == 3  # Animation Children's Comedy
    assert set(genres[toy][genres[toy] > 0]) & set(genres[idx["101"]][genres[idx["101"]] > 0])  # both Comedy

    capfd.readouterr()
    again = load_dataset(movielens_cfg)
    assert "downloading" not in capfd.readouterr().err  # cached: no second download
    assert np.array_equal(again.interactions.item, inter.item)


def test_movielens_download_failure_is_one_clean_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # a closed port: pip finds nothing
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "1")
    message = _error(DatasetConfig(name="movielens-100k", cache_dir=str(tmp_path)))
    assert message.startswith(f"{tmp_path / 'ml-100k'}: MovieLens-100K needs the PyPI wheel recbole==1.2.1")
    assert "No matching distribution" in message
    assert not list((tmp_path / "ml-100k").iterdir())  # nothing half-written


def _write_grouplens(src: Path, dst: Path) -> None:
    """The GroupLens files for the same data, built from RecBole's atomic files."""
    def atomic(part):
        df = pd.read_csv(src / f"ml-100k.{part}", sep="\t", dtype=str, keep_default_na=False, quoting=3)
        df.columns = [c.split(":")[0] for c in df.columns]
        return df
    inter, users, items = atomic("inter"), atomic("user"), atomic("item")
    dst.mkdir()
    inter.to_csv(dst / "u.data", sep="\t", header=False, index=False)
    users.to_csv(dst / "u.user", sep="|", header=False, index=False, encoding="latin-1")
    genres = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
              "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
              "War", "Western"]
    (dst / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(genres)))
    lines = []
    for item_id, title, year, classes in items.itertuples(index=False):
        dated = year.isdigit()
        flags = ["1" if g in classes.split() else "0" for g in genres]
        lines.append("|".join([item_id, f"{title} ({year})" if dated else title, f"01-Jan-{year}" if dated else "",
                               "", "http://example.invalid", *flags]))
    (dst / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


def test_grouplens_folder_gives_the_same_dataset(movielens, movielens_cfg, tmp_path):
    _write_grouplens(cache_dir(movielens_cfg), tmp_path / "ml-100k")
    gl = load_dataset(DatasetConfig(name="grouplens", path=str(tmp_path / "ml-100k")))
    ml = movielens
    assert gl.name == "grouplens"
    for key in ("user_ids", "item_ids", "item_titles"):
        assert np.array_equal(getattr(gl, key), getattr(ml, key)), key
    for key in ("user", "item", "timestamp", "weight"):
        assert np.array_equal(getattr(gl.interactions, key), getattr(ml.interactions, key)), key
    for name in ("age", "gender", "occupation"):
        assert np.array_equal(gl.user_features[name].values, ml.user_features[name].values), name
    for name in ("year", "title_words"):
        assert np.array_equal(gl.item_features[name].values, ml.item_features[name].values), name
    g, m = gl.item_features["genres"], ml.item_features["genres"]  # flags come in u.genre order
    assert g.vocab_size == m.vocab_size == 20
    assert np.array_equal(np.sort(g.values, axis=1), np.sort(m.values, axis=1))


# --- user files -------------------------------------------------------------------------------


def _interactions_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": ["007", "b", "007", "c", "b", "d"],
        "item_id": ["x", "y", "y", "z", "x", "w"],
        "timestamp": [30, 10, 10, 20, 40, 50],
        "weight": [1.0, 2.0, 0.5, 1.0, 3.0, 1.0],
    })


def test_files_loader_ids_order_and_features(tmp_path):
    _interactions_frame().to_csv(tmp_path / "inter.csv", index=False)
    rng = np.random.default_rng(0)
    pd.DataFrame({
        "user_id": ["b", "007", "c", "zz"],  # "zz" never interacts: dropped; "d" has no row: zeros
        "age": [20, 35, 50, 61],
        "country": ["fr", "de", "fr", "us"],
        "bio": ["likes jazz", "Jazz and rock", "rock", "x"],
    }).to_csv(tmp_path / "users.tsv", sep="\t", index=False)
    pd.DataFrame({
        "item_id": ["x", "y", "z", "w"],
        "title": ["Blue Sky", "Red", "Blue Moon", "Green"],
        "price": rng.random(4) * 100,
        "label": [1, 2, 1, 2],
    }).to_parquet(tmp_path / "items.parquet")
    ds = load_dataset(DatasetConfig(name="files", interactions=str(tmp_path / "inter.csv"),
                                    user_features=str(tmp_path / "users.tsv"),
                                    item_features=str(tmp_path / "items.parquet")))
    assert ds.user_ids.tolist() == ["", "007", "b", "c", "d"]  # first appearance in the file, '007' kept
    assert ds.item_ids.tolist() == ["", "x", "y", "z", "w"]
    inter = ds.interactions
    # stable time sort: (b,y,10) before (007,y,10) as in the file
    assert list(zip(inter.user, inter.item, inter.timestamp)) == [
        (2, 2, 10), (1, 2, 10), (3, 3, 20), (1, 1, 30), (2, 1, 40), (4, 4, 50)]
    assert inter.weight.tolist() == [2.0, 0.5, 1.0, 1.0, 3.0, 1.0]

    uf = ds.user_features
    assert set(uf) == {"age", "country", "bio"}
    assert uf["country"].vocab_size == 3 and uf["country"].values.tolist() == [0, 1, 2, 2, 0]  # de, fr; d unknown
    assert uf["age"].values.tolist() == [0, 2, 1, 3, 0] and uf["age"].vocab_size == 4  # few values: categories
    bio = uf["bio"].values  # a text column: bag of lowercased words (and, jazz, likes, rock)
    assert bio.shape == (5, 3) and uf["bio"].vocab_size == 5
    assert bio[1].tolist() == [2, 1, 4] and bio[2].tolist() == [3, 2, 0] and not bio[4].any()
    itf = ds.item_features
    assert itf["title"].values.shape == (5, 2) and itf["title"].values[1, 0] == itf["title"].values[3, 0]  # "blue"
    assert itf["label"].values.tolist() == [0, 1, 2, 1, 2]
    assert ds.item_titles.tolist() == ["", "Blue Sky", "Red", "Blue Moon", "Green"]


def test_files_formats_agree_and_defaults(tmp_path):
    frame = _interactions_frame()
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_csv(tmp_path / "a.tab", sep="\t", index=False)
    frame.to_parquet(tmp_path / "a.parquet")
    loaded = [load_dataset(DatasetConfig(name="files", interactions=str(tmp_path / f"a.{s}")))
              for s in ("csv", "tab", "parquet")]
    for ds in loaded[1:]:
        assert np.array_equal(ds.user_ids, loaded[0].user_ids) and np.array_equal(ds.item_ids, loaded[0].item_ids)
        for key in ("user", "item", "timestamp", "weight"):
            assert np.array_equal(getattr(ds.interactions, key), getattr(loaded[0].interactions, key))
    frame[["user_id", "item_id"]].to_csv(tmp_path / "bare.tsv", sep="\t", index=False)
    bare = load_dataset(DatasetConfig(name="files", interactions=str(tmp_path / "bare.tsv")))
    assert bare.interactions.timestamp.tolist() == list(range(6))  # file order stands in for time
    assert bare.interactions.weight.tolist() == [1.0] * 6 and bare.item_titles is None


def test_numeric_feature_with_many_values_is_bucketed(tmp_path):
    n = 200
    pd.DataFrame({"user_id": np.arange(n), "item_id": np.arange(n) % 7}).to_csv(tmp_path / "i.csv", index=False)
    pd.DataFrame({"user_id": np.arange(n), "score": np.arange(n) * 1.5}).to_csv(tmp_path / "u.csv", index=False)
    ds = load_dataset(DatasetConfig(name="files", interactions=str(tmp_path / "i.csv"),
                                    user_features=str(tmp_path / "u.csv")))
    f = ds.user_features["score"]
    assert f.vocab_size == 11 and f.values[0] == 0
    assert np.all(np.diff(f.values[1:]) >= 0)  # users appear in score order
    assert np.bincount(f.values[1:], minlength=11)[1:].tolist() == [20] * 10


# --- synthetic ----------------------------------------------------------------------------------


def test_synthetic_is_seeded_sized_and_structured():
    cfg = DatasetConfig(name="synthetic", num_users=500, num_items=2000, num_interactions=50_000,
                        popularity_exponent=1.0, num_clusters=10)
    a, b, c = load_dataset(cfg, seed=1), load_dataset(cfg, seed=1), load_dataset(cfg, seed=2)
    assert (a.num_users, a.num_items, len(a.interactions)) == (500, 2000, 50_000)
    for key in ("user", "item", "timestamp"):
        assert np.array_equal(getattr(a.interactions, key), getattr(b.interactions, key))
    assert not np.array_equal(a.interactions.item, c.interactions.item)
    inter = a.interactions
    assert np.all(np.diff(inter.timestamp) >= 0) and np.any(np.diff(inter.timestamp) == 0)
    counts = np.sort(np.bincount(inter.item)[1:])[::-1]
    assert counts[0] > 20 * np.median(counts) and counts[-1] >= 1  # power law, every item present
    seg, cluster = a.user_features["segment"], a.item_features["cluster"]
    assert seg.vocab_size == cluster.vocab_size == 11 and seg.values[0] == cluster.values[0] == 0
    same = (seg.values[inter.user] == cluster.values[inter.item]).mean()
    assert same > 0.7  # planted structure; 0.1 if users ignored clusters


# --- splits --------------------------------------------------------------------------------------


def test_random_split_sizes_disjoint_seeded(movielens):
    cfg = SplitConfig(method="random", val_fraction=0.1, test_fraction=0.2, seed=7)
    s = make_split(movielens, cfg, 0)
    assert (len(s.train), len(s.val), len(s.test)) == (70_000, 10_000, 20_000)
    parts = [_triples(p) for p in (s.train, s.val, s.test)]
    assert sum(map(len, parts)) == 100_000 and set.union(*parts) == _triples(movielens.interactions)
    for p in (s.train, s.val, s.test):
        assert np.all(np.diff(p.timestamp) >= 0) and p.history is None
    again = make_split(movielens, cfg, 0)
    other = make_split(movielens, SplitConfig(method="random", val_fraction=0.1, test_fraction=0.2, seed=8), 0)
    assert np.array_equal(again.test.item, s.test.item) and np.array_equal(again.test.user, s.test.user)
    assert _triples(other.test) != parts[2]
    assert s.item_counts().sum() == 70_000 and s.item_counts().shape == (1683,)


def test_temporal_split_cuts_by_time(movielens):
    s = make_split(movielens, SplitConfig(method="temporal", val_fraction=0.1, test_fraction=0.2), 0)
    assert (len(s.train), len(s.val), len(s.test)) == (70_000, 10_000, 20_000)
    assert s.train.timestamp.max() <= s.val.timestamp.min() and s.val.timestamp.max() <= s.test.timestamp.min()
    assert s.train.timestamp.min() == movielens.interactions.timestamp.min()
    assert sum(map(len, map(_triples, (s.train, s.val, s.test)))) == 100_000


def test_leave_last_out_on_movielens(movielens):
    s = make_split(movielens, SplitConfig(method="leave_last_out"), 0)
    assert len(s.test) == len(s.val) == 943 and len(s.train) == 100_000 - 2 * 943
    assert sorted(s.test.user.tolist()) == list(range(1, 944)) == sorted(s.val.user.tolist())
    inter = movielens.interactions
    last = np.zeros(944, np.int64)
    np.maximum.at(last, inter.user, inter.timestamp)
    assert np.array_equal(s.test.timestamp, last[s.test.user])
    val_ts = dict(zip(s.val.user.tolist(), s.val.timestamp.tolist()))
    test_ts = dict(zip(s.test.user.tolist(), s.test.timestamp.tolist()))
    assert all(val_ts[u] <= test_ts[u] for u in val_ts)
    train_last = np.zeros(944, np.int64)
    np.maximum.at(train_last, s.train.user, s.train.timestamp)
    assert np.all(train_last[1:] <= np.array([val_ts[u] for u in range(1, 944)]))


def _toy() -> Dataset:
    """user a: items p, q, r, s at t=10, 20, 20, 30 (q and r tie); user b: t at 20; user c: p, q."""
    return assemble("toy", ["a", "a", "a", "a", "b", "c", "c"], ["p", "q", "r", "s", "t", "p", "q"],
                    np.array([10, 20, 20, 30, 20, 5, 40]))


def test_leave_last_out_picks_the_last_and_keeps_short_users_in_train():
    ds = _toy()
    s = make_split(ds, SplitConfig(method="leave_last_out"), 0)
    name = lambda inter: [(ds.user_ids[u], ds.item_ids[i]) for u, i in zip(inter.user, inter.item)]  # noqa: E731
    assert name(s.test) == [("a", "s")] and name(s.val) == [("a", "r")]
    assert name(s.train) == [("c", "p"), ("a", "p"), ("a", "q"), ("b", "t"), ("c", "q")]


def test_history_is_strictly_before_with_ties():
    ds = _toy()
    i = {raw: k for k, raw in enumerate(ds.item_ids)}
    s = make_split(ds, SplitConfig(method="leave_last_out"), 3)
    rows = {(ds.user_ids[u], ds.item_ids[it]): h.tolist()
            for part in (s.train, s.val, s.test) for u, it, h in zip(part.user, part.item, part.history)}
    assert rows[("a", "p")] == [0, 0, 0]
    assert rows[("a", "q")] == rows[("a", "r")] == [0, 0, i["p"]]  # the tie partner is not "before"
    assert rows[("a", "s")] == [i["p"], i["q"], i["r"]]  # test row sees train and val rows
    assert rows[("b", "t")] == [0, 0, 0] and rows[("c", "q")] == [0, 0, i["p"]]
    inter = ds.interactions
    short = histories(inter.user, inter.item, inter.timestamp, 1)
    assert short[inter.item == i["s"]].tolist() == [[i["r"]]]  # most recent last: r follows q in the log
    assert short.dtype == np.int32


def test_history_matches_brute_force_on_movielens(movielens):
    inter = movielens.interactions
    hist = histories(inter.user, inter.item, inter.timestamp, 5)
    rng = np.random.default_rng(0)
    for r in rng.choice(len(inter), 300, replace=False):
        before = np.flatnonzero((inter.user == inter.user[r]) & (inter.timestamp < inter.timestamp[r]))
        expect = inter.item[before][-5:].tolist()
        assert hist[r].tolist() == [0] * (5 - len(expect)) + expect


def test_split_histories_cover_every_part(movielens):
    s = make_split(movielens, SplitConfig(method="temporal"), 4)
    for p in (s.train, s.val, s.test):
        assert p.history.shape == (len(p), 4) and p.history.dtype == np.int32
    assert (s.test.history[:, -1] > 0).mean() > 0.9  # late interactions mostly have a past


# --- pipeline ------------------------------------------------------------------------------------


def _inter(n: int, history: int = 0) -> Interactions:
    rng = np.random.default_rng(3)
    return Interactions(
        user=np.arange(1, n + 1, dtype=np.int32), item=rng.integers(1, 50, n).astype(np.int32),
        timestamp=np.arange(n, dtype=np.int64), weight=np.linspace(1, 5, n).astype(np.float32),
        history=rng.integers(0, 50, (n, history)).astype(np.int32) if history else None)


def _epoch(ds) -> list[dict]:
    return [{k: v.numpy() for k, v in b.items()} for b in ds]


def test_pipeline_batches_shuffles_and_keeps_the_last_batch():
    from tuner.data.pipeline import train_dataset

    inter = _inter(10, history=3)
    ds = train_dataset(inter, batch_size=4, seed=5, num_items=49)
    first, second = _epoch(ds), _epoch(ds)
    assert [len(b["user"]) for b in first] == [4, 4, 2]
    assert set(first[0]) == {"user", "item", "weight", "history"}
    b = first[0]
    assert b["user"].dtype == b["item"].dtype == b["history"].dtype == np.int32 and b["weight"].dtype == np.float32
    assert b["history"].shape == (4, 3) and (b["weight"] == 1).all()
    users = np.concatenate([x["user"] for x in first])
    assert sorted(users.tolist()) == list(range(1, 11))  # every row once per epoch
    for x in first:  # rows stay intact
        assert np.array_equal(x["item"], inter.item[x["user"] - 1])
        assert np.array_equal(x["history"], inter.history[x["user"] - 1])
    orders = [np.concatenate([x["user"] for x in e]).tolist() for e in (first, second)]
    assert orders[0] != orders[1] and orders[0] != list(range(1, 11))  # reshuffled every epoch
    twin = _epoch(train_dataset(inter, batch_size=4, seed=5, num_items=49))
    assert np.concatenate([x["user"] for x in twin]).tolist() == orders[0]  # seeded
    weighted = _epoch(train_dataset(_inter(10), batch_size=10, seed=5, num_items=49, use_weights=True))[0]
    assert "history" not in weighted and np.allclose(weighted["weight"], inter.weight[weighted["user"] - 1])


def test_pipeline_uniform_negatives_in_range_and_uniform():
    from tuner.data.pipeline import train_dataset

    num_items = 20
    ds = train_dataset(_inter(4000), batch_size=100, seed=1, num_items=num_items, uniform_negatives=500)
    batches = _epoch(ds)
    assert len(batches) == 40 and all(b["uniform_negatives"].shape == (500,) for b in batches)
    assert batches[0]["uniform_negatives"].dtype == np.int32
    negs = np.concatenate([b["uniform_negatives"] for b in batches])
    assert negs.min() >= 1 and negs.max() <= num_items
    counts = np.bincount(negs, minlength=num_items + 1)[1:]
    expected = len(negs) / num_items
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 50  # 19 degrees of freedom: p < 1e-3 above ~43.8
    assert not np.array_equal(batches[0]["uniform_negatives"], batches[1]["uniform_negatives"])
    assert "uniform_negatives" not in _epoch(train_dataset(_inter(10), 4, 1, num_items))[0]


# --- errors ----------------------------------------------------------------------------------------


def _error(cfg: DatasetConfig) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(cfg)
    message = str(info.value)
    assert "\n" not in message
    return message


def _files(tmp_path, name: str, text: str | None = None, **tables) -> DatasetConfig:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    for key, (table_name, table_text) in tables.items():
        (tmp_path / table_name).write_text(table_text)
        tables[key] = str(tmp_path / table_name)
    return DatasetConfig(name="files", interactions=str(path), **tables)


GOOD = "user_id,item_id,timestamp\nu1,i1,1\nu2,i2,2\nu1,i2,3\n"


@pytest.mark.parametrize("name, text, tables, expected", [
    ("nope.csv", None, {}, ["nope.csv", "file not found"]),
    ("data.xlsx", "x", {}, ["data.xlsx", "unsupported file suffix '.xlsx'", ".csv, .tsv, .tab, .parquet"]),
    ("empty.csv", "", {}, ["empty.csv", "empty file"]),
    ("header.csv", "user_id,item_id\n", {}, ["header.csv", "empty file"]),
    ("cols.csv", "user,item_id\nu1,i1\n", {}, ["cols.csv", "missing column 'user_id'", "found: user, item_id"]),
    ("ts.csv", "user_id,item_id,timestamp\nu1,i1,1\nu2,i2,yesterday\n", {},
     ["ts.csv", "'timestamp' must be numeric", "row 2", "'yesterday'"]),
    ("w.tsv", "user_id\titem_id\tweight\nu1\ti1\tlots\n", {}, ["w.tsv", "'weight' must be numeric", "'lots'"]),
    ("neg.csv", "user_id,item_id,weight\nu1,i1,1\nu1,i2,-2\n", {}, ["neg.csv", "'weight' must be >= 0", "row 2"]),
    ("blank.csv", "user_id,item_id\nu1,i1\n,i2\n", {}, ["blank.csv", "'user_id' is empty in row 2"]),
    ("ok.csv", GOOD, {"item_features": ("items.csv", "item_id,genre\nx1,a\nx2,b\nx3,c\nx4,d\n")},
     ["items.csv", "none of its item_id values occur", "'x1', 'x2', 'x3'", "'i1', 'i2'"]),
    ("ok.csv", GOOD, {"user_features": ("users.csv", "user_id,age\nu1,3\nu2,4\nu1,5\n")},
     ["users.csv", "duplicate user_id values: 'u1'"]),
    ("ok.csv", GOOD, {"user_features": ("users.csv", "id,age\nu1,3\n")},
     ["users.csv", "missing column 'user_id'", "found: id, age"]),
    ("ok.csv", GOOD, {"item_features": ("items.json", "{}")}, ["items.json", "unsupported file suffix"]),
])
def test_files_errors(tmp_path, name, text, tables, expected):
    message = _error(_files(tmp_path, name, text, **tables))
    for part in expected:
        assert part in message, (part, message)


def test_feature_rows_for_unknown_ids_are_dropped_with_a_note(tmp_path, capfd):
    cfg = _files(tmp_path, "ok.csv", GOOD, item_features=("items.csv", "item_id,genre\ni1,a\nghost,b\n"))
    ds = load_dataset(cfg)
    assert ds.item_features["genre"].values.tolist() == [0, 1, 0] and ds.item_features["genre"].vocab_size == 2
    assert "ignoring 1 rows" in capfd.readouterr().err


def test_grouplens_errors(tmp_path):
    folder = tmp_path / "gl"
    assert "folder not found" in _error(DatasetConfig(name="grouplens", path=str(folder)))
    folder.mkdir()
    (folder / "u.data").write_text("1\t10\t5\t100\n2\t10\t3\t101\n")
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    assert _error(DatasetConfig(name="grouplens", path=str(folder))).startswith(f"{folder / 'u.item'}: file not found")
    (folder / "u.item").write_text("10|Film (1995)|01-Jan-1995||url" + "|0" * 18 + "|1\n")
    ds = load_dataset(DatasetConfig(name="grouplens", path=str(folder)))
    assert ds.item_titles.tolist() == ["", "Film (1995)"] and ds.item_features["genres"].vocab_size == 2
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F\n")
    assert _error(DatasetConfig(name="grouplens", path=str(folder))) == (
        f"{folder / 'u.user'}: line 2 has 3 '|'-separated fields, expected 5 (user_id, age, gender, occupation, zip_code)")
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    (folder / "u.item").write_text("10|Film (1995)|01-Jan-1995\n")
    assert "line 1 has 3 '|'-separated fields, expected 24" in _error(DatasetConfig(name="grouplens", path=str(folder)))


def test_unknown_dataset_name():
    with pytest.raises(ConfigError, match="dataset.name: 'imdb' is not one of movielens-100k"):
        load_dataset(DatasetConfig(name="imdb"))
