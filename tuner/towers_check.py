"""The user's towers (`model.towers`) built once in a fresh process, before a study's first trial.

The coordinator of a search stays free of TensorFlow and the dataset (its workers load both), so
`tuner.model.custom.check_config` runs in a spawned child, and its ConfigError is raised here.
Apart from `tuner.usercode` on purpose: `tuner.model.custom` imports that module.
"""
from __future__ import annotations


def in_child(cfg) -> dict:
    """`tuner.model.custom.check_config(cfg)` run in a fresh process: the code's fingerprint, or
    the child's one-line ConfigError."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:  # leaving it terminates the child
        return pool.apply(_check_config, (cfg,))


def _check_config(cfg) -> dict:
    """The child's work: TensorFlow and the dataset load there."""
    from tuner.model.custom import check_config

    return check_config(cfg)
