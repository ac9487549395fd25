"""What `tuner search` prints while its workers run: one progress line, repeated when it changes."""
from __future__ import annotations

import threading
import time

from tuner.search.trial import short_values
from tuner.store import COMPLETED, FAILED, PRUNED, RUNNING, Store, best_trial, list_trials


def progress_line(store: Store, study: str, max_trials: int | None, workers: int, elapsed: float,
                  final: bool = False) -> str:
    """Trials done/running/failed, the best so far with its values, elapsed time and an estimate of what is left."""
    trials = list_trials(store, study)
    count = lambda status: sum(t.status == status for t in trials)  # noqa: E731
    done, failed, running, pruned = count(COMPLETED), count(FAILED), count(RUNNING), count(PRUNED)
    line = f"[{study}] {done + pruned}/{max_trials or '?'} done, {running} running, {failed} failed" + \
        (f", {pruned} pruned" if pruned else "")
    best = best_trial(store, study)
    if best is not None:
        line += f" | best {best.objective:.4f} (trial {best.number}: {short_values(best.params)})"
    if not final:
        durations = [t.duration for t in trials if t.duration]
        left = max(0, (max_trials or 0) - done - pruned - failed)
        line += f" | {duration(elapsed)} elapsed"
        if durations and left:
            line += f", ~{duration(left * sum(durations) / len(durations) / max(workers, 1))} left"
    return line


def watch(store: Store, study: str, max_trials: int | None, workers: int, stop: threading.Event) -> None:
    """Prints the progress line every 5 s while it changes, until `stop` is set."""
    started, last = time.monotonic(), None
    while not stop.wait(5.0):
        try:
            line = progress_line(store, study, max_trials, workers, time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - progress display must never stop a search
            line = f"[{study}] progress unavailable: {exc}"
        key = line.split(" | ")[0:2]
        if key != last:
            print(line, flush=True)
            last = key


def duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
