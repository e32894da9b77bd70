"""Shared fixtures and markers for the whole suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import one_torch_thread


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


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the test (see ``tests.helpers.one_torch_thread``)."""
    with one_torch_thread():
        yield


@pytest.fixture
def embedding_cache(monkeypatch, tmp_path) -> Path:
    """A private text-embedding cache folder (``CARDIOMM_CACHE_DIR``) for the test."""
    path = tmp_path / "embeddings"
    monkeypatch.setenv("CARDIOMM_CACHE_DIR", str(path))
    return path
