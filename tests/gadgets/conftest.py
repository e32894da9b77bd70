"""Fixtures shared by the gadget tests: small ISMRMRD raw files, made once per session.

- ``simulated_scan_file``: a tiny cine written by ``gadgets.io.simulated_scan.write_simulated_scan``
  (``SIMULATED_SCAN`` below: 2 slices, 4 phases, 4 coils, recon matrix 32 x 24, readout 2x
  oversampled, ktGaussian R=4 with 8 ACS lines, a noise scan first), ground truth in
  ``/cardiomm_truth``; ``simulated_scan_summary`` is what the writer returned for it.
- ``shepp_logan_file``: a file written by the C++ library (Debian's ismrmrd-tools 1.8,
  ``ismrmrd_generate_cartesian_shepp_logan`` with ``SHEPP_LOGAN_ARGS``: 32 x 32, 4 coils,
  2 repetitions, 2x readout oversampling, a noise calibration acquisition first, header version 8).
  Skipped when the tool is not installed.

Treat these files as read-only: they are shared by every test of the session.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from gadgets.io.simulated_scan import SimulationSummary

#: Keyword arguments of write_simulated_scan for ``simulated_scan_file``.
SIMULATED_SCAN = dict(n_slices=2, n_phases=4, n_coils=4, matrix=(32, 24), acceleration=4.0, pattern="ktGaussian",
                      n_acs=8, modality="cine", seed=7, noise_scan=True, noise_level=0.01)

#: Options of ismrmrd_generate_cartesian_shepp_logan for ``shepp_logan_file`` and what they give.
SHEPP_LOGAN_MATRIX = 32
SHEPP_LOGAN_COILS = 4
SHEPP_LOGAN_REPETITIONS = 2
SHEPP_LOGAN_ARGS = ["-m", str(SHEPP_LOGAN_MATRIX), "-c", str(SHEPP_LOGAN_COILS), "-r", str(SHEPP_LOGAN_REPETITIONS),
                    "-O", "2", "-n", "0.05", "-C"]
#: Acquisitions in that file: one noise acquisition + matrix lines per repetition.
SHEPP_LOGAN_N_ACQUISITIONS = 1 + SHEPP_LOGAN_MATRIX * SHEPP_LOGAN_REPETITIONS


@pytest.fixture(scope="session")
def simulated_scan_summary(tmp_path_factory: pytest.TempPathFactory) -> SimulationSummary:
    """What write_simulated_scan returned for ``simulated_scan_file``."""
    from gadgets.io.simulated_scan import write_simulated_scan

    path = tmp_path_factory.mktemp("simulated") / "simulated_cine.h5"
    return write_simulated_scan(path, **SIMULATED_SCAN)


@pytest.fixture(scope="session")
def simulated_scan_file(simulated_scan_summary: SimulationSummary) -> Path:
    """Path of a tiny simulated ISMRMRD cine (see SIMULATED_SCAN); read-only."""
    return simulated_scan_summary.path


@pytest.fixture(scope="session")
def shepp_logan_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of an ISMRMRD file written by Debian's C++ ismrmrd_generate_cartesian_shepp_logan; read-only."""
    tool = shutil.which("ismrmrd_generate_cartesian_shepp_logan")
    if tool is None:
        pytest.skip("ismrmrd_generate_cartesian_shepp_logan (Debian ismrmrd-tools) is not installed")
    folder = tmp_path_factory.mktemp("shepp_logan")
    path = folder / "shepp_logan.h5"
    # The tool appends to an existing file, so it always writes into a fresh folder.
    result = subprocess.run([tool, *SHEPP_LOGAN_ARGS, "-o", str(path)], cwd=folder, capture_output=True,
                            text=True, timeout=300)
    if result.returncode != 0 or not path.exists():
        raise RuntimeError(f"ismrmrd_generate_cartesian_shepp_logan failed ({result.returncode}): {result.stderr}")
    return path
