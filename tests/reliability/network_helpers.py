"""Shared pieces of the network reliability tests (issue 10, items 5, 6, 12, 13): a tiny scan, a
worker subprocess, hostile peers over real loopback sockets, and memory readings from /proc.

Every wait is a hang guard (generous), never a verdict on speed.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import ismrmrd
import numpy as np
from gadgetron.types.recon_data import ReconData

from gadgets.buffer import AcquisitionBuffer
from gadgets.io.ismrmrd_io import RawFile
from gadgets.io.simulated_scan import write_simulated_scan
from tests.gadgets.harness import (
    CLOSE,
    CONFIG,
    ERROR,
    HEADER,
    HarnessResult,
    _receive,
    config_xml,
    encode_item,
    encode_string,
)
from tests.gadgets.test_worker import RunningWorker, play_gadgetron  # noqa: F401 - re-exported

#: Hang guard of every wait in these tests (seconds).
GUARD = 120.0
U16, U32, U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")
RECON_DATA = 1023

#: The tiny scan: 1 slice, 4 phases, 2 coils, recon matrix 16 x 12 (readout 2x oversampled).
TINY_SCAN = dict(n_slices=1, n_phases=4, n_coils=2, matrix=(16, 12), acceleration=2.0, pattern="ktGaussian",
                 n_acs=4, modality="cine", seed=3, noise_scan=False, noise_level=0.01)


def make_tiny_scan(folder: Path) -> tuple[Path, Any, str, list[ReconData]]:
    """(raw file, header, header XML, ReconData items of the buffer) of :data:`TINY_SCAN`."""
    path = folder / "tiny_scan.h5"
    write_simulated_scan(path, **TINY_SCAN)
    with RawFile(path) as raw:
        header, xml, acquisitions = raw.header, raw.xml, list(raw.acquisitions())
    recon_data = list(AcquisitionBuffer()(iter(acquisitions), header))
    return path, header, xml, recon_data


def handshake(port: int, xml: str, properties: dict | None = None, *, timeout: float = GUARD) -> socket.socket:
    """A connection to the worker that has sent CONFIG and HEADER (and nothing else yet)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(encode_string(CONFIG, config_xml(properties or {"checkpoint": "none"})))
    sock.sendall(encode_string(HEADER, xml))
    return sock


def recon_data_claim(elements_log2: int = 27) -> bytes:
    """A ReconData message head claiming a complex64 array of 2**elements_log2 samples, and no data."""
    dims = [2 ** elements_log2, 1, 1, 1, 1, 1, 1]
    return U16.pack(RECON_DATA) + U64.pack(1) + U64.pack(len(dims)) + b"".join(U64.pack(d) for d in dims)


def read_answer(sock: socket.socket, timeout: float = GUARD) -> tuple[list[str], bool]:
    """(ERROR texts, whether CLOSE came) from the worker, until CLOSE or the connection ends."""
    result = HarnessResult()
    sock.settimeout(timeout)
    _receive(sock, result, threading.Event())
    return result.errors, result.closed


def wait_closed_by_peer(sock: socket.socket, timeout: float = GUARD) -> bytes:
    """Everything the peer still sends until it closes (hang guard ``timeout``)."""
    sock.settimeout(timeout)
    received = b""
    while True:
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not piece:
            return received
        received += piece


def error_texts(data: bytes) -> list[str]:
    """The texts of the ERROR messages in a byte stream from the worker (CLOSE and others skipped)."""
    texts, position = [], 0
    while position + 2 <= len(data):
        (message_id,) = U16.unpack_from(data, position)
        position += 2
        if message_id == ERROR and position + 8 <= len(data):
            (length,) = U64.unpack_from(data, position)
            position += 8
            texts.append(data[position:position + length].decode("utf-8", "replace"))
            position += length
        elif message_id != CLOSE:
            break
    return texts


def proc_memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set) of a process, in KiB, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def images_of(result: HarnessResult) -> list[ismrmrd.Image]:
    return [item for item in result.items if isinstance(item, ismrmrd.Image)]


def assert_same_images(got: list[ismrmrd.Image], expected: list[ismrmrd.Image]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.data.shape == b.data.shape
        assert np.array_equal(a.data, b.data)
        assert np.isfinite(a.data).all()


def start_worker(*args: str, env: dict[str, str] | None = None) -> tuple[RunningWorker, int]:
    worker = RunningWorker(*args, env=env or {})
    try:
        return worker, worker.wait_ready()
    except BaseException:
        worker.kill()
        raise


def stop_worker(worker: RunningWorker) -> int:
    import signal

    if worker.proc.poll() is None:
        worker.proc.send_signal(signal.SIGTERM)
    try:
        return worker.wait_exit(GUARD)
    finally:
        worker.kill()
        for pipe in (worker.proc.stdout, worker.proc.stderr):
            if pipe is not None:
                pipe.close()


def deadline_loop(seconds: float = GUARD):
    """Iterate until the hang guard passes (then fail)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        yield
    raise AssertionError(f"hang guard of {seconds:g} s passed")


__all__ = ["GUARD", "TINY_SCAN", "make_tiny_scan", "handshake", "recon_data_claim", "read_answer",
           "wait_closed_by_peer", "error_texts", "proc_memory_kib", "images_of", "assert_same_images",
           "start_worker", "stop_worker", "play_gadgetron", "encode_item", "deadline_loop", "RunningWorker"]
