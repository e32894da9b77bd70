"""AcquisitionBuffer against a straightforward reference assembly of the same acquisitions.

The reference below places every line by the rules of ``gadgets.buffer``'s docstring with plain
loops and per-acquisition ``getHead()`` copies (what the buffer did before it read headers in
place and kept its header slots in one ctypes array), so the buffer's ReconData must equal it bit
for bit: samples, every header slot (bytes), drop marks included.
"""

from __future__ import annotations

import ismrmrd
import numpy as np
import pytest
from gadgetron.types.recon_data import ReconData

from gadgets import data_checks
from gadgets.buffer import AcquisitionBuffer
from tests.gadgets.harness import synthetic_scan

N_PHASES, N_SLICES, N_E1, N_RO, N_COILS = 3, 2, 12, 8, 3
SKIPPED = (ismrmrd.ACQ_IS_NOISE_MEASUREMENT, ismrmrd.ACQ_IS_NAVIGATION_DATA)


def make_scan() -> object:
    """Reversed odd lines, navigators, a NaN line and a line with its phase outside the limits."""
    scan = synthetic_scan(np.random.default_rng(5), n_coils=N_COILS, n_ro=N_RO, n_e1=N_E1, n_phases=N_PHASES,
                          n_slices=N_SLICES, acceleration=3, n_acs=4, noise_samples=16, reverse_odd_lines=True,
                          navigators=True)
    imaging = [a for a in scan.acquisitions if not any(a.is_flag_set(f) for f in SKIPPED)]
    imaging[5].data[1, 3] = np.nan
    imaging[9].idx.phase = N_PHASES + 4
    return scan


def default_header_bytes() -> bytes:
    return bytes(data_checks.default_header())


def usable(acq: ismrmrd.Acquisition) -> bool:
    finite = bool(np.isfinite(acq.data).all())
    return finite and acq.idx.phase < N_PHASES and not any(acq.is_flag_set(f) for f in SKIPPED)


def forward(acq: ismrmrd.Acquisition) -> tuple[np.ndarray, ismrmrd.AcquisitionHeader]:
    """The line's samples in forward order and its header (ACQ_IS_REVERSE cleared)."""
    head = acq.getHead()
    if acq.is_flag_set(ismrmrd.ACQ_IS_REVERSE):
        head.flags &= ~(1 << (ismrmrd.ACQ_IS_REVERSE - 1))
        return np.asarray(acq.data)[:, ::-1], head
    return np.asarray(acq.data), head


def reference(acquisitions: list[ismrmrd.Acquisition], per_slice: bool, forref: bool,
              counts: data_checks.DropCounts) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(data [E0, E1, 1, CHA, N, 1, LOC], header bytes [E1, 1, N, 1, LOC])`` per ReconData."""
    n_loc = 1 if per_slice else N_SLICES
    groups = range(N_SLICES) if per_slice else [None]
    out = []
    for group in groups:
        data = np.zeros((2 * N_RO, N_E1, 1, N_COILS, N_PHASES, 1, n_loc), np.complex64)
        heads = np.empty((N_E1, 1, N_PHASES, 1, n_loc), dtype=object)
        for position in np.ndindex(heads.shape):
            heads[position] = data_checks.default_header()
        for acq in acquisitions:
            if not usable(acq) or (group is not None and acq.idx.slice != group):
                continue
            calibration = acq.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
            both = acq.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
            if (forref and not (calibration or both)) or (not forref and calibration):
                continue
            samples, head = forward(acq)
            loc = 0 if per_slice else acq.idx.slice
            e1, phase = acq.idx.kspace_encode_step_1, acq.idx.phase
            data[:, e1, 0, :, phase, 0, loc] = samples.T
            heads[e1, 0, phase, 0, loc] = head
        if not forref:
            data_checks.mark_headers(heads, counts)
        out.append((data, np.vectorize(bytes, otypes=[object])(heads)))
    return out


@pytest.mark.parametrize("trigger", ["slice", "none"])
def test_recon_data_equals_the_reference_assembly(trigger: str) -> None:
    scan = make_scan()
    out = list(AcquisitionBuffer(trigger_dimension=trigger)(iter(scan.acquisitions), scan.header))
    assert all(isinstance(item, ReconData) for item in out)
    per_slice = trigger == "slice"
    # one NaN line (dropped before slice 0 is emitted) and one outside the limits (slice 0 too)
    counts = data_checks.DropCounts(non_finite=1, outside_limits=1)
    for forref in (False, True):
        expected = reference(scan.acquisitions, per_slice, forref, counts)
        assert len(out) == len(expected)
        for recon_data, (data, heads) in zip(out, expected):
            buffer = recon_data.bits[0].ref if forref else recon_data.bits[0].data
            assert buffer.data.dtype == np.complex64 and buffer.data.flags.f_contiguous
            np.testing.assert_array_equal(buffer.data, data, strict=True)
            got = np.vectorize(bytes, otypes=[object])(buffer.headers)
            assert got.shape == heads.shape and (got == heads).all()
            assert type(buffer.headers.flat[0]) is ismrmrd.AcquisitionHeader
    # the input acquisitions are not changed (headers read in place, never written)
    assert any(a.is_flag_set(ismrmrd.ACQ_IS_REVERSE) for a in scan.acquisitions)


def test_header_slots_are_independent_objects() -> None:
    scan = make_scan()
    data = list(AcquisitionBuffer()(iter(scan.acquisitions), scan.header))[0].bits[0].data
    flat = list(data.headers.flat)
    assert len({id(head) for head in flat}) == len(flat)
    empty = next(h for h in flat if h.number_of_samples == 0)
    empty.number_of_samples = 99  # changing one slot's header changes no other slot
    assert sum(h.number_of_samples == 99 for h in data.headers.flat) == 1
    assert default_header_bytes() != bytes(empty)
