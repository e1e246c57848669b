"""Shared test setup: repo root on sys.path; GPU tests skipped without an NVIDIA GPU; SIGINT handled."""
import signal
import sys

import pytest

from testenv import HAS_GPU, REPO

sys.path.insert(0, str(REPO))

# A shell without job control starts a background job (`pytest … &`) with SIGINT ignored, and every process it
# starts inherits that: the interrupt tests' Ctrl-C would then reach nothing. Handling it here hands the
# children the default disposition again, as in a foreground run.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    if HAS_GPU:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU and ncu")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
