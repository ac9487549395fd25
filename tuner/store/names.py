"""The one rule for study names and worker ids, which every command, the store and a space's
`search.study` apply. Apart from the studies so that a space checks a name without importing
the store's other rooms (they import the space's settings)."""
from __future__ import annotations

from tuner.errors import ConfigError
from tuner.safe_yaml import quote
from tuner.store.schema import STUDY_NAME_MAX, trials


def _name_rule(what: str, longest: int) -> str:
    return (f"{what} is 1 to {longest} printable characters (no tabs, newlines or other control characters), "
            "not starting or ending with a space")


STUDY_NAME_RULE = _name_rule("a study name", STUDY_NAME_MAX)
WORKER_ID_MAX = trials.c.worker.type.length  # the column a worker's name is written to
WORKER_ID_RULE = _name_rule("a worker id", WORKER_ID_MAX)


def check_study_name(name, where: str = "study name") -> str:
    """`name` if it follows STUDY_NAME_RULE, else a one-line ConfigError naming `where` (the
    flag or key it came from). One rule everywhere: a name `search` accepts is one every other
    command finds, and one that fits the name column and a report's file name."""
    return _check_name(name, where, STUDY_NAME_MAX, STUDY_NAME_RULE)


def check_worker_id(worker_id, where: str = "--worker-id") -> str:
    """The same rule for the name a worker writes on its trials (`status` shows it in a column)."""
    return _check_name(worker_id, where, WORKER_ID_MAX, WORKER_ID_RULE)


def _check_name(name, where: str, longest: int, rule: str) -> str:
    if not isinstance(name, str):
        problem = f"is {type(name).__name__}, not text"
    elif not name.strip():
        problem = "is empty" if not name else "is blank"
    elif len(name) > longest:
        problem = f"has {len(name):,} characters"
    elif not name.isprintable():
        problem = "has a control character"
    elif name != name.strip():
        problem = "starts or ends with a space"
    else:
        return name
    raise ConfigError(f"{where}: {quote(name, 60)} {problem}; {rule}")
