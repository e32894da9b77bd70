"""gadgets.io.ismrmrd_io reads files of the C++ library (Debian ismrmrd-tools 1.8) and of ismrmrd-python."""

from __future__ import annotations

import h5py
import ismrmrd
import numpy as np
import pytest

from gadgets.io.ismrmrd_io import (
    CURRENT_HEADER_VERSION,
    LEGACY_HEADER_VERSION,
    RawFile,
    header_version,
    iter_acquisitions,
    iter_items_in_time_order,
    read_header,
    set_header_version,
)
from tests.gadgets.conftest import (
    SHEPP_LOGAN_COILS,
    SHEPP_LOGAN_MATRIX,
    SHEPP_LOGAN_N_ACQUISITIONS,
    SHEPP_LOGAN_REPETITIONS,
)


def count_acquisitions(path) -> int:
    with RawFile(path) as raw:
        return len(raw)


# --------------------------------------------------------------------------- C++ files

def test_shepp_logan_header(shepp_logan_file):
    header, xml_text = read_header(shepp_logan_file)
    assert header_version(xml_text) == LEGACY_HEADER_VERSION == header.version
    enc = header.encoding[0]
    assert (enc.encodedSpace.matrixSize.x, enc.encodedSpace.matrixSize.y) == (2 * SHEPP_LOGAN_MATRIX, SHEPP_LOGAN_MATRIX)
    assert (enc.reconSpace.matrixSize.x, enc.reconSpace.matrixSize.y) == (SHEPP_LOGAN_MATRIX, SHEPP_LOGAN_MATRIX)
    assert header.acquisitionSystemInformation.receiverChannels == SHEPP_LOGAN_COILS
    assert enc.encodingLimits.kspace_encoding_step_1.maximum == SHEPP_LOGAN_MATRIX - 1


def test_shepp_logan_acquisitions(shepp_logan_file):
    assert count_acquisitions(shepp_logan_file) == SHEPP_LOGAN_N_ACQUISITIONS
    acquisitions = list(iter_acquisitions(shepp_logan_file))
    assert len(acquisitions) == SHEPP_LOGAN_N_ACQUISITIONS
    noise = [a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) for a in acquisitions]
    assert noise[0] and not any(noise[1:])
    imaging = acquisitions[1:]
    for acq in acquisitions:
        assert acq.data.shape == (SHEPP_LOGAN_COILS, 2 * SHEPP_LOGAN_MATRIX)
        assert acq.data.dtype == np.complex64
    # every repetition covers every ky line once
    lines = sorted((a.idx.repetition, a.idx.kspace_encode_step_1) for a in imaging)
    assert lines == sorted((r, k) for r in range(SHEPP_LOGAN_REPETITIONS) for k in range(SHEPP_LOGAN_MATRIX))
    assert sum(a.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE) for a in imaging) == SHEPP_LOGAN_REPETITIONS
    assert all(np.abs(a.data).max() > 0 for a in acquisitions)


def test_reader_matches_ismrmrd_python_on_cpp_file(shepp_logan_file):
    dataset = ismrmrd.Dataset(str(shepp_logan_file), "dataset", mode="r")
    try:
        for i, acq in enumerate(iter_acquisitions(shepp_logan_file)):
            reference = dataset.read_acquisition(i)
            assert acq.getHead() == reference.getHead()
            np.testing.assert_array_equal(acq.data, reference.data)
    finally:
        dataset.close()


def test_range_and_rawfile(shepp_logan_file):
    middle = list(iter_acquisitions(shepp_logan_file, start=3, stop=7))
    everything = list(iter_acquisitions(shepp_logan_file))
    assert [a.scan_counter for a in middle] == [a.scan_counter for a in everything[3:7]]
    with RawFile(shepp_logan_file) as raw:
        assert len(raw) == SHEPP_LOGAN_N_ACQUISITIONS
        assert raw.version == LEGACY_HEADER_VERSION
        assert raw.header.encoding[0].reconSpace.matrixSize.x == SHEPP_LOGAN_MATRIX
        again = list(raw.acquisitions())
        assert len(again) == len(everything)
        np.testing.assert_array_equal(again[-1].data, everything[-1].data)
        assert list(raw.waveforms()) == []
    with RawFile(shepp_logan_file) as raw:
        assert raw.n_waveforms == 0


# --------------------------------------------------------------------------- ismrmrd-python files

def _python_header(n_coils: int) -> ismrmrd.xsd.ismrmrdHeader:
    x = ismrmrd.xsd
    space = x.encodingSpaceType(matrixSize=x.matrixSizeType(x=16, y=8, z=1),
                                fieldOfView_mm=x.fieldOfViewMm(x=200.0, y=100.0, z=5.0))
    return x.ismrmrdHeader(
        experimentalConditions=x.experimentalConditionsType(H1resonanceFrequency_Hz=63_500_000),
        acquisitionSystemInformation=x.acquisitionSystemInformationType(receiverChannels=n_coils),
        encoding=[x.encodingType(encodedSpace=space, reconSpace=space,
                                 encodingLimits=x.encodingLimitsType(), trajectory=x.trajectoryType.CARTESIAN)],
    )


@pytest.fixture
def python_file(tmp_path, rng):
    """A file written by ismrmrd-python: 5 acquisitions (with a 2D trajectory) and 2 ECG waveforms."""
    path = tmp_path / "python.h5"
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    dataset.write_xml_header(ismrmrd.xsd.ToXML(_python_header(3)))
    acquisitions = []
    for i in range(5):
        data = (rng.standard_normal((3, 16)) + 1j * rng.standard_normal((3, 16))).astype(np.complex64)
        traj = rng.standard_normal((16, 2)).astype(np.float32)
        acq = ismrmrd.Acquisition.from_array(data, traj, scan_counter=i + 1)
        acq.idx.kspace_encode_step_1 = i
        acq.set_flag(ismrmrd.ACQ_FIRST_IN_SLICE if i == 0 else ismrmrd.ACQ_USER1)
        dataset.append_acquisition(acq)
        acquisitions.append(acq)
    waveforms = []
    for i in range(2):
        samples = rng.integers(0, 4096, size=(4, 10), dtype=np.uint32)
        waveform = ismrmrd.Waveform.from_array(samples)
        waveform.waveform_id = 0
        waveform.time_stamp = 100 + i
        dataset.append_waveform(waveform)
        waveforms.append(waveform)
    dataset.close()
    return path, acquisitions, waveforms


def test_python_file_roundtrip(python_file):
    path, acquisitions, waveforms = python_file
    header, xml_text = read_header(path)
    assert header.acquisitionSystemInformation.receiverChannels == 3
    # ismrmrd-python 1.15 writes no <version> unless the header object sets one
    assert header.version is None and header_version(xml_text) is None
    read = list(iter_acquisitions(path))
    assert len(read) == count_acquisitions(path) == 5
    for mine, theirs in zip(read, acquisitions):
        assert mine == theirs  # header, data and trajectory
        assert mine.traj.shape == (16, 2)
    assert [a.idx.kspace_encode_step_1 for a in read] == list(range(5))
    assert read[0].is_flag_set(ismrmrd.ACQ_FIRST_IN_SLICE) and not read[1].is_flag_set(ismrmrd.ACQ_FIRST_IN_SLICE)
    with RawFile(path) as raw:
        read_waveforms = list(raw.waveforms())
        assert raw.n_waveforms == 2 == len(read_waveforms)
    for mine, theirs in zip(read_waveforms, waveforms):
        assert mine.time_stamp == theirs.time_stamp
        np.testing.assert_array_equal(mine.data, theirs.data)



@pytest.mark.parametrize(
    "acq_stamps, wf_stamps, expected",
    [
        # a waveform goes before a later acquisition; on a tie the acquisition goes first
        ([0, 10, 20, 30], [5, 10, 25, 99], ["a0", "w5", "a10", "w10", "a20", "w25", "a30", "w99"]),
        ([7, 8], [1, 2], ["w1", "w2", "a7", "a8"]),
        ([3, 4], [], ["a3", "a4"]),
    ],
)
def test_items_in_time_order_merges_waveforms_by_time_stamp(tmp_path, rng, acq_stamps, wf_stamps, expected):
    path = tmp_path / "merged.h5"
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as dataset:
        dataset.write_xml_header(ismrmrd.xsd.ToXML(_python_header(1)))
        for stamp in acq_stamps:
            acq = ismrmrd.Acquisition.from_array(np.zeros((1, 4), np.complex64))
            acq.acquisition_time_stamp = stamp
            dataset.append_acquisition(acq)
        for stamp in wf_stamps:
            waveform = ismrmrd.Waveform.from_array(rng.integers(0, 9, size=(1, 3), dtype=np.uint32))
            waveform.time_stamp = stamp
            dataset.append_waveform(waveform)
    with RawFile(path) as raw:
        order = [f"a{item.acquisition_time_stamp}" if isinstance(item, ismrmrd.Acquisition)
                 else f"w{item.time_stamp}" for item in iter_items_in_time_order(raw)]
    assert order == expected

def test_rawfile_reads_what_ismrmrd_python_reads(tmp_path, rng):
    """RawFile gives the objects ismrmrd.Dataset gives: XML, acquisitions with and without a
    trajectory (same header bytes, data, traj) and waveforms (same header bytes and samples)."""
    path = tmp_path / "mixed.h5"
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as dataset:
        dataset.write_xml_header(ismrmrd.xsd.ToXML(_python_header(2)))
        for i in range(6):
            data = (rng.standard_normal((2, 5)) + 1j * rng.standard_normal((2, 5))).astype(np.complex64)
            traj = rng.standard_normal((5, 2)).astype(np.float32) if i < 2 else None
            acq = ismrmrd.Acquisition.from_array(data, traj, scan_counter=i)
            acq.idx.slice, acq.idx.kspace_encode_step_1 = i // 3, i % 3
            acq.acquisition_time_stamp = 10 * i
            dataset.append_acquisition(acq)
        for i, stamp in enumerate([1, 2]):
            waveform = ismrmrd.Waveform.from_array(rng.integers(0, 2**32, size=(2, 5), dtype=np.uint32))
            waveform.time_stamp, waveform.scan_counter = stamp, i
            dataset.append_waveform(waveform)
    with RawFile(path) as raw:
        xml_text = raw.xml
        mine = list(raw.acquisitions())
        mine_waveforms = list(raw.waveforms())
        n_waveforms = raw.n_waveforms
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=False) as dataset:
        assert xml_text == dataset.read_xml_header().decode("utf-8")
        assert len(mine) == dataset.number_of_acquisitions() == 6
        assert [a.traj.shape for a in mine] == [(5, 2)] * 2 + [(5, 0)] * 4
        for i, acq in enumerate(mine):
            theirs = dataset.read_acquisition(i)
            assert bytes(acq.getHead()) == bytes(theirs.getHead())
            np.testing.assert_array_equal(acq.data, theirs.data)
            np.testing.assert_array_equal(acq.traj, theirs.traj)
        assert len(mine_waveforms) == n_waveforms == dataset.number_of_waveforms() == 2
        for j, waveform in enumerate(mine_waveforms):
            theirs = dataset.read_waveform(j)
            assert bytes(waveform.getHead()) == bytes(theirs.getHead())
            np.testing.assert_array_equal(waveform.data, theirs.data)


# --------------------------------------------------------------------------- header version

def test_set_header_version_keeps_everything_else(shepp_logan_file):
    _, xml_text = read_header(shepp_logan_file)
    current = set_header_version(xml_text, CURRENT_HEADER_VERSION)
    assert header_version(current) == CURRENT_HEADER_VERSION
    assert set_header_version(current, LEGACY_HEADER_VERSION) == xml_text
    assert len(current) == len(xml_text) + len(str(CURRENT_HEADER_VERSION)) - len(str(LEGACY_HEADER_VERSION))
    removed = set_header_version(xml_text, None)
    assert header_version(removed) is None
    assert "<version>" not in removed
    inserted = set_header_version(removed, CURRENT_HEADER_VERSION)
    parsed = ismrmrd.xsd.CreateFromDocument(inserted)
    assert parsed.version == CURRENT_HEADER_VERSION
    assert parsed.encoding == ismrmrd.xsd.CreateFromDocument(xml_text).encoding


def test_header_version_of_python_serialised_header():
    header = _python_header(2)
    header.version = CURRENT_HEADER_VERSION
    text = ismrmrd.xsd.ToXML(header)
    assert header_version(text) == CURRENT_HEADER_VERSION
    assert header_version(set_header_version(text, 8)) == 8


@pytest.mark.parametrize("bad", [-1, 1.5, "14", True])
def test_set_header_version_rejects_bad_versions(bad):
    text = ismrmrd.xsd.ToXML(_python_header(1))
    with pytest.raises(ValueError, match="version must be"):
        set_header_version(text, bad)


def test_header_version_rejects_non_headers():
    with pytest.raises(ValueError, match="ismrmrdHeader"):
        header_version("<html><version>3</version></html>")
    with pytest.raises(ValueError, match="not an integer"):
        header_version('<ismrmrdHeader xmlns="x"><version>abc</version></ismrmrdHeader>')


# --------------------------------------------------------------------------- errors

def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.h5"
    with pytest.raises(FileNotFoundError, match="nowhere.h5"):
        read_header(missing)
    with pytest.raises(FileNotFoundError, match="nowhere.h5"):
        next(iter_acquisitions(missing))


def test_not_hdf5_is_named(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("this is not HDF5\n")
    with pytest.raises(OSError, match="notes.h5.*not an HDF5 file"):
        count_acquisitions(text)
    with pytest.raises(OSError, match="not an HDF5 file"):
        RawFile(text)


def test_missing_group_and_datasets_are_named(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle.create_group("images")
        handle.create_group("dataset")
        handle.create_group("header_only").create_dataset("xml", data=np.array([b"<x/>"], dtype=object),
                                                           dtype=h5py.special_dtype(vlen=bytes))
        handle.create_group("wrong").create_dataset("data", data=np.zeros(3))
    with pytest.raises(ValueError, match=r"other\.h5.*no ISMRMRD group '/scan'.*dataset.*images"):
        read_header(path, group="scan")
    with pytest.raises(ValueError, match=r"other\.h5.*no ISMRMRD header.*/dataset/xml"):
        read_header(path)
    with pytest.raises(ValueError, match=r"other\.h5.*no acquisitions.*/dataset/data"):
        list(iter_acquisitions(path))
    with pytest.raises(ValueError, match="cannot parse the ISMRMRD header"):
        read_header(path, group="header_only")
    with pytest.raises(ValueError, match="not an ISMRMRD acquisition dataset"):
        list(iter_acquisitions(path, group="wrong"))
