"""Data-path failures on a Gadgetron connection go back as one ERROR message (real `python -m gadgetron` child)."""

from __future__ import annotations

import ismrmrd
import numpy as np
import pytest

from tests.gadgets.harness import run_gadget, synthetic_scan

pytestmark = pytest.mark.slow  # every test here takes seconds (processes, servers): `make test-fast` skips them


def _nan(acq: ismrmrd.Acquisition) -> ismrmrd.Acquisition:
    data = np.array(acq.data, dtype=np.complex64, copy=True)
    data[0, 0] = np.nan
    return ismrmrd.Acquisition(acq.getHead(), data, np.array(acq.traj, dtype=np.float32))


def test_nothing_valid_left_is_an_error_message(rng) -> None:
    scan = synthetic_scan(rng, noise_samples=0)
    result = run_gadget("gadgets.buffer", "AcquisitionBuffer", header_xml=scan.header_xml,
                        items=[_nan(a) for a in scan.acquisitions])
    assert len(result.errors) == 1, result.stderr[-2000:]
    assert "no valid imaging acquisition is left" in result.errors[0]
    assert "\n" not in result.errors[0].strip()
    assert not result.items


def test_huge_header_is_an_error_message_naming_the_field(rng) -> None:
    scan = synthetic_scan(rng, noise_samples=0)
    header_xml = scan.header_xml.replace("<matrixSize><x>20</x><y>11</y>", "<matrixSize><x>20</x><y>60000</y>", 1)
    assert header_xml != scan.header_xml
    result = run_gadget("gadgets.buffer", "AcquisitionBuffer", header_xml=header_xml, items=scan.acquisitions)
    assert len(result.errors) == 1, result.stderr[-2000:]
    assert "encodedSpace.matrixSize.y = 60000" in result.errors[0]
    assert not result.items


def test_nan_line_is_dropped_and_counted_over_the_connection(rng) -> None:
    scan = synthetic_scan(rng, noise_samples=0)
    acquisitions = list(scan.acquisitions)
    acquisitions[3] = _nan(acquisitions[3])
    result = run_gadget("gadgets.buffer", "AcquisitionBuffer", header_xml=scan.header_xml, items=acquisitions)
    assert not result.errors and result.items
    from gadgets.data_checks import DropCounts, read_marks

    assert read_marks(result.items[-1].bits[0].data.headers) == DropCounts(non_finite=1)
    assert all(np.isfinite(np.asarray(rd.bits[0].data.data)).all() for rd in result.items)
