"""gadgets.protocol.gadgetron_client and gadgets.tools.client against a fake Gadgetron server over real loopback sockets."""

from __future__ import annotations

import logging
import shutil
import socket
import struct
import subprocess
import threading
from pathlib import Path

import h5py
import ismrmrd
import ismrmrd.hdf5
import ismrmrd.xsd
import numpy as np
import pytest

from gadgets.io.image_io import read_images, write_images
from gadgets.io.ismrmrd_io import CURRENT_HEADER_VERSION, RawFile, header_version, set_header_version
from gadgets.protocol.gadgetron_client import (
    GadgetronClient,
    GadgetronConnectionError,
    GadgetronServerError,
    ServerError,
    ServerText,
    encode_acquisition,
)
from gadgets.tools.client import raise_for_errors, stream_file
from tests.gadgets.fake_server import DEFAULT_ERROR_TEXT, FakeGadgetronServer, rss_image

TIMEOUT = 120.0  # every socket operation in these tests; a broken test fails, it does not hang


def header_xml(version: int | None = 14, nx: int = 16, ny: int = 8) -> str:
    version_element = "" if version is None else f"<version>{version}</version>"
    return (
        '<?xml version="1.0"?>\n'
        '<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
        f"{version_element}"
        "<experimentalConditions><H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz>"
        "</experimentalConditions><encoding><encodedSpace><matrixSize>"
        f"<x>{nx}</x><y>{ny}</y><z>1</z></matrixSize><fieldOfView_mm><x>300</x><y>300</y><z>8</z>"
        "</fieldOfView_mm></encodedSpace><reconSpace><matrixSize>"
        f"<x>{nx}</x><y>{ny}</y><z>1</z></matrixSize><fieldOfView_mm><x>300</x><y>300</y><z>8</z>"
        "</fieldOfView_mm></reconSpace><encodingLimits><kspace_encoding_step_1><minimum>0</minimum>"
        f"<maximum>{ny - 1}</maximum><center>{ny // 2}</center></kspace_encoding_step_1>"
        "</encodingLimits><trajectory>cartesian</trajectory></encoding>"
        "</ismrmrdHeader>"
    )


def make_acquisitions(
    rng: np.random.Generator,
    n_slices: int,
    n_lines: int,
    n_coils: int,
    n_samples: int,
    stamp_step: int = 10,
) -> list[ismrmrd.Acquisition]:
    """Cartesian lines, slice by slice; the last line of each slice flagged ACQ_LAST_IN_SLICE."""
    acqs = []
    stamp = 0
    for s in range(n_slices):
        for ky in rng.permutation(n_lines):  # arrival order is not ky order
            data = rng.standard_normal((n_coils, n_samples)) + 1j * rng.standard_normal(
                (n_coils, n_samples)
            )
            acq = ismrmrd.Acquisition.from_array(data.astype(np.complex64))
            acq.idx.slice = s
            acq.idx.kspace_encode_step_1 = int(ky)
            acq.scan_counter = len(acqs)
            acq.acquisition_time_stamp = stamp
            stamp += stamp_step
            acqs.append(acq)
        acqs[-1].set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
    return acqs


def make_waveforms(rng: np.random.Generator, stamps: list[int]) -> list[ismrmrd.Waveform]:
    waveforms = []
    for i, stamp in enumerate(stamps):
        head = ismrmrd.WaveformHeader()
        head.version = 1
        head.channels = 2
        head.number_of_samples = 5
        head.time_stamp = stamp
        head.waveform_id = 0
        head.scan_counter = i
        data = rng.integers(0, 2**32, size=(2, 5), dtype=np.uint32)
        waveforms.append(ismrmrd.Waveform(head, data))
    return waveforms


def write_raw_file(
    path: Path,
    acqs: list[ismrmrd.Acquisition],
    xml: str,
    waveforms: list[ismrmrd.Waveform] = (),
    bulk: bool = False,
) -> Path:
    """An ISMRMRD raw file. ``bulk`` writes the acquisition table in one h5py call (the same
    rows ismrmrd's append_acquisition writes one by one, which takes ~4 ms per row)."""
    if not bulk:
        with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as ds:
            ds.write_xml_header(xml)
            for acq in acqs:
                ds.append_acquisition(acq)
            for wf in waveforms:
                ds.append_waveform(wf)
        return path
    rows = np.empty((len(acqs),), dtype=ismrmrd.hdf5.acquisition_dtype)
    for i, acq in enumerate(acqs):
        head = np.frombuffer(bytes(acq.getHead()), dtype=ismrmrd.hdf5.acquisition_header_dtype)
        rows[i]["head"] = head[0]
        rows[i]["data"] = acq.data.astype(np.complex64).view(np.float32).ravel()
        rows[i]["traj"] = acq.traj.astype(np.float32).ravel()
    with h5py.File(path, "w") as f:
        group = f.create_group("dataset")
        xml_set = group.create_dataset("xml", (1,), dtype=h5py.special_dtype(vlen=bytes))
        xml_set[0] = xml
        group.create_dataset("data", data=rows, maxshape=(None,))
    return path


def run_client(port: int, send) -> tuple:
    """Connect, let ``send(client)`` send, send CLOSE, collect all up to the server's CLOSE."""
    with GadgetronClient(io_timeout=TIMEOUT).connect("127.0.0.1", port, timeout=TIMEOUT) as client:
        send(client)
        client.send_close()
        messages = list(client.receive())
        return messages, client.close_received


def replay(server: FakeGadgetronServer, path: Path, **kwargs):
    """stream_file to the fake server with the config named ``default.xml``."""
    kwargs.setdefault("config_name", "default.xml")
    return stream_file("127.0.0.1", server.port, path, **kwargs)


# --------------------------------------------------------------------------- single messages


def test_acquisitions_in_complex128_arrive_as_complex64(rng):
    acqs = []
    for i in range(5):
        data = rng.standard_normal((3, 11)) + 1j * rng.standard_normal((3, 11))  # complex128
        traj = rng.standard_normal((11, 2))  # float64
        acq = ismrmrd.Acquisition(data=data, trajectory=traj)
        acq.scan_counter = i
        acq.idx.kspace_encode_step_1 = i
        acq.physiology_time_stamp[0] = 1000 + i
        assert acq.data.dtype == np.complex128  # what the caller holds
        acqs.append(acq)

    with FakeGadgetronServer("echo", timeout=TIMEOUT) as server:
        messages, closed = run_client(
            server.port, lambda c: [c.send_acquisition(a) for a in acqs]
        )
    assert server.exception is None
    assert closed
    received = server.received.acquisitions
    assert len(received) == len(acqs)
    for sent, got in zip(acqs, received):
        assert bytes(got.getHead()) == bytes(sent.getHead())
        assert got.data.dtype == np.complex64 and got.traj.dtype == np.float32
        np.testing.assert_array_equal(got.data, sent.data.astype(np.complex64))
        np.testing.assert_array_equal(got.traj, sent.traj.astype(np.float32))
    # The stream stayed in step: the CLOSE after the acquisitions was understood.
    assert server.received.close
    assert [m for m in messages if isinstance(m, ServerText)]


def test_config_by_name_and_header(rng):
    xml = header_xml()
    with FakeGadgetronServer("echo", timeout=TIMEOUT) as server:
        run_client(
            server.port, lambda c: (c.send_config_name("cardiomm_cine.xml"), c.send_header(xml))
        )
    assert server.received.config_name == "cardiomm_cine.xml"
    assert server.received.config_text is None
    assert server.received.header == xml
    assert server.received.message_ids == [1, 3, 4]


def test_config_by_text(rng):
    config = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<configuration><version>2</version>'
        '<stream><external><execute name="x" target="Y" type="python"/></external></stream>'
        "</configuration>"
    )
    with FakeGadgetronServer("echo", timeout=TIMEOUT) as server:
        run_client(server.port, lambda c: (c.send_config_text(config), c.send_header(header_xml())))
    assert server.received.config_text == config
    assert server.received.config_name is None
    assert server.received.message_ids == [2, 3, 4]


def test_waveforms_round_trip(rng):
    waveforms = make_waveforms(rng, [5, 7, 100])
    with FakeGadgetronServer("echo", timeout=TIMEOUT) as server:
        run_client(server.port, lambda c: [c.send_waveform(w) for w in waveforms])
    assert len(server.received.waveforms) == 3
    for sent, got in zip(waveforms, server.received.waveforms):
        assert bytes(got.getHead()) == bytes(sent.getHead())
        np.testing.assert_array_equal(got.data, sent.data)


def test_bad_arguments_raise_value_error(rng):
    acq = ismrmrd.Acquisition.from_array(np.zeros((2, 8), dtype=np.complex64))
    broken = ismrmrd.Acquisition(acq.getHead(), data=np.zeros((2, 7), dtype=np.complex64))
    with pytest.raises(ValueError, match="acq.data"):
        encode_acquisition(broken)
    client = GadgetronClient(io_timeout=TIMEOUT)
    with pytest.raises(ValueError, match="name"):
        client.send_config_name("x" * 1024)
    with pytest.raises(RuntimeError, match="not connected"):
        client.send_close()
    with pytest.raises(ValueError, match="exactly one"):
        stream_file("127.0.0.1", 1, "nothing.h5")
    with pytest.raises(ValueError, match="io_timeout"):
        GadgetronClient(io_timeout=0)


# --------------------------------------------------------------------------- whole files


def test_stream_file_returns_images_with_attributes(tmp_path, rng):
    acqs = make_acquisitions(rng, n_slices=2, n_lines=6, n_coils=3, n_samples=10)
    path = write_raw_file(tmp_path / "raw.h5", acqs, header_xml(nx=10, ny=6))
    sent: list[tuple] = []
    with FakeGadgetronServer("echo", timeout=TIMEOUT, series_index=3) as server:
        result = stream_file(
            "127.0.0.1", server.port, path, config_name="default.xml",
            progress=lambda done, total: sent.append((done, total)), io_timeout=TIMEOUT,
        )
    assert server.exception is None
    assert result.ok and result.close_received and result.errors == []
    assert result.n_acquisitions == len(acqs) and result.n_waveforms == 0
    assert sent[-1] == (len(acqs), len(acqs)) and len(sent) == len(acqs)
    assert result.texts == [f"fake gadgetron: {len(acqs)} acquisitions, 2 images"]
    assert server.received.header == header_xml(nx=10, ny=6)

    assert len(result.images) == 2
    for s, image in enumerate(result.images):
        lines = {a.idx.kspace_encode_step_1: a.data for a in acqs if a.idx.slice == s}
        expected = rss_image(lines)
        assert image.data.shape == (1, 1, 6, 10) and image.data.dtype == np.float32
        np.testing.assert_array_equal(image.data[0, 0], expected)
        assert image.image_series_index == 3 and image.slice == s
        assert image.meta["CardioMM_slice"] == str(s)
        assert image.meta["CardioMM_lines"] == [str(k) for k in range(6)]
        assert image.meta["GADGETRON_DataRole"] == "Image"

    # ... and they are written the way gadgetron_ismrmrd_client writes them.
    out = tmp_path / "out.h5"
    assert write_images(out, result.images, group="replay") == {3: 2}
    with h5py.File(out, "r") as f:
        assert f["replay/image_3/data"].shape == (2, 1, 1, 6, 10)
    back = read_images(out, "replay")[3]
    np.testing.assert_array_equal(back[1].data, result.images[1].data)


def test_waveforms_are_merged_by_time_stamp(tmp_path, rng):
    acqs = make_acquisitions(rng, n_slices=1, n_lines=4, n_coils=2, n_samples=8)  # stamps 0..30
    waveforms = make_waveforms(rng, [5, 10, 25, 99])
    path = write_raw_file(tmp_path / "raw.h5", acqs, header_xml(nx=8, ny=4), waveforms)
    with FakeGadgetronServer("echo", timeout=TIMEOUT) as server:
        result = stream_file("127.0.0.1", server.port, path, config_text="<c/>", io_timeout=TIMEOUT)
    assert result.ok and result.n_waveforms == 4 and result.n_acquisitions == 4
    # acq 0, wf 5, acq 10 (tie: acquisition first), wf 10, acq 20, wf 25, acq 30, wf 99
    W, A = 1026, 1008
    assert server.received.message_ids == [2, 3, A, W, A, W, A, W, A, W, 4]
    for sent, got in zip(waveforms, server.received.waveforms):
        assert bytes(got.getHead()) == bytes(sent.getHead())
        np.testing.assert_array_equal(got.data, sent.data)


@pytest.mark.parametrize("message_id", [5, 8])
def test_server_error_is_reported_with_its_text(tmp_path, rng, message_id):
    acqs = make_acquisitions(rng, n_slices=1, n_lines=4, n_coils=2, n_samples=8)
    path = write_raw_file(tmp_path / "raw.h5", acqs, header_xml(nx=8, ny=4))
    with FakeGadgetronServer("error", timeout=TIMEOUT, error_message_id=message_id) as server:
        result = replay(server, path, io_timeout=TIMEOUT)
    assert result.close_received and not result.ok
    assert result.images == []
    assert any(DEFAULT_ERROR_TEXT in e for e in result.errors)
    with pytest.raises(GadgetronServerError, match="does not match library schema version") as info:
        raise_for_errors(result)
    assert info.value.messages == result.errors


def test_server_error_while_client_is_still_sending(tmp_path, rng):
    """The server fails early and closes while a long scan is still being sent."""
    acqs = make_acquisitions(rng, n_slices=10, n_lines=100, n_coils=4, n_samples=128)
    path = write_raw_file(tmp_path / "raw.h5", acqs, header_xml(nx=128, ny=100), bulk=True)
    server = FakeGadgetronServer("error", timeout=TIMEOUT, fail_after=10, error_text="node failed")
    with server:
        result = replay(server, path, io_timeout=TIMEOUT)
    assert result.n_acquisitions < len(acqs)
    assert result.errors[0] == "[Connection Main Thread] ERROR: node failed"
    with pytest.raises(GadgetronServerError, match="node failed"):
        raise_for_errors(result)


def test_receive_yields_texts_and_errors_in_order(rng):
    with FakeGadgetronServer("error", timeout=TIMEOUT, error_text="boom") as server:
        with GadgetronClient(io_timeout=TIMEOUT).connect("127.0.0.1", server.port) as client:
            client.send_config_name("default.xml")
            client.send_header(header_xml())
            messages = list(client.receive())
            assert client.close_received
    assert messages == [ServerError("[Connection Main Thread] ERROR: boom", 5)]


@pytest.mark.parametrize("fail_after", [0, 3])
def test_vanishing_server_ends_the_client(tmp_path, rng, fail_after):
    acqs = make_acquisitions(rng, n_slices=1, n_lines=6, n_coils=2, n_samples=8)
    path = write_raw_file(tmp_path / "raw.h5", acqs, header_xml(nx=8, ny=6))
    with FakeGadgetronServer("vanish", timeout=TIMEOUT, fail_after=fail_after) as server:
        # io_timeout far above the test's patience: the end must come from seeing the peer go.
        result = replay(server, path, io_timeout=60)
    assert not result.close_received and not result.ok
    assert any("without CLOSE" in e for e in result.errors), result.errors
    with pytest.raises(GadgetronServerError, match="without CLOSE"):
        raise_for_errors(result)


def test_vanishing_server_ends_receive(rng):
    with FakeGadgetronServer("vanish", timeout=TIMEOUT) as server:
        with GadgetronClient(io_timeout=60).connect("127.0.0.1", server.port) as client:
            client.send_config_name("default.xml")
            client.send_header(header_xml())
            with pytest.raises(GadgetronConnectionError, match="without CLOSE"):
                list(client.receive())
            assert not client.close_received


def test_silent_server_times_out(tmp_path, rng):
    acqs = make_acquisitions(rng, n_slices=1, n_lines=2, n_coils=1, n_samples=4)
    path = write_raw_file(tmp_path / "raw.h5", acqs, header_xml(nx=4, ny=2))
    with FakeGadgetronServer("silent", timeout=120.0) as server:  # closes when the client gives up
        result = replay(server, path, io_timeout=0.5)
    assert result.n_acquisitions == 2
    assert not result.close_received
    assert any("no data from the Gadgetron server" in e for e in result.errors), result.errors


def test_large_stream_does_not_deadlock(tmp_path, rng):
    """3000 acquisitions (24 MB) out while the server sends every one straight back: a client
    that sent everything before reading would stall (here after ~700 acquisitions)."""
    acqs = make_acquisitions(rng, n_slices=30, n_lines=100, n_coils=4, n_samples=256)
    path = write_raw_file(tmp_path / "raw.h5", acqs, header_xml(nx=256, ny=100), bulk=True)
    with FakeGadgetronServer("echo", timeout=120.0, mirror=True) as server:
        result = replay(server, path, io_timeout=120)
    assert server.exception is None
    assert result.ok, result.errors
    assert result.n_acquisitions == 3000 and len(server.received.acquisitions) == 3000
    assert len(result.images) == 30
    assert len(result.returned) == 3000
    for i in (0, 1234, 2999):
        assert bytes(result.returned[i].getHead()) == bytes(acqs[i].getHead())
        np.testing.assert_array_equal(result.returned[i].data, acqs[i].data)


# --------------------------------------------------------------------------- header version


def test_header_version_helpers_on_a_client_header():
    xml = header_xml(version=8)
    assert header_version(xml) == 8
    assert header_version(header_xml(version=None)) is None
    rewritten = set_header_version(xml, 14)
    assert header_version(rewritten) == 14
    assert rewritten == header_xml(version=14)
    assert ismrmrd.xsd.CreateFromDocument(rewritten).version == 14
    with pytest.raises(ValueError, match="version"):
        set_header_version(xml, -1)


def test_header_without_version_is_sent_unchanged(tmp_path, rng, caplog):
    """header_version only rewrites a version that is there (Gadgetron accepts none at all)."""
    acqs = make_acquisitions(rng, n_slices=1, n_lines=2, n_coils=1, n_samples=4)
    path = write_raw_file(tmp_path / "raw.h5", acqs, header_xml(version=None, nx=4, ny=2))
    with caplog.at_level(logging.WARNING, logger="gadgets.tools.client"):
        with FakeGadgetronServer("echo", timeout=TIMEOUT) as server:
            result = replay(server, path, header_version=14, io_timeout=TIMEOUT)
    assert result.ok and result.n_acquisitions == 2
    assert server.received.header == header_xml(version=None, nx=4, ny=2)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.fixture(scope="module")
def old_version_file(tmp_path_factory) -> Path:
    """A file written by another program: Debian's ismrmrd-tools writes header version 8."""
    tool = shutil.which("ismrmrd_generate_cartesian_shepp_logan")
    if tool is None:
        pytest.skip("ismrmrd_generate_cartesian_shepp_logan (ismrmrd-tools) is not installed")
    path = tmp_path_factory.mktemp("shepp") / "shepp logan.h5"
    subprocess.run(
        [tool, "-m", "16", "-c", "2", "-o", str(path)], check=True, capture_output=True, timeout=60
    )
    return path


def test_old_header_version_is_reported(old_version_file, caplog):
    with RawFile(old_version_file) as raw:
        original = raw.xml
        n_acq = len(raw)
    version = header_version(original)
    assert version is not None and version < CURRENT_HEADER_VERSION

    with caplog.at_level(logging.WARNING, logger="gadgets.tools.client"):
        with FakeGadgetronServer("echo", timeout=TIMEOUT) as server:
            result = replay(server, old_version_file, io_timeout=TIMEOUT)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(old_version_file) in w and f"version {version}" in w for w in warnings), warnings
    assert server.received.header == original  # sent unchanged
    assert result.n_acquisitions == n_acq == len(server.received.acquisitions)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gadgets.tools.client"):
        with FakeGadgetronServer("echo", timeout=TIMEOUT) as server:
            stream_file(
                "127.0.0.1", server.port, old_version_file, config_name="default.xml",
                header_version=14, io_timeout=TIMEOUT,
            )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert header_version(server.received.header) == 14
    assert server.received.header == set_header_version(original, 14)
    assert server.received.header.replace("<version>14<", f"<version>{version}<") == original


def test_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="not an existing file"):
        stream_file("127.0.0.1", 9, tmp_path / "missing.h5", config_name="default.xml")


def serve_bytes(payload: bytes) -> tuple:
    """A one-shot server that sends ``payload`` to its client and closes; returns (port, thread)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)

    def run() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(payload)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def test_int_images_keep_the_stream_in_step_and_a_cut_message_ends_it(rng):
    """DATATYPE_INT pixels are 4 bytes on the wire (ismrmrd-python would read 8), and a server
    that dies in the middle of a message ends receive() with an error."""
    pixels = rng.integers(-1000, 1000, size=(1, 1, 3, 5)).astype("<i4")
    head = ismrmrd.ImageHeader()
    head.version, head.data_type, head.channels = 1, ismrmrd.DATATYPE_INT, 1
    head.matrix_size[:] = (5, 3, 1)
    head.image_series_index = 4
    attributes = ismrmrd.Meta({"k": "v"}).serialize().encode("utf-8")
    image_message = (
        struct.pack("<H", 1022) + bytes(head) + struct.pack("<Q", len(attributes)) + attributes
        + pixels.tobytes()
    )
    text = b"[Gadget] INFO: fine"
    text_message = struct.pack("<HI", 5, len(text)) + text
    port, thread = serve_bytes(image_message + text_message + image_message[:150])
    with GadgetronClient(io_timeout=TIMEOUT).connect("127.0.0.1", port) as client:
        messages = []
        with pytest.raises(GadgetronConnectionError, match="middle of a message"):
            for message in client.receive():
                messages.append(message)
    thread.join(TIMEOUT)
    assert len(messages) == 2
    image, info = messages
    assert image.data_type == ismrmrd.DATATYPE_INT and image.image_series_index == 4
    np.testing.assert_array_equal(image.data, pixels)
    assert image.meta["k"] == "v"
    assert info == ServerText("[Gadget] INFO: fine")
