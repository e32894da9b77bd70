"""What cardiomm-replay --server says before a scan that Gadgetron's native NoiseAdjustGadget will
fail: a noise measurement without the patient and measurement IDs (the simulator writes them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gadgets.io.ismrmrd_io import read_xml
from gadgets.protocol.chain_format import load_chain
from gadgets.tools.client import has_noise_measurement, native_noise_adjust_problem
from gadgets.tools.replay import EXIT_OK, main
from tests.gadgets.fake_server import FakeGadgetronServer

CHAINS = Path(__file__).resolve().parents[2] / "chains"
NATIVE = load_chain(CHAINS / "cardiomm_cine_native.xml").to_xml()
PYTHON = load_chain(CHAINS / "cardiomm_cine_python.xml").to_xml()


def test_noise_measurement_is_found(simulated_scan_file: Path, shepp_logan_file: Path) -> None:
    assert has_noise_measurement(simulated_scan_file)  # the simulator's noise scan comes first
    assert has_noise_measurement(shepp_logan_file)  # written with -C (noise calibration)


def test_native_noise_adjust_needs_the_ids_only_with_a_noise_scan(simulated_scan_file: Path,
                                                                   shepp_logan_file: Path) -> None:
    debian = read_xml(shepp_logan_file)  # no subjectInformation, no measurementID
    problem = native_noise_adjust_problem(debian, NATIVE, has_noise=True)
    assert problem is not None and "subjectInformation/patientID" in problem
    assert "measurementInformation/measurementID" in problem and "Unknown error" in problem
    assert native_noise_adjust_problem(debian, NATIVE, has_noise=False) is None
    assert native_noise_adjust_problem(debian, PYTHON, has_noise=True) is None  # Python NoiseAdjust: no IDs
    assert native_noise_adjust_problem(debian, None, has_noise=True) is None  # a config on the server: unknown
    assert native_noise_adjust_problem(read_xml(simulated_scan_file), NATIVE, has_noise=True) is None
    four_part = debian.replace("</acquisitionSystemInformation>", "</acquisitionSystemInformation>"
                               "<measurementInformation><measurementID>1_PAT_2_3</measurementID>"
                               "<patientPosition>HFS</patientPosition></measurementInformation>")
    assert native_noise_adjust_problem(four_part, NATIVE, has_noise=True) is None


def test_replay_to_a_server_says_so(shepp_logan_file: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with FakeGadgetronServer("echo", timeout=120) as server:
        code = main([str(shepp_logan_file), "--server", f"127.0.0.1:{server.port}", "--chain",
                     str(CHAINS / "cardiomm_cine_native.xml"), "-o", str(tmp_path / "out.h5"), "-q",
                     "--header-version", "14"])
    err = capsys.readouterr().err
    assert code == EXIT_OK  # the fake server does not care; a real one would fail the scan
    assert "native NoiseAdjustGadget" in err and "lacks subjectInformation/patientID" in err
