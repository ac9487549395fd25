"""Search spaces: the built-in ones, Keras Tuner round trips, conditionals and every load error."""
import contextlib
import copy
import functools
import io
import operator
from pathlib import Path

import pytest
import yaml

import tuner  # noqa: F401  (before TensorFlow: selects tf-keras)
import keras_tuner as kt
from tuner import config, config_paths, space
from tuner.errors import ConfigError
from tuner.space import load_space

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = ("custom_towers", "full", "negatives", "temp")


def sample(sp, n, seed=0):
    """Trial values drawn by Keras Tuner's random-search oracle from the space's HyperParameters."""
    oracle = kt.oracles.RandomSearchOracle(objective=kt.Objective(sp.search.objective, sp.search.direction),
                                           max_trials=n, hyperparameters=sp.hyperparameters(), seed=seed)
    return [oracle.populate_space(str(i))["values"] for i in range(n)]


# --- built-in spaces -------------------------------------------------------------------------


def test_builtin_names_and_copies_are_identical():
    """search_spaces/ is the checkout's view of the shipped tuner/spaces/ (a symlink in git): the two
    trees must stay byte for byte the same."""
    assert space.builtin_names() == list(BUILTIN)
    shipped = sorted(p.name for p in (ROOT / "tuner" / "spaces").glob("*.yaml"))
    visible = sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml"))
    assert shipped == visible == [f"{n}.yaml" for n in BUILTIN]
    for name in shipped:
        assert (ROOT / "tuner" / "spaces" / name).read_bytes() == (ROOT / "search_spaces" / name).read_bytes(), (
            f"search_spaces/{name} differs from the shipped tuner/spaces/{name}")


@pytest.mark.parametrize("name", BUILTIN)
def test_shipped_spaces_need_no_checkout(name, tmp_path, monkeypatch):
    """An installed (non-editable) package has tuner/spaces/ and no experiments/ beside it: a
    shipped space may name code only as a module of an installed package, never a file path."""
    from tuner import usercode

    copied = tmp_path / "site" / "tuner" / "spaces" / f"{name}.yaml"  # where an install puts it
    copied.parent.mkdir(parents=True)
    copied.write_bytes((ROOT / "tuner" / "spaces" / f"{name}.yaml").read_bytes())
    monkeypatch.chdir(tmp_path)  # no checkout in sight: nothing relative can resolve by luck
    towers = load_space(str(copied)).base.get("model", {}).get("towers")
    if towers is None:
        return
    ref = usercode.parse(towers)
    assert not ref.is_file and ref.module.startswith("tuner."), f"{name}.yaml: model.towers {towers}"
    assert usercode.fingerprint(towers)["sha256"] is not None  # found by import, with its source file
    assert callable(usercode.load_function(towers))


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_space_samples_are_valid_configs(name):
    sp = load_space(name)
    assert sp.name == name and sp.search.study == name and Path(sp.source).is_file()
    cfg = config.from_dict(sp.base)
    assert (cfg.dataset.name, cfg.split.method, cfg.split.seed) == ("movielens-100k", "random", 42)
    assert (cfg.split.val_fraction, cfg.split.test_fraction) == (0.1, 0.2)
    assert cfg.evaluation.ks == [10, 100] and cfg.evaluation.monitor == "recall@10"
    assert sp.search.seed == cfg.seed and sp.search.max_epochs == cfg.training.epochs
    by_path = {p.path: p for p in sp.parameters}
    for values in sample(sp, 25):
        trial_cfg = sp.config_for(values)
        assert isinstance(trial_cfg, config.Config)
        searched = sp.searched_values(values)
        assert set(searched) == set(values)  # keras-tuner keeps only active values; no constants here
        for path, value in searched.items():
            assert functools.reduce(operator.getitem, path.split("."), trial_cfg.to_dict()) == value
            p = by_path[path]
            if p.values:
                assert value in p.values
            else:
                assert p.min <= value <= p.max
        assert sp.config_dict_for(values) == config_paths.with_values(sp.base, searched)


def test_temp_space_is_the_quick_start():
    sp = load_space("temp")
    cfg = config.from_dict(sp.base)
    assert cfg.model.normalize and cfg.retrieval.logq == "counts" and cfg.negatives.strategy == "in_batch"
    assert (sp.search.oracle, sp.search.objective, sp.search.max_trials) == ("random", "val_recall@10", 20)
    assert cfg.training.epochs <= 6 and cfg.training.batch_size == 1024
    assert [p.path for p in sp.parameters] == ["retrieval.temperature"] and sp.is_log("retrieval.temperature")
    (hp,) = sp.hyperparameters().space
    assert isinstance(hp, kt.engine.hyperparameters.Float) and hp.sampling == "log"
    assert (hp.min_value, hp.max_value, hp.default) == (0.001, 1.0, 0.1)  # default: the base value
    temps = [v["retrieval.temperature"] for v in sample(sp, 200)]
    assert min(temps) >= 0.001 and max(temps) <= 1.0
    # log-uniform: about a third of the draws in each decade
    assert 40 < sum(t < 0.01 for t in temps) < 95 and 40 < sum(t > 0.1 for t in temps) < 95


def test_bare_name_resolution(tmp_path, monkeypatch):
    assert load_space("temp").source == load_space("temp.yaml").source
    assert load_space("temp").source.endswith(str(Path("tuner", "spaces", "temp.yaml")))
    assert load_space(str(ROOT / "search_spaces" / "temp.yaml")).source == str(ROOT / "search_spaces" / "temp.yaml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "temp.yaml").write_text((ROOT / "search_spaces" / "temp.yaml").read_text().replace("max_trials: 20", "max_trials: 3"))
    assert load_space("temp.yaml").search.max_trials == 3  # an existing file wins over the built-in
    with pytest.raises(ConfigError, match=r"^nope: no such file, and not a built-in space \(built-in: custom_towers, full, negatives, temp\)$"):
        load_space("nope")
    with pytest.raises(ConfigError, match="built-in: custom_towers, full, negatives, temp"):
        load_space("some/dir/temp.yaml")  # a path that does not exist is not a bare name


# --- conditionals, encoding, trial values ------------------------------------------------------


def test_conditional_parameters_follow_their_parent():
    sp = load_space("negatives")
    hps = sp.hyperparameters()
    conditions = {hp.name: [c.get_config() for c in hp.conditions] for hp in hps.space}
    assert conditions["negatives.mns_batch_size"] == [{"name": "negatives.strategy", "values": ["mns"]}]
    assert conditions["negatives.cbns_memory_size"] == [{"name": "negatives.strategy", "values": ["cbns"]}]
    assert conditions["negatives.strategy"] == conditions["retrieval.temperature"] == []
    seen = set()
    for values in sample(sp, 40):
        strategy = values["negatives.strategy"]
        seen.add(strategy)
        assert ("negatives.mns_batch_size" in values) == (strategy == "mns")
        assert ("negatives.cbns_memory_size" in values) == ("negatives.cbns_warmup_steps" in values) == (strategy == "cbns")
        if strategy == "cbns":
            assert values["negatives.cbns_warmup_steps"] in (0, 50, 100, 150, 200)  # q_uniform q: 50
    assert seen == {"in_batch", "mns", "cbns"}

    base = {"negatives.strategy": "in_batch", "retrieval.temperature": 0.2}
    # an inactive parameter's value is ignored: the base value stays
    cfg = sp.config_for({**base, "negatives.mns_batch_size": 1024, "negatives.cbns_memory_size": 8192})
    assert (cfg.negatives.mns_batch_size, cfg.negatives.cbns_memory_size) == (256, 4096)
    assert sp.searched_values({**base, "negatives.mns_batch_size": 1024}) == base
    cfg = sp.config_for({**base, "negatives.strategy": "mns", "negatives.mns_batch_size": 1024})
    assert (cfg.negatives.strategy, cfg.negatives.mns_batch_size, cfg.negatives.cbns_memory_size) == ("mns", 1024, 4096)
    with pytest.raises(ConfigError, match=r"negatives\.yaml: trial values: no value for the active parameter 'negatives\.cbns_memory_size'"):
        sp.config_for({**base, "negatives.strategy": "cbns"})


def test_nested_conditions_and_list_values(tmp_path):
    path = write(tmp_path, parameters={
        "model.history_length": {"values": [0, 10]},
        "model.share_item_embedding": {"values": [True, False], "when": {"model.history_length": 10}},
        "model.query_layers": {"values": [[], [64, 32]], "when": {"model.share_item_embedding": [True]}},
    })
    sp = load_space(str(path))
    hps = sp.hyperparameters()
    assert [hp.name for hp in hps.space] == ["model.history_length", "model.share_item_embedding", "model.query_layers"]
    assert [c.get_config() for c in hps.space[2].conditions] == [
        {"name": "model.history_length", "values": [10]}, {"name": "model.share_item_embedding", "values": ["true"]}]
    assert hps.space[2].values == ["none", "64-32"]
    # the encoded space survives the oracle-state round trip the store relies on
    assert kt.HyperParameters.from_config(hps.get_config()).get_config() == hps.get_config()
    combos = []
    for values in sample(sp, 40):
        if (searched := sp.searched_values(values)) not in combos:
            combos.append(searched)
    assert sorted(combos, key=repr) == sorted([
        {"model.history_length": 0},
        {"model.history_length": 10, "model.share_item_embedding": False},
        {"model.history_length": 10, "model.share_item_embedding": True, "model.query_layers": []},
        {"model.history_length": 10, "model.share_item_embedding": True, "model.query_layers": [64, 32]},
    ], key=repr)
    cfg = sp.config_for({"model.history_length": 10, "model.share_item_embedding": "true", "model.query_layers": "64-32"})
    assert (cfg.model.history_length, cfg.model.share_item_embedding, cfg.model.query_layers) == (10, True, [64, 32])
    # decoded values are accepted too, so searched_values round-trips through config_for
    assert sp.config_for(sp.searched_values({"model.history_length": 10, "model.share_item_embedding": "true",
                                             "model.query_layers": "none"})).model.query_layers == []


def test_every_value_that_activates_a_parameter_is_checked_for_memory_too(tmp_path, monkeypatch):
    """Loading and the memory check walk the same (value, conditions) cases. The memory check once
    put a conditional parameter only under the first value of its `when` list: a CBNS bank of 10^9
    rows, active for [mns, cbns], was estimated under mns (where no bank exists) and let through."""
    from tuner import memory

    monkeypatch.setenv("TUNER_MEMORY_MB", "4096")
    sp = load_space(str(write(tmp_path, parameters={
        "negatives.strategy": {"values": ["in_batch", "mns", "cbns"]},
        "negatives.cbns_memory_size": {"values": [4096, 1_000_000_000],
                                       "when": {"negatives.strategy": ["mns", "cbns"]}},
    })))
    cases = [where.partition("parameters.")[2] for where, _ in sp.configs_to_check()]
    assert cases == ["negatives.strategy = 'in_batch'", "negatives.strategy = 'mns'", "negatives.strategy = 'cbns'",
                     "negatives.cbns_memory_size = 4096 (when negatives.strategy = 'mns')",
                     "negatives.cbns_memory_size = 1000000000 (when negatives.strategy = 'mns')",
                     "negatives.cbns_memory_size = 4096 (when negatives.strategy = 'cbns')",
                     "negatives.cbns_memory_size = 1000000000 (when negatives.strategy = 'cbns')"]
    with pytest.raises(ConfigError, match=r"^[^\n]*bad\.yaml: parameters\.negatives\.cbns_memory_size = 1000000000 "
                                          r"\(when negatives\.strategy = 'cbns'\): negatives\.cbns_memory_size: "
                                          r"the run needs about [\d,.]+ GiB"):
        memory.check_space(sp)


def test_grid_oracle_enumerates_conditional_space_from_the_base_values(tmp_path):
    sp = load_space(str(write(tmp_path, parameters={
        "model.history_length": {"values": [10, 0]},
        "model.share_item_embedding": {"values": [True, False], "when": {"model.history_length": 10}},
        "model.query_layers": {"values": [[64], []]},
    }, search={"oracle": "grid"})))
    oracle = kt.oracles.GridSearchOracle(objective=kt.Objective(sp.search.objective, "max"), max_trials=20,
                                         hyperparameters=sp.hyperparameters())
    oracle._set_project_dir(str(tmp_path), "grid")
    trials = []
    with contextlib.redirect_stdout(io.StringIO()):  # the oracle prints a table per trial
        while (trial := oracle.create_trial(str(len(trials)))).status != "STOPPED":
            trials.append(sp.searched_values(trial.hyperparameters.values))
            oracle.update_trial(trial.trial_id, {sp.search.objective: 0.5})
            trial.status = "COMPLETED"
            oracle.end_trial(trial)
    # the base config (history_length 0, no layers) comes first: keras-tuner's defaults are the base values
    assert trials[0] == {"model.history_length": 0, "model.query_layers": []}
    assert len(trials) == 6 and all(trials.count(t) == 1 for t in trials)
    assert sum("model.share_item_embedding" in t for t in trials) == 4
    for values in trials:
        sp.config_for(values)


def test_hyperband_oracle_sets_the_epochs(tmp_path):
    sp = load_space(str(write(tmp_path, search={"oracle": "hyperband", "max_epochs": 9})))
    oracle = kt.oracles.HyperbandOracle(objective=kt.Objective(sp.search.objective, "max"),
                                        max_epochs=sp.search.max_epochs, factor=sp.search.factor,
                                        hyperparameters=sp.hyperparameters(), seed=sp.search.seed)
    values = oracle.populate_space("0")["values"]
    assert {"tuner/epochs", "tuner/initial_epoch", "tuner/bracket", "tuner/round"} <= set(values)
    cfg = sp.config_for(values)
    assert cfg.training.epochs == values["tuner/epochs"] < 9
    assert cfg.retrieval.temperature == values["retrieval.temperature"]


def test_distribution_kinds_map_to_keras_tuner(tmp_path):
    path = write(tmp_path, parameters={
        "model.embedding_dim": {"distribution": "log_uniform_values", "min": 8, "max": 128},
        "model.dropout": {"distribution": "uniform", "min": 0.0, "max": 0.5},
        "training.batch_size": {"distribution": "q_uniform", "min": 256, "max": 1024, "q": 256},
        "retrieval.hard_negatives": {"min": 0, "max": 100},  # W&B infers int_uniform for an int field
        "training.learning_rate": {"distribution": "q_uniform", "min": 0.1, "max": 0.5, "q": 0.1},
        "training.optimizer": {"value": "sgd"},
    })
    sp = load_space(str(path))
    hps = {hp.name: hp for hp in sp.hyperparameters().space}
    emb = hps["model.embedding_dim"]
    assert isinstance(emb, kt.engine.hyperparameters.Int) and emb.sampling == "log" and sp.is_log("model.embedding_dim")
    assert isinstance(hps["model.dropout"], kt.engine.hyperparameters.Float) and hps["model.dropout"].sampling == "linear"
    assert list(hps["training.batch_size"].values) == [256, 512, 768, 1024]
    assert isinstance(hps["retrieval.hard_negatives"], kt.engine.hyperparameters.Int)
    assert isinstance(hps["training.optimizer"], kt.engine.hyperparameters.Fixed)
    assert not sp.is_log("model.dropout") and not sp.is_log("seed")
    for values in sample(sp, 30):
        cfg = sp.config_for(values)
        assert 8 <= cfg.model.embedding_dim <= 128 and isinstance(cfg.model.embedding_dim, int)
        assert cfg.training.batch_size in (256, 512, 768, 1024)
        assert cfg.training.learning_rate in (0.1, 0.2, 0.3, 0.4, 0.5)  # q steps without float noise
        assert cfg.training.optimizer == "sgd"
        assert "training.optimizer" not in sp.searched_values(values)  # a constant is not searched


def test_keras_tuner_own_keys(tmp_path):
    sp = load_space(str(write(tmp_path, search={"oracle": "hyperband", "max_epochs": 9})))
    assert (sp.search.max_epochs, sp.search.factor) == (9, 3)
    values = {"retrieval.temperature": 0.5, "tuner/epochs": 3, "tuner/initial_epoch": 1, "tuner/bracket": 2,
              "tuner/round": 1, "tuner/trial_id": "0007"}
    cfg = sp.config_for(values)
    assert (cfg.training.epochs, cfg.retrieval.temperature) == (3, 0.5)
    assert sp.searched_values(values) == {"retrieval.temperature": 0.5}
    assert load_space(str(write(tmp_path))).config_for({"retrieval.temperature": 0.5}).training.epochs == 2
    with pytest.raises(ConfigError, match=r"bad\.yaml: trial values: unknown parameter 'model\.dropout' \(parameters: retrieval\.temperature\)"):
        sp.config_for({"retrieval.temperature": 0.5, "model.dropout": 0.1})
    with pytest.raises(ConfigError, match=r"bad\.yaml \(trial values\): retrieval\.temperature: must be > 0"):
        sp.config_for({"retrieval.temperature": -1.0})


# --- errors ----------------------------------------------------------------------------------

BASE = {
    "dataset": {"name": "movielens-100k"},
    "training": {"epochs": 2, "batch_size": 1024},
    "evaluation": {"ks": [10, 100]},
    "parameters": {"retrieval.temperature": {"distribution": "log_uniform_values", "min": 0.01, "max": 1.0}},
}


def write(tmp_path, **sections) -> Path:
    data = copy.deepcopy(BASE)
    data.update(sections)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


ERRORS = [
    ("unknown distribution",
     {"parameters": {"retrieval.temperature": {"distribution": "loguniform", "min": 0.01, "max": 1}}},
     "parameters.retrieval.temperature.distribution: 'loguniform' is not one of categorical, constant, uniform, "
     "int_uniform, q_uniform, log_uniform_values"),
    ("min >= max",
     {"parameters": {"model.dropout": {"distribution": "uniform", "min": 0.5, "max": 0.5}}},
     "parameters.model.dropout: min 0.5 must be < max 0.5"),
    ("log range touching 0",
     {"parameters": {"retrieval.temperature": {"distribution": "log_uniform_values", "min": 0, "max": 1}}},
     "parameters.retrieval.temperature: log_uniform_values needs min > 0 (got 0.0)"),
    ("when names an unknown parameter",
     {"parameters": {"negatives.mns_batch_size": {"values": [64], "when": {"negatives.strategy": "mns"}}}},
     "parameters.negatives.mns_batch_size.when: 'negatives.strategy' is not a parameter of this space "
     "(categorical: none)"),
    ("when names a non-categorical parameter",
     {"parameters": {"retrieval.temperature": {"distribution": "uniform", "min": 0.1, "max": 1},
                     "negatives.strategy": {"values": ["in_batch", "mns"]},
                     "model.dropout": {"values": [0.1], "when": {"retrieval.temperature": 0.5}}}},
     "parameters.model.dropout.when: 'retrieval.temperature' is not a categorical parameter (values: [...]) of "
     "this space (categorical: negatives.strategy)"),
    ("when value the parent never takes",
     {"parameters": {"negatives.strategy": {"values": ["in_batch", "mns"]},
                     "negatives.cbns_memory_size": {"values": [4096], "when": {"negatives.strategy": "cbns"}}}},
     "parameters.negatives.cbns_memory_size.when.negatives.strategy: 'cbns' is not one of its values ('in_batch', 'mns')"),
    ("when with two parents",
     {"parameters": {"negatives.strategy": {"values": ["in_batch", "mns"]}, "model.normalize": {"values": [True, False]},
                     "model.dropout": {"values": [0.1], "when": {"negatives.strategy": "mns", "model.normalize": True}}}},
     "parameters.model.dropout.when: expected one parameter and its value(s)"),
    ("conditions forming a cycle",
     {"parameters": {"negatives.strategy": {"values": ["in_batch", "mns"], "when": {"model.normalize": True}},
                     "model.normalize": {"values": [True, False], "when": {"negatives.strategy": "mns"}}}},
     "parameters.negatives.strategy.when: conditions form a cycle (negatives.strategy -> model.normalize -> negatives.strategy)"),
    ("path that is not a config key",
     {"parameters": {"retrieval.temprature": {"values": [0.1]}}},
     "parameters.retrieval.temprature: not a config key (did you mean 'retrieval.temperature'?)"),
    ("evaluation cannot be searched",
     {"parameters": {"evaluation.ks": {"values": [[10], [100]]}}},
     "parameters.evaluation.ks: evaluation settings cannot be searched"),
    ("float value for an int field",
     {"parameters": {"model.embedding_dim": {"values": [32, 48.5]}}},
     "parameters.model.embedding_dim.values: expected int, got 48.5"),
    ("string for a bool field",
     {"parameters": {"model.normalize": {"values": ["yes", "no"]}}},
     "parameters.model.normalize.values: expected bool, got 'yes'"),
    ("scalar where a list is needed",
     {"parameters": {"model.query_layers": {"values": [64, 32]}}},
     "parameters.model.query_layers.values: expected list of int, got 64"),
    ("uniform on an int field",
     {"parameters": {"model.embedding_dim": {"distribution": "uniform", "min": 8, "max": 64}}},
     "parameters.model.embedding_dim: model.embedding_dim is an int field: use int_uniform"),
    ("range on a string field",
     {"parameters": {"training.optimizer": {"distribution": "uniform", "min": 0, "max": 1}}},
     "parameters.training.optimizer: distribution uniform does not fit a str field (use values: [...])"),
    ("non-integer bound of int_uniform",
     {"parameters": {"retrieval.hard_negatives": {"distribution": "int_uniform", "min": 0, "max": 10.5}}},
     "parameters.retrieval.hard_negatives.max: expected int, got 10.5"),
    ("unknown key in a parameter",
     {"parameters": {"model.dropout": {"distribution": "uniform", "min": 0, "max": 0.5, "q": 0.1}}},
     "parameters.model.dropout: unknown key 'q' for distribution uniform (allowed: distribution, min, max, when)"),
    ("missing key in a parameter",
     {"parameters": {"model.dropout": {"distribution": "q_uniform", "min": 0, "max": 0.5}}},
     "parameters.model.dropout: distribution q_uniform needs 'q'"),
    ("duplicate values",
     {"parameters": {"model.embedding_dim": {"values": [32, 32.0]}}},
     "parameters.model.embedding_dim.values: duplicate values in [32, 32.0]"),
    ("value the config rejects",
     {"parameters": {"training.optimizer": {"values": ["adam", "adamw"]}}},
     "parameters.training.optimizer = 'adamw': training.optimizer: 'adamw' is not one of adagrad, adam, sgd, dense_adam, rmsprop"),
    ("range end the config rejects",
     {"parameters": {"model.dropout": {"distribution": "uniform", "min": 0.0, "max": 1.0}}},
     "parameters.model.dropout = 1.0: model.dropout: must be in [0, 1)"),
    ("CBNS bank smaller than the batch, under its condition",
     {"parameters": {"negatives.strategy": {"values": ["in_batch", "cbns"]},
                     "negatives.cbns_memory_size": {"values": [512, 4096], "when": {"negatives.strategy": "cbns"}}}},
     "parameters.negatives.cbns_memory_size = 512 (when negatives.strategy = 'cbns'): negatives.cbns_memory_size: "
     "512 is smaller than training.batch_size 1024"),
    ("no parameters",
     {"parameters": {}},
     "parameters: a search space needs a mapping of at least one config path"),
    ("unknown search key",
     {"search": {"oracle": "random", "trials": 5}},
     "unknown key 'search.trials' (allowed: oracle, objective, direction, max_trials, workers, seed, max_epochs, "
     "factor, retries, study, engine, trials_per_process, early_terminate, base_first, enqueue, warm_start)"),
    ("bad oracle",
     {"search": {"oracle": "cmaes"}},
     "search.oracle: 'cmaes' is not one of random, bayesian, hyperband, grid, tpe"),
    ("bad direction",
     {"search": {"direction": "maximize"}},
     "search.direction: 'maximize' is not one of max, min"),
    ("objective at a K that is not evaluated",
     {"search": {"objective": "val_recall@20"}},
     "search.objective: 'val_recall@20' is not one of val_hit_rate@10, val_hit_rate@100, val_recall@10, "
     "val_recall@100, val_ndcg@10, val_ndcg@100"),
    ("objective on the test split",
     {"search": {"objective": "test_recall@10"}},
     "search.objective: 'test_recall@10' is not one of val_hit_rate@10"),
    ("bad max_trials",
     {"search": {"max_trials": 0}},
     "search.max_trials: must be >= 1"),
    ("wrongly typed search value",
     {"search": {"workers": "two"}},
     "search.workers: expected int, got 'two'"),
    ("hyperband setting with another oracle",
     {"search": {"oracle": "random", "max_epochs": 10}},
     "search.max_epochs: only used by oracle hyperband (oracle is random)"),
    ("hyperband with training.epochs searched",
     {"search": {"oracle": "hyperband"}, "parameters": {"training.epochs": {"values": [1, 2]}}},
     "parameters.training.epochs: hyperband sets the epochs itself"),
    ("base config error",
     {"retrieval": {"logq": "sometimes"}},
     "retrieval.logq: 'sometimes' is not one of none, counts, streaming"),
    ("unknown top-level key",
     {"parameter": {}},
     "unknown key 'parameter' (allowed: seed, dataset, split, model, retrieval, negatives, training, evaluation, "
     "parameters, search)"),
]


@pytest.mark.parametrize("sections,message", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_load_errors_name_file_key_and_allowed_values(tmp_path, sections, message):
    path = write(tmp_path, **sections)
    with pytest.raises(ConfigError) as err:
        load_space(str(path))
    text = str(err.value)
    assert text.startswith(f"{path}: ") and "\n" not in text, text
    assert message in text, text


def test_unreadable_files(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping of config sections plus parameters and search, got list$"):
        load_space(str(tmp_path / "list.yaml"))
    (tmp_path / "broken.yaml").write_text("parameters: {a: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML at line"):
        load_space(str(tmp_path / "broken.yaml"))
