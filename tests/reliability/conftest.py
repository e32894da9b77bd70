"""Fixtures of the reliability tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.reliability.network_helpers import make_tiny_scan


@pytest.fixture(scope="module")
def tiny_scan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, str, list[Any]]:
    """(raw file, header, header XML, ReconData items) of ``network_helpers.TINY_SCAN``, once per module."""
    return make_tiny_scan(tmp_path_factory.mktemp("tiny_scan"))
