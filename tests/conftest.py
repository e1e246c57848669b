"""Shared test setup: repo root on sys.path; GPU tests skipped without an NVIDIA GPU."""
import sys

import pytest

from testenv import HAS_GPU, REPO

sys.path.insert(0, str(REPO))


def pytest_collection_modifyitems(config, items):
    if HAS_GPU:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU and ncu")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
