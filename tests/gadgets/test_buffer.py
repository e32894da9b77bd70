"""gadgets.buffer.AcquisitionBuffer: ReconData as AcquisitionAccumulateTrigger + BucketToBuffer hand it over."""

from __future__ import annotations

import ismrmrd
import numpy as np
import pytest
from gadgetron.types.recon_data import ReconData

from gadgets.buffer import AcquisitionBuffer
from gadgets.io.ismrmrd_io import read_acquisitions, read_header
from gadgets.layout import buffer_to_kspace, sampling_mask
from gadgets.noise_adjust import NoiseAdjust
from gadgets.remove_oversampling import RemoveOversampling
from tests.gadgets.harness import assert_items_equal, run_gadget, synthetic_scan

N_PHASES, N_SLICES, N_E1, N_RO, N_COILS = 3, 2, 11, 9, 3


def make_scan(**kwargs: object) -> object:
    options = dict(n_coils=N_COILS, n_ro=N_RO, n_e1=N_E1, n_phases=N_PHASES, n_slices=N_SLICES, noise_samples=16)
    options.update(kwargs)
    return synthetic_scan(np.random.default_rng(21), **options)


@pytest.fixture(scope="module")
def scan() -> object:
    return make_scan()


@pytest.fixture(scope="module")
def buffers(scan: object) -> list[ReconData]:
    return list(AcquisitionBuffer()(iter(scan.acquisitions), scan.header))


def test_one_recon_data_per_slice_with_gadgetron_shapes(buffers: list[ReconData]) -> None:
    assert len(buffers) == N_SLICES and all(len(rd.bits) == 1 for rd in buffers)
    data = buffers[0].bits[0].data
    # E0 = all samples (parallel imaging in the header), E1 = encoded matrix, N = phases.
    assert data.data.shape == (2 * N_RO, N_E1, 1, N_COILS, N_PHASES, 1, 1)
    assert data.data.dtype == np.complex64 and data.data.flags.f_contiguous
    assert data.headers.shape == (N_E1, 1, N_PHASES, 1, 1)
    assert data.trajectory is None and data.density is None
    sampling = data.sampling
    assert list(sampling.encoded_matrix) == [N_RO, N_E1, 1]  # readout: recon size (Cartesian)
    assert list(sampling.recon_matrix) == [N_RO, N_E1, 1]
    assert list(sampling.encoded_FOV) == [300.0, 300.0, 8.0]
    assert list(sampling.sampling_limits[0]) == [0, N_RO, 2 * N_RO - 1]
    assert list(sampling.sampling_limits[1]) == [0, N_E1 // 2, N_E1 - 1]


def test_lines_land_where_bucket_to_buffer_puts_them(scan: object, buffers: list[ReconData]) -> None:
    filled = {s: np.zeros((N_E1, N_PHASES), bool) for s in range(N_SLICES)}
    for acq in scan.acquisitions[1:]:
        rd = buffers[acq.idx.slice]
        e1, phase = acq.idx.kspace_encode_step_1, acq.idx.phase
        if acq.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION):  # calibration only: ref, not data
            np.testing.assert_array_equal(rd.bits[0].ref.data[:, e1, 0, :, phase, 0, 0], acq.data.T)
            continue
        filled[acq.idx.slice][e1, phase] = True
        np.testing.assert_array_equal(rd.bits[0].data.data[:, e1, 0, :, phase, 0, 0], acq.data.T)
        header = rd.bits[0].data.headers[e1, 0, phase, 0, 0]
        assert bytes(memoryview(header)) == bytes(memoryview(acq.getHead()))
    for slice_, rd in enumerate(buffers):
        data = rd.bits[0].data
        lines = np.any(data.data != 0, axis=(0, 3))[:, 0, :, 0, 0]
        np.testing.assert_array_equal(lines, filled[slice_])
        for e1, phase in zip(*np.nonzero(~filled[slice_])):
            header = data.headers[e1, 0, phase, 0, 0]
            assert header.number_of_samples == 0 and header.version == 1 and header.active_channels == 1


def test_ref_buffer_holds_exactly_the_calibration_lines(scan: object, buffers: list[ReconData]) -> None:
    ref = buffers[0].bits[0].ref
    assert ref.data.shape == (2 * N_RO, N_E1, 1, N_COILS, N_PHASES, 1, 1)  # embedded: full matrix
    lines = np.nonzero(np.any(ref.data != 0, axis=(0, 3))[:, 0, 0, 0, 0])[0]
    assert list(lines) == scan.acs_lines


def test_layout_gives_core_kspace_and_mask(scan: object, buffers: list[ReconData]) -> None:
    data = buffers[1].bits[0].data
    kspace, layout = buffer_to_kspace(data.data)
    mask = sampling_mask(data.data, data.headers, layout)
    assert kspace.shape == (1, N_COILS, N_PHASES, N_E1, 2 * N_RO)
    expected_lines = sorted(set(scan.sampled_lines) | {e1 for e1 in scan.acs_lines if e1 in scan.sampled_lines})
    for frame in range(N_PHASES):
        assert list(np.nonzero(mask[0, 0, frame, :, 0])[0]) == expected_lines


def test_reversed_lines_are_flipped(buffers: list[ReconData]) -> None:
    reversed_scan = make_scan(reverse_odd_lines=True)
    flipped = list(AcquisitionBuffer()(iter(reversed_scan.acquisitions), reversed_scan.header))
    for a, b in zip(flipped, buffers):
        np.testing.assert_array_equal(a.bits[0].data.data, b.bits[0].data.data)
        np.testing.assert_array_equal(a.bits[0].ref.data, b.bits[0].ref.data)
        assert not any(h.flags & (1 << (ismrmrd.ACQ_IS_REVERSE - 1)) for h in a.bits[0].data.headers.ravel())


def test_navigators_noise_and_other_items_do_not_enter(buffers: list[ReconData]) -> None:
    with_navigators = make_scan(navigators=True)
    navigators = [a for a in with_navigators.acquisitions if a.is_flag_set(ismrmrd.ACQ_IS_NAVIGATION_DATA)]
    assert len(navigators) == N_SLICES * N_PHASES
    stream = ["not an acquisition"] + with_navigators.acquisitions
    out = list(AcquisitionBuffer()(iter(stream), with_navigators.header))
    assert out[0] == "not an acquisition" and len(out) == 1 + N_SLICES
    without = [a for a in with_navigators.acquisitions if not a.is_flag_set(ismrmrd.ACQ_IS_NAVIGATION_DATA)]
    reference = list(AcquisitionBuffer()(iter(without[1:]), with_navigators.header))  # also without noise
    for a, b in zip(out[1:], reference):
        np.testing.assert_array_equal(a.bits[0].data.data, b.bits[0].data.data)
        np.testing.assert_array_equal(a.bits[0].ref.data, b.bits[0].ref.data)


def test_trigger_none_and_split_slices(scan: object, buffers: list[ReconData]) -> None:
    (whole,) = list(AcquisitionBuffer(trigger_dimension="none")(iter(scan.acquisitions), scan.header))
    assert whole.bits[0].data.data.shape == (2 * N_RO, N_E1, 1, N_COILS, N_PHASES, 1, N_SLICES)
    for slice_ in range(N_SLICES):
        np.testing.assert_array_equal(whole.bits[0].data.data[..., slice_], buffers[slice_].bits[0].data.data[..., 0])
    split = list(AcquisitionBuffer(trigger_dimension="none", split_slices=True)(iter(scan.acquisitions), scan.header))
    assert len(split) == N_SLICES
    np.testing.assert_array_equal(split[1].bits[0].data.data, buffers[1].bits[0].data.data)


def test_n_dimension_none_and_s_dimension_phase(scan: object) -> None:
    (rd, _) = list(AcquisitionBuffer(N_dimension="none", S_dimension="phase")(iter(scan.acquisitions), scan.header))
    assert rd.bits[0].data.data.shape[4:] == (1, N_PHASES, 1)


def test_partial_buffer_at_end_of_stream_is_emitted(scan: object, buffers: list[ReconData]) -> None:
    cut = len(scan.acquisitions) - 5  # stop in the middle of the last slice
    out = list(AcquisitionBuffer()(iter(scan.acquisitions[:cut]), scan.header))
    assert len(out) == N_SLICES
    np.testing.assert_array_equal(out[0].bits[0].data.data, buffers[0].bits[0].data.data)
    partial = out[1].bits[0].data.data
    assert 0 < np.count_nonzero(np.any(partial != 0, axis=(0, 3))) < np.count_nonzero(
        np.any(buffers[1].bits[0].data.data != 0, axis=(0, 3)))


def test_full_chain_on_simulated_scan(simulated_scan_file: object, simulated_scan_summary: object) -> None:
    header, _ = read_header(simulated_scan_file)
    stream = iter(read_acquisitions(simulated_scan_file))
    for gadget in (NoiseAdjust(), RemoveOversampling(), AcquisitionBuffer()):
        stream = gadget(stream, header)
    out = list(stream)
    summary = simulated_scan_summary
    assert len(out) == summary.n_slices
    data = out[0].bits[0].data
    nx, ny = summary.matrix
    assert data.data.shape[:2] == (nx, header.encoding[0].encodedSpace.matrixSize.y)
    assert data.data.shape[3:5] == (summary.n_coils, summary.n_frames)
    kspace, layout = buffer_to_kspace(data.data)
    mask = sampling_mask(data.data, data.headers, layout)
    assert mask.sum() * 1.0 == pytest.approx(summary.n_sampled_lines / summary.n_slices)
    assert out[0].bits[0].ref is not None


def test_shepp_logan_repetitions_become_separate_recon_data(shepp_logan_file: object) -> None:
    header, _ = read_header(shepp_logan_file)
    stream = iter(read_acquisitions(shepp_logan_file))
    for gadget in (NoiseAdjust(), RemoveOversampling(), AcquisitionBuffer(N_dimension="phase")):
        stream = gadget(stream, header)
    out = list(stream)
    assert len(out) == 2  # one bucket (one slice), two repetitions -> two keys (N = phase, as Gadgetron's)
    for rd in out:
        data = rd.bits[0].data.data
        assert data.shape[:4] == (32, 32, 1, 4)
        assert np.all(np.any(data != 0, axis=(0, 3)))  # fully sampled
        image = np.sqrt((np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(data[:, :, 0, :, 0, 0, 0],
                                                                              axes=(0, 1)), axes=(0, 1)),
                                                axes=(0, 1))) ** 2).sum(-1))
        border = np.concatenate([image[:3].ravel(), image[-3:].ravel()])
        assert image[5:28, 2:31].max() > 4 * border.max()  # the bright phantom rim inside, noise around it


def test_over_the_socket_matches_in_process(scan: object, buffers: list[ReconData]) -> None:
    result = run_gadget("gadgets.buffer", "AcquisitionBuffer", header_xml=scan.header_xml, items=scan.acquisitions,
                        properties={"trigger_dimension": "slice", "N_dimension": "phase"})
    assert result.protocol_error is None and result.errors == [] and result.closed, result.stderr
    assert set(result.message_ids) == {1023, 4}
    assert_items_equal(result.items, buffers)


# --------------------------------------------------------------------------- frames follow the scan


def _simulated(tmp_path, modality: str, n_frames: int):
    from gadgets.io.simulated_scan import write_simulated_scan

    path = write_simulated_scan(tmp_path / f"{modality}.h5", n_slices=2, n_phases=n_frames, n_coils=3,
                                matrix=(16, 12), acceleration=4.0, pattern="ktGaussian", n_acs=4,
                                modality=modality, seed=3, noise_scan=False).path
    return read_header(path)[0], read_acquisitions(path)


@pytest.mark.parametrize("modality, n_frames, dimension", [("cine", 5, "phase"), ("t1map", 9, "contrast"),
                                                           ("t2map", 3, "contrast")])
def test_auto_frames_follow_the_scans_series(tmp_path, modality, n_frames, dimension) -> None:
    from gadgets.buffer import frames_dimension, series_extents

    header, acquisitions = _simulated(tmp_path, modality, n_frames)
    assert frames_dimension(header) == dimension and series_extents(header)[dimension] == n_frames
    outputs = list(AcquisitionBuffer(split_slices=True)(iter(acquisitions), header))
    assert len(outputs) == 2  # one ReconData per slice holding every frame: one forward per slice
    for recon_data in outputs:
        assert recon_data.bits[0].data.data.shape[4] == n_frames  # N
    # the same scan buffered on the wrong counter splits the series: one buffer per weighting
    if dimension == "contrast":
        split = list(AcquisitionBuffer(split_slices=True, N_dimension="phase")(iter(acquisitions), header))
        assert len(split) == 2 * n_frames and all(rd.bits[0].data.data.shape[4] == 1 for rd in split)


def test_shepp_logan_repetitions_are_the_series_with_auto(shepp_logan_file: object) -> None:
    """The file's only varying counter is the repetition (2): auto puts both in one buffer's N."""
    header, _ = read_header(shepp_logan_file)
    stream = iter(read_acquisitions(shepp_logan_file))
    for gadget in (NoiseAdjust(), RemoveOversampling(), AcquisitionBuffer()):
        stream = gadget(stream, header)
    (recon_data,) = list(stream)
    assert recon_data.bits[0].data.data.shape[4] == 2


def test_frames_dimension_without_a_series_and_for_repetitions() -> None:
    from gadgets.buffer import frames_dimension

    header = ismrmrd.xsd.CreateFromDocument(make_scan(n_phases=1).header_xml)
    limits = header.encoding[0].encodingLimits
    assert frames_dimension(header) == "phase"  # nothing varies: one frame, named phase
    limits.repetition = ismrmrd.xsd.limitType(minimum=0, maximum=19, center=0)  # real-time cine
    assert frames_dimension(header) == "repetition"
    limits.set = ismrmrd.xsd.limitType(minimum=0, maximum=2, center=0)
    assert frames_dimension(header) == "set"  # set before repetition
    buffer = AcquisitionBuffer(N_dimension="auto", S_dimension="set")
    buffer.start(header)
    assert (buffer._converter.n_dim, buffer._converter.s_dim) == ("set", "none")  # never N and S on one counter
