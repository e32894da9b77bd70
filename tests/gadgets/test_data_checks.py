"""gadgets.data_checks and the checks of the gadgets that use it (buffer, noise, oversampling, recon)."""

from __future__ import annotations

import logging

import ismrmrd
import numpy as np
import pytest
from gadgetron.types.recon_data import ReconBit, ReconData

from gadgets import data_checks
from gadgets.buffer import AcquisitionBuffer
from gadgets.coil_compression import CoilCompression
from gadgets.data_checks import DropCounts
from gadgets.noise_adjust import NoiseAdjust
from gadgets.recon import CardioMMRecon
from gadgets.remove_oversampling import RemoveOversampling, oversampling_ratio
from tests.gadgets.harness import synthetic_scan


@pytest.fixture
def scan(rng: np.random.Generator):
    return synthetic_scan(rng)


def _imaging(scan) -> list[ismrmrd.Acquisition]:
    return [a for a in scan.acquisitions if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]


def _copy(acq: ismrmrd.Acquisition, value: complex | None = None, **idx: int) -> ismrmrd.Acquisition:
    head = acq.getHead()
    for name, number in idx.items():
        setattr(head.idx, name, number)
    data = np.array(acq.data, dtype=np.complex64, copy=True)
    if value is not None:
        data[0, 1] = value
    return ismrmrd.Acquisition(head, data, np.array(acq.traj, dtype=np.float32))


def _replace(acqs: list[ismrmrd.Acquisition], index: int, new: ismrmrd.Acquisition) -> list[ismrmrd.Acquisition]:
    return acqs[:index] + [new] + acqs[index + 1:]


def _lines(outputs: list[ReconData]) -> int:
    return sum(int(np.count_nonzero(data_checks_filled(bit.data.headers))) for rd in outputs for bit in rd.bits)


def data_checks_filled(headers: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda h: int(h.number_of_samples) > 0, otypes=[bool])(np.asarray(headers, dtype=object))


# --------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize("value, kind", [(np.nan, "non_finite"), (np.inf, "non_finite"), (-np.inf, "non_finite"),
                                         (complex(0, np.nan), "non_finite"), (3e38, "magnitude"),
                                         (complex(0, -2e12), "magnitude"), (1e11, None), (0.0, None)])
def test_sample_problem_classifies_values(value: complex, kind: str | None) -> None:
    data = np.ones((3, 7), dtype=np.complex64)
    data[1, 4] = value
    problem = data_checks.sample_problem(data)
    assert (problem[0] if problem else None) == kind


def test_bad_lines_mark_the_lines_with_a_bad_sample(rng: np.random.Generator) -> None:
    data = (rng.standard_normal((6, 5, 1, 3, 2, 1, 1)) + 0j).astype(np.complex64)
    data[2, 1, 0, 2, 1, 0, 0] = np.nan
    data[0, 3, 0, 0, 0, 0, 0] = 5e12
    non_finite, magnitude = data_checks.bad_lines(data)
    assert non_finite.shape == (5, 1, 2, 1, 1)
    assert np.argwhere(non_finite).tolist() == [[1, 0, 1, 0, 0]]
    assert np.argwhere(magnitude).tolist() == [[3, 0, 0, 0, 0]]


def test_limit_violation_checks_every_counter_the_buffer_uses(scan) -> None:
    encoding = scan.header.encoding[0]
    acq = _imaging(scan)[0]
    assert data_checks.limit_violation(acq.getHead(), encoding) is None
    for name, limit_name in data_checks.COUNTER_LIMITS:
        limit = getattr(encoding.encodingLimits, limit_name)
        if limit is None:
            continue
        head = _copy(acq, **{name: int(limit.maximum) + 1}).getHead()
        assert data_checks.limit_violation(head, encoding) == (name, int(limit.maximum) + 1,
                                                               (int(limit.minimum), int(limit.maximum)))


def test_marks_round_trip_through_headers() -> None:
    headers = np.empty((3, 1, 2, 1, 1), dtype=object)
    for position in np.ndindex(headers.shape):
        headers[position] = data_checks.default_header()
    assert data_checks.read_marks(headers) == DropCounts()
    data_checks.mark_headers(headers, DropCounts(2, 1, 3))
    assert data_checks.read_marks(headers) == DropCounts(2, 1, 3)
    meta = ismrmrd.Meta()
    DropCounts(2, 1, 3).to_meta(meta)
    assert meta["CardioMM.DroppedAcquisitions"] == "6"
    assert DropCounts.from_meta(ismrmrd.Meta.deserialize(meta.serialize())) == DropCounts(2, 1, 3)


def test_size_checks_name_the_field(scan) -> None:
    header = scan.header
    header.encoding[0].encodedSpace.matrixSize.y = 60000
    with pytest.raises(ValueError, match=r"encodedSpace\.matrixSize\.y = 60000"):
        data_checks.check_header_sizes(header, 2048, 1024, "X")
    with pytest.raises(ValueError, match=r"E1 = 60000 from encodedSpace\.matrixSize\.y"):
        data_checks.check_buffer_size((64, 60000, 1, 8, 24, 1, 1), {"E1": "encodedSpace.matrixSize.y"}, 2**30, "X")
    data_checks.check_buffer_size((64, 48, 1, 8, 24, 1, 1), {}, 2**30, "X")


# --------------------------------------------------------------------------- the buffer


def test_buffer_drops_a_nan_line_and_marks_the_count(scan, caplog) -> None:
    acqs = _imaging(scan)
    reference = list(AcquisitionBuffer()(iter(acqs), scan.header))
    broken = _replace(acqs, 3, _copy(acqs[3], np.nan))
    broken = _replace(broken, 5, _copy(broken[5], np.inf))
    with caplog.at_level(logging.WARNING, logger="gadgets.data_checks"):
        outputs = list(AcquisitionBuffer()(iter(broken), scan.header))
    assert len(outputs) == len(reference)
    assert _lines(outputs) == _lines(reference) - 2
    for rd in outputs:
        assert np.isfinite(np.asarray(rd.bits[0].data.data)).all()
    assert data_checks.read_marks(outputs[-1].bits[0].data.headers) == DropCounts(non_finite=2)
    warnings = [r for r in caplog.records if "treated as not acquired" in r.getMessage()]
    assert len(warnings) == 1 and "scan_counter" in warnings[0].getMessage()


@pytest.mark.parametrize("name", ["slice", "phase", "kspace_encode_step_1", "kspace_encode_step_2", "set"])
def test_buffer_drops_counters_outside_the_limits(scan, name: str, caplog) -> None:
    acqs = _imaging(scan)
    reference = list(AcquisitionBuffer()(iter(acqs), scan.header))
    broken = _replace(acqs, 4, _copy(acqs[4], **{name: 50}))
    with caplog.at_level(logging.WARNING, logger="gadgets.data_checks"):
        outputs = list(AcquisitionBuffer()(iter(broken), scan.header))
    assert len(outputs) == len(reference)
    assert [np.asarray(rd.bits[0].data.data).shape for rd in outputs] == \
        [np.asarray(rd.bits[0].data.data).shape for rd in reference]
    assert data_checks.read_marks(outputs[-1].bits[0].data.headers) == DropCounts(outside_limits=1)
    (warning,) = [r.getMessage() for r in caplog.records if "treated as not acquired" in r.getMessage()]
    assert f"{name} = 50, outside the encoding limits" in warning


def test_buffer_with_nothing_valid_left_fails_clearly(scan) -> None:
    broken = [_copy(a, np.nan) for a in _imaging(scan)]
    with pytest.raises(ValueError, match="no valid imaging acquisition is left"):
        list(AcquisitionBuffer()(iter(broken), scan.header))


def test_buffer_refuses_a_huge_header_before_allocating(scan) -> None:
    header = scan.header
    header.encoding[0].encodedSpace.matrixSize.y = 4096
    with pytest.raises(ValueError, match=r"matrixSize\.y = 4096 exceeds the ceiling max_matrix = 2048"):
        list(AcquisitionBuffer()(iter(_imaging(scan)), header))
    with pytest.raises(ValueError, match=r"max_buffer_mb"):
        list(AcquisitionBuffer(max_buffer_mb=1, max_matrix=10**6)(iter(_imaging(scan)), header))


def test_buffer_refuses_a_huge_counter_span_without_a_header_limit(scan) -> None:
    header_xml = scan.header_xml.replace("<phase><minimum>0</minimum><maximum>2</maximum><center>0</center></phase>", "")
    assert header_xml != scan.header_xml
    header = ismrmrd.xsd.CreateFromDocument(header_xml)
    acqs = _imaging(scan)
    broken = _replace(acqs, 2, _copy(acqs[2], phase=60000))
    with pytest.raises(ValueError, match=r"N = 60001 from the phase counters .* max_counter = 1024"):
        list(AcquisitionBuffer()(iter(broken), header))


def test_interleaved_slices_give_the_sequential_buffers(scan) -> None:
    acqs = _imaging(scan)
    sequential = list(AcquisitionBuffer()(iter(acqs), scan.header))
    by_slice: dict[int, list[ismrmrd.Acquisition]] = {}
    for acq in acqs:
        by_slice.setdefault(int(acq.idx.slice), []).append(acq)
    assert len(by_slice) > 1
    interleaved = []
    while any(by_slice.values()):
        for group in by_slice.values():
            if group:
                interleaved.append(group.pop(0))
    outputs = list(AcquisitionBuffer()(iter(interleaved), scan.header))
    assert len(outputs) == len(sequential)
    for got, want in zip(outputs, sequential):
        np.testing.assert_array_equal(np.asarray(got.bits[0].data.data), np.asarray(want.bits[0].data.data))


def test_unflagged_values_are_emitted_when_the_held_data_grow(scan) -> None:
    acqs = _imaging(scan)
    for acq in acqs:
        acq.clear_flag(ismrmrd.ACQ_LAST_IN_SLICE)
    held = list(AcquisitionBuffer()(iter(acqs), scan.header))
    tiny = AcquisitionBuffer(max_buffer_mb=1)
    tiny.params._values["max_buffer_mb"] = 20e3 / 2**20  # 20 kB: a slice (11.5 kB) fits, two pass half
    streamed = []
    tiny.start(scan.header)
    first_output_at = None
    for number, acq in enumerate(acqs):
        out = list(tiny.process(acq))
        if out and first_output_at is None:
            first_output_at = number
        streamed.extend(out)
    streamed.extend(tiny.finish())
    assert first_output_at is not None and first_output_at < len(acqs) - 1
    assert len(streamed) == len(held)
    for got, want in zip(streamed, held):
        np.testing.assert_array_equal(np.asarray(got.bits[0].data.data), np.asarray(want.bits[0].data.data))


# --------------------------------------------------------------------------- the other gadgets


def test_noise_adjust_leaves_a_nan_noise_acquisition_out(scan) -> None:
    noise = [a for a in scan.acquisitions if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    assert noise
    imaging = _imaging(scan)
    clean = list(NoiseAdjust()(iter(noise + imaging), scan.header))
    poisoned = list(NoiseAdjust()(iter(noise + [_copy(noise[0], np.nan)] + imaging), scan.header))
    assert len(poisoned) == len(clean)
    for a, b in zip(poisoned, clean):
        np.testing.assert_array_equal(a.data, b.data)
    passed = list(NoiseAdjust()(iter(noise + [_copy(imaging[0], np.nan)]), scan.header))
    assert np.isnan(passed[0].data[0, 1])  # a bad imaging line passes unchanged for the buffer to drop


def test_oversampling_ratio_comes_from_the_matrix_sizes(scan) -> None:
    header = scan.header
    encoding = header.encoding[0]
    encoding.encodedSpace.matrixSize.x = 2 * encoding.reconSpace.matrixSize.x
    encoding.encodedSpace.fieldOfView_mm.x = 2 * encoding.reconSpace.fieldOfView_mm.x + 0.001
    assert oversampling_ratio(header) == 2.0
    acq = _imaging(scan)[0]
    head = acq.getHead()
    head.number_of_samples = encoding.encodedSpace.matrixSize.x
    head.center_sample = head.number_of_samples // 2
    head.active_channels = acq.data.shape[0]
    line = ismrmrd.Acquisition(head, np.ones((acq.data.shape[0], head.number_of_samples), np.complex64))
    (out,) = list(RemoveOversampling()(iter([line]), header))
    assert out.data.shape[1] == encoding.reconSpace.matrixSize.x


def test_coil_compression_and_recon_zero_bad_lines_of_a_native_buffer(scan, rng) -> None:
    (first, *_) = list(AcquisitionBuffer()(iter(_imaging(scan)), scan.header))
    data = np.array(first.bits[0].data.data, copy=True)
    filled = [p for p in np.argwhere(data_checks_filled(first.bits[0].data.headers)) if p[0] == 0]  # edge lines
    e1, e2, n, s, loc = filled[0]
    data[0, e1, e2, 0, n, s, loc] = 3e38
    e1, e2, n, s, loc = filled[1]
    data[0, e1, e2, 0, n, s, loc] = np.nan
    first.bits[0].data.data = data
    (compressed,) = list(CoilCompression(n_coils=2)(iter([ReconData([ReconBit(first.bits[0].data, first.bits[0].ref)])]),
                                                    scan.header))
    assert np.isfinite(np.asarray(compressed.bits[0].data.data)).all()
    assert data_checks.read_marks(compressed.bits[0].data.headers) == DropCounts(non_finite=1, magnitude=1)
    images = list(CardioMMRecon(checkpoint="none")(iter([compressed]), scan.header))
    assert images and all(np.isfinite(im.data).all() for im in images)
    assert {im.meta["CardioMM.DroppedAcquisitions"] for im in images} == {"2"}
