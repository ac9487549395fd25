"""Full-corpus metrics against a plain NumPy reference (full sort, one query at a time)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tuner.evaluate as ev
from tuner import config, heldout, ranking, topk
from tuner.data.types import Dataset, Interactions, Split
from tuner.errors import ConfigError, EvaluationError

import tensorflow as tf  # noqa: E402  (after tuner: tf-keras must be selected first)


def interactions(user, item, history=None) -> Interactions:
    user, item = np.asarray(user, np.int32), np.asarray(item, np.int32)
    n = len(user)
    return Interactions(user, item, np.arange(n, dtype=np.int64), np.ones(n, np.float32),
                        None if history is None else np.asarray(history, np.int32).reshape(n, -1))


def make_split(train, val, test, num_users, num_items) -> Split:
    dataset = Dataset("hand", np.array([""] + [f"u{i}" for i in range(1, num_users + 1)]),
                      np.array([""] + [f"i{i}" for i in range(1, num_items + 1)]), train)
    return Split(dataset, train, val, test)


def random_split(seed, num_users=40, num_items=30, sizes=(300, 60, 80), history_length=0) -> Split:
    """Small catalogue so that users repeat items across parts and hold out several items each."""
    rng = np.random.default_rng(seed)
    parts = []
    for n in sizes:
        history = None
        if history_length:  # few distinct values so that some (user, history) queries coincide
            history = rng.integers(0, 4, size=(n, history_length))
        parts.append(interactions(rng.integers(1, num_users + 1, n), rng.integers(1, num_items + 1, n), history))
    return make_split(*parts, num_users, num_items)


class TableModel:
    """Two towers as fixed embedding tables; the query adds the history's item vectors to the user's."""

    def __init__(self, users, items, history_items=None):
        self.users, self.items = np.asarray(users, np.float32), np.asarray(items, np.float32)
        self.history_items = None if history_items is None else np.asarray(history_items, np.float32)

    def query_vector(self, user, history=None):
        q = self.users[user].astype(np.float64)
        if history is not None:
            q = q + self.history_items[history].sum(axis=-2)
        return q

    def query_tower(self, features, training=False):
        assert not training and features["user"].dtype == tf.int32
        q = tf.gather(self.users, features["user"])
        if "history" in features:
            q += tf.reduce_sum(tf.gather(self.history_items, features["history"]), axis=1)
        return q

    def candidate_tower(self, item, training=False):
        assert not training and item.dtype == tf.int32
        assert int(tf.reduce_min(item)) >= 1, "the padding index is never a candidate"
        return tf.gather(self.items, item)


def int_model(seed, split, dim=4, low=-2, high=3) -> TableModel:
    """Small-integer embeddings: scores are exact in float32 and float64, and ties are common."""
    rng = np.random.default_rng(seed)
    ds = split.dataset
    return TableModel(rng.integers(low, high, (ds.num_users + 1, dim)), rng.integers(low, high, (ds.num_items + 1, dim)),
                      rng.integers(low, high, (ds.num_items + 1, dim)))


# --- the reference: one query at a time, full stable sort ------------------------------------


def ranked_items(scores, banned=()):
    """Items 1..N by descending score, lower index first on ties, without `banned`."""
    order = np.argsort(-np.asarray(scores, np.float64)[1:], kind="stable") + 1
    return [int(i) for i in order if int(i) not in set(banned)]


def reference(score_of, split, part, ks):
    """score_of(j) -> scores [num_items + 1] of held-out interaction j's query."""
    held = getattr(split, part)
    earlier = [split.train] if part == "val" else [split.train, split.val]
    out = {}
    ranks = [ranked_items(score_of(j)).index(int(held.item[j])) for j in range(len(held))]
    recall, ndcg = {k: [] for k in ks}, {k: [] for k in ks}
    for u in np.unique(held.user):
        first = int(np.flatnonzero(held.user == u)[0])
        seen = {int(i) for e in earlier for i in e.item[e.user == u]}
        relevant = {int(i) for i in held.item[held.user == u]}
        ranked = ranked_items(score_of(first), seen)
        for k in ks:
            top = ranked[:k]
            recall[k].append(len(relevant & set(top)) / len(relevant))
            dcg = sum(1 / np.log2(r + 2) for r, i in enumerate(top) if i in relevant)
            idcg = sum(1 / np.log2(r + 2) for r in range(min(len(relevant), k)))
            ndcg[k].append(dcg / idcg)
    for k in ks:
        out[f"hit_rate@{k}"] = float(np.mean([r < k for r in ranks]))
    out.update({f"recall@{k}": float(np.mean(recall[k])) for k in ks})
    out.update({f"ndcg@{k}": float(np.mean(ndcg[k])) for k in ks})
    return out


def model_scores(model, split, part):
    held = getattr(split, part)

    def score_of(j):
        history = None if held.history is None else held.history[j]
        return model.items.astype(np.float64) @ model.query_vector(held.user[j], history)
    return score_of


def popularity_scores(split):
    counts = split.item_counts()
    return lambda j: counts


def assert_same(actual, expected):
    assert list(actual) == list(expected)
    for key in expected:
        assert actual[key] == pytest.approx(expected[key], abs=1e-12), key


KS = [1, 3, 10, 35]  # 35 > num_items: every unmasked item is in the top


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("part", ["val", "test"])
@pytest.mark.parametrize("history_length", [0, 2])
def test_model_matches_reference(part, history_length):
    split = random_split(1 + history_length, history_length=history_length)
    model = int_model(7, split)
    expected = reference(model_scores(model, split, part), split, part, KS)
    assert_same(ev.evaluate(model, split, part, KS), expected)
    # the protocol has teeth: excluding seen items changes recall, and some users hold out several items
    held = getattr(split, part)
    assert np.bincount(held.user).max() >= 3
    assert any(v not in (0.0, 1.0) for v in expected.values())


@pytest.mark.parametrize("part", ["val", "test"])
def test_most_popular_matches_reference_with_ties(part):
    split = random_split(3, num_items=60, sizes=(90, 50, 70))
    counts = split.item_counts()
    assert len(set(counts[1:])) < 20 and (counts[1:] == 0).any()  # many ties, some never trained on
    expected = reference(popularity_scores(split), split, part, KS)
    assert_same(ev.most_popular(split, part, KS), expected)


def test_most_popular_by_hand():
    # training counts: item 1: 1, item 2: 2, item 3: 2, item 4: 0 -> ranking 2, 3, 1, 4 (ties: lower index first)
    train = interactions([1, 1, 2, 2, 3], [2, 3, 2, 3, 1])
    val = interactions([3], [4])
    test = interactions([1, 1, 3, 2], [3, 4, 3, 2])
    split = make_split(train, val, test, num_users=3, num_items=4)
    got = ev.most_popular(split, "test", [1, 2])
    # hit_rate (nothing excluded): (1,3) rank 2, (1,4) rank 4, (3,3) rank 2, (2,2) rank 1
    assert got["hit_rate@1"] == 0.25 and got["hit_rate@2"] == 0.75
    # recall/ndcg: user 1 sees [1, 4] (2, 3 seen in train) -> relevant {3, 4}: hit 4 at rank 2
    #   user 2 sees [1, 4] -> relevant {2}, seen in train, so never retrieved: 0
    #   user 3 sees [2, 3] (1 from train, 4 from val excluded) -> relevant {3}: rank 2
    assert got["recall@1"] == 0.0
    assert got["recall@2"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    d = 1 / np.log2(3)
    assert got["ndcg@2"] == pytest.approx((d / (1 + d) + 0 + d) / 3)
    # on val, test items do not count as seen: user 3's relevant item 4 is last among 2, 3, 4
    assert ev.most_popular(split, "val", [2, 3]) == {
        "hit_rate@2": 0.0, "hit_rate@3": 0.0, "recall@2": 0.0, "recall@3": 1.0, "ndcg@2": 0.0, "ndcg@3": 0.5}


@pytest.mark.parametrize("history_length", [0, 3])
def test_chunks_give_the_same_numbers(monkeypatch, history_length):
    split = random_split(5, num_users=60, num_items=50, sizes=(400, 80, 120), history_length=history_length)
    model = int_model(11, split)
    whole = ev.evaluate(model, split, "test", KS)
    popular = ev.most_popular(split, "test", KS)
    assert_same(whole, reference(model_scores(model, split, "test"), split, "test", KS))
    monkeypatch.setattr(ranking, "LOG_EVERY_S", 0.0)
    monkeypatch.setattr(ranking, "CHUNK_ROWS", 3)  # three queries per chunk
    lines = []
    assert_same(ev.evaluate(model, split, "test", KS, log=lines.append), whole)
    assert_same(ev.most_popular(split, "test", KS), popular)
    chunks = int(lines[-1].split("/")[0].split()[-1])
    assert chunks >= 10 and len(lines) == chunks and f"chunk {chunks}/{chunks}" in lines[-1]

    # a dense score matrix (a baseline's) is what memory_mb bounds
    monkeypatch.setattr(ranking, "CHUNK_ROWS", 256)
    q = heldout.queries_of(split, "test", KS)
    calls = []

    def dense(start, end):
        calls.append(end - start)
        return np.stack([model.items[1:] @ model.query_vector(q.user[r], None if q.history is None else q.history[r])
                         for r in range(start, end)])

    tiny = 3 * 51 * 4 / 2**20
    assert ranking.chunk_rows(50, tiny) == 3
    assert_same(ranking.rank(dense, q, 50, KS, tiny), whole)
    assert max(calls) == 3 and sum(calls) == len(q.user)


@pytest.mark.parametrize("rows, limit, cores, chunk, chunks", [
    (2211, 256, 2, 224, 10),  # 10 equal chunks, not 9 of 256 (one core idle for the last)
    (100, 256, 2, 64, 2), (7, 256, 2, 4, 2), (1, 256, 2, 1, 1), (33, 3, 2, 3, 11), (1000, 256, 1, 256, 4)])
def test_chunks_are_equal_across_cores(rows, limit, cores, chunk, chunks):
    assert ranking.chunks(rows, limit, cores) == (chunk, chunks)


def test_chunk_rows_bounds_the_score_matrix():
    assert ranking.chunk_rows(1_000_000, 512) == 134  # 134 * 1_000_001 * 4 bytes <= 512 MiB < 135 * ...
    assert 134 * 1_000_001 * 4 <= 512 * 2**20 < 135 * 1_000_001 * 4
    assert ranking.chunk_rows(10_000_000, 1) == 1  # never zero


def test_padding_index_is_never_ranked():
    split = random_split(9)
    model = int_model(4, split)
    model.items[0] = 100.0  # item 0 would outscore everything if it were ranked
    model.users[:] = np.abs(model.users) + 1
    n = split.dataset.num_items
    got = ev.evaluate(model, split, "test", [1, n])
    assert_same(got, reference(model_scores(model, split, "test"), split, "test", [1, n]))
    assert got["hit_rate@1"] > 0 and got[f"hit_rate@{n}"] == 1.0  # all n real items fit in the top n
    assert ev.most_popular(split, "test", [n])[f"hit_rate@{n}"] == 1.0


def test_empty_part_and_bad_arguments():
    split = random_split(2, sizes=(100, 0, 20))
    model = int_model(1, split)
    assert ev.evaluate(model, split, "val", [10]) == {} and ev.most_popular(split, "val", [10]) == {}
    assert ev.evaluate(model, split, "test", [5]).keys() == {"hit_rate@5", "recall@5", "ndcg@5"}
    with pytest.raises(EvaluationError, match="part: 'train' is not one of val, test"):
        ev.evaluate(model, split, "train", [10])
    with pytest.raises(EvaluationError, match="ks"):
        ev.most_popular(split, "test", [0])
    with pytest.raises(EvaluationError, match="ks"):
        ev.most_popular(split, "test", [])
    split.test.item[0] = 0
    with pytest.raises(EvaluationError, match=r"split.test.item: indices must be in 1..30"):
        ev.most_popular(split, "test", [10])


def test_keras_towers_with_history():
    split = random_split(6, num_users=30, num_items=40, history_length=4)
    split.test.history[:] = np.random.default_rng(0).integers(0, 41, split.test.history.shape)
    d = 8
    user_emb = tf.keras.layers.Embedding(31, d)
    item_emb = tf.keras.layers.Embedding(41, d)
    history_emb = tf.keras.layers.Embedding(41, d, mask_zero=True)
    pool = tf.keras.layers.GlobalAveragePooling1D()
    dense = tf.keras.layers.Dense(d)
    tf.keras.utils.set_random_seed(3)

    class Towers:
        def query_tower(self, features, training=False):
            h = history_emb(features["history"])
            return dense(tf.concat([user_emb(features["user"]), pool(h, mask=history_emb.compute_mask(features["history"]))], 1),
                         training=training)

        def candidate_tower(self, item, training=False):
            return item_emb(item)

    towers = Towers()
    held = split.test
    queries = towers.query_tower({"user": tf.constant(held.user), "history": tf.constant(held.history)}).numpy()
    items = towers.candidate_tower(tf.range(41)).numpy()
    expected = reference(lambda j: items.astype(np.float64) @ queries[j].astype(np.float64), split, "test", KS)
    got = ev.evaluate(towers, split, "test", KS, memory_mb=0.001)
    assert list(got) == list(expected)
    assert got == pytest.approx(expected, abs=1e-12)


def test_format_table():
    text = ev.format_table({"model": {"test_hit_rate@10": 0.25, "test_recall@10": 0.125},
                            "MostPopular": {"test_hit_rate@10": 0.5}})
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "model", "MostPopular"]
    assert lines[1].split() == ["test_hit_rate@10", "0.2500", "0.5000"]
    assert lines[2].split() == ["test_recall@10", "0.1250", "-"]
    assert len({len(line) for line in lines}) == 1  # right-aligned columns


SCALE = textwrap.dedent("""
    import resource, sys, time
    import numpy as np
    sys.path.insert(0, {tests!r})
    import tuner.evaluate as ev
    from test_evaluate import TableModel, interactions, make_split
    rng = np.random.default_rng(0)
    users, items, n = 2000, 200_000, 2000
    train = interactions(rng.integers(1, users + 1, 20_000), rng.integers(1, items + 1, 20_000))
    test = interactions(np.arange(1, n + 1), rng.integers(1, items + 1, n))
    split = make_split(train, interactions([], []), test, users, items)
    model = TableModel(rng.standard_normal((users + 1, 16)), rng.standard_normal((items + 1, 16)))
    def rss_mib():
        return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
    before = rss_mib()
    start = time.time()
    metrics = ev.evaluate(model, split, "test", [10, 100], memory_mb=64)
    elapsed = time.time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(elapsed, peak - before, metrics["hit_rate@100"], metrics["recall@100"])
""")


def test_scale_200k_items_2k_queries_in_bounded_memory():
    """The full 2k x 200k score matrix is 1.6 GB; chunks of 64 MiB must keep the peak far below it."""
    tests = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-c", SCALE.format(tests=tests)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    elapsed, growth, hit_rate, recall = map(float, out.stdout.split()[-4:])
    assert elapsed < 20, elapsed
    assert growth < 700, growth  # MiB above the baseline; holding the whole matrix would need >= 1526
    assert 0 <= hit_rate <= recall < 0.01  # random towers; excluding train items can only lift recall


# --- the ranking: exact top K, ties included ------------------------------------------------


def previous_top_k(matrix, k, masked_rows, masked_items):
    """The ranking evaluate used before tuner.topk: whole masked score rows through tf.math.top_k."""
    scores = tf.constant(matrix)
    if len(masked_rows):
        at = np.stack([masked_rows, np.asarray(masked_items) - 1], axis=1)
        scores = tf.tensor_scatter_nd_update(scores, at, tf.fill([len(at)], tf.constant(-np.inf, scores.dtype)))
    values, index = tf.math.top_k(scores, k=k, sorted=True)
    items, values = index.numpy().astype(np.int64) + 1, values.numpy()
    items[np.isneginf(values)] = 0
    return items, values


def numpy_top_k(matrix, k, masked_rows, masked_items):
    """A stable sort by descending score: equal scores keep index order."""
    scores = np.array(matrix)
    scores[masked_rows, np.asarray(masked_items, np.int64) - 1] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(scores, order, axis=1)
    items = order + 1
    items[np.isneginf(values)] = 0
    return items, values


def random_case(rng, levels):
    """Small-integer embeddings with `levels` values: exact float32 scores, ties everywhere;
    masks from none to almost whole rows (then k exceeds the unmasked items)."""
    rows, num_items, dim = int(rng.integers(1, 12)), int(rng.integers(1, 2500)), int(rng.integers(1, 4))
    k = int(rng.integers(1, min(num_items, 150) + 1))
    queries = rng.integers(-1, levels, (rows, dim)).astype(np.float32)
    items = rng.integers(-1, levels, (num_items, dim)).astype(np.float32)
    share = rng.choice([0.0, 0.01, 0.3, 0.97])
    flat = np.flatnonzero(rng.random(rows * num_items) < share)
    masked = (flat // num_items, flat % num_items + 1)
    pairs = rng.integers(0, rows * num_items, 30)
    lookup = (pairs // num_items, pairs % num_items + 1)
    return queries, items, k, masked, lookup


def test_tf_top_k_ranks_equal_scores_lower_index_first():
    """The tie rule the ranking keeps is the one evaluate had: tf.math.top_k is stable."""
    rng = np.random.default_rng(0)
    for _ in range(30):
        queries, items, k, masked, _ = random_case(rng, levels=2)
        matrix = queries @ items.T
        for got, want in zip(previous_top_k(matrix, k, *masked), numpy_top_k(matrix, k, *masked)):
            np.testing.assert_array_equal(got, want)
    items, _ = previous_top_k(np.array([[0.0, -0.0, 0.0, -0.0]], np.float32), 4, [], [])
    assert items.tolist() == [[1, 2, 3, 4]]  # -0.0 and 0.0 are one score


@pytest.mark.parametrize("seed, tile_bytes, block_bytes", [(0, 256, 256), (1, 256, 16384), (2, 4096, 1 << 21),
                                                          (3, 1 << 20, 1 << 20)])
def test_fast_top_k_equals_the_previous_ranking_with_ties(seed, tile_bytes, block_bytes, monkeypatch):
    rng = np.random.default_rng(seed)
    # tiles of 1 to many groups, blocks of 1 to many tiles; threshold updates after every group or almost never
    monkeypatch.setattr(topk, "TILE_BYTES", tile_bytes)
    monkeypatch.setattr(topk, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(topk, "UPDATE_EVERY", int(rng.choice([1, 16, 10_000])))
    boundary_ties = 0
    for _ in range(40):
        queries, items, k, masked, lookup = random_case(rng, levels=int(rng.choice([1, 2, 3, 8])))
        rows, num_items = len(queries), len(items)
        matrix = queries @ items.T
        want = previous_top_k(matrix, k, *masked)
        for got, reference_ in zip(want, numpy_top_k(matrix, k, *masked)):
            np.testing.assert_array_equal(got, reference_)
        tile = topk.tile_items(rows, num_items)
        shared = np.broadcast_to(matrix[:1], matrix.shape)  # MostPopular: every row scores alike
        for source, scores in [(topk.DenseScores(matrix, tile), matrix),
                               (topk.DotScores(queries, items[topk.tile_order(num_items, tile)], tile).rows(0, rows), matrix),
                               (topk.SharedScores(matrix[0], rows, tile), shared)]:
            expected = want if scores is matrix else previous_top_k(np.array(shared), k, *masked)
            got = topk.rank(source, rows, num_items, k, masked=masked, lookup=lookup)
            np.testing.assert_array_equal(got.items, expected[0])
            np.testing.assert_array_equal(got.values, expected[1])
            np.testing.assert_array_equal(got.looked_up, scores[lookup[0], lookup[1] - 1])
        ranked = numpy_top_k(matrix, num_items, *masked)[1]  # every score, in rank order
        if k < num_items:
            boundary_ties += int(np.sum((ranked[:, k - 1] == ranked[:, k]) & np.isfinite(ranked[:, k])))
    assert boundary_ties > 20  # equal scores straddle the k-th place, so the tie rule decided


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_top_k_on_rounded_float_scores(dtype):
    """Float scores rounded to one decimal: few distinct values, the k-th place tied in most rows."""
    rng = np.random.default_rng(5)
    for tile in (topk.GROUP, topk.tile_items(9, 7000)):  # one group per tile, or the whole corpus
        matrix = np.round(rng.standard_normal((9, 7000)), 1).astype(dtype)
        masked = (rng.integers(0, 9, 400), rng.integers(1, 7001, 400))
        want = previous_top_k(matrix, 100, *masked)
        got = topk.rank(topk.DenseScores(matrix, tile), 9, 7000, 100, masked=masked)
        np.testing.assert_array_equal(got.items, want[0])
        np.testing.assert_array_equal(got.values, want[1])


def test_many_tiles_through_evaluate_match_the_reference(monkeypatch):
    monkeypatch.setattr(topk, "TILE_BYTES", 4096)  # 2,000 items over dozens of tiles
    split = random_split(8, num_users=30, num_items=2000, sizes=(3000, 200, 300))
    model = int_model(3, split, dim=2, low=-1, high=2)
    ks = [1, 10, 150]
    assert_same(ev.evaluate(model, split, "test", ks), reference(model_scores(model, split, "test"), split, "test", ks))
    assert_same(ev.most_popular(split, "val", ks), reference(popularity_scores(split), split, "val", ks))


@pytest.mark.parametrize("cores", [1, 3])
def test_chunks_ranked_on_one_or_several_threads_match_the_reference(cores, monkeypatch):
    """Chunks run one per core, each with blocks of several tiles: every thread count ranks alike, ties included."""
    monkeypatch.setattr(ranking, "cores", lambda: cores)
    monkeypatch.setattr(ranking, "CHUNK_ROWS", 16)
    monkeypatch.setattr(topk, "TILE_BYTES", 2048)
    monkeypatch.setattr(topk, "BLOCK_BYTES", 8192)
    split = random_split(9, num_users=90, num_items=700, sizes=(2000, 100, 300))
    model = int_model(4, split, dim=2, low=-1, high=2)  # few distinct scores: ties everywhere
    assert_same(ev.evaluate(model, split, "test", KS), reference(model_scores(model, split, "test"), split, "test", KS))


def test_nan_scores_are_an_error():
    split = random_split(4)
    model = int_model(2, split)
    model.items[5, 1] = np.nan
    with pytest.raises(EvaluationError, match="^scores: NaN"):
        ev.evaluate(model, split, "test", KS)
    matrix = np.zeros((2, 10), np.float32)
    matrix[1, 7] = np.nan
    with pytest.raises(EvaluationError, match="^scores: NaN"):
        topk.rank(topk.DenseScores(matrix, topk.tile_items(2, 10)), 2, 10, 3)


# --- cheap per-epoch validation: a seeded sample of val users ------------------------------------


def test_sample_users_is_seeded_exact_and_evaluates_only_those_users():
    split = random_split(3, num_users=200, num_items=40, sizes=(600, 300, 100))
    users = np.unique(split.val.user)
    assert heldout.sample_users(split, "val", len(users), 0) is None  # not more users than asked: all count
    assert heldout.sample_users(split, "val", None, 0) is None  # the default, 5,000, exceeds them
    sample = heldout.sample_users(split, "val", 25, 7)
    assert len(sample) == len(np.unique(sample)) == 25 and set(sample) <= set(users)
    np.testing.assert_array_equal(sample, heldout.sample_users(split, "val", 25, 7))
    assert not np.array_equal(sample, heldout.sample_users(split, "val", 25, 8))
    cut = heldout.only_users(split, "val", sample)
    assert set(np.unique(cut.val.user)) == set(sample) and len(cut.train) == len(split.train)
    model = int_model(6, split)
    assert_same(ev.evaluate(model, split, "val", KS, users=sample), reference(model_scores(model, cut, "val"), cut, "val", KS))
    assert_same(ev.most_popular(split, "val", KS, users=sample), reference(popularity_scores(cut), cut, "val", KS))


def test_per_epoch_validation_uses_the_sample_and_final_metrics_use_every_user(tmp_path):
    from tuner import train

    ks = [10, 50]
    cfg = config.from_dict({
        "seed": 3, "dataset": {"name": "synthetic", "num_users": 400, "num_items": 150, "num_interactions": 8000,
                               "num_clusters": 5, "cache_dir": str(tmp_path)},
        "split": {"method": "random", "val_fraction": 0.2, "test_fraction": 0.2, "seed": 11},
        "training": {"epochs": 1, "batch_size": 512}, "evaluation": {"ks": ks, "val_users": 40}}, "test")
    split = train.prepare_split(cfg)
    model = train.build_model_for(cfg, split)
    result = train.run(cfg, split, model=model, log=lambda message: None)
    sample = heldout.sample_users(split, "val", 40, cfg.split.seed)
    assert len(sample) == 40 < len(np.unique(split.val.user))
    epoch_val = result["epochs"][0]["val"]
    assert_same(epoch_val, ev.evaluate(model, split, "val", ks, users=sample))  # the trained model: one epoch
    full = ev.evaluate(model, split, "val", ks)
    assert_same({name: result["val"][name] for name in full}, full)
    assert epoch_val != full


@pytest.mark.parametrize("value", [0, -3, "many", True, 2.5])
def test_val_users_must_be_a_positive_integer_or_null(value):
    with pytest.raises(ConfigError, match=r"^cfg.yaml: evaluation.val_users: ") as error:
        config.from_dict({"evaluation": {"val_users": value}}, "cfg.yaml")
    assert "\n" not in str(error.value)
    assert config.from_dict({"evaluation": {"val_users": None}}).evaluation.val_users is None
    assert config.from_dict({"evaluation": {"val_users": 300}}).evaluation.val_users == 300
