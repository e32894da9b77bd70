"""Issue 10, item 5: lengths from the wire are untrusted; nothing is allocated from a claim.

Cases: the worker (ReconData, acquisition, waveform, image, ImageArray claims and CONFIG/HEADER
lengths), the gadget child's readers (the same ``guard_connection`` path, read in-process over a
socket pair), the replay client reading a hostile server (image attribute and data lengths,
TEXT/ERROR/RESPONSE lengths), and the ERROR reader of Gadgetron's side (:class:`ExternalPeer`).
Each expects a clear error naming the claim and the limit, no allocation of the claim (peak RSS of
the worker from /proc, or tracemalloc in-process), and a worker that still serves a valid scan.
"""

from __future__ import annotations

import ctypes
import socket
import subprocess
import sys
import threading
import tracemalloc

import ismrmrd
import numpy as np
import pytest

from gadgets.protocol import wire_limits
from gadgets.protocol.external_peer import ExternalGadgetError, ExternalPeer
from gadgets.protocol.gadgetron_client import GadgetronClient
from gadgets.protocol.stream import SafeSocket, guard_connection, iter_items
from gadgets.tools.client import stream_file
from tests.gadgets.harness import CONFIG, HEADER, REPO_ROOT, config_xml, encode_string
from tests.reliability.network_helpers import (
    GUARD,
    U16,
    U32,
    U64,
    handshake,
    images_of,
    play_gadgetron,
    proc_memory_kib,
    read_answer,
    recon_data_claim,
    start_worker,
    stop_worker,
)

MIB = 2**20


def acquisition_claim() -> bytes:
    head = ismrmrd.AcquisitionHeader()
    head.number_of_samples, head.active_channels, head.trajectory_dimensions = 65535, 65535, 0
    return U16.pack(1008) + bytes(head)


def waveform_claim() -> bytes:
    head = ismrmrd.WaveformHeader()
    head.channels, head.number_of_samples = 65535, 65535
    return U16.pack(1026) + bytes(head)


def image_claim(attribute_length: int = 2**62, matrix: int = 1) -> bytes:
    head = ismrmrd.ImageHeader()
    head.data_type = ismrmrd.DATATYPE_CXDOUBLE
    head.matrix_size[:] = (matrix, matrix, 1)
    head.channels = 1
    return U16.pack(1022) + bytes(head) + U64.pack(attribute_length)


def vector_claim() -> bytes:
    """A ReconData whose dimension vector claims 2**61 entries."""
    return U16.pack(1023) + U64.pack(1) + U64.pack(2**61)


def image_array_claim() -> bytes:
    return U16.pack(1024) + U64.pack(7) + b"".join(U64.pack(d) for d in (4096, 4096, 64, 1, 1, 1, 1))


CLAIMS = {
    "recon_data_1GiB": recon_data_claim(27),
    "recon_data_vector": vector_claim(),
    "acquisition_65535x65535": acquisition_claim(),
    "waveform_65535x65535": waveform_claim(),
    "image_attributes_2^62": image_claim(),
    "image_data_65535^2": image_claim(attribute_length=0, matrix=65535),
    "image_array_16GiB": image_array_claim(),
}


@pytest.fixture(scope="module")
def worker_none(tmp_path_factory):
    worker, port = start_worker("--checkpoint", "none",
                                env={"CARDIOMM_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))})
    yield worker, port
    assert stop_worker(worker) == 0, worker.log


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_worker_refuses_a_claim_before_allocating(worker_none, tiny_scan, name):
    worker, port = worker_none
    _path, _header, xml, recon_data = tiny_scan
    before = proc_memory_kib(worker.proc.pid)["VmHWM"]
    with handshake(port, xml) as sock:
        sock.sendall(CLAIMS[name])  # and then nothing: the claim idles, as in the issue
        errors, closed = read_answer(sock)
    assert closed and len(errors) == 1, (errors, worker.log)
    assert "claims" in errors[0] and "limit" in errors[0], errors[0]
    assert "/" not in errors[0].split("limit", 1)[1], errors[0]  # no host path in what the peer reads
    grown_mib = (proc_memory_kib(worker.proc.pid)["VmHWM"] - before) / 1024
    assert grown_mib < 64, f"worker peak RSS grew by {grown_mib:.0f} MiB for the claim {name}"
    result = play_gadgetron(port, xml, recon_data, {"checkpoint": "none"})  # still serving
    assert result.errors == [] and result.closed and len(images_of(result)) == 4


@pytest.mark.slow
@pytest.mark.parametrize("which", ["config", "header"])
def test_worker_refuses_a_handshake_length_claim(worker_none, tiny_scan, which):
    worker, port = worker_none
    _path, _header, xml, _ = tiny_scan
    before = proc_memory_kib(worker.proc.pid)["VmHWM"]
    with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as sock:
        if which == "config":
            sock.sendall(U16.pack(CONFIG) + U32.pack(0xFFFFFFFF))
        else:
            sock.sendall(encode_string(CONFIG, config_xml({})) + U16.pack(HEADER) + U32.pack(0xFFFFFFF0))
        errors, _closed = read_answer(sock)
    assert len(errors) == 1 and "claim" in errors[0] and "handshake" in errors[0], (errors, worker.log)
    assert (proc_memory_kib(worker.proc.pid)["VmHWM"] - before) / 1024 < 64


def _guarded_pair(header) -> tuple[socket.socket, object]:
    """The gadget child's side: a socket pair whose reading end is guarded as ``Gadget.handle`` guards it."""
    ours, theirs = socket.socketpair()

    class Connection:  # what gadgetron-python's Connection holds after the handshake
        def __init__(self) -> None:
            from gadgetron.external.connection import Connection as GtConnection

            self.socket = GtConnection.SocketWrapper(theirs)
            self.readers = GtConnection._default_readers()
            self.header = header

    connection = Connection()
    guard_connection(connection)
    return ours, connection


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_gadget_child_readers_refuse_claims(tiny_scan, name):
    _path, header, _xml, _ = tiny_scan
    ours, connection = _guarded_pair(header)
    assert isinstance(connection.socket, SafeSocket)
    with ours:
        ours.sendall(CLAIMS[name])
        tracemalloc.start()
        try:
            with pytest.raises(wire_limits.MessageTooLarge, match="limit"):
                next(iter_items(connection))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        connection.socket.socket.close()
    assert peak < 4 * MIB, f"{name}: {peak} bytes allocated"


def test_message_limit_follows_the_header(tiny_scan):
    _path, header, _xml, _ = tiny_scan
    limit, why = wire_limits.message_limit(header)
    elements, _, _ = wire_limits.header_elements(header)
    # 2 x oversampled readout x lines x z x coils (2, counted as at least 32) x phases
    assert elements == 2 * 32 * 12 * 1 * 32 * 4
    assert limit < 16 * MIB and "matrix 64x12x1, 32 coils" in why
    assert wire_limits.message_limit(header, ceiling=MIB)[0] == MIB  # the ceiling wins
    with pytest.raises(ValueError, match="positive"):
        wire_limits.ceiling_bytes(0)


class HostileServer:
    """Accepts one connection, sends ``payload`` at once, then reads and drops everything until
    the client closes (hang guard ``GUARD``)."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(GUARD)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(GUARD)
            try:
                conn.sendall(self.payload)
                while conn.recv(65536):
                    pass
            except OSError:
                pass
        self.listener.close()

    def close(self) -> None:
        self.thread.join(GUARD)
        self.listener.close()


SERVER_CLAIMS = {
    "image_attributes_2^62": image_claim(),
    "image_data_65535^2": image_claim(attribute_length=0, matrix=65535),
    "text_4GiB": U16.pack(5) + U32.pack(0xFFFFFFFF),
    "error_4GiB": U16.pack(8) + U32.pack(0xFFFFFFFF),
    "response_2^62": U16.pack(7) + U64.pack(1) + U64.pack(2**62),
    "acquisition_65535x65535": acquisition_claim(),
}


@pytest.mark.parametrize("name", sorted(SERVER_CLAIMS))
def test_replay_client_refuses_a_hostile_servers_claims(tiny_scan, name):
    path = tiny_scan[0]
    server = HostileServer(SERVER_CLAIMS[name])
    tracemalloc.start()
    try:
        result = stream_file("127.0.0.1", server.port, path, config_name="default.xml", io_timeout=GUARD)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        server.close()
    assert not result.ok and not result.images
    assert any("claims" in e and ("limit" in e or "allowed" in e) for e in result.errors), result.errors
    assert peak < 32 * MIB, f"{name}: {peak / MIB:.1f} MiB allocated"


@pytest.mark.slow
def test_replay_cli_reports_a_hostile_server_in_one_line(tiny_scan, tmp_path):
    server = HostileServer(image_claim())
    try:
        run = subprocess.run([sys.executable, "-m", "gadgets.tools.replay", str(tiny_scan[0]), "--server",
                              f"127.0.0.1:{server.port}", "--config", "default.xml", "-o", str(tmp_path / "out.h5"),
                              "-q"], capture_output=True, text=True, timeout=GUARD, cwd=REPO_ROOT)
    finally:
        server.close()
    assert run.returncode == 3, run.stderr
    assert "Traceback" not in run.stderr and "claims" in run.stderr, run.stderr
    assert not (tmp_path / "out.h5").exists()


def test_client_budget_is_lowered_by_the_header(tiny_scan):
    _path, header, xml, _ = tiny_scan
    client = GadgetronClient(max_message_bytes=512 * MIB)
    assert client.budget.limit == 512 * MIB
    ours, theirs = socket.socketpair()
    with ours, theirs:
        client._sock = ours
        client.send_header(xml)
    assert client.budget.limit == wire_limits.message_limit(header, 512 * MIB)[0] < 512 * MIB


@pytest.mark.parametrize("length", [2**62, wire_limits.TEXT_LIMIT_BYTES + 1])
def test_error_reader_of_gadgetrons_side_refuses_a_long_error(tiny_scan, length):
    _path, _header, xml, recon_data = tiny_scan
    server = HostileServer(U16.pack(8) + U64.pack(length) + b"x" * 100)
    tracemalloc.start()
    try:
        with pytest.raises(ExternalGadgetError, match="claiming") as caught:
            list(ExternalPeer("127.0.0.1", server.port, {}, timeout=GUARD).run(iter(recon_data), xml))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        server.close()
    assert caught.value.kind == "connection"
    assert peak < 32 * MIB


def test_external_peer_refuses_an_oversized_item(tiny_scan):
    _path, _header, xml, recon_data = tiny_scan
    server = HostileServer(recon_data_claim(30))
    try:
        with pytest.raises(ExternalGadgetError, match="limit"):
            list(ExternalPeer("127.0.0.1", server.port, {}, timeout=GUARD).run(iter(recon_data), xml))
    finally:
        server.close()


@pytest.mark.slow
def test_large_reads_grow_with_the_data(tiny_scan):
    """A body above one chunk is read piece by piece: a claim with no data allocates nothing."""
    from gadgets.protocol.stream import recv_exactly

    ours, theirs = socket.socketpair()
    with ours, theirs:
        payload = np.arange(3 * MIB // 4, dtype=np.float32).tobytes()  # 3 MiB: four pieces
        sender = threading.Thread(target=ours.sendall, args=(payload,))
        sender.start()
        data = recv_exactly(theirs, len(payload))
        sender.join(GUARD)
        assert bytes(data) == payload
        ours.sendall(b"abc")
        ours.shutdown(socket.SHUT_WR)
        tracemalloc.start()
        try:
            with pytest.raises(ConnectionError):
                recv_exactly(theirs, 2**40)  # 1 TiB claimed, 3 bytes sent
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 4 * MIB
    assert ctypes.sizeof(ismrmrd.AcquisitionHeader) == 340
