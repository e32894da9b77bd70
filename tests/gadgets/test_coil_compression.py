"""gadgets.coil_compression.CoilCompression: ReconData -> ReconData with fewer virtual coils."""

from __future__ import annotations

import numpy as np
import pytest
from gadgetron.types.recon_data import ReconBit, ReconBuffer, ReconData

from gadgets.buffer import AcquisitionBuffer
from gadgets.coil_compression import CoilCompression
from tests.gadgets.harness import assert_items_equal, run_gadget, synthetic_scan

N_COILS = 5


@pytest.fixture(scope="module")
def scan() -> object:
    return synthetic_scan(np.random.default_rng(31), n_coils=N_COILS, n_ro=9, n_e1=11, n_phases=2, n_slices=2)


@pytest.fixture(scope="module")
def recon_data(scan: object) -> list[ReconData]:
    return list(AcquisitionBuffer()(iter(scan.acquisitions), scan.header))


def energy(x: np.ndarray) -> float:
    return float(np.sum(np.abs(x.astype(np.complex128)) ** 2))


def test_compression_to_n_coils(recon_data: list[ReconData], scan: object) -> None:
    out = list(CoilCompression(n_coils=2)(iter(recon_data), scan.header))
    assert len(out) == len(recon_data)
    for before, after in zip(recon_data, out):
        data, ref = after.bits[0].data, after.bits[0].ref
        assert data.data.shape == before.bits[0].data.data.shape[:3] + (2,) + before.bits[0].data.data.shape[4:]
        assert ref.data.shape[3] == 2 and data.data.dtype == np.complex64 and data.data.flags.f_contiguous
        # The virtual coils are orthonormal combinations: they never gain energy, and the two
        # strongest keep most of the calibration energy of the (correlated) physical coils.
        assert energy(ref.data) <= energy(before.bits[0].ref.data) * (1 + 1e-5)
        assert energy(ref.data) > 0.5 * energy(before.bits[0].ref.data)
        # Unsampled lines stay empty; sampled lines keep their headers, now with 2 channels.
        np.testing.assert_array_equal(np.any(data.data != 0, axis=(0, 3)), np.any(before.bits[0].data.data != 0,
                                                                                  axis=(0, 3)))
        filled = [h for h in data.headers.ravel() if h.number_of_samples > 0]
        assert filled and all(h.active_channels == 2 for h in filled)
        assert bytes(data.sampling) == bytes(before.bits[0].data.sampling)
    assert recon_data[0].bits[0].data.data.shape[3] == N_COILS  # the input was not modified


def test_same_matrix_applied_to_data_and_ref(recon_data: list[ReconData], scan: object) -> None:
    gadget = CoilCompression(n_coils=3)
    gadget.start(scan.header)
    compression = gadget.compression_for(recon_data[0])
    (out,) = list(gadget(iter(recon_data[:1]), scan.header))
    expected = np.einsum("vc,xyzcnsl->xyzvnsl", compression.matrix, recon_data[0].bits[0].data.data)
    np.testing.assert_allclose(out.bits[0].data.data, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(compression.matrix @ compression.matrix.conj().T, np.eye(3), atol=1e-5)


def test_energy_parameter_and_no_ref(recon_data: list[ReconData], scan: object) -> None:
    no_ref = ReconData([ReconBit(recon_data[0].bits[0].data, None)])
    (all_energy,) = list(CoilCompression(energy=1.0)(iter([no_ref]), scan.header))
    assert all_energy.bits[0].data.data.shape[3] == N_COILS and all_energy.bits[0].ref is None
    (some,) = list(CoilCompression(energy="0.6")(iter([no_ref]), scan.header))
    assert 1 <= some.bits[0].data.data.shape[3] < N_COILS


def test_no_compression_needed_passes_unchanged(recon_data: list[ReconData], scan: object) -> None:
    out = list(CoilCompression(n_coils=N_COILS + 3)(iter(recon_data), scan.header))
    assert all(a is b for a, b in zip(out, recon_data))


def test_parameter_errors() -> None:
    with pytest.raises(ValueError, match="not both"):
        CoilCompression(n_coils=2, energy=0.9)
    with pytest.raises(ValueError, match="'energy'.*1.5"):
        CoilCompression(energy=1.5)
    with pytest.raises(ValueError, match="'n_coils'.*'many'"):
        CoilCompression.from_config({"n_coils": "many"})


@pytest.mark.slow
def test_over_the_socket_matches_in_process(recon_data: list[ReconData], scan: object) -> None:
    result = run_gadget("gadgets.coil_compression", "CoilCompression", header_xml=scan.header_xml,
                        items=recon_data, properties={"n_coils": "3"})
    assert result.protocol_error is None and result.errors == [] and result.closed, result.stderr
    assert set(result.message_ids) == {1023, 4}
    assert_items_equal(result.items, list(CoilCompression(n_coils=3)(iter(recon_data), scan.header)))


@pytest.mark.slow
def test_buffer_with_wrong_data_is_reported_as_error(recon_data: list[ReconData], scan: object) -> None:
    good = recon_data[0].bits[0]
    wrong_ref = ReconBuffer(np.asfortranarray(good.ref.data[:, :, :, :3]), None, None, good.ref.headers,
                            good.ref.sampling)  # the ref has 3 coils, the data 5
    broken = ReconData([ReconBit(good.data, wrong_ref)])
    result = run_gadget("gadgets.coil_compression", "CoilCompression", header_xml=scan.header_xml,
                        items=[broken, recon_data[1]], properties={"n_coils": "2"})
    assert result.items == [] and result.closed and result.exited_by_itself
    assert len(result.errors) == 1 and "CoilCompression: ValueError" in result.errors[0]
    assert "coils" in result.errors[0]
