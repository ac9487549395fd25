"""Workers as Ray actors: Ray places the processes, the store stays the only coordination.

`tuner search --ray [ADDRESS]` connects to a running Ray cluster and starts one actor per
worker; each runs the ordinary worker loop against the study's store, exactly as a local
worker or a hand-started `tuner worker` does. Ray adds placement (one GPU per actor when the
cluster has GPUs, else `--cpus-per-worker` CPUs) and restarts: an actor that dies (its node
lost, an out-of-memory kill) is restarted up to MAX_RESTARTS times, and its running trial is
failed and re-queued by the store's heartbeat rule like any lost worker's. Nothing here is
imported without `--ray` or `search.engine: ray`.
"""
from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import socket
import threading
import time

from tuner.errors import ConfigError, TunerError
from tuner.search.worker import HAND_OVER, HAND_OVER_EXIT, sigterm_as_interrupt
from tuner.store.engine import mask_url, one_line

# An actor that keeps dying (a node that keeps failing, a trial that always runs out of memory)
# should not be restarted forever; three restarts ride out a lost node or two.
MAX_RESTARTS = 3
# Once one worker has found the study finished, nothing is left to run: the other running ones
# get this long to notice it themselves (they look at least every 2 s) before they are stopped.
# Actors not placed on a node (waiting for room) are stopped at once.
FINISH_GRACE_S = 30.0
# Ctrl-C: how long actors get to mark their running trials INTERRUPTED before being killed.
STOP_TIMEOUT_S = 60.0
INTERRUPTED = 130  # a worker's exit code after Ctrl-C, as for local worker processes


def run_ray_workers(address: str, store_url: str, study: str, workers: int, *, cpus_per_worker: float = 1.0,
                    trial_fn: str | None = None, log=print, trials_per_process: int | None = None) -> list[int]:
    """Runs `workers` worker actors on the Ray cluster at `address` ("auto": the cluster this
    machine belongs to) until the study has no trials left; their exit codes (0 done, 1 lost
    for good, 2 error, 130 interrupted). Ctrl-C interrupts every actor's running trial (it is
    marked INTERRUPTED and re-queued), then re-raises KeyboardInterrupt. Connects unless
    `check_room` has (it is called before the study is created). An actor that has run
    `trials_per_process` trials is replaced by a fresh one with the same worker id."""
    if cpus_per_worker <= 0:
        raise ConfigError(f"--cpus-per-worker: {cpus_per_worker} must be > 0")
    ray = _import_ray()
    if not ray.is_initialized():
        _connect(ray, address)
    try:
        nodes = [node for node in ray.nodes() if node["Alive"]]
        _check_store(store_url, address, len(nodes))
        _check_workers(nodes, workers, cpus_per_worker, address, "--workers")
        resources = _resources(ray.cluster_resources(), workers, cpus_per_worker, len(nodes), log)
        actor_class = ray.remote(concurrency_groups={"control": 1})(RayWorker)

        def new_actor(i: int):
            return actor_class.options(max_restarts=MAX_RESTARTS, scheduling_strategy="SPREAD", **resources).remote(
                store_url, study, f"ray{i}", os.getcwd(), trial_fn, trials_per_process)

        with sigterm_as_interrupt():  # a scheduler's SIGTERM stops the actors as Ctrl-C does
            return _Supervisor(ray, new_actor, workers, log).run()
    finally:
        ray.shutdown()  # actors owned by this driver go with it


def check_room(address: str, workers: int, cpus_per_worker: float, key: str = "--workers") -> None:
    """ConfigError unless the cluster at `address` can run `workers` actors at once; stays connected
    for `run_ray_workers`. Called before a study is created, so a refused search records nothing."""
    ray = _import_ray()
    _connect(ray, address)
    try:
        _check_workers([node for node in ray.nodes() if node["Alive"]], workers, cpus_per_worker, address, key)
    except ConfigError:
        ray.shutdown()
        raise


def room_for(nodes: list[dict], cpus_per_worker: float) -> int:
    """Actors that fit at once: per node, one per GPU when the cluster has GPUs (each still takes
    `cpus_per_worker` CPUs), else one per `cpus_per_worker` CPUs. Counted node by node, as Ray places
    an actor on one node: two 1-CPU nodes have no room for a 2-CPU worker."""
    with_gpus = any(node["Resources"].get("GPU", 0) >= 1 for node in nodes)
    room = 0
    for node in nodes:
        by_cpu = int(node["Resources"].get("CPU", 0) // cpus_per_worker)
        room += min(int(node["Resources"].get("GPU", 0)), by_cpu) if with_gpus else by_cpu
    return room


def _check_workers(nodes: list[dict], workers: int, cpus_per_worker: float, address: str, key: str) -> None:
    """More actors than the cluster can place would wait for room that only a finished study frees
    (a worker runs until the study is done), and one that fits no node waits forever."""
    room = room_for(nodes, cpus_per_worker)
    if workers <= room:
        return
    total = {kind: sum(node["Resources"].get(kind, 0) for node in nodes) for kind in ("CPU", "GPU")}
    each = "1 GPU" if total["GPU"] >= 1 else f"{cpus_per_worker:g} CPU"
    fix = f"set it to {room} or fewer" if room else "no node can hold one"
    if not total["GPU"] >= 1:
        fix += " or lower --cpus-per-worker" if room else "; lower --cpus-per-worker"
    raise ConfigError(f"{key}: {workers} worker(s) of {each} each do not fit the Ray cluster at {address} "
                      f"({len(nodes)} node(s), {total['CPU']:g} CPUs, {total['GPU']:g} GPUs: room for {room} at once); "
                      f"{fix}")


def require_ray() -> None:
    """ConfigError unless Ray can be imported; cheap (Ray itself is not imported)."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(RAY_MISSING)


RAY_MISSING = "--ray: Ray is not installed; pip install 'tuner[ray]'"


def _import_ray():
    # Worker lines carry Ray's "(node … pid=…)" prefix, uncoloured, and are never folded into
    # "[repeated 2x across cluster]": progress lines from several workers look alike.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


def _connect(ray, address: str) -> None:
    hint = "start one with `ray start --head`, or pass its address: --ray auto or --ray host:port"
    endpoint = _endpoint(address)
    if endpoint is not None:  # ray.init retries an address where nothing listens for minutes
        try:
            socket.create_connection(endpoint, timeout=10).close()
        except OSError as exc:
            raise ConfigError(f"--ray {address}: no Ray cluster answers at {endpoint[0]}:{endpoint[1]} "
                              f"({exc.strerror or exc}); {hint}") from None
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"--ray {address}: cannot connect to a Ray cluster ({one_line(exc)}); {hint}") from None


def _endpoint(address: str) -> tuple[str, int] | None:
    """The host and port `address` names, if it names one ("auto" names $RAY_ADDRESS, if set)."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    return (host, int(port)) if sep and host and port.isdigit() else None


def _check_store(store_url: str, address: str, nodes: int) -> None:
    """SQLite is a file on one machine: workers on other nodes could not reach it."""
    if store_url.startswith("sqlite") and nodes > 1:
        raise ConfigError(f"--storage {mask_url(store_url)}: the Ray cluster at {address} has {nodes} nodes, and "
                          "workers on several machines need a PostgreSQL store (--storage postgresql+psycopg://…); "
                          "SQLite works only on a one-node cluster")


def _resources(cluster: dict, workers: int, cpus_per_worker: float, nodes: int, log) -> dict:
    """One GPU per actor when the cluster has any, else `cpus_per_worker` CPUs."""
    gpus, cpus = int(cluster.get("GPU", 0)), cluster.get("CPU", 0)
    each = "1 GPU" if gpus else f"{cpus_per_worker:g} CPU"
    log(f"ray: {nodes} node(s), {cpus:g} CPUs, {gpus} GPUs; {workers} worker(s) of {each} each")
    return {"num_gpus": 1, "num_cpus": cpus_per_worker} if gpus else {"num_cpus": cpus_per_worker}


class RayWorker:
    """One worker of the study, as a Ray actor.

    Ray runs the methods of an actor with concurrency groups on pool threads, so `run` (the
    worker loop) and `stop` (in the "control" group) can overlap; Ctrl-C cannot reach a pool
    thread as a signal, so `stop` raises KeyboardInterrupt in it directly, and the loop treats
    it as Ctrl-C: the running trial is marked INTERRUPTED and re-queued.
    """

    def __init__(self, store_url: str, study: str, worker_id: str, cwd: str, trial_fn: str | None,
                 trials_per_process: int | None = None):
        import ray

        self.store_url, self.study, self.worker_id, self.trial_fn = store_url, study, worker_id, trial_fn
        self.trials_per_process = trials_per_process
        if os.path.isdir(cwd):  # relative paths in the space (data files, SQLite) resolve as for local workers
            os.chdir(cwd)
        threads = str(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
        # read by TensorFlow once, when it is first imported: by the first trial, after this
        os.environ.update(TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS=threads)
        self.node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"
        self.stop_event, self.lock = threading.Event(), threading.Lock()
        self.thread: threading.Thread | None = None
        self.interrupted = False

    def __repr__(self) -> str:  # Ray's prefix of this actor's output: "(node host/1a2b3c4d pid=…)"
        return f"node {self.node}"

    def where(self) -> str:
        return self.node

    def run(self) -> int:
        try:
            with self.lock:
                if self.stop_event.is_set():
                    return INTERRUPTED
                self.thread = threading.current_thread()
            from tuner.search import run_worker

            try:
                left = run_worker(self.store_url, self.study, worker_id=self.worker_id, stop_event=self.stop_event,
                                  trial_fn=self.trial_fn, log=lambda line: print(line, flush=True),
                                  trials_per_process=self.trials_per_process)
            finally:
                self._forget_thread()
            return HAND_OVER_EXIT if left == HAND_OVER else 0
        except KeyboardInterrupt:
            return INTERRUPTED

    def _forget_thread(self) -> None:
        # A Python call: an interrupt sent just before lands here at the latest, inside `run`.
        with self.lock:
            self.thread = None

    def stop(self) -> None:
        """Interrupts the running trial (once) and ends the loop."""
        self.stop_event.set()
        with self.lock:
            if self.thread is not None and not self.interrupted:
                self.interrupted = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread.ident),
                                                           ctypes.py_object(KeyboardInterrupt))


class _Supervisor:
    """Waits for the actors' loops, calls a loop again when Ray brings its actor back, and
    reports the node each actor runs on, and puts a fresh actor in the place of one that hands over."""

    def __init__(self, ray, new_actor, workers: int, log):
        self.ray, self.new_actor, self.log = ray, new_actor, log
        self.actors = [new_actor(i) for i in range(workers)]
        self.codes: list[int | None] = [None] * workers
        self.deaths = [0] * workers
        self.loops: dict = {}  # run() call -> actor index
        self.placements: dict = {}  # unanswered where() call -> actor index: not (yet) on a node
        self.call_again_at: dict[int, float] = {}  # unreachable actors
        self.unreachable: set[int] = set()  # said so once, until heard from again
        self.finished_at: float | None = None
        for i in range(workers):
            self._call(i)

    def _call(self, i: int) -> None:
        actor = self.actors[i]
        self.loops[actor.run.remote()] = i  # Ray holds the call while the actor restarts
        self.placements[actor.where.options(concurrency_group="control").remote()] = i  # answered while run runs

    def run(self) -> list[int]:
        try:
            while (self.loops or self.call_again_at) and not self._finished():
                ready, _ = self.ray.wait([*self.loops, *self.placements], num_returns=1, timeout=1.0)
                for ref in ready:
                    if ref in self.placements:
                        self._placed(ref)
                    else:
                        self._ended(ref)
                for i, when in list(self.call_again_at.items()):
                    if time.monotonic() >= when:
                        del self.call_again_at[i]
                        self._call(i)
        except KeyboardInterrupt:
            self._stop()
            raise
        for i in {*self.loops.values(), *self.call_again_at}:  # the study is done: nothing is left for them
            self.ray.kill(self.actors[i], no_restart=True)
            self.codes[i] = 0
        return [code if code is not None else 1 for code in self.codes]

    def _off_node(self) -> set[int]:
        return {*self.placements.values(), *self.call_again_at}

    def _finished(self) -> bool:
        if self.finished_at is None:
            return False
        working = set(self.loops.values()) - self._off_node()
        return not working or time.monotonic() > self.finished_at + FINISH_GRACE_S

    def _placed(self, ref) -> None:
        i = self.placements.pop(ref)
        self.unreachable.discard(i)
        try:
            self.log(f"[ray{i}] running on node {self.ray.get(ref)}")
        except self.ray.exceptions.RayActorError:
            pass  # gone before it could answer: the end of its loop says what happened

    def _ended(self, ref) -> None:
        i = self.loops.pop(ref)
        errors = self.ray.exceptions
        try:
            self.codes[i] = self.ray.get(ref)
        except errors.ActorUnavailableError:
            self._unreachable(i)
        except errors.RayActorError as exc:
            self._died(i, exc)
        except errors.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            if isinstance(cause, KeyboardInterrupt):  # an interrupt that arrived as the loop ended
                self.codes[i] = INTERRUPTED
            else:
                self.codes[i] = 2
                # a TunerError is the user's to fix: its one line; anything else is a bug: its traceback
                self.log(f"[ray{i}] error: {cause if isinstance(cause, TunerError) else exc}")
        else:
            if self.codes[i] == HAND_OVER_EXIT:  # its trials' graphs go with its process
                self.codes[i] = None
                self.ray.kill(self.actors[i], no_restart=True)
                self.actors[i] = self.new_actor(i)
                self._call(i)
            elif self.codes[i] == 0 and self.finished_at is None:
                self.finished_at = time.monotonic()

    def _unreachable(self, i: int) -> None:
        """Its node stopped answering. Ray declares the node dead once its health checks fail, and
        only then restarts the actor elsewhere; until then each call fails at once, so wait."""
        if i not in self.unreachable:
            self.unreachable.add(i)
            self.log(f"[ray{i}] unreachable (its node may be down); waiting for Ray to reconnect or restart it")
        self.call_again_at[i] = time.monotonic() + 2.0
        self.placements = {ref: j for ref, j in self.placements.items() if j != i}

    def _died(self, i: int, exc) -> None:
        self.unreachable.discard(i)
        self.placements = {ref: j for ref, j in self.placements.items() if j != i}
        lines = str(exc).splitlines()
        why = lines[-1].strip() if lines else type(exc).__name__
        self.deaths[i] += 1
        if exc.actor_init_failed or self.deaths[i] > MAX_RESTARTS:
            self.codes[i] = 1
            self.log(f"[ray{i}] actor lost for good: {why}")
            return
        self.log(f"[ray{i}] actor died ({why}); Ray restarts it ({self.deaths[i]}/{MAX_RESTARTS}); "
                 "its running trial is re-queued once its heartbeat is stale")
        self._call(i)

    def _stop(self) -> None:
        off_node = self._off_node()
        running = {ref: i for ref, i in self.loops.items() if i not in off_node}
        self.log("ray: stopping the workers; their running trials are marked INTERRUPTED and re-queued")
        for i in running.values():
            self.actors[i].stop.options(concurrency_group="control").remote()
        if running:
            self.ray.wait(list(running), num_returns=len(running), timeout=STOP_TIMEOUT_S)
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
