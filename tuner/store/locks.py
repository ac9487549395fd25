"""Who holds a SQLite database: the part of a "database is locked" message that tells the user
what to wait for or stop. SQLite itself cannot say; Linux's /proc lists the processes that have
the file (or its -wal, -shm, -journal companions) open.
"""
from __future__ import annotations

import os


def processes_with_open(path: str) -> list[str]:
    """Other processes that have the SQLite file `path` open, as 'pid N (command line)'; [] where
    /proc is missing or unreadable."""
    targets = {os.path.realpath(path + suffix) for suffix in ("", "-wal", "-shm", "-journal")}
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    except OSError:
        return []
    found = []
    for pid in sorted(pids, key=int):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # gone, or another user's
            continue
        if any(_link(f"/proc/{pid}/fd/{fd}") in targets for fd in fds):
            found.append(f"pid {pid} ({_command(pid)})")
    return found


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _command(pid: str, limit: int = 80) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            text = " ".join(f.read().replace(b"\0", b" ").decode(errors="replace").split())  # one line
    except OSError:
        text = ""
    text = text or "?"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def lock_note(url: str, exc: BaseException, waited_s: float | None) -> str:
    """For a SQLite "database is locked": how long it waited and who has the file open; else ""."""
    if not url.startswith("sqlite") or "database is locked" not in str(getattr(exc, "orig", None) or exc):
        return ""
    from sqlalchemy.engine import make_url

    waited = f" after waiting {waited_s:g} s" if waited_s else ""
    holders = processes_with_open(make_url(url).database or "")
    who = f"open by {', '.join(holders[:3])}" if holders else "held by another process"
    return f"{waited}; {who}: wait for it to finish or stop it, then retry"
