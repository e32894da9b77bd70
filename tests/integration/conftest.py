"""Integration cases: loading ``cases/*.yaml``, making their inputs, computing their references.

A case (in the spirit of Gadgetron's ``test/integration/cases/*.cfg``) names

``input``
    ``generator: shepp-logan`` (Debian's ``ismrmrd_generate_cartesian_shepp_logan``; options
    ``matrix``, ``coils``, ``oversampling``, ``repetitions``, ``noise_level``,
    ``noise_calibration``, ``acceleration``, ``calibration_width``) or
    ``generator: cardiomm-simulate`` (``gadgets.io.simulated_scan.write_simulated_scan``; options ``slices``,
    ``phases``, ``coils``, ``matrix``, ``acceleration``, ``pattern``, ``acs``, ``seed``,
    ``noise_scan``, ``noise_level``, ``modality``);
``chain``
    a file in ``chains/``, with ``overrides: {Stage: {property: value}}``;
``runs``
    how to run it: ``local`` (cardiomm-replay, local runner), ``harness`` (each Python gadget a real
    ``python -m gadgetron`` child, tests/gadgets/harness.py), ``worker`` (cardiomm-replay with
    ``--connect socket`` to a real ``cardiomm-worker`` process), ``server`` (cardiomm-replay
    ``--server`` against tests/gadgets/fake_server.py);
``reference`` and ``tolerance``
    ``||out - ref|| / ||ref||`` must stay below the tolerance; the reference kinds are computed by
    :func:`reference_images` (no large files in the repository);
``expect``
    image count, matrix, geometry, exit code, stderr texts.

Inputs are generated once per session per (generator, options).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

CASES_DIR = Path(__file__).resolve().parent / "cases"
CHAINS_DIR = Path(__file__).resolve().parents[2] / "chains"
CASE_KEYS = ("name", "description", "input", "chain", "overrides", "runs", "runs_identical", "server", "arguments",
             "expect", "reference", "tolerance")
RUN_KINDS = ("local", "harness", "worker", "server")
SHEPP_LOGAN_OPTIONS = {"matrix": "-m", "coils": "-c", "oversampling": "-O", "repetitions": "-r",
                       "acceleration": "-a", "calibration_width": "-w", "noise_level": "-n"}
SIMULATE_OPTIONS = {"slices": "n_slices", "phases": "n_phases", "coils": "n_coils", "matrix": "matrix",
                    "acceleration": "acceleration", "pattern": "pattern", "acs": "n_acs", "seed": "seed",
                    "noise_scan": "noise_scan", "noise_level": "noise_level", "modality": "modality"}


@dataclass(frozen=True)
class Case:
    """One integration case (see the module docstring)."""

    name: str
    path: Path
    input: dict[str, Any]
    chain: Path
    runs: tuple[str, ...]
    reference: dict[str, Any]
    tolerance: float
    expect: dict[str, Any]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs_identical: bool = False
    server: dict[str, Any] = field(default_factory=dict)
    arguments: tuple[str, ...] = ()


def load_case(path: Path) -> Case:
    """Read and check one case file (ValueError naming the file for a malformed case)."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ValueError(f"{path}: a case must be a mapping")
    unknown = set(document) - set(CASE_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    runs = tuple(document["runs"])
    if not runs or any(run not in RUN_KINDS for run in runs):
        raise ValueError(f"{path}: runs must be some of {RUN_KINDS}, got {runs}")
    chain = CHAINS_DIR / document["chain"]
    if not chain.is_file():
        raise ValueError(f"{path}: chain {chain} does not exist")
    if document["input"].get("generator") not in ("shepp-logan", "cardiomm-simulate"):
        raise ValueError(f"{path}: input.generator must be shepp-logan or cardiomm-simulate")
    return Case(name=document["name"], path=path, input=dict(document["input"]), chain=chain, runs=runs,
                reference=dict(document["reference"]), tolerance=float(document["tolerance"]),
                expect=dict(document.get("expect") or {}), overrides=dict(document.get("overrides") or {}),
                runs_identical=bool(document.get("runs_identical", False)),
                server=dict(document.get("server") or {}),
                arguments=tuple(str(a) for a in document.get("arguments") or ()))


def all_cases() -> list[Case]:
    return [load_case(path) for path in sorted(CASES_DIR.glob("*.yaml"))]


# --------------------------------------------------------------------------- inputs


def generate_input(spec: dict[str, Any], folder: Path) -> Path:
    """Write the input file a case's ``input`` describes into ``folder`` (fresh); return its path."""
    options = dict(spec.get("options") or {})
    folder.mkdir(parents=True, exist_ok=True)
    if spec["generator"] == "shepp-logan":
        tool = shutil.which("ismrmrd_generate_cartesian_shepp_logan")
        if tool is None:
            pytest.skip("ismrmrd_generate_cartesian_shepp_logan (Debian ismrmrd-tools) is not installed")
        command = [tool]
        for key, value in options.items():
            if key == "noise_calibration":
                command += ["-C"] if value else []
            elif key in SHEPP_LOGAN_OPTIONS:
                command += [SHEPP_LOGAN_OPTIONS[key], str(value)]
            else:
                raise ValueError(f"unknown shepp-logan option {key!r}")
        path = folder / "shepp_logan.h5"
        # The tool appends to an existing file: always a fresh folder.
        result = subprocess.run(command + ["-o", str(path)], cwd=folder, capture_output=True, text=True, timeout=300)
        if result.returncode != 0 or not path.exists():
            raise RuntimeError(f"{command} failed ({result.returncode}): {result.stderr}")
        return path
    from gadgets.io.simulated_scan import write_simulated_scan

    kwargs = {}
    for key, value in options.items():
        if key not in SIMULATE_OPTIONS:
            raise ValueError(f"unknown cardiomm-simulate option {key!r}")
        kwargs[SIMULATE_OPTIONS[key]] = tuple(value) if key == "matrix" else value
    path = folder / "simulated.h5"
    write_simulated_scan(path, **kwargs)
    return path


@pytest.fixture(scope="session")
def case_input(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Case], Path]:
    """``case_input(case)``: the case's input file, generated once per session per input spec."""
    made: dict[str, Path] = {}

    def get(case: Case) -> Path:
        key = yaml.safe_dump(case.input, sort_keys=True)
        if key not in made:
            made[key] = generate_input(case.input, tmp_path_factory.mktemp(f"input_{case.input['generator']}"))
        return made[key]

    return get


@pytest.fixture(scope="session")
def case_results() -> dict[str, Any]:
    """Images of the cases run so far in this session (by case name), for ``reference: {kind: case}``."""
    return {}


# --------------------------------------------------------------------------- references


def _ifft2c(kspace: np.ndarray) -> np.ndarray:
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=axes), axes=axes, norm="ortho"), axes=axes)


def whitened_coil_images(path: Path) -> dict[int, np.ndarray]:
    """Coil images ``{repetition: (coils, y, x_recon)}`` of a fully sampled single-slice file, computed
    with numpy only: Gadgetron's noise prewhitening (unbiased noise covariance, inverse lower
    Cholesky factor, times ``sqrt(2 * acquisition dwell / noise dwell * bandwidth)``), lines placed
    at ``kspace_encode_step_1 + ny/2 - centre``, centred orthonormal 2D inverse FFT, central
    ``x_recon`` readout columns."""
    import ismrmrd

    from gadgets.io.ismrmrd_io import iter_acquisitions, read_header

    header, _ = read_header(path)
    encoding = header.encoding[0]
    ny, nx_enc = encoding.encodedSpace.matrixSize.y, encoding.encodedSpace.matrixSize.x
    nx = encoding.reconSpace.matrixSize.x
    centre = encoding.encodingLimits.kspace_encoding_step_1.center
    info = header.acquisitionSystemInformation
    bandwidth = getattr(info, "relativeReceiverNoiseBandwidth", None) or 0.793
    noise: list[np.ndarray] = []
    noise_dwell = None
    lines: dict[int, dict[int, np.ndarray]] = {}
    acq_dwell = None
    for acq in iter_acquisitions(path):
        data = np.asarray(acq.data, dtype=np.complex128)
        if acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            noise.append(data)
            noise_dwell = noise_dwell or float(acq.sample_time_us)
            continue
        acq_dwell = acq_dwell or float(acq.sample_time_us)
        lines.setdefault(int(acq.idx.repetition), {})[int(acq.idx.kspace_encode_step_1) + ny // 2 - centre] = data
    samples = np.concatenate(noise, axis=1)
    covariance = samples @ samples.conj().T / (samples.shape[1] - 1)
    scale = np.sqrt(2.0 * acq_dwell / noise_dwell * bandwidth)
    whitener = scale * np.linalg.inv(np.linalg.cholesky(covariance))
    images = {}
    start = (nx_enc - nx) // 2
    for repetition, rows in sorted(lines.items()):
        kspace = np.zeros((samples.shape[0], ny, nx_enc), dtype=np.complex128)
        for ky, data in rows.items():
            kspace[:, ky, :] = whitener @ data
        images[repetition] = _ifft2c(kspace)[:, :, start:start + nx]
    return images


def rss_reference(coil_images: np.ndarray) -> np.ndarray:
    """Root-sum-of-squares ``sqrt(sum_c |img_c|^2)`` of coil images ``(coils, y, x)`` -> ``(y, x)``."""
    return np.sqrt((np.abs(coil_images) ** 2).sum(axis=0))


def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    """``||out - ref|| / ||ref||``."""
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
