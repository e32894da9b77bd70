"""Issue 10, data path: each reliability case through the real replay, with its expected outcome.

See :mod:`tests.reliability.cases` for the cases (inputs, expectations); the same list makes
``benchmarks/results/reliability.md`` (``benchmarks/reliability.py``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.reliability.cases import CASES, run_case


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case(case, tmp_path: Path) -> None:
    if case.name.startswith("shepp_logan") and shutil.which("ismrmrd_generate_cartesian_shepp_logan") is None:
        pytest.skip("ismrmrd_generate_cartesian_shepp_logan (Debian ismrmrd-tools) is not installed")
    result = run_case(case, tmp_path)
    assert result.ok, f"{case.name} ({case.description}): {result.outcome}"
