"""`tuner search --ray` on a real Ray cluster of two nodes on this machine, with real training.

The cluster is two `ray start --block` processes, a head and a node joining it, dashboards
off, one CPU each: the two worker actors (one CPU each) land one per node. Trials train a
tiny synthetic two-tower model for 2 epochs (a few seconds); the store is the tests'
PostgreSQL server. Without Ray these tests skip, unless TUNER_REQUIRE_RAY=1 (CI) makes that an
error. Teardown stops this cluster's own processes, by pid: `ray stop` would stop every Ray
cluster on the machine.

The node-loss test kills the second node: it comes after every other test of the cluster here.
"""
from __future__ import annotations

import configparser
import importlib.util
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tuner.store import COMPLETED, FAILED, INTERRUPTED, RUNNING, list_trials, open_store

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
NODE_STARTED = "Ray runtime started"


# --- the cluster ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _process_tree(root: int) -> list[int]:
    """`root` and all its descendants, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    """Running, not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class Cluster:
    address: str
    head: subprocess.Popen
    node: subprocess.Popen
    env: dict


def _start_node(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    """`ray start ARGS --block`, waited for until its runtime is up."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", *args, "--num-gpus=0",
                                 "--object-store-memory=80000000",
                                 "--disable-usage-stats", "--block"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 180
    while NODE_STARTED not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_node(proc)
            pytest.fail(f"ray start {' '.join(args)} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return proc


def _stop_node(proc: subprocess.Popen) -> None:
    """SIGTERM lets `ray start --block` stop the processes it started; stragglers get SIGKILL."""
    tree = _process_tree(proc.pid)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    _kill(tree)
    proc.wait()


def _alive_nodes(address: str, env: dict) -> int:
    code = ("import ray; ray.init(address=%r, logging_level='ERROR'); "
            "print(sum(n['Alive'] for n in ray.nodes()))" % address)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    return int(out.stdout.split()[-1]) if out.returncode == 0 and out.stdout.split() else 0


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("TUNER_REQUIRE_RAY") == "1":
            pytest.fail("TUNER_REQUIRE_RAY=1 but Ray is not installed (pip install -e '.[ray]')", pytrace=False)
        pytest.skip("Ray is not installed (pip install -e '.[ray]')")
    logs = tmp_path_factory.mktemp("ray-logs")
    # Ray's unix sockets live under --temp-dir, whose path must stay short (108 bytes in all)
    temp = Path(tempfile.mkdtemp(prefix="tuner-ray-"))
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "RAY_USAGE_STATS_ENABLED": "0"}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = _start_node(["--head", "--include-dashboard=false", "--node-ip-address=127.0.0.1", f"--port={port}",
                        "--num-cpus=1",
                        f"--temp-dir={temp / 'head'}", f"--ray-client-server-port={_free_port()}",
                        f"--dashboard-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}"],
                       logs / "head.log", env)
    node = None
    try:
        node = _start_node([f"--address={address}", "--num-cpus=1", f"--temp-dir={temp / 'node'}",
                            f"--dashboard-agent-listen-port={_free_port()}", "--min-worker-port=30002",
                            "--max-worker-port=30999"], logs / "node.log", env)
        deadline = time.monotonic() + 120
        while _alive_nodes(address, env) < 2:
            assert time.monotonic() < deadline, "the second node never joined the cluster"
            time.sleep(1)
        yield Cluster(address, head, node, env)
    finally:
        if node is not None:
            _stop_node(node)
        _stop_node(head)
        leftovers = _processes_mentioning(str(temp))
        assert not leftovers, f"Ray processes left running: {leftovers}"
        shutil.rmtree(temp, ignore_errors=True)


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line holds `text` (every Ray daemon names its --temp-dir)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and text in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry))
        except OSError:
            continue
    return [pid for pid in found if pid != os.getpid() and _alive(pid)]


# --- the study -------------------------------------------------------------------------------


def tiny_space(tmp_path: Path, epochs: int = 2, **search) -> Path:
    """Temperature search on a tiny synthetic dataset: 2 epochs of an 8-dimensional model per trial."""
    space = {
        "seed": 42,
        "dataset": {"name": "synthetic", "num_users": 300, "num_items": 120, "num_interactions": 6000,
                    "num_clusters": 6, "cache_dir": str(tmp_path / "cache")},
        "split": {"method": "random", "val_fraction": 0.1, "test_fraction": 0.2, "seed": 42},
        "model": {"embedding_dim": 8, "normalize": True},
        "training": {"batch_size": 512, "epochs": epochs},
        "evaluation": {"ks": [10], "monitor": "recall@10"},
        "parameters": {"retrieval.temperature": {"distribution": "log_uniform_values", "min": 0.01, "max": 1.0}},
        "search": {"oracle": "random", "objective": "val_recall@10", "direction": "max", "max_trials": 4, **search},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def start_search(cluster: Cluster, tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    out = open(tmp_path / "search.out", "w")
    return subprocess.Popen([sys.executable, "-m", "tuner.cli", "search", *args], cwd=tmp_path,
                            stdout=out, stderr=subprocess.STDOUT, env={**cluster.env, **(env or {})},
                            start_new_session=True)  # Ctrl-C goes to it alone, as from a terminal


def finish(search: subprocess.Popen, tmp_path: Path, timeout: float) -> str:
    try:
        search.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        search.kill()
        search.wait()
        pytest.fail(f"tuner search did not finish in {timeout} s:\n{(tmp_path / 'search.out').read_text()[-4000:]}")
    return (tmp_path / "search.out").read_text()


def wait_for(condition, search: subprocess.Popen, tmp_path: Path, what: str, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if search.poll() is not None:
            break
        time.sleep(0.3)
    search.kill()
    pytest.fail(f"never saw {what}:\n{(tmp_path / 'search.out').read_text()[-4000:]}")


# --- tests -----------------------------------------------------------------------------------


def test_without_ray_nothing_of_ray_is_imported():
    code = ("import sys, tuner.search, tuner.cli; tuner.cli.build_parser().parse_args(['search', '--space', 'temp']); "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_an_unknown_engine_is_a_one_line_error(tmp_path):
    space = tiny_space(tmp_path, engine="spark")
    out = subprocess.run([sys.executable, "-m", "tuner.cli", "search", "--space", str(space),
                          "--storage", f"sqlite:///{tmp_path / 's.db'}"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    error = out.stderr.strip().splitlines()
    assert len(error) == 1 and "search.engine" in error[0] and "local, ray" in error[0], out.stderr


def test_ray_missing_is_refused_before_a_study_is_created(tmp_path):
    """Where Ray cannot be imported (hidden here), --ray is a one-line error and no store is made."""
    db = tmp_path / "s.db"
    code = ("import sys; sys.modules['ray'] = None; import tuner.cli; "
            f"sys.exit(tuner.cli.main(['search', '--space', {str(tiny_space(tmp_path))!r}, '--ray', "
            f"'--storage', 'sqlite:///{db}']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip() == "tuner: error: --ray: Ray is not installed; pip install 'tuner[ray]'"
    assert not db.exists()


def test_an_address_where_no_cluster_listens_is_a_one_line_error(tmp_path):
    """Not minutes of retries inside ray.init: a refused connection is reported at once."""
    if importlib.util.find_spec("ray") is None and os.environ.get("TUNER_REQUIRE_RAY") != "1":
        pytest.skip("Ray is not installed (pip install -e '.[ray]')")
    address = f"127.0.0.1:{_free_port()}"
    out = subprocess.run([sys.executable, "-m", "tuner.cli", "search", "--space", str(tiny_space(tmp_path)),
                          "--ray", address, "--storage", f"sqlite:///{tmp_path / 's.db'}"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("tuner: error:")]
    assert len(errors) == 1 and f"--ray {address}: no Ray cluster answers" in errors[0], out.stderr[-2000:]


def test_sqlite_is_refused_on_a_cluster_of_two_nodes(ray_cluster, tmp_path):
    out = subprocess.run([sys.executable, "-m", "tuner.cli", "search", "--space", str(tiny_space(tmp_path)),
                          "--ray", ray_cluster.address, "--storage", f"sqlite:///{tmp_path / 's.db'}"],
                         capture_output=True, text=True, env=ray_cluster.env, cwd=tmp_path, timeout=300)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("tuner: error:")]
    assert len(errors) == 1 and "2 nodes" in errors[0] and "PostgreSQL" in errors[0], out.stderr[-2000:]


@pytest.mark.parametrize("flags, expected", [
    (["--workers", "3"], "--workers: 3 worker(s) of 1 CPU each do not fit the Ray cluster at {address} (2 node(s), "
                         "2 CPUs, 0 GPUs: room for 2 at once); set it to 2 or fewer or lower --cpus-per-worker"),
    (["--cpus-per-worker", "2"], "search.workers: 1 worker(s) of 2 CPU each do not fit the Ray cluster at {address} "
                                 "(2 node(s), 2 CPUs, 0 GPUs: room for 0 at once); no node can hold one; "
                                 "lower --cpus-per-worker"),
])
def test_workers_beyond_the_cluster_are_refused_before_a_study_is_created(ray_cluster, tmp_path, flags, expected):
    """Not a search that waits forever: two 1-CPU nodes have room for two 1-CPU workers, and none of 2 CPUs."""
    db = tmp_path / "s.db"
    out = subprocess.run([sys.executable, "-m", "tuner.cli", "search", "--space", str(tiny_space(tmp_path)), *flags,
                          "--ray", ray_cluster.address, "--storage", f"sqlite:///{db}"],
                         capture_output=True, text=True, env=ray_cluster.env, cwd=tmp_path, timeout=300)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("tuner: error:")]
    assert len(errors) == 1 and errors[0].endswith(expected.format(address=ray_cluster.address)), out.stderr[-2000:]
    assert not db.exists()


def test_room_is_counted_node_by_node_and_by_gpu_where_the_cluster_has_gpus():
    from tuner.search.ray import room_for

    cpu_nodes = [{"Resources": {"CPU": 4.0}}, {"Resources": {"CPU": 1.0}}]
    assert [room_for(cpu_nodes, c) for c in (1, 0.5, 2, 3, 5)] == [5, 10, 2, 1, 0]
    gpu_nodes = [{"Resources": {"CPU": 8.0, "GPU": 2.0}}, {"Resources": {"CPU": 16.0}},
                 {"Resources": {"CPU": 1.0, "GPU": 4.0}}]
    assert room_for(gpu_nodes, 1) == 2 + 0 + 1


def test_ctrl_c_stops_the_actors_and_requeues_their_trials(ray_cluster, postgres_url, tmp_path):
    """`search.engine: ray` with RAY_ADDRESS: one worker per node; Ctrl-C interrupts both trials."""
    store = open_store(postgres_url)
    space = tiny_space(tmp_path, epochs=6, engine="ray", max_trials=20)  # trials long enough to overlap
    search = start_search(ray_cluster, tmp_path, "--space", str(space), "--study", "cc", "--workers", "2",
                          "--storage", postgres_url, env={"RAY_ADDRESS": ray_cluster.address})
    try:
        def two_running():
            running = [t for t in list_trials(store, "cc") if t.status == RUNNING] if _study_exists(store, "cc") else []
            return running if len(running) == 2 else None

        running = wait_for(two_running, search, tmp_path, "two trials running at once")
        node_pids = set(_process_tree(ray_cluster.node.pid))
        assert sum(t.pid in node_pids for t in running) == 1, "one worker per node expected"
        search.send_signal(signal.SIGINT)
        output = finish(search, tmp_path, timeout=120)
    finally:
        if search.poll() is None:
            search.kill()
    assert search.returncode == 130, output[-3000:]
    placed = {line.split("running on node ")[1] for line in output.splitlines() if "running on node " in line}
    assert len(placed) == 2, output[-3000:]  # each worker's node is shown, and they differ
    trials = {t.number: t for t in list_trials(store, "cc")}
    for t in running:
        assert trials[t.number].status == INTERRUPTED, (t.number, trials[t.number].status, output[-3000:])
    assert not any(t.status == RUNNING for t in trials.values())
    deadline = time.monotonic() + 30
    while any(_alive(t.pid) for t in running) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_alive(t.pid) for t in running), "a worker actor outlived Ctrl-C"


def test_a_worker_hands_over_to_a_fresh_actor_with_the_same_worker_id(ray_cluster, postgres_url, tmp_path):
    """`search.trials_per_process: 2`, one worker, three trials: the actor that ran two is replaced by a
    fresh one (another process) under the same worker id; every trial runs once, none is lost."""
    store = open_store(postgres_url)
    space = tiny_space(tmp_path, epochs=1, engine="ray", max_trials=3, trials_per_process=2)
    search = start_search(ray_cluster, tmp_path, "--space", str(space), "--study", "ho", "--workers", "1",
                          "--storage", postgres_url, env={"RAY_ADDRESS": ray_cluster.address})
    output = finish(search, tmp_path, timeout=300)
    assert search.returncode == 0, output[-3000:]
    trials = list_trials(store, "ho")
    assert [t.status for t in trials] == [COMPLETED] * 3 and {t.worker for t in trials} == {"ray0"}, output[-3000:]
    assert trials[0].pid == trials[1].pid != trials[2].pid and "a fresh one takes its place" in output


def _study_exists(store, name: str) -> bool:
    from tuner.store import list_studies

    return any(s.name == name for s in list_studies(store))


def test_a_node_lost_mid_trial_loses_only_its_trial(ray_cluster, postgres_url, tmp_path):
    """kill -9 every process of the second node while it trains; the study still ends with
    every trial completed once: the lost one is failed by its stale heartbeat and re-run."""
    store = open_store(postgres_url)
    search = start_search(ray_cluster, tmp_path, "--space", str(tiny_space(tmp_path)), "--study", "lost",
                          "--workers", "2", "--ray", ray_cluster.address, "--storage", postgres_url)
    try:
        def running_on_node():
            if not _study_exists(store, "lost"):
                return None
            node_pids = set(_process_tree(ray_cluster.node.pid))
            return next((t for t in list_trials(store, "lost") if t.status == RUNNING and t.pid in node_pids), None)

        victim = wait_for(running_on_node, search, tmp_path, "a trial running on the second node")
        _kill(_process_tree(ray_cluster.node.pid))
        output = finish(search, tmp_path, timeout=420)
    finally:
        if search.poll() is None:
            search.kill()
    assert search.returncode == 0, output[-4000:]
    assert "study 'lost' finished: 4/4 done, 0 running, 1 failed" in output, output[-4000:]
    trials = list_trials(store, "lost")
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == 5, numbers
    completed = [t for t in trials if t.status == COMPLETED]
    assert len(completed) == 4
    assert len({t.kt_trial_id for t in completed}) == 4, "a trial completed twice"
    assert len({t.params["retrieval.temperature"] for t in completed}) == 4
    lost = next(t for t in trials if t.number == victim.number)
    assert lost.status == FAILED and "heartbeat stale" in lost.error, (lost.status, lost.error)
    rerun = [t for t in completed if t.kt_trial_id == lost.kt_trial_id]
    assert len(rerun) == 1 and rerun[0].params == lost.params, "the lost trial's values were not re-run once"
    assert "unreachable" in output or "actor died" in output, output[-4000:]


# --- the deployment files (never run here: no Docker engine, no Kubernetes cluster) ---------------


def _deployment_commands() -> list[tuple[str, list[str]]]:
    """Every `tuner` command of docker/: compose commands of the tuner image, the Job's args, and
    the commands their comments tell users to run (not those quoted in `backticks`), with
    compose's ${VAR:-default} filled in."""
    found = []
    compose = yaml.safe_load((REPO / "docker/compose.yaml").read_text())
    for name, service in compose["services"].items():
        if service.get("image") == "tuner-worker" and "entrypoint" not in service:
            found.append((f"compose.yaml {name}", service["command"]))
    job = yaml.safe_load((REPO / "docker/kubernetes/workers-job.yaml").read_text())
    for container in job["spec"]["template"]["spec"]["containers"]:
        found.append(("workers-job.yaml", container["args"]))
    for path in [REPO / "docker/Dockerfile", *sorted((REPO / "docker").rglob("*.yaml"))]:
        for line in re.findall(r"(?<!`)\btuner ((?:search|worker|report|best|status) --[^\n\\`]*)", path.read_text()):
            found.append((f"{path.name} comment", shlex.split(line)))
    return [(where, [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", arg) for arg in args]) for where, args in found]


def test_the_docker_and_kubernetes_files_run_commands_this_cli_accepts():
    from tuner.cli import build_parser
    from tuner.space import builtin_names

    commands = _deployment_commands()
    assert {"compose.yaml search", "workers-job.yaml"} <= {where for where, _ in commands}
    assert any("--ray" in args for _, args in commands), "the Ray path is shown"
    for where, args in commands:
        try:
            parsed = build_parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"{where}: tuner {' '.join(args)} is not a valid command")
        if getattr(parsed, "space", None):
            assert parsed.space in builtin_names(), f"{where}: --space {parsed.space} is not built into the image"

    dockerfile = (REPO / "docker/Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), f"docker/Dockerfile copies {source}, which does not exist"
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    extras = set(setup["options.extras_require"])
    for group in re.findall(r"\.\[([\w,]+)\]", dockerfile):
        assert set(group.split(",")) <= extras, f"docker/Dockerfile installs extras {group}; setup.cfg has {extras}"
