"""Broken and hostile inputs, through the real `tuner` command.

Each input is answered by exit code 2 and exactly one `tuner: error:` line that names the file
or flag, the key and what is allowed, with no traceback; a store given to the command is left
byte for byte as it was. Every input in CASES is refused before TensorFlow loads, so each runs
under a 1 GB address-space limit and must answer within seconds with nothing else on stderr
(no TensorFlow start-up lines either): runaways (expanding YAML, sizes that cannot fit) are
refused rather than run until memory is gone. The few inputs that need TensorFlow are grouped
at the end. The inputs are files in tests/hostile/; the large ones are generated here.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HOSTILE = Path(__file__).parent / "hostile"
LIMIT_BYTES = 1 << 30  # address space of a child that must refuse before building anything
ANSWER_S = 20.0  # a refusal within seconds (generous: two shared cores, Python and pandas imports)
MEMORY_MB = "16384"  # a fixed machine size, so estimates near a real machine's memory refuse alike everywhere
STORE = "{tmp}/store.db"


def tuner_cli(*args: str, cwd: Path = HOSTILE, env: dict | None = None, limit: int | None = None,
              timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """Runs `python -m tuner.cli ARGS`; `limit`: RLIMIT_AS of the child in bytes."""
    child_env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", **(env or {})}

    def set_limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "tuner.cli", *args], cwd=cwd, env=child_env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=set_limit if limit else None)
    return proc, time.monotonic() - started


def refusal(proc: subprocess.CompletedProcess) -> str:
    """The one error line, after checking the exit code and that nothing else went wrong."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tuner: error:")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


@dataclass
class Case:
    id: str
    args: tuple[str, ...]
    expected: tuple[str, ...]  # substrings of the error line: the file or flag, the key, what is allowed
    env: dict = field(default_factory=dict)  # on top of the corpus's own (a fixed memory size, no worker limit set)

    def param(self):
        return pytest.param(self, id=self.id)


def train(config: str, *expected: str) -> Case:
    return Case(config.removesuffix(".yaml"), ("train", "--config", config, "--out", "{tmp}/out"), (config, *expected))


def search(space: str, *expected: str) -> Case:
    return Case(space.removesuffix(".yaml"), ("search", "--space", space, "--storage", f"sqlite:///{STORE}"),
                (space, *expected))


def flags(case_id: str, command: str, *flags_: str, expected: tuple[str, ...], env: dict | None = None) -> Case:
    """`tuner search` of the built-in temp space (its study exists in the store), or `tuner worker`
    joining that study, with `flags_`; the error line holds every `expected` text."""
    start = ("search", "--space", "temp") if command == "search" else ("worker", "--study", "temp")
    return Case(case_id, (*start, "--storage", f"sqlite:///{STORE}", *flags_), expected, env or {})


CASES = [
    # Files that are not text.
    train("c_binary.yaml", "not a text file", "NUL byte", "UTF-8 YAML"),
    train("c_latin1.yaml", "not UTF-8 text", "byte 0xe9", "UTF-8 YAML"),
    train("c_utf16.yaml", "not a text file", "UTF-8 YAML"),
    train("c_control_char.yaml", "not valid YAML", "special characters are not allowed"),
    search("s_binary.yaml", "not a text file", "NUL byte"),
    search("s_latin1.yaml", "not UTF-8 text", "byte 0xe9"),
    Case("d_latin1", ("train", "--config", "d_latin1.yaml", "--out", "{tmp}/out"),
         ("latin1.csv", "not UTF-8 text", "byte 0xe9", "save it as UTF-8")),
    Case("d_binary", ("train", "--config", "d_binary.yaml", "--out", "{tmp}/out"),
         ("binary.csv", "not a text file", "NUL byte", "UTF-8 CSV")),
    Case("d_nul", ("train", "--config", "d_nul.yaml", "--out", "{tmp}/out"), ("nul.tsv", "NUL byte", "UTF-8 TSV")),
    Case("d_parquet", ("train", "--config", "d_parquet.yaml", "--out", "{tmp}/out"),
         ("garbage.parquet", "cannot read parquet")),
    Case("d_binary_features", ("train", "--config", "d_binary_features.yaml", "--out", "{tmp}/out"),
         ("binary.csv", "not a text file")),
    Case("config_is_a_directory", ("train", "--config", ".", "--out", "{tmp}/out"), (".: a directory", "YAML file")),
    Case("config_missing", ("train", "--config", "nowhere.yaml", "--out", "{tmp}/out"),
         ("nowhere.yaml", "file not found")),
    Case("space_too_big", ("search", "--space", "{tmp}/big.yaml", "--storage", f"sqlite:///{STORE}"),
         ("big.yaml", "larger than 64 KiB")),
    # YAML that expands, repeats a key, nests without end or quotes without end.
    train("c_laughs.yaml", "aliases expand", "100,000 values"),
    search("s_laughs.yaml", "aliases expand", "100,000 values"),
    train("c_recursive.yaml", "recursive alias", "line 1"),
    train("c_deep.yaml", "nested more than 50 levels"),
    train("c_dup_top.yaml", "duplicate key 'model'", "line 5", "first at line 1"),
    train("c_dup_nested.yaml", "duplicate key 'embedding_dim'", "line 4", "first at line 2"),
    train("c_dup_flow.yaml", "duplicate key 'epochs'"),
    search("s_dup_param.yaml", "duplicate key 'retrieval.temperature'", "line 3", "first at line 2"),
    train("c_python_tag.yaml", "not valid YAML", "python/object/apply:os.system"),
    train("c_multidoc.yaml", "not valid YAML", "another document"),
    train("c_undefined_alias.yaml", "not valid YAML", "undefined alias", "…"),
    train("c_long_key.yaml", "unknown key 'kkkk", "…", "allowed: seed, dataset"),
    train("c_long_value.yaml", "model.history_pooling", "'yyyy", "…", "is not one of mean, max, attention, gru"),
    train("c_alias_chain.yaml", "seed: expected int, got [[", "…"),
    search("s_newline_key.yaml", "parameters.model.dropout: unknown key 'when then' for distribution uniform",
           "allowed: distribution, min, max, when"),
    # Sizes that cannot fit: refused from the config, with the estimate, the key and the machine's memory.
    train("c_embedding_dim.yaml", "model.embedding_dim", "GiB of memory", "16.0 GiB available"),
    train("c_history_length.yaml", "model.history_length", "GiB of memory", "16.0 GiB available"),
    train("c_mns_batch.yaml", "negatives.mns_batch_size", "GiB of memory", "16.0 GiB available"),
    train("c_batch_size.yaml", "training.batch_size", "GiB of memory", "16.0 GiB available"),
    train("c_cbns_memory.yaml", "negatives.cbns_memory_size", "GiB of memory", "16.0 GiB available"),
    train("c_estimator_buckets.yaml", "retrieval.estimator_buckets", "GiB of memory", "16.0 GiB available"),
    train("c_query_layers.yaml", "model.query_layers", "GiB of memory", "16.0 GiB available"),
    train("c_synthetic_interactions.yaml", "dataset.num_interactions", "GiB of memory", "16.0 GiB available"),
    train("c_synthetic_items.yaml", "dataset.num_items", "GiB of memory", "16.0 GiB available"),
    train("d_history.yaml", "model.history_length", "GiB of memory", "16.0 GiB available"),
    search("s_embedding_dim.yaml", "parameters.model.embedding_dim = 10000000", "GiB of memory"),
    search("s_mns_when.yaml", "parameters.negatives.mns_batch_size = 1000000000", "GiB of memory"),
    train("c_int32.yaml", "model.embedding_dim", "1099511627776 is out of range", "allowed: at most 2147483647"),
    train("c_bigint.yaml", "training.epochs", "is out of range", "allowed: at most 2147483647"),
    train("c_big_k.yaml", "evaluation.ks", "1000000000000 is out of range", "allowed: at most 2147483647"),
    # Numbers out of range.
    train("c_lr_inf.yaml", "training.learning_rate", "expected a finite number, got inf"),
    train("c_lr_nan.yaml", "training.learning_rate", "expected a finite number, got nan"),
    train("c_temperature_neginf.yaml", "retrieval.temperature", "expected a finite number, got -inf"),
    train("c_dropout_huge.yaml", "model.dropout", "expected a finite number, got 1000", "…"),
    train("c_seed_negative.yaml", "seed: -1 is out of range", "allowed: 0 to 4294967295"),
    train("c_seed_2_32.yaml", "seed: 4294967296 is out of range", "allowed: 0 to 4294967295"),
    train("c_split_seed.yaml", "split.seed: -5 is out of range", "allowed: 0 to 4294967295"),
    search("s_inf_max.yaml", "parameters.retrieval.temperature.max", "expected a finite number, got inf"),
    search("s_nan_value.yaml", "parameters.training.learning_rate.values", "expected a finite number, got nan"),
    search("s_neginf_min.yaml", "parameters.retrieval.temperature.min", "expected a finite number, got -inf"),
    search("s_search_seed.yaml", "search.seed: -3 is out of range", "allowed: 0 to 4294967295"),
    search("s_search_seed_big.yaml", "search.seed: 1099511627776 is out of range"),
    search("s_seed_range.yaml", "parameters.seed = -5", "seed: -5 is out of range", "allowed: 0 to 4294967295"),
    Case("d_ts_overflow", ("train", "--config", "d_ts_overflow.yaml", "--out", "{tmp}/out"),
         ("ts_overflow.csv", "column 'timestamp' row 2", "64-bit integer range", "|t| < 2^63")),
    Case("d_ts_float", ("train", "--config", "d_ts_float.yaml", "--out", "{tmp}/out"),
         ("ts_float.csv", "column 'timestamp' row 2", "-1e+300", "|t| < 2^63")),
    Case("d_weight_big", ("train", "--config", "d_weight_big.yaml", "--out", "{tmp}/out"),
         ("weight_big.csv", "column 'weight' must be <= 3.4e+38", "row 2")),
    train("c_nul_path.yaml", "dataset.interactions", "file not found", "'a\\x00b.csv'"),
    train("c_long_path.yaml", "dataset.interactions", "file not found", "'pppp", "…"),
    Case("recommend_k_negative", ("recommend", "--model", "{tmp}", "--user", "1", "-k", "-3"),
         ("-k:", "must be >= 1", "got -3")),
    Case("recommend_k_zero", ("recommend", "--model", "{tmp}", "--user", "1", "-k", "0"), ("-k:", "must be >= 1")),
    # Outputs and the model to serve.
    Case("out_names_a_file", ("train", "--config", "{tmp}/good.yaml", "--out", "{tmp}/file"),
         ("--out:", "file'", "is a file", "give a directory")),
    Case("out_under_a_file", ("train", "--config", "{tmp}/good.yaml", "--out", "{tmp}/file/run/1"),
         ("--out:", "is under", "which is a file", "give a directory")),
    Case("out_on_proc", ("train", "--config", "{tmp}/good.yaml", "--out", "/proc/tuner-run"),
         ("--out: '/proc", "cannot write")),  # root may write into /proc's folder: the file system says no
    Case("out_on_sys", ("train", "--config", "{tmp}/good.yaml", "--out", "/sys/tuner-run/1"), ("--out: '/sys",)),
    Case("model_missing", ("recommend", "--model", "{tmp}/nowhere", "--user", "1"),
         ("--model:", "nowhere' not found", "DIR/model")),
    Case("model_is_a_file", ("recommend", "--model", "{tmp}/file", "--user", "1"),
         ("--model:", "is a file, not a model folder", "DIR/model")),
    Case("model_without_saved_model", ("recommend", "--model", "{tmp}", "--user", "1"),
         ("--model:", "has no saved_model.pb", "DIR/model")),
    # Command-line flags: the checks the same keys get in a space, before the store is opened.
    flags("workers_zero", "search", "--workers", "0", expected=("--workers: search.workers: must be >= 1 (got 0)",)),
    flags("workers_negative", "search", "--workers", "-1", expected=("--workers:", "must be >= 1 (got -1)")),
    flags("workers_million", "search", "--workers", "1000000",
          expected=("--workers: 1,000,000 local workers is more than", "allowed: 1 to", "set TUNER_MAX_WORKERS")),
    flags("workers_over_the_set_limit", "search", "--workers", "3", env={"TUNER_MAX_WORKERS": "2"},
          expected=("--workers: 3 local workers is more than 2 (TUNER_MAX_WORKERS=2)", "allowed: 1 to 2")),
    flags("max_workers_env_not_a_number", "search", "--workers", "1", env={"TUNER_MAX_WORKERS": "lots"},
          expected=("TUNER_MAX_WORKERS: expected a whole number >= 1, got 'lots'",)),
    flags("max_workers_env_zero", "search", env={"TUNER_MAX_WORKERS": "0"},
          expected=("TUNER_MAX_WORKERS: expected a whole number >= 1, got '0'",)),
    flags("workers_beyond_int32", "search", "--workers", "99999999999",
          expected=("--workers: search.workers: 99999999999 is out of range", "allowed: at most 2147483647")),
    flags("workers_not_a_number", "search", "--workers", "two",
          expected=("argument --workers: invalid int value: 'two'", "see tuner search --help")),
    flags("max_trials_zero", "search", "--max-trials", "0",
          expected=("--max-trials: search.max_trials: must be >= 1 (got 0)",)),
    flags("max_trials_negative", "search", "--max-trials", "-5",
          expected=("--max-trials: search.max_trials: must be >= 1 (got -5)",)),
    flags("max_trials_not_an_integer", "search", "--max-trials", "2.5",
          expected=("argument --max-trials: invalid int value: '2.5'",)),
    flags("cpus_per_worker_zero", "search", "--cpus-per-worker", "0",
          expected=("--cpus-per-worker: must be a finite number of CPUs > 0 (got 0.0)",)),
    flags("cpus_per_worker_nan", "search", "--cpus-per-worker", "nan",
          expected=("--cpus-per-worker: must be a finite number of CPUs > 0 (got nan)",)),
    flags("study_flag_blank", "search", "--study", "  ", expected=("--study: '  ' is blank", "1 to 200 printable")),
    Case("space_missing_flag", ("search", "--storage", f"sqlite:///{STORE}"),
         ("the following arguments are required: --space", "see tuner search --help")),
    Case("space_is_a_directory", ("search", "--space", "{tmp}", "--storage", f"sqlite:///{STORE}"),
         ("a directory, not a space file", "built-in: ", "temp")),
    Case("space_is_a_device", ("search", "--space", "/dev/zero", "--storage", f"sqlite:///{STORE}"),
         ("/dev/zero: not a regular file", "built-in: ", "temp")),
    Case("config_is_a_device", ("train", "--config", "/dev/zero", "--out", "{tmp}/out"),
         ("/dev/zero: not a regular file",)),
    Case("config_is_a_pipe", ("train", "--config", "{tmp}/pipe", "--out", "{tmp}/out"), ("pipe: not a regular file",)),
    Case("d_device", ("train", "--config", "d_device.yaml", "--out", "{tmp}/out"),
         ("/dev/zero: unsupported file suffix", "allowed: .csv, .tsv")),
    Case("data_is_a_device", ("train", "--config", "{tmp}/zero.yaml", "--out", "{tmp}/out"),
         ("zero.csv: not a regular file",)),
    Case("data_is_a_pipe", ("train", "--config", "{tmp}/pipe.yaml", "--out", "{tmp}/out"),
         ("pipe.csv: not a regular file",)),
    search("s_workers_million.yaml", "search.workers: 1,000,000 local workers is more than", "allowed: 1 to"),
    search("s_workers_zero.yaml", "search.workers: must be >= 1 (got 0)"),
    search("s_max_trials_negative.yaml", "search.max_trials: must be >= 1 (got -1)"),
    Case("s_workers_flag_over_space", ("search", "--space", "s_workers_million.yaml", "--workers", "0",
                                       "--storage", f"sqlite:///{STORE}"),
         ("--workers: search.workers: must be >= 1 (got 0)",)),
    flags("worker_id_empty", "worker", "--worker-id", "",
          expected=("--worker-id: '' is empty", "a worker id is 1 to 200 printable characters")),
    flags("worker_id_newline", "worker", "--worker-id", "w\n1",
          expected=("--worker-id: 'w\\n1' has a control character", "1 to 200 printable characters")),
    flags("worker_id_too_long", "worker", "--worker-id", "w" * 5000,
          expected=("--worker-id:", "has 5,000 characters", "1 to 200 printable characters")),
    Case("worker_study_missing", ("worker", "--study", "nosuch", "--storage", f"sqlite:///{STORE}"),
         ("no study named 'nosuch'",)),
    Case("worker_store_missing", ("worker", "--study", "temp", "--storage", "sqlite:///{tmp}/nowhere.db"),
         ("nowhere.db does not exist", "`tuner search` creates one")),
    Case("worker_missing_study_flag", ("worker", "--storage", f"sqlite:///{STORE}"),
         ("the following arguments are required: --study", "see tuner worker --help")),
]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A tuner store holding the study of the built-in temp space, a regular file, a good config and an
    oversized space."""
    from tuner.space import StudySettings, load_space
    from tuner.store import create_or_get_study, open_store

    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:  # the built-in temp space's study, as stored
        temp = load_space("temp")
        create_or_get_study(store, name="temp", space=temp.text, settings=StudySettings(temp.search))
    (tmp_path / "file").write_text("not a directory\n")
    (tmp_path / "good.yaml").write_text("training: {epochs: 1}\n")
    os.mkfifo(tmp_path / "pipe")  # a pipe, and a device behind a .csv name: read, they would never end
    os.mkfifo(tmp_path / "pipe.csv")
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    for name in ("zero", "pipe"):
        (tmp_path / f"{name}.yaml").write_text(f"dataset: {{name: files, interactions: {tmp_path / name}.csv}}\n")
    (tmp_path / "big.yaml").write_text("parameters:\n  retrieval.temperature: {values: [0.1]}\n" + "#" * (70 << 10) + "\n")
    return tmp_path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_input_gets_one_line_before_anything_is_built(case: Case, workspace: Path):
    before = snapshot(workspace)
    args = [a.replace("{tmp}", str(workspace)) for a in case.args]
    proc, seconds = tuner_cli(*args, env={"TUNER_MEMORY_MB": MEMORY_MB, "TUNER_MAX_WORKERS": "", **case.env},
                              limit=LIMIT_BYTES)
    line = refusal(proc)
    for text in case.expected:
        assert text.replace("{tmp}", str(workspace)) in line, line
    assert len(line) < 1200, line  # what a line quotes is capped
    assert proc.stderr.strip() == line, proc.stderr[-3000:]  # nothing else, no TensorFlow start-up lines
    assert seconds < ANSWER_S
    assert snapshot(workspace) == before  # the store and every file given are unchanged
    assert not (workspace / "out").exists()


def test_a_worker_process_answers_in_the_same_one_line_as_the_command(workspace: Path):
    """`python -m tuner.search.local` (what `tuner search` starts) formats its errors as `tuner` does:
    one line, a quoted text capped."""
    spec = "m" * 5000 + ":f"
    proc = subprocess.run([sys.executable, "-m", "tuner.search.local", "--study", "temp", "--storage",
                           f"sqlite:///{workspace / 'store.db'}", "--trial-fn", spec],
                          cwd=HOSTILE, capture_output=True, text=True, timeout=120)
    line = refusal(proc)
    assert proc.stderr.strip() == line and "trial function" in line and " … " in line and len(line) < 2100, line


def test_memory_refusal_reads_the_machine_memory_unless_told():
    proc, _ = tuner_cli("train", "--config", "c_embedding_dim.yaml", "--out", "/nonexistent/out", limit=LIMIT_BYTES,
                        env={"TUNER_MEMORY_MB": ""})
    line = refusal(proc)
    assert "model.embedding_dim" in line and "GiB available" in line and "16.0 GiB available" not in line


def test_estimates_let_the_shipped_configs_and_spaces_run():
    """No false refusals: every config and space the project ships fits a 4 GiB machine."""
    from tuner import config, memory, safe_yaml
    from tuner.space import builtin_names, load_space

    os.environ["TUNER_MEMORY_MB"] = "4096"
    try:
        for path in sorted((HOSTILE.parent.parent / "experiments").rglob("*.yaml")):
            data = safe_yaml.read(path)
            if isinstance(data, dict) and "parameters" not in data:
                memory.check(config.from_dict(data, str(path)), str(path))
        for name in builtin_names():
            memory.check_space(load_space(name))
    finally:
        del os.environ["TUNER_MEMORY_MB"]


def test_memory_override_plans_for_a_smaller_machine(monkeypatch):
    from tuner import config, memory
    from tuner.errors import ConfigError

    cfg = config.from_dict({}, "defaults")
    monkeypatch.setenv("TUNER_MEMORY_MB", "600")
    with pytest.raises(ConfigError, match=r"defaults: .*: the run needs about .* this machine has 0.6 GiB available"):
        memory.check(cfg, "defaults")
    monkeypatch.setenv("TUNER_MEMORY_MB", "a lot")
    with pytest.raises(ConfigError, match=r"TUNER_MEMORY_MB: expected a number of MiB"):
        memory.check(cfg, "defaults")


def test_floats_written_without_a_dot_are_floats_in_configs_and_spaces(tmp_path):
    """YAML 1.1 would read `1e-3` as a string and the config would refuse it as "expected float";
    configs, spaces and a study's stored space read it as YAML 1.2 does."""
    from tuner import config, safe_yaml
    from tuner.errors import ConfigError
    from tuner.space import load_space, load_space_text

    path = tmp_path / "config.yaml"
    path.write_text("training: {learning_rate: 1e-3, epochs: 1e1}\nretrieval: {temperature: 5E-2}\n"
                    "model: {dropout: 1.0e-1}\n")
    cfg = config.load(path)
    assert (cfg.training.learning_rate, cfg.training.epochs) == (0.001, 10)
    assert (cfg.retrieval.temperature, cfg.model.dropout) == (0.05, 0.1)
    assert safe_yaml.parse("a: [1e-3, +5E+2, -2e-4, .5e1, 1.e3, '1e-3', 1e, e3, 0x1e3]", "x") == \
        {"a": [0.001, 500.0, -0.0002, 5.0, 1000.0, "1e-3", "1e", "e3", 0x1E3]}  # quoted and non-numbers stay text

    space = tmp_path / "space.yaml"
    space.write_text("parameters:\n"
                     "  training.learning_rate: {distribution: log_uniform_values, min: 1e-4, max: 1e-1}\n"
                     "  retrieval.temperature: {values: [1e-2, 5e-2]}\n")
    for loaded in (load_space(str(space)), load_space_text(space.read_text(), "study 'x'")):
        rate, temperature = loaded.parameters
        assert (rate.min, rate.max, temperature.values) == (1e-4, 0.1, (0.01, 0.05))
    (tmp_path / "inf.yaml").write_text("training: {learning_rate: 1e400}\n")  # overflows to inf: refused as inf is
    with pytest.raises(ConfigError, match=r"training.learning_rate: expected a finite number, got inf"):
        config.load(tmp_path / "inf.yaml")


def test_local_workers_are_bounded_by_the_machine_unless_the_user_sets_the_limit(monkeypatch):
    from tuner.errors import ConfigError
    from tuner.search.local import check_local_workers, gpu_count, local_worker_limit

    monkeypatch.delenv("TUNER_MAX_WORKERS", raising=False)
    limit, why = local_worker_limit()
    assert limit == (gpu_count() or len(os.sched_getaffinity(0))) and "this machine has" in why
    check_local_workers(limit, "--workers")
    with pytest.raises(ConfigError, match=rf"^--workers: {limit + 1} local workers is more than {limit} "):
        check_local_workers(limit + 1, "--workers")
    monkeypatch.setenv("TUNER_MAX_WORKERS", str(limit + 7))  # the user's say: more than the machine's count
    assert local_worker_limit() == (limit + 7, f"TUNER_MAX_WORKERS={limit + 7}")
    check_local_workers(limit + 7, "--workers")
    with pytest.raises(ConfigError, match=rf"^space.yaml: search.workers: {limit + 8} local workers"):
        check_local_workers(limit + 8, "space.yaml: search.workers")


def test_yaml_anchors_and_merge_keys_still_load(tmp_path):
    """The bounds refuse what expands, not what shares: anchors, aliases and `<<` merges load."""
    from tuner import config

    path = tmp_path / "anchors.yaml"
    path.write_text("model: &m {embedding_dim: 16, normalize: true}\n"
                    "retrieval: {temperature: 0.1}\n"
                    "training:\n  <<: {epochs: 2, batch_size: 64}\n  epochs: 3\n")
    cfg = config.load(path)
    assert (cfg.model.embedding_dim, cfg.training.epochs, cfg.training.batch_size) == (16, 3, 64)


def test_stored_space_text_gets_the_same_bounds():
    from tuner.errors import ConfigError
    from tuner.space import load_space_text

    text = (HOSTILE / "s_laughs.yaml").read_text()
    with pytest.raises(ConfigError, match=r"^study 'x': the stored space: aliases expand"):
        load_space_text(text, "study 'x'")
    with pytest.raises(ConfigError, match=r"duplicate key 'retrieval.temperature' at line 3"):
        load_space_text((HOSTILE / "s_dup_param.yaml").read_text(), "study 'x'")


def test_tensorflow_start_up_lines_are_filtered_and_real_lines_kept():
    """absl's pre-initialisation lines cannot be hidden by TF_CPP_MIN_LOG_LEVEL; the filter drops
    exactly those and writes everything else back."""
    code = ("import os, sys, tuner\n"
            "from tuner.quiet import filtered_stderr\n"
            "with filtered_stderr():\n"
            "    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n')\n"
            "    os.write(2, b'I0000 00:00:1795624451.803672   13087 port.cc:153] oneDNN custom operations are on.\\n')\n"
            "    os.write(2, b'W0000 00:00:1795624451.9   13087 gpu.cc:1] a real warning\\n')\n"
            "    print('python says hello', file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["W0000 00:00:1795624451.9   13087 gpu.cc:1] a real warning", "python says hello"]


# --- inputs that need TensorFlow (the data is split, or a model is loaded) ------------------------


def test_data_too_small_to_train_is_refused(tmp_path):
    proc, _ = tuner_cli("train", "--config", "d_one.yaml", "--out", str(tmp_path / "out"))
    line = refusal(proc)
    assert "one.csv" in line and "1 interaction(s) leave 1 to train on" in line and "at least 2" in line
    assert "absl" not in proc.stderr and "I0000" not in proc.stderr  # TensorFlow's start-up lines are filtered
    assert not (tmp_path / "out").exists()


def test_data_too_small_to_evaluate_trains_and_says_so(tmp_path):
    proc, _ = tuner_cli("train", "--config", "d_two.yaml", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert lines[0] == ("warning: two.csv: the val part is empty (2 interactions × split.val_fraction 0.1 "
                        "rounds to 0): val metrics will be empty")
    assert lines[1].startswith("warning: two.csv: the test part is empty (2 interactions × split.test_fraction 0.2")
    assert lines[2].startswith("data: files: 2 users, 2 items; train 2 / val 0 / test 0")
    assert (tmp_path / "out" / "metrics.json").is_file()


def test_a_folder_that_is_not_a_tuner_model_is_refused(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"\x08\x01 not a SavedModel")
    proc, _ = tuner_cli("recommend", "--model", str(tmp_path), "--user", "1")
    line = refusal(proc)
    assert f"--model: {tmp_path}: cannot load the model" in line
