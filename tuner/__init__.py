"""tuner: hyperparameter search for TensorFlow Recommenders two-tower retrieval models.

TFRS 0.7.7 runs only on tf-keras, and TensorFlow 2.21 picks Keras 3 unless told otherwise
before its first import, so the switch is set here, before any submodule imports TensorFlow.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hides C++ info and the CPU-only cuInit error

__version__ = "0.1.0"
