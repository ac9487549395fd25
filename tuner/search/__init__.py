"""Search: studies, the store-backed Keras Tuner oracle, and the workers that run trials.

The rooms, in the order one trial passes through them: `flags` (`tuner search`'s flags over a
space's search settings), `study` (create or resume a study from a space), `local` (start worker
processes; `python -m tuner.search.local` is one worker), `worker` (the loop: visit the oracle
under the study lock, run a trial, report), `oracle` (Keras Tuner's oracle kept in the store;
`tpe`: Optuna's TPE behind it; `warmstart`: enqueued configs and an earlier study's trials, read
when a study is created), `trial` (what a trial function sees, its heartbeat, its pruner's
decisions and outcome), `pruners` (the rules) and `pruning` (a decision under the lock), `hypermodel` (the built-in trial: the space's
config trained by tuner.train).

Names resolve lazily, so importing this package imports neither keras_tuner nor TensorFlow
(~5 s): a worker imports them when it starts.
"""
_HOMES = {
    "create_or_resume_study": "study", "create_or_resume_custom_study": "study",
    "run_worker": "worker",
    "start_local_workers": "local", "gpu_count": "local", "worker_env": "local",
    "TrialContext": "trial", "load_trial_fn": "trial", "in_subprocess": "trial", "short_values": "trial",
}
__all__ = sorted([*_HOMES, "ORACLES", "TrialLost"])


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"tuner.search.{_HOMES[name]}"), name)
    if name == "ORACLES":
        from tuner.settings import ORACLES

        return ORACLES
    if name == "TrialLost":
        from tuner.errors import TrialLost

        return TrialLost
    raise AttributeError(f"module 'tuner.search' has no attribute {name!r}")
