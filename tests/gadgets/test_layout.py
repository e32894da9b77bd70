"""gadgets.layout: Gadgetron buffers -> core layout -> image arrays and images, odd sizes; the inverses
(tests/gadgets/layout_inverse.py) show that nothing is lost."""

from __future__ import annotations

import io

import ismrmrd
import numpy as np
import pytest
from gadgetron.external import readers, writers

from gadgets.layout import (
    BufferLayout,
    ImageIndex,
    buffer_to_kspace,
    images_to_image_array,
    images_to_ismrmrd_data,
    line_sampled,
    sampling_mask,
)
from tests.gadgets.layout_inverse import image_array_to_images, ismrmrd_data_to_images, kspace_to_buffer, mask_to_lines

SHAPE = (7, 5, 3, 2, 4, 3, 2)  # E0, E1, E2, CHA, N, S, LOC: all different, several odd


def crandn(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def as_received(array: np.ndarray) -> np.ndarray:
    """The array as gadgetron-python delivers it: written and read back through its array codec."""
    sink = io.BytesIO()
    writers.write_array(sink, array, np.complex64)

    class Source:
        def __init__(self, data: bytes) -> None:
            self.stream = io.BytesIO(data)

        def read(self, n: int) -> bytes:
            return self.stream.read(n)

    return readers.read_array(Source(sink.getvalue()), np.complex64)


def test_received_buffers_are_fortran_ordered_and_read_only(rng: np.random.Generator) -> None:
    data = crandn(rng, *SHAPE)
    received = as_received(data)
    assert received.shape == SHAPE and received.flags.f_contiguous and not received.flags.writeable
    np.testing.assert_array_equal(received, data)


@pytest.mark.parametrize("frames_dim", ["N", "S"])
def test_kspace_round_trip_and_element_mapping(rng: np.random.Generator, frames_dim: str) -> None:
    data = as_received(crandn(rng, *SHAPE))
    kspace, layout = buffer_to_kspace(data, frames_dim)
    e0, e1, e2, cha, n, s, loc = SHAPE
    frames, other = (n, s) if frames_dim == "N" else (s, n)
    assert kspace.shape == (loc * other * e2, cha, frames, e1, e0)
    assert kspace.dtype == np.complex64 and kspace.flags.c_contiguous
    for index in [(0, 0, 0, 0, 0, 0, 0), (6, 4, 2, 1, 3, 2, 1), (3, 1, 2, 0, 1, 2, 0), (5, 2, 1, 1, 3, 0, 1)]:
        i0, i1, i2, c, ni, si, li = index
        b = layout.batch_index(i2, ni, si, li)
        assert kspace[b, c, layout.frame_index(ni, si), i1, i0] == data[index]
    back = kspace_to_buffer(kspace, layout)
    assert back.flags.f_contiguous and back.flags.writeable and back.dtype == np.complex64
    np.testing.assert_array_equal(back, data)


def test_batch_folds_loc_slowest_then_other_then_e2() -> None:
    layout = BufferLayout(n_e2=3, n_n=4, n_s=2, n_loc=5)
    assert layout.batch == 30 and layout.frames == 4
    assert [layout.batch_index(e2, 0, 0, 0) for e2 in range(3)] == [0, 1, 2]
    assert layout.batch_index(0, 3, 1, 0) == 3
    assert layout.batch_index(0, 0, 0, 1) == 6


def test_sampling_mask_from_headers_and_data(rng: np.random.Generator) -> None:
    e0, e1, e2, cha, n, s, loc = SHAPE
    data = np.zeros(SHAPE, dtype=np.complex64, order="F")
    headers = np.empty((e1, e2, n, s, loc), dtype=object)
    for position in np.ndindex(headers.shape):
        headers[position] = ismrmrd.AcquisitionHeader()
    lines = rng.random((e1, e2, n, s, loc)) < 0.4
    for position in zip(*np.nonzero(lines)):
        i1, i2, ni, si, li = position
        if (i1 + ni) % 2:
            data[:, i1, i2, :, ni, si, li] = crandn(rng, e0, cha)  # data, default header
        else:
            headers[position].number_of_samples = e0  # header filled, data happen to be zero
    np.testing.assert_array_equal(line_sampled(data, headers), lines)
    assert not line_sampled(data, None)[~lines].any()
    for frames_dim in ("N", "S"):
        layout = BufferLayout.from_buffer(data, frames_dim)
        mask = sampling_mask(data, headers, layout)
        assert mask.shape == (layout.batch, 1, layout.frames, e1, 1) and mask.dtype == bool
        np.testing.assert_array_equal(mask_to_lines(mask, layout), lines)
        kspace, _ = buffer_to_kspace(data, frames_dim)
        assert not np.any(kspace * ~mask)  # nothing outside the mask


@pytest.mark.parametrize("frames_dim", ["N", "S"])
def test_image_array_round_trip(rng: np.random.Generator, frames_dim: str) -> None:
    layout = BufferLayout(n_e2=3, n_n=4, n_s=3, n_loc=2, frames_dim=frames_dim)
    images = crandn(rng, layout.batch, layout.frames, 9, 13)
    array = images_to_image_array(images, layout)
    assert array.shape == (13, 9, 3, 1, 4, 3, 2) and array.flags.f_contiguous
    assert array[12, 8, 2, 0, 3, 1, 1] == images[layout.batch_index(2, 3, 1, 1), layout.frame_index(3, 1), 8, 12]
    back, layout_back = image_array_to_images(array, frames_dim)
    assert layout_back == layout
    np.testing.assert_array_equal(back, images)


def test_ismrmrd_data_round_trip(rng: np.random.Generator) -> None:
    layout = BufferLayout(n_e2=1, n_n=5, n_s=1, n_loc=3)
    images = crandn(rng, layout.batch, layout.frames, 11, 7)
    items = images_to_ismrmrd_data(images, layout)
    assert len(items) == 15 and items[1][0] == ImageIndex(1, 0, 0)
    index, data = items[7]
    assert data.shape == (1, 1, 11, 7) and data.flags.c_contiguous
    np.testing.assert_array_equal(data[0, 0], images[layout.batch_index(0, index.n, index.s, index.loc), index.n])
    np.testing.assert_array_equal(ismrmrd_data_to_images(reversed(items), layout), images)
    with pytest.raises(ValueError, match="need 15 images"):
        ismrmrd_data_to_images(items[:-1], layout)
    with pytest.raises(ValueError, match="given twice"):
        ismrmrd_data_to_images(items + items[:1], layout)


def test_wrong_shapes_raise_value_error(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match=r"7 dimensions \[E0, E1, E2, CHA, N, S, LOC\]"):
        buffer_to_kspace(crandn(rng, 4, 5, 1, 2, 3, 1))
    with pytest.raises(ValueError, match="complex"):
        buffer_to_kspace(np.zeros(SHAPE, dtype=np.float32))
    with pytest.raises(ValueError, match="frames_dim"):
        buffer_to_kspace(crandn(rng, *SHAPE), "T")
    layout = BufferLayout(1, 2, 1, 1)
    with pytest.raises(ValueError, match="does not match the layout"):
        kspace_to_buffer(crandn(rng, 3, 2, 2, 4, 5), layout)
    with pytest.raises(ValueError, match="images"):
        images_to_image_array(crandn(rng, 1, 2, 3), layout)
    with pytest.raises(ValueError, match="one channel"):
        image_array_to_images(crandn(rng, 3, 4, 1, 2, 1, 1, 1))
    with pytest.raises(ValueError, match="n_n must be a positive integer"):
        BufferLayout(1, 0, 1, 1)
