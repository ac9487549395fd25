"""Workers of one study run side by side in threads of the test process (a module beside the
tests, as throwaway_postgres is)."""
from __future__ import annotations

import threading

from tuner.search import run_worker


def run_workers_side_by_side(url: str, study: str, trial_fn, count: int = 2) -> None:
    """`count` workers (`w0`, `w1`, ...) of `study` in threads, until the study has nothing left."""
    threads = [threading.Thread(target=run_worker, args=(url, study),
                                kwargs={"trial_fn": trial_fn, "worker_id": f"w{i}", "log": lambda m: None})
               for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
