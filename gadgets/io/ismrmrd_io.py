"""Reading ISMRMRD raw HDF5 files (``/<group>/xml``, ``/<group>/data``, ``/<group>/waveforms``).

The files come from scanners' converters, from the C++ library (for example Debian's
ismrmrd-tools 1.8, ``ismrmrd_generate_cartesian_shepp_logan``) and from ismrmrd-python; all three
store the same HDF5 compound types, though with different padding and chunking. This module reads
them through h5py with ismrmrd-python's own dtypes (``ismrmrd.hdf5.acquisition_dtype``), so HDF5
converts each file's layout by field name, and hands out ``ismrmrd.Acquisition`` and
``ismrmrd.Waveform`` objects, reading many rows per HDF5 call.

Header versions: the C++ library refuses to *serialize* a header whose ``<version>`` differs from
its own schema version ("XML header version does not match library schema version"), which is
what Gadgetron 4.7.2 (ISMRMRD 1.14.1, schema version ``CURRENT_HEADER_VERSION`` = 14) does when it
forwards the header to an external Python gadget: Debian's 1.8 files carry version 8 and fail.
ismrmrd-python 1.15 writes no ``<version>`` element at all unless the header object sets one
(``ismrmrdHeader.version`` defaults to None). ``header_version`` and ``set_header_version`` read
and rewrite that element in the XML text without touching the rest.

Errors: a missing file is a ``FileNotFoundError``, a file that is not HDF5 an ``OSError``, and a
missing group, header or acquisition dataset a ``ValueError``; each message names the file.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
from ismrmrd.hdf5 import acquisition_dtype, acquisition_header_dtype, waveform_dtype, waveform_header_dtype

from . import PathLike

logger = logging.getLogger(__name__)


#: Schema version of ISMRMRD 1.14.x, which Gadgetron 4.7.2 requires when a header has a version.
CURRENT_HEADER_VERSION = 14
#: Schema version written by Debian's ismrmrd-tools 1.8 (rejected by Gadgetron 4.7.2).
LEGACY_HEADER_VERSION = 8

#: Rows read per HDF5 call while iterating.
_READ_CHUNK = 512

_VERSION_RE = re.compile(r"<(?P<prefix>(?:[A-Za-z_][\w.-]*:)?)version\s*>\s*(?P<value>[^<]*?)\s*</(?P=prefix)version\s*>")
_ROOT_OPEN_RE = re.compile(r"<(?P<prefix>(?:[A-Za-z_][\w.-]*:)?)ismrmrdHeader\b[^>]*>")


# --------------------------------------------------------------------------- opening files

def open_hdf5(path: PathLike) -> h5py.File:
    """Open ``path`` read-only, raising FileNotFoundError / OSError messages that name it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"ISMRMRD file {str(path)!r} does not exist")
    if path.is_dir():
        raise OSError(f"ISMRMRD file {str(path)!r} is a directory, not an HDF5 file")
    if not h5py.is_hdf5(path):
        raise OSError(f"{str(path)!r} is not an HDF5 file, so not an ISMRMRD raw data file")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise OSError(f"cannot open ISMRMRD file {str(path)!r}: {error}") from error


def _group(handle: h5py.File, group: str) -> h5py.Group:
    name = group.strip("/")
    if name not in handle or not isinstance(handle[name], h5py.Group):
        groups = sorted(k for k, v in handle.items() if isinstance(v, h5py.Group))
        raise ValueError(
            f"{handle.filename!r} has no ISMRMRD group '/{name}' (groups in the file: {groups}); "
            f"pass group= to choose another"
        )
    return handle[name]


def _xml_text(grp: h5py.Group) -> str:
    if "xml" not in grp:
        raise ValueError(f"{grp.file.filename!r} has no ISMRMRD header: dataset '{grp.name}/xml' is missing")
    raw = grp["xml"][0]
    if isinstance(raw, bytes):
        return raw.decode("utf-8")
    return str(raw)


def _acquisition_dataset(grp: h5py.Group) -> h5py.Dataset:
    filename = grp.file.filename
    if "data" not in grp:
        raise ValueError(f"{filename!r} has no acquisitions: dataset '{grp.name}/data' is missing")
    data = grp["data"]
    if not isinstance(data, h5py.Dataset):
        raise ValueError(f"{filename!r}: '{grp.name}/data' is a group, not an acquisition dataset")
    names = data.dtype.names or ()
    if not {"head", "traj", "data"} <= set(names):
        raise ValueError(
            f"{filename!r}: '{grp.name}/data' is not an ISMRMRD acquisition dataset "
            f"(fields {names}; expected head, traj, data)"
        )
    return data


# --------------------------------------------------------------------------- header

def parse_header(xml_text: str, *, source: str = "XML header") -> ismrmrd.xsd.ismrmrdHeader:
    """Parse ISMRMRD XML text with ismrmrd-python; ValueError naming ``source`` on failure."""
    try:
        return ismrmrd.xsd.CreateFromDocument(xml_text)
    except Exception as error:  # xsdata raises several parser error types
        raise ValueError(f"cannot parse the ISMRMRD header of {source}: {error}") from error


def read_xml(path: PathLike, group: str = "dataset") -> str:
    """The ISMRMRD XML header text of ``path`` (``/<group>/xml``)."""
    with open_hdf5(path) as handle:
        return _xml_text(_group(handle, group))


def read_header(path: PathLike, group: str = "dataset") -> tuple[ismrmrd.xsd.ismrmrdHeader, str]:
    """``(parsed header, XML text)`` of the ISMRMRD file ``path``."""
    xml_text = read_xml(path, group)
    return parse_header(xml_text, source=repr(str(path))), xml_text


def header_version(xml_text: str) -> int | None:
    """The ``<version>`` of an ISMRMRD XML header, or None when the header has none.

    Only the ``version`` element directly under ``ismrmrdHeader`` counts (it is the first child by
    the schema); ValueError when its text is not an integer.
    """
    if not isinstance(xml_text, str):
        raise ValueError(f"xml_text must be a str, got {type(xml_text).__name__}")
    root = _ROOT_OPEN_RE.search(xml_text)
    if root is None:
        raise ValueError("xml_text is not an ISMRMRD header: no <ismrmrdHeader> element")
    match = _VERSION_RE.search(xml_text, root.end())
    if match is None or not _is_top_level(xml_text, root.end(), match.start()):
        return None
    value = match.group("value")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"ISMRMRD header <version> is not an integer: {value!r}") from None


def set_header_version(xml_text: str, version: int | None) -> str:
    """Return ``xml_text`` with its ``<version>`` set to ``version`` (None removes the element).

    Everything else in the text is kept byte for byte. A header without a version gets one as the
    first child of ``ismrmrdHeader``, where the schema puts it.
    """
    if version is not None and (isinstance(version, bool) or not isinstance(version, (int, np.integer))
                                or version < 0):
        raise ValueError(f"version must be a non-negative int or None, got {version!r}")
    header_version(xml_text)  # validates the text (root element, integer version)
    root = _ROOT_OPEN_RE.search(xml_text)
    match = _VERSION_RE.search(xml_text, root.end()) if root is not None else None
    if root is None:
        raise ValueError("xml_text is not an ISMRMRD header: no <ismrmrdHeader> element")
    if match is not None and _is_top_level(xml_text, root.end(), match.start()):
        if version is None:
            return xml_text[:match.start()] + xml_text[match.end():]
        prefix = match.group("prefix")
        replacement = f"<{prefix}version>{int(version)}</{prefix}version>"
        return xml_text[:match.start()] + replacement + xml_text[match.end():]
    if version is None:
        return xml_text
    prefix = root.group("prefix")
    element = f"<{prefix}version>{int(version)}</{prefix}version>"
    return xml_text[:root.end()] + element + xml_text[root.end():]


def _is_top_level(text: str, start: int, stop: int) -> bool:
    """True when no element opened in ``text[start:stop]`` is still open at ``stop``."""
    depth = 0
    for tag in re.finditer(r"<(/?)[^!?][^>]*?(/?)>", text[start:stop]):
        if tag.group(1):
            depth -= 1
        elif not tag.group(2):
            depth += 1
    return depth == 0


# --------------------------------------------------------------------------- acquisitions

def _acquisition_from_row(row: np.void) -> ismrmrd.Acquisition:
    head = np.asarray(row["head"], dtype=acquisition_header_dtype)
    acq = ismrmrd.Acquisition(head.tobytes())
    n_samples, n_channels, n_traj = acq.number_of_samples, acq.active_channels, acq.trajectory_dimensions
    data = np.asarray(row["data"], dtype=np.float32)
    if data.size != 2 * n_samples * n_channels:
        raise ValueError(
            f"acquisition {acq.scan_counter}: {data.size} floats of data for "
            f"{n_channels} channels x {n_samples} samples"
        )
    acq.data[:] = data.view(np.complex64).reshape(n_channels, n_samples)
    if n_traj:
        traj = np.asarray(row["traj"], dtype=np.float32)
        acq.traj[:] = traj.reshape(n_samples, n_traj)
    return acq


def iter_acquisitions(path: PathLike, group: str = "dataset", *, start: int = 0,
                      stop: int | None = None) -> Iterator[ismrmrd.Acquisition]:
    """Yield the acquisitions of ``/<group>/data`` in file order as ``ismrmrd.Acquisition``.

    Each acquisition's ``data`` is ``(active_channels, number_of_samples)`` complex64 and ``traj``
    ``(number_of_samples, trajectory_dimensions)`` float32. ``start``/``stop`` select a range.
    The file is opened (and its structure checked) on the first ``next()``.
    """
    with open_hdf5(path) as handle:
        data = _acquisition_dataset(_group(handle, group))
        n_total = data.shape[0]
        stop = n_total if stop is None else min(int(stop), n_total)
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        reader = data.astype(acquisition_dtype)
        for first in range(start, stop, _READ_CHUNK):
            rows = reader[first:min(first + _READ_CHUNK, stop)]
            for row in rows:
                yield _acquisition_from_row(row)


def read_acquisitions(path: PathLike, group: str = "dataset") -> list[ismrmrd.Acquisition]:
    """All acquisitions of the file as a list (see ``iter_acquisitions``)."""
    return list(iter_acquisitions(path, group))


def _waveforms_of(grp: h5py.Group) -> Iterator[ismrmrd.Waveform]:
    if "waveforms" not in grp:
        return
    dataset = grp["waveforms"]
    reader = dataset.astype(waveform_dtype)
    for first in range(0, dataset.shape[0], _READ_CHUNK):
        for row in reader[first:first + _READ_CHUNK]:
            head = np.zeros((1,), dtype=waveform_header_dtype)
            head[0] = row["head"]
            waveform = ismrmrd.Waveform(head)
            samples = np.asarray(row["data"], dtype=np.uint32)
            waveform.data[:] = samples.reshape(waveform.channels, waveform.number_of_samples)
            yield waveform


class RawFile:
    """An ISMRMRD raw data file opened for reading, for several passes over one file.

    ``with RawFile(path) as raw: raw.header, raw.xml, len(raw), raw.n_waveforms, raw.acquisitions(),
    raw.waveforms()``. Opening checks the group and reads the XML text; ``header`` parses it on first
    use (ismrmrd-python rejects elements it does not know, which a replay must still send as is).
    """

    def __init__(self, path: PathLike, group: str = "dataset") -> None:
        self.path = Path(path)
        self.group = group
        self._handle = open_hdf5(self.path)
        try:
            grp = _group(self._handle, group)
            self.xml: str = _xml_text(grp)
        except Exception:
            self._handle.close()
            raise
        self._header: ismrmrd.xsd.ismrmrdHeader | None = None

    def __enter__(self) -> RawFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._handle.close()

    @property
    def header(self) -> ismrmrd.xsd.ismrmrdHeader:
        """The parsed header (ValueError naming the file when ismrmrd-python cannot parse it)."""
        if self._header is None:
            self._header = parse_header(self.xml, source=repr(str(self.path)))
        return self._header

    @property
    def version(self) -> int | None:
        """The header's ``<version>`` (None when absent)."""
        return header_version(self.xml)

    def __len__(self) -> int:
        return int(_acquisition_dataset(self._handle[self.group.strip("/")]).shape[0])

    def acquisitions(self) -> Iterator[ismrmrd.Acquisition]:
        """Yield the acquisitions in file order."""
        data = _acquisition_dataset(self._handle[self.group.strip("/")])
        reader = data.astype(acquisition_dtype)
        for first in range(0, data.shape[0], _READ_CHUNK):
            for row in reader[first:first + _READ_CHUNK]:
                yield _acquisition_from_row(row)

    @property
    def n_waveforms(self) -> int:
        """Number of waveforms (0 when the file has none)."""
        grp = self._handle[self.group.strip("/")]
        return int(grp["waveforms"].shape[0]) if "waveforms" in grp else 0

    def waveforms(self) -> Iterator[ismrmrd.Waveform]:
        """Yield the waveforms in file order (none when the file has none)."""
        yield from _waveforms_of(self._handle[self.group.strip("/")])


def iter_items_in_time_order(raw: RawFile) -> Iterator[ismrmrd.Acquisition | ismrmrd.Waveform]:
    """Acquisitions in file order, waveforms merged in by time stamp like the C++ client.

    A waveform goes before an acquisition whose ``acquisition_time_stamp`` is later than the
    waveform's ``time_stamp``; on a tie the acquisition goes first; remaining waveforms go last.
    """
    waveforms = raw.waveforms()
    pending = next(waveforms, None)
    for acq in raw.acquisitions():
        while pending is not None and pending.time_stamp < acq.acquisition_time_stamp:
            yield pending
            pending = next(waveforms, None)
        yield acq
    if pending is not None:
        yield pending
        yield from waveforms
