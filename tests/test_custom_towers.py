"""User towers (`model.towers`, `model.params`): a search by two workers, `tuner best`, `tuner train`
and serving; the towers check's one-line errors; the study's record of the code.

The towers are tests/towers_example.py, copied into a temporary folder and named by a path
relative to the space file, which the commands are not run beside.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tuner import cli, config
from tuner.errors import ConfigError
from tuner.space import load_space

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "tests" / "towers_example.py"
DATA = {"name": "synthetic", "num_users": 60, "num_items": 80, "num_interactions": 3000, "num_clusters": 4}


def tuner(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuner.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=900)


def towers_config(towers: str, **params) -> dict:
    return {
        "dataset": DATA,
        "model": {"embedding_dim": 16, "user_features": True, "item_features": True, "history_length": 3,
                  "share_item_embedding": True, "normalize": True, "id_dropout": 0.05, "towers": towers,
                  "params": {"units": 16, "dropout": 0.1, **params}},
        "retrieval": {"temperature": 0.2, "logq": "counts"},
        "negatives": {"strategy": "mns", "mns_batch_size": 32},
        "training": {"batch_size": 256, "epochs": 2},
    }


def write_space(folder: Path, towers: str, parameters: dict, search: dict, **params) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump({**towers_config(towers, **params), "parameters": parameters, "search": search}))
    return path


def copy_towers(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(EXAMPLE, folder / "towers.py"))


# --- a search by two workers, then best, train and serve ----------------------------------------


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom_search")
    copy_towers(root / "code")
    space = write_space(root / "spaces", "../code/towers.py:small_towers",
                        {"model.params.units": {"values": [8, 16]}},
                        {"oracle": "grid", "objective": "val_recall@10", "study": "mine"})
    elsewhere = root / "elsewhere"  # not beside the space: the towers path is relative to the space file
    elsewhere.mkdir()
    storage = f"sqlite:///{root / 'study.db'}"
    result = tuner("search", "--space", str(space), "--workers", "2", "--max-trials", "2", "--storage", storage,
                   cwd=elsewhere)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return root, elsewhere, storage


def test_two_workers_search_user_towers_params(searched):
    root, elsewhere, storage = searched
    status = tuner("status", "--study", "mine", "--json", "--storage", storage, cwd=elsewhere)
    trials = json.loads(status.stdout)["trials"]
    assert [t["status"] for t in trials] == ["COMPLETED", "COMPLETED"], trials
    assert sorted(t["params"]["model.params.units"] for t in trials) == [8, 16]
    report = tuner("report", "--study", "mine", "--out", str(root / "report.html"), "--storage", storage, cwd=elsewhere)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "model.params.units" in (root / "report.html").read_text()  # an axis like any config key


def test_best_config_reproduces_the_best_trial_and_serves_top_k(searched):
    root, elsewhere, storage = searched
    best = tuner("best", "--study", "mine", "--out", "best.yaml", "--storage", storage, cwd=elsewhere)
    assert best.returncode == 0, best.stderr[-2000:]
    trials = json.loads(tuner("status", "--study", "mine", "--json", "--storage", storage, cwd=elsewhere).stdout)["trials"]
    top = next(t for t in trials if t["best"])
    written = yaml.safe_load((elsewhere / "best.yaml").read_text())
    assert written["model"]["towers"] == f"{root / 'code' / 'towers.py'}:small_towers"  # anchored: absolute
    assert written["model"]["params"] == {"units": top["params"]["model.params.units"], "dropout": 0.1}

    train = tuner("train", "--config", "best.yaml", "--out", "run", cwd=elsewhere)
    assert train.returncode == 0, train.stderr[-3000:]
    metrics = json.loads((elsewhere / "run" / "metrics.json").read_text())
    assert metrics["val"]["recall@10"] == pytest.approx(top["objective"], rel=0.02)

    served = tuner("recommend", "--model", "run/model", "--user", "41", "-k", "5", "--history", "19,22",
                   cwd=elsewhere)
    assert served.returncode == 0, served.stderr[-2000:]
    rows = served.stdout.strip().splitlines()
    assert len(rows) == 5 and [int(r.split()[0]) for r in rows] == [1, 2, 3, 4, 5]
    scores = [float(r.split()[1]) for r in rows]
    assert scores == sorted(scores, reverse=True)


# --- the towers check: one line, exit 2, before anything trains -------------------------------


def train_in_process(tmp_path, capsys, towers: str, **params) -> tuple[int, str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(towers_config(towers, **params)))
    code = cli.main(["train", "--config", str(path), "--out", str(tmp_path / "run")])
    return code, capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("function, params, expected", [
    ("one_tower", {}, "returned SmallQuery, expected (query_tower, candidate_tower)"),
    ("keras3_towers", {}, "the query tower is keras.src.layers.core.dense.Dense, expected a tf.keras.layers.Layer"),
    ("raising_towers", {}, "the function raised ValueError: units must be even, got 16 (towers.py:"),
    ("small_towers", {"width_extra": 1}, "the query tower returned shape [3, 17] for a batch of 3, expected [3, 16]"),
    ("no_training_towers", {}, "the query tower: NoTrainingArgument.call has no `training` argument, expected one: "
                               "it holds Dropout"),
    ("random_inference_towers", {}, "the candidate tower gave two different outputs for the same batch with "
                                    "training=False, expected the same"),
    ("nope", {}, "has no function 'nope' (expected def nope(context); it defines: "),
])
def test_broken_towers_are_one_line_errors_before_training(tmp_path, capsys, function, params, expected):
    towers = copy_towers(tmp_path / "code")
    code, line = train_in_process(tmp_path, capsys, f"code/towers.py:{function}", **params)
    assert code == 2
    assert line.startswith(f"tuner: error: model.towers: {towers}:{function}: ") and expected in line, line
    assert not (tmp_path / "run").exists()


def test_towers_that_do_not_import_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "broken.py").write_text("import numpy\nimport no_such_module_for_towers\n")
    code, line = train_in_process(tmp_path, capsys, "broken.py:towers")
    assert code == 2
    assert line == (f"tuner: error: model.towers: {tmp_path / 'broken.py'}:towers: importing {tmp_path / 'broken.py'} "
                     "failed: ModuleNotFoundError: No module named 'no_such_module_for_towers' (broken.py:2)")
    code, line = train_in_process(tmp_path, capsys, "missing.py:towers")
    assert code == 2 and f"model.towers: {tmp_path / 'missing.py'}:towers: file not found" in line
    code, line = train_in_process(tmp_path, capsys, "no_such_package_for_towers.module:towers")
    assert code == 2 and line.startswith("tuner: error: model.towers: no_such_package_for_towers.module:towers: "
                                         "cannot import no_such_package_for_towers.module: ModuleNotFoundError")


def test_towers_from_an_importable_module_train_and_export(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    code = train_in_process(tmp_path, capsys, "towers_example:small_towers")[0]
    assert code == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["config"]["model"]["towers"] == "towers_example:small_towers"
    assert metrics["test"]["recall@10"] > metrics["most_popular"]["test"]["recall@10"]
    assert (tmp_path / "run" / "model" / "saved_model.pb").is_file()


# --- config and space checks (no TensorFlow) ---------------------------------------------------


@pytest.mark.parametrize("model, expected", [
    ({"params": {"units": 8}}, "model.params: read only by the function in model.towers"),
    ({"towers": "towers.py"}, "model.towers: 'towers.py' is not 'package.module:function' or 'path/to/file.py:function'"),
    ({"towers": "a b:c"}, "model.towers: 'a b:c' is not 'package.module:function'"),
    ({"towers": "t.py:f", "query_layers": [64]}, "model.query_layers: a setting of the built-in towers, unused with "
                                                 "model.towers: leave it at []"),
    ({"towers": "t.py:f", "params": {"when": "2024-01-01"}}, None),
    ({"towers": "t.py:f", "params": [1]}, "model.params: expected mapping, got [1]"),
])
def test_config_checks_towers_and_params(tmp_path, model, expected):
    path = tmp_path / "c.yaml"
    text = yaml.safe_dump({"model": model})
    if expected is None:  # an unquoted YAML date is not a plain value
        path.write_text(text.replace("'2024-01-01'", "2024-01-01"))
        expected = "model.params.when: expected null, a boolean, a number, a string, a list or a mapping"
    else:
        path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert str(err.value).startswith(f"{path}: ") and expected in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_a_relative_towers_file_is_relative_to_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"towers": "../code/t.py:make", "params": {"units": 8}}}))
    assert config.load(path).model.towers == f"{tmp_path / 'code' / 't.py'}:make"
    path.write_text(yaml.safe_dump({"model": {"towers": "pkg.mod:make"}}))
    assert config.load(path).model.towers == "pkg.mod:make"


def test_params_leaves_are_searched_with_the_type_of_their_base_value(tmp_path):
    towers = copy_towers(tmp_path / "code")
    parameters = {"model.params.units": {"values": [8, 16]}, "model.params.dropout": {"min": 0.0, "max": 0.5},
                  "model.params.deep.sizes": {"values": [[], [32, 16]]}, "model.params.act": {"values": ["relu", "tanh"]}}
    space = load_space(str(write_space(tmp_path / "s", "../code/towers.py:small_towers", parameters, {"max_trials": 2},
                                       deep={"sizes": [8]}, act="relu")))
    assert space.base["model"]["towers"] == f"{towers}:small_towers"
    assert f'"{towers}:small_towers"' in space.text  # the stored copy names the file wherever workers start
    values = {"model.params.units": 16, "model.params.dropout": 0.25, "model.params.deep.sizes": "32-16",
              "model.params.act": "tanh"}
    cfg = space.config_for(values)
    assert cfg.model.params == {"units": 16, "dropout": 0.25, "deep": {"sizes": [32, 16]}, "act": "tanh"}
    assert {p.path for p in space.parameters} == set(parameters)


@pytest.mark.parametrize("parameters, expected", [
    ({"model.params.nope": {"values": [1, 2]}}, "parameters.model.params.nope: not a config key"),
    ({"model.params.units": {"min": 1.5, "max": 3.5}}, "parameters.model.params.units.min: expected int, got 1.5"),
    ({"model.params.units": {"values": ["x"]}}, "parameters.model.params.units.values: expected int, got 'x'"),
    ({"model.towers": {"values": ["a:b", "c:d"]}}, "parameters.model.towers: cannot be searched"),
])
def test_space_refuses_unsearchable_params(tmp_path, parameters, expected):
    copy_towers(tmp_path / "code")
    path = write_space(tmp_path / "s", "../code/towers.py:small_towers", parameters, {"max_trials": 2})
    with pytest.raises(ConfigError) as err:
        load_space(str(path))
    assert expected in str(err.value), str(err.value)


# --- before the first trial, failing trials, and the study's record of the code ----------------


def test_search_refuses_broken_towers_before_creating_the_study(tmp_path):
    copy_towers(tmp_path / "code")
    space = write_space(tmp_path / "s", "../code/towers.py:small_towers", {"model.params.units": {"values": [8, 16]}},
                        {"max_trials": 2}, width_extra=1)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    result = tuner("search", "--space", str(space), "--storage", storage, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("tuner: error: model.towers: ") and "expected [3, 16]" in lines[-1], result.stderr
    assert "no studies" in tuner("studies", "--storage", storage, cwd=tmp_path).stdout


def test_a_failing_trial_is_recorded_and_a_worker_with_other_code_refuses(tmp_path):
    towers = copy_towers(tmp_path / "code")
    space = write_space(tmp_path / "s", "../code/towers.py:small_towers",
                        {"model.params.width_extra": {"values": [0, 1]}},
                        {"oracle": "grid", "objective": "val_recall@10", "study": "failing"}, width_extra=0)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    result = tuner("search", "--space", str(space), "--storage", storage, "--max-trials", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = json.loads(tuner("status", "--study", "failing", "--json", "--storage", storage, cwd=tmp_path).stdout)["trials"]
    by_width = {t["params"]["model.params.width_extra"]: t for t in trials}
    assert by_width[0]["status"] == "COMPLETED"
    assert by_width[1]["status"] == "FAILED"
    assert "the query tower returned shape [3, 17] for a batch of 3, expected [3, 16]" in by_width[1]["error"]

    towers.write_text(towers.read_text() + "\n# edited after the study started\n")
    worker = tuner("worker", "--study", "failing", "--storage", storage, cwd=tmp_path)
    assert worker.returncode == 2
    line = worker.stderr.strip().splitlines()[-1]
    assert line.startswith(f"tuner: error: study 'failing': model.towers: {towers}:small_towers differs from the "
                           "code the study was started with (sha256 "), worker.stderr
    resumed = tuner("search", "--space", str(space), "--storage", storage, "--max-trials", "2", cwd=tmp_path)
    assert resumed.returncode == 2 and "differs from the code the study was started with" in resumed.stderr
