"""Paths named on the command line, checked before any work starts: a run must not train
for an hour and then end in a traceback because `--out` names a file, and `recommend` must
say what is wrong with `--model` before TensorFlow loads.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from tuner.errors import ConfigError
from tuner.safe_yaml import quote

SAVED_MODEL = "saved_model.pb"


def _path(value: str, flag: str) -> Path:
    if not value or "\x00" in value:
        raise ConfigError(f"{flag}: {quote(value)} is not a usable path")
    return Path(value)


def _nearest_existing(path: Path, flag: str) -> Path:
    """`path` or its closest ancestor that exists; every ancestor in between must be creatable."""
    for candidate in (path, *path.parents):
        try:
            if candidate.exists():
                return candidate
        except OSError as exc:  # a name longer than the file system allows
            raise ConfigError(f"{flag}: {quote(str(path))}: {exc.strerror or exc}") from None
    return Path(".")


def writable_dir(value: str, flag: str) -> Path:
    """A directory the command may create (or write into): nothing on the way is a regular file."""
    path = _path(value, flag)
    found = _nearest_existing(path, flag)
    if not found.is_dir():
        what = "is a file" if found == path else f"is under {quote(str(found))}, which is a file"
        raise ConfigError(f"{flag}: {quote(str(path))} {what}; give a directory (it is created if missing)")
    if not os.access(found, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag}: {quote(str(path))}: cannot write into {quote(str(found))} (permission denied)")
    return path


def writable_file(value: str, flag: str) -> Path:
    """A file the command may write: not a directory, and its folder can be made."""
    path = _path(value, flag)
    if path.is_dir():
        raise ConfigError(f"{flag}: {quote(str(path))} is a directory; give a file name")
    if path.exists() and not path.is_file():  # a device or a pipe: never replaced by a renamed file
        raise ConfigError(f"{flag}: {quote(str(path))} is not a regular file; give a file name")
    writable_dir(str(path.parent), flag)
    return path


def write_out(value: str | Path, flag: str, text: str | None = None) -> Path:
    """Writes what a command's `flag` (`--out`) names: the file's `text`; or, with no text, tries
    the folder a run writes into when it ends, by making it and removing what was made, so that an
    unwritable one fails before any training and a run refused later leaves nothing behind.
    The one writer of every `--out`: a path that cannot be written is one line naming it and the
    reason (a ConfigError: exit 2). A file is written whole or not at all (a temporary file beside
    it, renamed over it), and only over a regular file (`writable_file`): never over /dev/full."""
    path = writable_dir(str(value), flag) if text is None else writable_file(str(value), flag)
    partial = path.with_name(f".{path.name}.partial")
    try:
        if text is None:
            made = [p for p in (path, *path.parents) if not p.exists()]  # innermost first
            path.mkdir(parents=True, exist_ok=True)
            for folder in made:
                folder.rmdir()
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    except OSError as exc:  # a read-only file system, /proc, a full disk: what the checks above cannot see
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise ConfigError(f"{flag}: {quote(str(path))}: cannot write ({exc.strerror or exc}); "
                          f"give a writable {'folder' if text is None else 'file'}") from None
    return path


def saved_model_dir(value: str, flag: str) -> Path:
    """A model folder written by `tuner train` (DIR/model), or the run folder DIR that holds one."""
    path = _path(value, flag)
    if (path / SAVED_MODEL).is_file():
        return path
    if (path / "model" / SAVED_MODEL).is_file():
        return path / "model"
    if not path.exists():
        problem = "not found"
    elif not path.is_dir():
        problem = "is a file, not a model folder"
    else:
        problem = f"has no {SAVED_MODEL}"
    raise ConfigError(f"{flag}: {quote(str(path))} {problem}; give the model folder `tuner train --out DIR` "
                      f"wrote (DIR/model)")
