"""Baseline results on disk, keyed by a fingerprint of the split, shared by every worker process.

Workers of one study start together: the first to arrive computes under an exclusive file lock,
the others wait on it and read its JSON. Files are written under a private name and renamed, so
no process reads half a file.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from tuner.data.types import Split


def split_fingerprint(split: Split, **settings) -> str:
    """sha256 of the split's (user, item, timestamp) arrays, its sizes and `settings` (JSON-serialisable):
    the timestamps decide which training interactions are recent and which item follows which."""
    digest = hashlib.sha256(json.dumps([split.dataset.num_users, split.dataset.num_items, settings],
                                       sort_keys=True).encode())
    for part in (split.train, split.val, split.test):
        for array in (part.user, part.item, part.timestamp):
            digest.update(np.ascontiguousarray(array, np.int64).tobytes())
            digest.update(b"|")
    return digest.hexdigest()[:24]


def cached(path: Path, compute: Callable[[], dict]) -> dict:
    """The JSON at `path`, computing and writing it first if no process has yet."""
    found = _read(path)
    if found is not None:
        return found
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        found = _read(path)
        if found is not None:
            return found
        value = compute()
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(value, indent=1))
        os.replace(partial, path)
    return value


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:  # not written by `cached` (renamed whole): compute it again
        return None
