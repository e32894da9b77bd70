"""gadgets.io.image_io: the gadgetron_ismrmrd_client output layout, checked with ismrmrd-python."""

from __future__ import annotations

import re
import time

import h5py
import ismrmrd
import ismrmrd.hdf5
import numpy as np
import pytest

from gadgets.io.image_io import default_group_name, list_image_groups, read_images, write_images


def make_image(
    rng: np.random.Generator,
    shape: tuple,
    dtype: type,
    series: int,
    index: int,
    meta: dict,
) -> ismrmrd.Image:
    """An image with data (channels, z, y, x) or (y, x) of ``dtype`` and meta attributes."""
    if np.issubdtype(dtype, np.complexfloating):
        data = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    elif np.issubdtype(dtype, np.integer):
        data = rng.integers(0, 4000, size=shape).astype(dtype)
    else:
        data = rng.standard_normal(shape).astype(dtype)
    acq = ismrmrd.Acquisition()
    acq.idx.slice = index % 3
    acq.acquisition_time_stamp = 1000 + index
    image = ismrmrd.Image.from_array(
        data, acquisition=acq, image_series_index=series, image_index=index,
        image_type=ismrmrd.IMTYPE_MAGNITUDE,
    )
    image.field_of_view[:] = (300.0, 280.0, 8.0)
    image.meta = meta
    return image


@pytest.fixture
def images(rng) -> list[ismrmrd.Image]:
    """Two series of 2D magnitude images (13 x 18) and one complex multi-channel series."""
    result = []
    for i in range(3):
        meta = {"GADGETRON_DataRole": "Image", "n": str(i)}
        result.append(make_image(rng, (13, 18), np.float32, 0, i + 1, meta))
    for i in range(2):
        meta = {"WindowCenter": "2000", "list": ["a", "b"]}
        result.append(make_image(rng, (13, 18), np.uint16, 5, i + 1, meta))
    result.append(make_image(rng, (2, 3, 13, 18), np.complex64, 7, 1, {}))
    return result


def assert_same_image(a: ismrmrd.Image, b: ismrmrd.Image) -> None:
    assert bytes(a.getHead()) == bytes(b.getHead())
    assert a.data.dtype == b.data.dtype
    np.testing.assert_array_equal(a.data, b.data)
    assert dict(a.meta) == dict(b.meta)


def test_layout_matches_gadgetron_ismrmrd_client(tmp_path, images):
    path = tmp_path / "out.h5"
    counts = write_images(path, images, group="2024-05-01 10:11:12")
    assert counts == {0: 3, 5: 2, 7: 1}
    with h5py.File(path, "r") as f:
        top = f["2024-05-01 10:11:12"]
        assert sorted(top) == ["image_0", "image_5", "image_7"]
        for name in top:
            assert sorted(top[name]) == ["attributes", "data", "header"]
        assert top["image_0/data"].shape == (3, 1, 1, 13, 18)
        assert top["image_0/data"].dtype == np.dtype("<f4")
        assert top["image_5/data"].shape == (2, 1, 1, 13, 18)
        assert top["image_5/data"].dtype == np.dtype("<u2")
        assert top["image_7/data"].shape == (1, 2, 3, 13, 18)
        assert top["image_7/data"].dtype.names == ("real", "imag")
        assert top["image_0/header"].dtype == ismrmrd.hdf5.image_header_dtype
        assert top["image_0/header"]["image_index"].tolist() == [1, 2, 3]
        attributes = top["image_5/attributes"][0]
        if isinstance(attributes, str):
            attributes = attributes.encode("utf-8")
        assert b"WindowCenter" in attributes


def test_ismrmrd_python_reads_what_we_write(tmp_path, images):
    path = tmp_path / "out.h5"
    write_images(path, images, group="recon")
    with ismrmrd.Dataset(str(path), "recon", create_if_needed=False) as ds:
        for series, expected in ((0, images[:3]), (5, images[3:5]), (7, images[5:])):
            assert ds.number_of_images(f"image_{series}") == len(expected)
            for i, image in enumerate(expected):
                assert_same_image(ds.read_image(f"image_{series}", i), image)


def test_byte_identical_to_ismrmrd_append_image(tmp_path, images):
    ours, theirs = tmp_path / "ours.h5", tmp_path / "theirs.h5"
    write_images(ours, images, group="g")
    with ismrmrd.Dataset(str(theirs), "g", create_if_needed=True) as ds:
        for image in images:
            ds.append_image(f"image_{image.image_series_index}", image)
    with h5py.File(ours, "r") as a, h5py.File(theirs, "r") as b:
        for series in ("image_0", "image_5", "image_7"):
            for name in ("header", "attributes", "data"):
                x, y = a[f"g/{series}/{name}"], b[f"g/{series}/{name}"]
                assert x.dtype == y.dtype and x.shape == y.shape and x.maxshape == y.maxshape
                if name == "attributes":
                    assert list(x[:]) == list(y[:])
                else:
                    assert x[:].tobytes() == y[:].tobytes()


def test_read_images_round_trip_and_groups(tmp_path, images, rng):
    path = tmp_path / "out.h5"
    write_images(path, images, group="first")
    back = read_images(path)  # the only group
    assert sorted(back) == [0, 5, 7]
    for got, expected in zip(back[0] + back[5] + back[7], images):
        assert_same_image(got, expected)

    # A second run appends to the same series of its group, like the C++ client.
    more = [make_image(rng, (13, 18), np.float32, 0, 9, {"x": "1"})]
    assert write_images(path, more, group="first") == {0: 1}
    assert len(read_images(path, "first")[0]) == 4
    assert_same_image(read_images(path, "first")[0][3], more[0])

    write_images(path, more, group="nested/second")
    assert list_image_groups(path) == ["first", "nested/second"]
    with pytest.raises(ValueError, match="2 image groups"):
        read_images(path)
    with pytest.raises(ValueError, match="not in"):
        read_images(path, "missing")


def test_int32_images_are_stored_as_ismrmrd_int(tmp_path, rng):
    image = make_image(rng, (4, 5), np.int64, 2, 1, {})  # ismrmrd-python's DATATYPE_INT in memory
    assert image.data_type == ismrmrd.DATATYPE_INT
    path = tmp_path / "out.h5"
    write_images(path, [image], group="g")
    with h5py.File(path, "r") as f:
        assert f["g/image_2/data"].dtype == np.dtype("<i4")
    assert_same_image(read_images(path, "g")[2][0], image)


def test_default_group_name_and_shape_check(tmp_path, rng):
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", default_group_name())
    assert default_group_name(0.0) == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(0.0))
    path = tmp_path / "out.h5"
    write_images(path, [make_image(rng, (13, 18), np.float32, 0, 1, {})])
    (group,) = list_image_groups(path)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", group)

    with pytest.raises(ValueError, match="shape"):
        write_images(path, [make_image(rng, (12, 18), np.float32, 0, 2, {})], group=group)
    with pytest.raises(ValueError, match=r"images\[0\]"):
        write_images(path, [np.zeros((2, 2))], group=group)
    with pytest.raises(ValueError, match="group"):
        write_images(path, [], group="")
