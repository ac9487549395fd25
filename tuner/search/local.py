"""Worker processes on this machine: what `tuner search` starts, one GPU or a share of the CPU each.

`python -m tuner.search.local` runs one worker (`main`); `start_local_workers` starts n of
them and waits. The store stays the only coordination: children share nothing else.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

from tuner.errors import ConfigError, TunerError, error_line
from tuner.safe_yaml import quote
from tuner.search.trial import load_trial_fn
from tuner.search.worker import HAND_OVER, HAND_OVER_EXIT, run_worker, sigterm_as_interrupt
from tuner.store import mask_url


def gpu_count() -> int:
    """GPUs listed by `nvidia-smi -L` (0 without the tool or a driver)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def worker_env(i: int, n: int, gpus: int, cores: int | None = None) -> dict[str, str]:
    """Environment for local worker i of n: its own GPU, or its share of the CPU cores (set
    before the child imports TensorFlow, which reads them once)."""
    if gpus:
        return {"CUDA_VISIBLE_DEVICES": str(i % gpus)}
    cores = cores or len(os.sched_getaffinity(0))
    threads = str(max(1, cores // n))
    return {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads, "OMP_NUM_THREADS": threads}


MAX_WORKERS_ENV = "TUNER_MAX_WORKERS"  # the user's say: how many local workers this machine may run


def local_worker_limit() -> tuple[int, str]:
    """How many worker processes `tuner search` runs on this machine, and why: $TUNER_MAX_WORKERS
    if set, else one per GPU, else one per CPU core this process may use. More than that only
    slows every trial down (each worker trains with all the threads it is given), and a typo
    like `--workers 1000000` would start processes until the machine stopped."""
    raw = os.environ.get(MAX_WORKERS_ENV, "").strip()
    if raw:
        try:
            limit = int(raw)
        except ValueError:
            limit = 0
        if limit < 1:
            raise ConfigError(f"{MAX_WORKERS_ENV}: expected a whole number >= 1, got {quote(raw, 60)}")
        return limit, f"{MAX_WORKERS_ENV}={limit}"
    gpus = gpu_count()
    if gpus:
        return gpus, f"this machine has {gpus} GPU(s)"
    cores = len(os.sched_getaffinity(0))
    return cores, f"this machine has no GPU and {cores} CPU core(s) for this process"


def check_local_workers(n: int, where: str) -> None:
    """Refuses `n` local workers beyond `local_worker_limit`; `where` names the flag or key."""
    limit, why = local_worker_limit()
    if n > limit:
        raise ConfigError(f"{where}: {n:,} local workers is more than {limit} ({why}); allowed: 1 to {limit}, "
                          f"or set {MAX_WORKERS_ENV} to run more")


def start_local_workers(n: int, store_url: str | None, study: str, trial_fn_spec: str | None = None, *,
                        worker_prefix: str = "w", env: dict[str, str] | None = None,
                        artifacts: str | None = None, trials_per_process: int | None = None) -> list[int]:
    """Runs `n` worker processes on this machine until the study is done; their exit codes
    (`tuner search` first holds `n` to `check_local_workers`; callers here choose freely).
    `trial_fn_spec` None: the built-in trial (train the study's space); else a
    "module:function" or "file.py:function" that every child loads. A child that has run
    `trials_per_process` trials leaves between trials and a fresh one takes its worker id.

    Children get their own session, so Ctrl-C reaches them once, forwarded from here.
    The store URL travels in TUNER_STORAGE, not on command lines that `ps` shows.
    """
    if trial_fn_spec is not None:
        load_trial_fn(trial_fn_spec)  # a typo fails here, once, not in n children
    if store_url and "***" in store_url and mask_url(store_url) == store_url:
        raise ConfigError(f"{store_url}: a masked URL (Store.url); pass Store.raw_url to worker processes")
    gpus = gpu_count()

    def start(i: int) -> subprocess.Popen:
        child_env = {**os.environ, **(env or {}), **worker_env(i, n, gpus)}
        if store_url:
            child_env["TUNER_STORAGE"] = store_url
        cmd = [sys.executable, "-m", "tuner.search.local", "--study", study, "--worker-id", f"{worker_prefix}{i}"]
        for flag, value in (("--trial-fn", trial_fn_spec), ("--artifacts", artifacts),
                            ("--trials-per-process", trials_per_process)):
            cmd += [] if value is None else [flag, str(value)]
        return subprocess.Popen(cmd, env=child_env, start_new_session=True)

    procs = [start(i) for i in range(n)]
    try:
        with sigterm_as_interrupt():
            return wait_handing_over(procs, start)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        raise


def wait_handing_over(procs: list[subprocess.Popen], start) -> list[int]:
    """Waits for every worker process; one that leaves with HAND_OVER_EXIT is replaced in the
    list (Ctrl-C forwarding reads it) by `start(i)`, a fresh one with the same worker id."""
    codes: list[int | None] = [None] * len(procs)
    while None in codes:
        for i, proc in enumerate(procs):
            if codes[i] is None and proc.poll() is not None:
                if proc.returncode == HAND_OVER_EXIT:
                    procs[i] = start(i)
                else:
                    codes[i] = proc.returncode
        time.sleep(0.1)
    return codes


def main(argv: list[str] | None = None) -> int:
    """One worker until its study has no trials left. Exit codes: 0 done, 2 a TunerError
    (printed as its one line), 130 interrupted; anything else is a bug and shows its traceback."""
    parser = argparse.ArgumentParser(prog="python -m tuner.search.local",
                                     description="Run one worker of a study until it has no trials left.")
    parser.add_argument("--storage", help="store URL (default: env TUNER_STORAGE, else sqlite:///tuner.db)")
    parser.add_argument("--study", required=True)
    parser.add_argument("--trial-fn", help="'package.module:function' or 'file.py:function' "
                                           "(default: train the study's space)")
    parser.add_argument("--worker-id")
    parser.add_argument("--artifacts", help="folder for Hyperband checkpoints (default: beside a SQLite store)")
    parser.add_argument("--trials-per-process", type=int,
                        help=f"leave with exit code {HAND_OVER_EXIT} after this many trials, for a fresh process")
    args = parser.parse_args(argv)
    try:
        left = run_worker(args.storage, args.study, worker_id=args.worker_id, trial_fn=args.trial_fn,
                          log=lambda m: print(m, flush=True), artifacts=args.artifacts,
                          trials_per_process=args.trials_per_process)
    except KeyboardInterrupt:
        return 130
    except TunerError as exc:
        print(error_line(str(exc)), file=sys.stderr)
        return 2
    return HAND_OVER_EXIT if left == HAND_OVER else 0


if __name__ == "__main__":
    sys.exit(main())
