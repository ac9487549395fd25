"""Search: studies, the database-backed Keras Tuner oracle, and the workers that run trials.

Names resolve lazily from tuner.search.worker, so `python -m tuner.search.worker` runs the
module once; keras_tuner (and with it TensorFlow, ~5 s) is imported by a worker's first visit
to the oracle, never by importing this package.
"""
__all__ = ["ORACLES", "TrialContext", "TrialLost", "create_or_resume_study", "gpu_count", "in_subprocess",
           "load_trial_fn", "run_worker", "start_local_workers"]


def __getattr__(name: str):
    if name in __all__:
        from tuner.search import worker

        return getattr(worker, name)
    raise AttributeError(f"module 'tuner.search' has no attribute {name!r}")
