"""End to end through the real `tuner` command: train on MovieLens-100K, export, recommend, errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def tuner(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuner.cli", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=900)


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def tutorial_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tutorial")
    result = tuner("train", "--config", "experiments/movielens/tfrs_tutorial.yaml", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_tutorial_config_reproduces_tfrs_tutorial(tutorial_run):
    metrics = json.loads((tutorial_run / "metrics.json").read_text())
    # The TFRS basic-retrieval tutorial reaches about 0.23 top-100 accuracy on this protocol.
    assert 0.20 <= metrics["test"]["hit_rate@100"] <= 0.26, metrics["test"]
    assert 0.25 <= metrics["most_popular"]["test"]["hit_rate@100"] <= 0.33
    assert metrics["val"] == {}  # the tutorial protocol has no validation split
    assert set(metrics["test"]) == {f"{m}@{k}" for m in ("hit_rate", "recall", "ndcg") for k in (10, 100)}
    assert metrics["config"]["training"]["optimizer"] == "adagrad"
    assert len(metrics["config_hash"]) == 16
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    losses = [e["loss"] for e in metrics["epochs"]]
    assert losses[0] > losses[-1], losses  # it learns
    assert all(e["examples_per_s"] > 0 for e in metrics["epochs"])
    assert {"load_s", "train_s", "eval_s", "total_s"} <= set(metrics["timings"])


def test_recommend_from_exported_model(tutorial_run):
    result = tuner("recommend", "--model", str(tutorial_run / "model"), "--user", "196", "-k", "5")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = result.stdout.strip().splitlines()
    assert len(rows) == 5
    assert rows[0].split()[0] == "1" and "(19" in result.stdout  # titles with their year
    scores = [float(row.split()[1]) for row in rows]
    assert scores == sorted(scores, reverse=True)


def test_recommend_serves_an_unknown_user_and_says_so(tutorial_run):
    result = tuner("recommend", "--model", str(tutorial_run / "model"), "--user", "no-such-user", "-k", "5")
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout.strip().splitlines()) == 5
    line = last_line(result.stderr)
    assert "no-such-user" in line and "out-of-vocabulary user row" in line and "Traceback" not in result.stderr


def test_training_with_history_validation_and_early_stopping(tmp_path):
    """A small run that exercises the per-epoch validation and every output file."""
    config = {
        "dataset": {"name": "movielens-100k"},
        "split": {"method": "temporal", "val_fraction": 0.1, "test_fraction": 0.1},
        "model": {"embedding_dim": 16, "normalize": True, "history_length": 5, "history_pooling": "mean",
                  "share_item_embedding": True},
        "retrieval": {"temperature": 0.05, "logq": "counts"},
        "negatives": {"strategy": "cbns", "cbns_memory_size": 4096, "cbns_warmup_steps": 20},
        "training": {"batch_size": 1024, "epochs": 4, "early_stopping_patience": 1},
        "evaluation": {"ks": [10, 50], "monitor": "recall@50"},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    result = tuner("train", "--config", str(path), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert all("val" in e and "recall@50" in e["val"] for e in metrics["epochs"])
    assert "val recall@50" in result.stderr and "examples" not in result.stdout
    assert metrics["val"]["recall@50"] == pytest.approx(max(e["val"]["recall@50"] for e in metrics["epochs"]))
    rec = tuner("recommend", "--model", str(tmp_path / "run" / "model"), "--user", "1", "--history", "50,172,133")
    assert rec.returncode == 0 and len(rec.stdout.strip().splitlines()) == 10, rec.stderr[-2000:]


def test_a_run_stopped_after_an_epoch_keeps_that_epochs_val_metrics_and_scores_no_test(monkeypatch):
    """What a pruned search trial does: `on_epoch` stops training after epoch 1; with `test=False`
    the run evaluates nothing after that epoch and its val metrics are the epoch's own."""
    from tuner import config, train

    cfg = config.from_dict({"dataset": {"name": "movielens-100k"}, "model": {"embedding_dim": 8},
                            "training": {"epochs": 5}, "evaluation": {"ks": [10], "baselines": []}}, "test")
    split = train.prepare_split(cfg)
    calls, real_evaluate = [], train.evaluate
    monkeypatch.setattr(train, "evaluate", lambda model, s, part, *a, **k: calls.append(part) or
                        real_evaluate(model, s, part, *a, **k))
    result = train.run(cfg, split, on_epoch=lambda epoch, metrics: True, test=False, log=lambda line: None)
    assert [row["epoch"] for row in result["epochs"]] == [1] and calls == ["val"]
    assert result["val"] == result["epochs"][0]["val"] and result["val"]["recall@10"] > 0
    assert "test" not in result and set(result["most_popular"]) == {"val"}
    assert not [name for name in train.flat_metrics(result) if "test_" in name]


def test_divergence_is_one_line_error_with_a_cause(tmp_path):
    path = tmp_path / "diverge.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"embedding_dim": 16, "normalize": False},
        "retrieval": {"temperature": 0.001},
        "training": {"optimizer": "sgd", "learning_rate": 10.0, "batch_size": 512, "epochs": 2},
    }))
    result = tuner("train", "--config", str(path), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    line = last_line(result.stderr)
    assert line.startswith("tuner: error: loss became") and "model.normalize" in line, line
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("text, expected", [
    ("model: {embedding_size: 8}", "unknown key 'model.embedding_size' (allowed: embedding_dim"),
    ("retrieval: {temperature: 0}", "retrieval.temperature: must be > 0"),
    ("retrieval: {temperature: hot}", "retrieval.temperature: expected float, got 'hot'"),
    ("negatives: {strategy: cbns, cbns_memory_size: 64}\ntraining: {batch_size: 256}",
     "negatives.cbns_memory_size: 64 is smaller than training.batch_size 256"),
    ("negatives: {strategy: random}", "negatives.strategy: 'random' is not one of in_batch, mns, cbns"),
    ("dataset: {name: files, interactions: /nope.csv}", "dataset.interactions: file not found: /nope.csv"),
    ("model: [1, 2]", "model: expected a mapping"),
    ("model: {embedding_dim: 8", "not valid YAML"),
    ("evaluation: {ks: [10], monitor: recall@20}", "evaluation.monitor: 'recall@20' is not one of"),
])
def test_config_errors_are_one_line_naming_file_and_key(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = tuner("train", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert str(path) in result.stderr and expected in result.stderr, result.stderr


def test_missing_config_file(tmp_path):
    result = tuner("train", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2 and "absent.yaml: file not found" in result.stderr
