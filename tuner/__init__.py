"""tuner: hyperparameter search for TensorFlow Recommenders two-tower retrieval models.

TFRS 0.7.7 runs only on tf-keras, and TensorFlow 2.21 picks Keras 3 unless told otherwise
before its first import, so the switch is set here, before any submodule imports TensorFlow.
TensorFlow's C++ logging is quiet unless the user sets `TF_CPP_MIN_LOG_LEVEL` below 3; its
start-up lines, which that variable cannot reach, are filtered by `tuner.quiet`.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
if os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3") == "3":  # hides C++ info and the CPU-only cuInit error
    from tuner.quiet import quiet_tensorflow_import

    quiet_tensorflow_import()

__version__ = "0.1.0"
