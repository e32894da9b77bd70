"""Shared fixtures and markers for the whole suite."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy generator: every test draws the same numbers on every run."""
    return np.random.default_rng(1234)

