"""gadgets.remove_oversampling: readout cropping as Gadgetron's RemoveROOversamplingGadget."""

from __future__ import annotations

import numpy as np

from gadgets.remove_oversampling import RemoveOversampling, oversampling_ratio
from tests.gadgets.harness import assert_items_equal, run_gadget, synthetic_scan


def cifft(x: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(x, axes=-1), axis=-1, norm="ortho"), axes=-1)


def test_acquisitions_are_cropped_and_headers_updated() -> None:
    scan = synthetic_scan(np.random.default_rng(3), n_ro=9, oversampling=2, n_slices=1, n_phases=1)
    assert oversampling_ratio(scan.header) == 2.0
    out = list(RemoveOversampling()(iter(scan.acquisitions), scan.header))
    assert len(out) == len(scan.acquisitions)
    for before, after in zip(scan.acquisitions, out):
        assert after.number_of_samples == before.number_of_samples // 2
        assert after.data.shape == (before.active_channels, before.number_of_samples // 2)
        assert after.center_sample == before.center_sample // 2
        assert after.idx.kspace_encode_step_1 == before.idx.kspace_encode_step_1
        start = (before.number_of_samples - after.number_of_samples) // 2
        np.testing.assert_allclose(cifft(after.data), cifft(before.data)[:, start:start + after.number_of_samples],
                                   atol=1e-4)
    assert scan.acquisitions[1].number_of_samples == 18  # the input was not modified


def test_no_oversampling_passes_unchanged() -> None:
    scan = synthetic_scan(np.random.default_rng(4), oversampling=1, n_slices=1, n_phases=1)
    assert oversampling_ratio(scan.header) is None
    out = list(RemoveOversampling()(iter(scan.acquisitions), scan.header))
    assert all(a is b for a, b in zip(out, scan.acquisitions))


def test_simulated_scan_file_reaches_recon_matrix(simulated_scan_file: object, simulated_scan_summary: object) -> None:
    from gadgets.io.ismrmrd_io import read_acquisitions, read_header

    header, _ = read_header(simulated_scan_file)
    acquisitions = [acq for acq in read_acquisitions(simulated_scan_file)[:20]]
    out = list(RemoveOversampling()(iter(acquisitions), header))
    imaging = [acq for acq in out if acq.number_of_samples > 0 and acq.idx.kspace_encode_step_1 >= 0][-1]
    assert imaging.number_of_samples == simulated_scan_summary.matrix[0]


def test_over_the_socket_matches_in_process() -> None:
    scan = synthetic_scan(np.random.default_rng(8), n_ro=9, n_slices=1, n_phases=2)
    result = run_gadget("gadgets.remove_oversampling", "RemoveOversampling", header_xml=scan.header_xml,
                        items=scan.acquisitions)
    assert result.protocol_error is None and result.errors == [] and result.closed, result.stderr
    assert_items_equal(result.items, list(RemoveOversampling()(iter(scan.acquisitions), scan.header)))
