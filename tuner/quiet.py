"""TensorFlow's start-up lines, kept off the terminal.

Importing TensorFlow 2.21 prints, twice (two of its libraries carry their own absl), absl's
"All log messages before absl::InitializeLog() ..." warning, a oneDNN notice and, on a machine
without CUDA, "Could not find cuda drivers": absl writes them before TensorFlow reads
`TF_CPP_MIN_LOG_LEVEL`, so the variable cannot hide them. While `tensorflow` is first
imported, file descriptor 2 goes to a temporary file; afterwards every line except absl's
informational ones (`I0000 ...`) and that warning is written back, so real warnings and errors
still show, after the import instead of during it.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

NOISE = re.compile(rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                   rb"|I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] .*")


@contextlib.contextmanager
def filtered_stderr(noise: re.Pattern = NOISE):
    """Holds back everything written to fd 2 (C++ and Python alike), then writes back the lines
    that are not `noise`."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().splitlines(keepends=True) if not noise.fullmatch(line.rstrip(b"\r\n"))]
            if kept:
                os.write(2, b"".join(kept))


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as usual, and runs its first import inside `filtered_stderr`."""

    finding = False

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" or self.finding:
            return None
        self.finding = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.finding = False
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            with filtered_stderr():
                run(module)

        spec.loader.exec_module = exec_module
        return spec


def quiet_tensorflow_import() -> None:
    """Installs the filter for the process's first `import tensorflow` (no-op if already imported)."""
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
