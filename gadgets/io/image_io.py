"""Write and read reconstructed images the way ``gadgetron_ismrmrd_client`` stores them.

Gadgetron's C++ client appends every image it receives with ISMRMRD's
``Dataset(out_file, out_group, create=true).appendImage("image_<image_series_index>", im)``,
which gives this HDF5 layout (the same as ismrmrd-python's ``Dataset.append_image``)::

    /<group>/image_<series>/header      (n,)  compound ImageHeader (ismrmrd.hdf5.image_header_dtype)
    /<group>/image_<series>/attributes  (n,)  variable-length strings (ISMRMRD meta XML)
    /<group>/image_<series>/data        (n, channels, z, y, x) in the image's ISMRMRD data type;
                                              complex as compound {real, imag}

so a 2D magnitude image is stored as ``(n, 1, 1, y, x)`` float32 (or uint16). All images of one
series must share channels / z / y / x (as in ISMRMRD, whose datasets have fixed inner sizes).

The client's default group name is the local date and time when it started,
``"YYYY-MM-DD HH:MM:SS"`` (``get_date_time_string()`` in gadgetron_ismrmrd_client.cpp);
:func:`default_group_name` returns the same.

The writes are done with h5py, equivalent to ``ismrmrd.Dataset.append_image`` (same dtypes,
taken from ``ismrmrd.hdf5``), so ``ismrmrd.Dataset(path, group).read_image("image_0", i)`` reads
them back. Unlike ismrmrd-python 1.15 it stores ``DATATYPE_INT`` images as int32 (ISMRMRD's
type; ismrmrd-python holds them as int64 in memory and its append_image cannot write them).
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import time
from collections.abc import Iterable

import h5py
import ismrmrd
import ismrmrd.hdf5
import numpy as np

_SERIES_NAME = re.compile(r"^image_(\d+)$")
_IMAGE_DATASETS = ("header", "attributes", "data")


def default_group_name(when: float | None = None) -> str:
    """``"YYYY-MM-DD HH:MM:SS"`` in local time, like gadgetron_ismrmrd_client's ``--out-group``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def _check_group(group: str) -> str:
    if not isinstance(group, str) or not group.strip("/"):
        raise ValueError(f"group must be a non-empty HDF5 group name, got {group!r}")
    return group.strip("/")


def _append_image(series_group: h5py.Group, image: ismrmrd.Image, series: int) -> None:
    data = np.asarray(image.data)
    if data.ndim != 4:
        raise ValueError(f"image.data must be (channels, z, y, x), got shape {data.shape}")
    file_dtype = ismrmrd.hdf5.get_hdf5type(image.data_type)
    header = np.frombuffer(bytes(image.getHead()), dtype=ismrmrd.hdf5.image_header_dtype)
    if "header" in series_group:
        stored = series_group["data"].shape[1:]
        if stored != data.shape:
            raise ValueError(
                f"image of series {series} has shape (channels, z, y, x) = {data.shape}, but "
                f"image_{series} already holds images of shape {stored}"
            )
        if series_group["data"].dtype != file_dtype:
            raise ValueError(
                f"image of series {series} has data type {image.data_type} ({file_dtype}), but "
                f"image_{series} already holds {series_group['data'].dtype}"
            )
        index = series_group["header"].shape[0]
        for name in _IMAGE_DATASETS:
            series_group[name].resize(index + 1, axis=0)
    else:
        series_group.create_dataset(
            "header", (1,), maxshape=(None,), dtype=ismrmrd.hdf5.image_header_dtype
        )
        series_group.create_dataset(
            "attributes", (1,), maxshape=(None,), dtype=h5py.special_dtype(vlen=str)
        )
        series_group.create_dataset(
            "data", (1,) + data.shape, maxshape=(None,) + data.shape, dtype=file_dtype
        )
        index = 0
    series_group["header"][index] = header[0]
    series_group["attributes"][index] = image.attribute_string
    if file_dtype.names:  # complex: compound {real, imag}
        stored = np.empty(data.shape, dtype=file_dtype)
        stored["real"] = data.real
        stored["imag"] = data.imag
        series_group["data"][index] = stored
    else:
        series_group["data"][index] = data.astype(file_dtype, copy=False)


def write_images(
    path: str | os.PathLike,
    images: Iterable[ismrmrd.Image],
    group: str | None = None,
) -> dict[int, int]:
    """Append ``images`` to ``path`` under ``<group>/image_<image_series_index>``.

    Creates the file and group when needed and appends to series that already exist, like
    gadgetron_ismrmrd_client. ``group`` defaults to :func:`default_group_name` (now). Each
    image's data is (channels, z, y, x). Returns {series index: number of images written}.
    Raises ValueError for a non-image item or a shape that differs from its series'.
    """
    with h5py.File(os.fspath(path), "a") as f:
        return _write_into(f, images, group)


def _write_into(f: h5py.File, images: Iterable[ismrmrd.Image], group: str | None) -> dict[int, int]:
    group_name = _check_group(default_group_name() if group is None else group)
    counts: dict[int, int] = {}
    top = f.require_group(group_name)
    for position, image in enumerate(images):
        if not isinstance(image, ismrmrd.Image):
            raise ValueError(
                f"images[{position}] must be an ismrmrd.Image, got {type(image).__name__}"
            )
        series = int(image.image_series_index)
        _append_image(top.require_group(f"image_{series}"), image, series)
        counts[series] = counts.get(series, 0) + 1
    return counts


def write_images_atomic(
    path: str | os.PathLike,
    images: Iterable[ismrmrd.Image],
    group: str | None = None,
) -> dict[int, int]:
    """:func:`write_images`, but ``path`` is replaced whole or not at all.

    The existing file (if any) is read into memory, the images are appended there (HDF5 never
    writes to the disk, so a full disk cannot corrupt a half-written file or crash the HDF5
    library), the result is written to a temporary file beside ``path``, flushed to disk and moved
    into place with ``os.replace``. On any failure (OSError: no space, quota, permissions; ValueError:
    images that do not fit the file) the temporary file is removed and ``path`` is as it was.
    The new file keeps the existing file's permissions (a new one gets the umask's).
    Memory: the whole output file is held once in memory while writing.
    """
    target = os.fspath(path)
    try:
        with open(target, "rb") as existing:
            content = existing.read()
        mode = os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        content, mode = b"", None
    memory = io.BytesIO(content)
    with h5py.File(memory, "a" if content else "w") as f:
        counts = _write_into(f, images, group)
    data = memory.getbuffer()
    folder = os.path.dirname(os.path.abspath(target))
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".partial", dir=folder)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    finally:
        del data
    return counts


def _is_series_group(node: object) -> bool:
    return isinstance(node, h5py.Group) and all(name in node for name in _IMAGE_DATASETS)


def list_image_groups(path: str | os.PathLike) -> list[str]:
    """Names of the groups in ``path`` that hold ``image_<series>`` image sets, sorted.

    The client's timestamp names sort chronologically, so the last one is the newest.
    """
    found: list[str] = []

    def visit(name: str, node: object) -> None:
        if isinstance(node, h5py.Group) and any(
            _SERIES_NAME.match(child) and _is_series_group(node[child]) for child in node
        ):
            found.append(name)

    with h5py.File(os.fspath(path), "r") as f:
        f.visititems(visit)
    return sorted(found)


def _image_from_row(header: np.void, attributes: object, data: np.ndarray) -> ismrmrd.Image:
    if isinstance(attributes, bytes):
        attributes = attributes.decode("utf-8")
    attribute_text = str(attributes)
    image = ismrmrd.Image(head=header.tobytes(), attribute_string=attribute_text)
    if data.dtype.names:
        image.data[...] = data["real"] + 1j * data["imag"]
    else:
        image.data[...] = data
    return image


def read_images(
    path: str | os.PathLike, group: str | None = None
) -> dict[int, list[ismrmrd.Image]]:
    """Read every ``image_<series>`` set of ``group``: {series index: images in stored order}.

    ``group`` may be omitted when the file holds exactly one image group. Each image comes back
    as ``ismrmrd.Image`` with its header, meta attributes and (channels, z, y, x) data.
    """
    if group is None:
        groups = list_image_groups(path)
        if len(groups) != 1:
            raise ValueError(
                f"group must be given: {os.fspath(path)!r} holds {len(groups)} image groups "
                f"{groups}"
            )
        group = groups[0]
    group_name = _check_group(group)
    result: dict[int, list[ismrmrd.Image]] = {}
    with h5py.File(os.fspath(path), "r") as f:
        if group_name not in f or not isinstance(f[group_name], h5py.Group):
            raise ValueError(f"group {group_name!r} is not in {os.fspath(path)!r}")
        top = f[group_name]
        for name in top:
            match = _SERIES_NAME.match(name)
            if not match or not _is_series_group(top[name]):
                continue
            node = top[name]
            headers = node["header"].astype(ismrmrd.hdf5.image_header_dtype)[:]
            attributes = node["attributes"][:]
            data = node["data"][:]
            result[int(match.group(1))] = [
                _image_from_row(headers[i], attributes[i], data[i]) for i in range(headers.shape[0])
            ]
    return dict(sorted(result.items()))
