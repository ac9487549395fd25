"""The one exception base: every error a user can cause is a `TunerError` whose message is one
line naming the file (or flag), the key and what is allowed. `tuner` prints it and exits 2;
any other exception is a bug and keeps its traceback (Optuna's `exceptions.py` is the model).
"""


class TunerError(Exception):
    """Base of every error a user can cause; `str(error)` is the one line `tuner` prints."""


class ConfigError(TunerError, ValueError):
    """A bad config, space or flag value."""


class DataError(TunerError, ValueError):
    """Bad input data; the message names the file and the problem."""


class EvaluationError(TunerError, ValueError):
    """A bad evaluation argument or split."""


class StoreError(TunerError):
    """The store cannot be used as asked; the message names the (masked) URL."""


class TrainingDiverged(TunerError):
    """The loss became NaN or infinite; the message says where and suggests a cause."""


class TrialLost(TunerError):
    """Another worker declared this trial lost (stale heartbeat) while it was still running."""


def error_line(message: str, limit: int = 2000) -> str:
    """How `tuner` prints an error: `tuner: error: ` and the message on one line, the promise of
    every TunerError, kept even where a message quotes a user's text whole."""
    message = " ".join(message.splitlines())
    message = message if len(message) <= limit else f"{message[:limit // 2]} … {message[-limit // 2:]}"
    return f"tuner: error: {message}"
