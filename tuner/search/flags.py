"""`tuner search`'s flags over a space's search settings: checked before a store opens, so a
refused flag changes nothing. Ray is imported only when the workers go there."""
from __future__ import annotations

import os

from tuner.errors import ConfigError
from tuner.search.local import check_local_workers
from tuner.settings import SearchSettings
from tuner.space import Space


def settings_with_flags(args, space: Space) -> SearchSettings:
    """The space's search settings with `tuner search`'s flags (argparse's namespace) applied,
    each checked as its key in a space is; local workers bounded, a Ray cluster's room checked."""
    s = space.search
    for flag, key in (("--max-trials", "max_trials"), ("--workers", "workers")):
        if getattr(args, key) is not None:
            s = s.replace(flag, **{key: getattr(args, key)})
    if args.enqueue:  # after the space's own; relative to here, not to the space's folder
        s = s.replace("--enqueue", enqueue=[*s.enqueue, *(os.path.abspath(f) for f in args.enqueue)])
    if not 0 < args.cpus_per_worker < float("inf"):  # also nan
        raise ConfigError(f"--cpus-per-worker: must be a finite number of CPUs > 0 (got {args.cpus_per_worker})")
    if args.ray or s.engine == "ray":
        from tuner.search.ray import check_room, require_ray

        require_ray()  # before the store opens: a study is not created for workers that cannot start
        check_room(args.ray or "auto", s.workers, args.cpus_per_worker,
                   "--workers" if args.workers is not None else f"{space.source}: search.workers")
    else:  # a Ray cluster places actors by its own resources
        check_local_workers(s.workers, "--workers" if args.workers is not None else f"{space.source}: search.workers")
    return s
