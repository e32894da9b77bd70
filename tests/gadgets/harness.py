"""Plays Gadgetron 4.7.2's part of the external-node protocol over a real loopback socket.

``run_gadget(module, target, header_xml=..., items=...)`` does what Gadgetron's external Python
node does (``apps/gadgetron/connection/nodes/external/Python.cpp`` and ``nodes/common``): binds an
ephemeral port, starts ``sys.executable -m gadgetron PORT MODULE TARGET`` with the repository on
PYTHONPATH (from a scratch working directory, so ``gadgets`` resolves through PYTHONPATH as it
would from ``$GADGETRON_HOME/share/gadgetron/python``), accepts the connection, sends CONFIG (2,
the node's ``<configuration>`` as pugixml prints it), HEADER (3), the items (serialised with
gadgetron-python's writers) and CLOSE (4), and reads back items, ERROR (8, uint64 length + text,
as ``Serialization::read`` does) and CLOSE. A reader thread receives while the main thread sends,
as Gadgetron does; after an ERROR the harness stops sending and sends CLOSE, as Gadgetron's
``ExternalChannel`` does (``outbound->close()`` on error). Every wait has a timeout and the child is always reaped.

``disappear=True`` closes the socket without CLOSE after the items and records whether the child
then exits by itself, and the CPU time it used meanwhile (a gadgetron-python 1.4.1 child spins at
100% CPU forever there). The wait ends when the child exits, when it has used ``spin_cpu_seconds``
of CPU since the disappearance (a spin: decided by CPU used, not by wall time, so a busy machine only
makes the wait longer, never changes the verdict), or at ``exit_timeout`` (a hang guard).

Also here: a small synthetic scan builder (ISMRMRD header XML + acquisitions) for the gadget tests,
and ``assert_items_equal`` for byte-exact comparison of stream items.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import ismrmrd
import numpy as np
from gadgetron.external import readers
from gadgetron.types.image_array import read_image_array
from gadgetron.types.recon_data import ReconData, read_recon_data

from gadgets.protocol import stream

REPO_ROOT = Path(__file__).resolve().parents[2]

CONFIG, HEADER, CLOSE, ERROR = 2, 3, 4, 8
ACQUISITION, IMAGE, RECON_DATA, IMAGE_ARRAY, WAVEFORM = 1008, 1022, 1023, 1024, 1026

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class HarnessError(RuntimeError):
    """The harness itself could not complete (child never connected, protocol violation...)."""


# --------------------------------------------------------------------------- messages


def config_xml(properties: Mapping[str, Any] | None) -> str:
    """The CONFIG text Gadgetron sends: pugixml's ``save`` of the node's ``<configuration>``.

    ``None`` stands for a node without ``<configuration>``: only the XML declaration is sent.
    """
    if properties is None:
        return '<?xml version="1.0"?>\n'
    lines = ['<?xml version="1.0"?>', "<configuration>"]
    for name, value in properties.items():
        lines.append(f"\t<property name={quoteattr(str(name))} value={quoteattr(str(value))} />")
    lines.append("</configuration>")
    return "\n".join(lines) + "\n"


def encode_item(item: Any) -> bytes:
    """One message (id + body) for ``item`` as it is (no dtype conversion or check), serialised by
    gadgetron-python's writers."""
    try:
        return stream.encode_item(item, convert=False)
    except stream.UnsupportedItemError:
        raise HarnessError(f"the harness cannot send {type(item).__name__}") from None


def encode_string(message_id: int, text: str | bytes) -> bytes:
    payload = text.encode("utf-8") if isinstance(text, str) else text
    return _U16.pack(message_id) + _U32.pack(len(payload)) + payload


class _SocketReader:
    """``read(n)`` exactly n bytes from a socket with a timeout; EOFError when the peer closed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def read(self, n: int) -> bytes:
        chunks = []
        remaining = n
        while remaining:
            chunk = self.sock.recv(remaining)
            if not chunk:
                raise EOFError(f"peer closed the connection with {remaining} of {n} bytes unread")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)


_READERS = {
    ACQUISITION: readers.read_acquisition,
    IMAGE: readers.read_image,
    WAVEFORM: readers.read_waveform,
    RECON_DATA: read_recon_data,
    IMAGE_ARRAY: read_image_array,
}


@dataclass
class HarnessResult:
    """What came back from the child, and how it ended."""

    items: list[Any] = field(default_factory=list)
    message_ids: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    closed: bool = False
    protocol_error: str | None = None
    returncode: int | None = None
    exited_by_itself: bool = False
    cpu_seconds_after_disappear: float | None = None
    stdout: str = ""
    stderr: str = ""


def _receive(sock: socket.socket, result: HarnessResult, error_seen: threading.Event) -> None:
    reader = _SocketReader(sock)
    try:
        while True:
            (message_id,) = _U16.unpack(reader.read(2))
            result.message_ids.append(message_id)
            if message_id == CLOSE:
                result.closed = True
                return
            if message_id == ERROR:
                (length,) = _U64.unpack(reader.read(8))
                result.errors.append(reader.read(length).decode("utf-8", errors="replace"))
                error_seen.set()  # Gadgetron closes its outbound side on ERROR
                continue
            read = _READERS.get(message_id)
            if read is None:
                result.protocol_error = f"received illegal message id {message_id}"
                return
            result.items.append(read(reader))
    except (EOFError, OSError) as exc:
        result.protocol_error = f"{type(exc).__name__}: {exc}"


def _cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime


def run_gadget(
    module: str,
    target: str,
    *,
    header_xml: str,
    items: Sequence[Any] = (),
    properties: Mapping[str, Any] | None = None,
    disappear: bool = False,
    timeout: float = 60.0,
    exit_timeout: float = 20.0,
    spin_cpu_seconds: float | None = None,
    env: Mapping[str, str] | None = None,
    close_after: str | None = None,
    pythonpath: bool = True,
) -> HarnessResult:
    """Run ``python -m gadgetron PORT module target`` against a fake Gadgetron; see the module doc.

    ``close_after`` ``"accept"``, ``"config"`` or ``"header"``: close the socket right after accepting
    the connection, after sending CONFIG, or after HEADER (as Gadgetron does when it rejects a header
    or its side of the node fails), then wait up to ``exit_timeout`` for the child to exit by itself
    (``result.exited_by_itself``). ``pythonpath=False``: start the child without the repository on
    PYTHONPATH (it then finds the project through its installation only, as under Gadgetron).
    """
    if close_after not in (None, "accept", "config", "header"):
        raise ValueError(f"close_after must be None, 'accept', 'config' or 'header', got {close_after!r}")
    if close_after is not None:
        disappear = True
    result = HarnessResult()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    child_env = dict(os.environ)
    if pythonpath:
        child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH", "")]))
    else:
        child_env.pop("PYTHONPATH", None)
    child_env.setdefault("GADGETRON_EXTERNAL_LOG_LEVEL", "INFO")
    child_env.update(env or {})
    workdir = tempfile.TemporaryDirectory(prefix="gadget-harness-")
    stdout_file = tempfile.TemporaryFile()
    stderr_file = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gadgetron", str(port), module, target],
        env=child_env, cwd=workdir.name, stdin=subprocess.DEVNULL, stdout=stdout_file, stderr=stderr_file,
    )
    conn: socket.socket | None = None
    receiver: threading.Thread | None = None
    try:
        deadline = time.monotonic() + timeout
        while conn is None:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                if proc.poll() is not None:
                    raise HarnessError(f"child exited with {proc.returncode} before connecting") from None
                if time.monotonic() > deadline:
                    raise HarnessError(f"child did not connect within {timeout} s") from None
        conn.settimeout(timeout)
        error_seen = threading.Event()
        receiver = threading.Thread(target=_receive, args=(conn, result, error_seen), daemon=True)
        receiver.start()
        try:
            if close_after in (None, "config", "header"):
                conn.sendall(encode_string(CONFIG, config_xml(properties)))
            if close_after in (None, "header"):
                conn.sendall(encode_string(HEADER, header_xml))
            for item in items if close_after is None else ():
                if error_seen.is_set():  # as Gadgetron: after an ERROR nothing more is pushed
                    break
                conn.sendall(encode_item(item))
            if not disappear:
                conn.sendall(_U16.pack(CLOSE))
        except OSError as exc:  # the child may already have failed and gone
            result.protocol_error = result.protocol_error or f"send failed: {exc}"
        if disappear:
            before = _cpu_ticks(proc.pid)
            last = before
            conn.shutdown(socket.SHUT_RDWR)
            conn.close()
            conn = None
            stop = time.monotonic() + exit_timeout
            clock = os.sysconf("SC_CLK_TCK")
            while proc.poll() is None and time.monotonic() < stop:
                ticks = _cpu_ticks(proc.pid)
                last = ticks if ticks is not None else last
                if (spin_cpu_seconds is not None and before is not None and last is not None
                        and (last - before) / clock >= spin_cpu_seconds):
                    break  # it is spinning: enough CPU burnt while it should be gone
                time.sleep(0.05)
            result.exited_by_itself = proc.poll() is not None
            if before is not None and last is not None:
                result.cpu_seconds_after_disappear = (last - before) / os.sysconf("SC_CLK_TCK")
        else:
            receiver.join(timeout)
            if receiver.is_alive():
                result.protocol_error = result.protocol_error or f"no CLOSE within {timeout} s"
            try:
                proc.wait(exit_timeout)
                result.exited_by_itself = True
            except subprocess.TimeoutExpired:
                result.exited_by_itself = False
    finally:
        if conn is not None:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        listener.close()
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - kill does not fail on Linux
            pass
        if receiver is not None:
            receiver.join(5)
        result.returncode = proc.returncode
        stdout_file.seek(0)
        stderr_file.seek(0)
        result.stdout = stdout_file.read().decode("utf-8", errors="replace")
        result.stderr = stderr_file.read().decode("utf-8", errors="replace")
        stdout_file.close()
        stderr_file.close()
        workdir.cleanup()
    return result


# --------------------------------------------------------------------------- comparisons


def header_bytes(header: Any) -> bytes:
    return bytes(memoryview(header))


def assert_items_equal(actual: Sequence[Any], expected: Sequence[Any]) -> None:
    """Byte-exact equality of two item streams (headers, data, trajectories, sampling)."""
    assert len(actual) == len(expected), f"{len(actual)} items, expected {len(expected)}"
    for number, (a, e) in enumerate(zip(actual, expected)):
        assert type(a) is type(e), f"item {number}: {type(a).__name__} != {type(e).__name__}"
        if isinstance(e, ismrmrd.Acquisition):
            assert header_bytes(a.getHead()) == header_bytes(e.getHead()), f"item {number}: header differs"
            np.testing.assert_array_equal(a.data, e.data)
            np.testing.assert_array_equal(a.traj, e.traj)
            assert a.data.dtype == e.data.dtype == np.complex64
        elif isinstance(e, ismrmrd.Image):
            assert header_bytes(a.getHead()) == header_bytes(e.getHead()), f"item {number}: header differs"
            np.testing.assert_array_equal(a.data, e.data)
            assert a.attribute_string == e.attribute_string
        elif isinstance(e, ReconData):
            assert len(a.bits) == len(e.bits)
            for bit_a, bit_e in zip(a.bits, e.bits):
                _assert_buffer_equal(bit_a.data, bit_e.data)
                assert (bit_a.ref is None) == (bit_e.ref is None)
                if bit_e.ref is not None:
                    _assert_buffer_equal(bit_a.ref, bit_e.ref)
        else:
            raise AssertionError(f"item {number}: cannot compare {type(e).__name__}")


def _assert_buffer_equal(a: Any, e: Any) -> None:
    assert a.data.shape == e.data.shape
    np.testing.assert_array_equal(np.asarray(a.data), np.asarray(e.data))
    assert np.asarray(a.data).dtype == np.complex64
    for name in ("trajectory", "density"):
        va, ve = getattr(a, name), getattr(e, name)
        assert (va is None) == (ve is None), name
        if ve is not None:
            np.testing.assert_array_equal(va, ve)
    assert a.headers.shape == e.headers.shape
    for ha, he in zip(a.headers.ravel(order="F"), e.headers.ravel(order="F")):
        assert header_bytes(ha) == header_bytes(he)
    assert bytes(a.sampling) == bytes(e.sampling)


# --------------------------------------------------------------------------- synthetic scans


@dataclass
class SyntheticScan:
    """A tiny Cartesian multi-coil cine scan: header XML and acquisitions in scanner order."""

    header_xml: str
    acquisitions: list[ismrmrd.Acquisition]
    sampled_lines: list[int]
    acs_lines: list[int]

    @property
    def header(self) -> ismrmrd.xsd.ismrmrdHeader:
        return ismrmrd.xsd.CreateFromDocument(self.header_xml)


_HEADER_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  <acquisitionSystemInformation>
    <systemVendor>SIMULATED</systemVendor>
    <systemFieldStrength_T>3.0</systemFieldStrength_T>
    <relativeReceiverNoiseBandwidth>{bandwidth}</relativeReceiverNoiseBandwidth>
    <receiverChannels>{n_coils}</receiverChannels>
  </acquisitionSystemInformation>
  <experimentalConditions><H1resonanceFrequency_Hz>127000000</H1resonanceFrequency_Hz></experimentalConditions>
  <encoding>
    <encodedSpace>
      <matrixSize><x>{enc_x}</x><y>{n_e1}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>{enc_fov}</x><y>300</y><z>8</z></fieldOfView_mm>
    </encodedSpace>
    <reconSpace>
      <matrixSize><x>{n_ro}</x><y>{n_e1}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>300</x><y>300</y><z>8</z></fieldOfView_mm>
    </reconSpace>
    <encodingLimits>
      <kspace_encoding_step_1><minimum>0</minimum><maximum>{e1_max}</maximum><center>{e1_center}</center></kspace_encoding_step_1>
      <kspace_encoding_step_2><minimum>0</minimum><maximum>0</maximum><center>0</center></kspace_encoding_step_2>
      <slice><minimum>0</minimum><maximum>{slice_max}</maximum><center>0</center></slice>
      <phase><minimum>0</minimum><maximum>{phase_max}</maximum><center>0</center></phase>
      <set><minimum>0</minimum><maximum>0</maximum><center>0</center></set>
    </encodingLimits>
    <trajectory>cartesian</trajectory>
    {parallel}
  </encoding>
</ismrmrdHeader>
"""

_PARALLEL = """<parallelImaging>
      <accelerationFactor><kspace_encoding_step_1>{r}</kspace_encoding_step_1><kspace_encoding_step_2>1</kspace_encoding_step_2></accelerationFactor>
      <calibrationMode>embedded</calibrationMode>
    </parallelImaging>"""


def synthetic_scan(
    rng: np.random.Generator,
    *,
    n_coils: int = 3,
    n_ro: int = 10,
    oversampling: int = 2,
    n_e1: int = 11,
    n_phases: int = 3,
    n_slices: int = 2,
    acceleration: int = 2,
    n_acs: int = 4,
    noise_samples: int = 48,
    bandwidth: float = 0.79,
    reverse_odd_lines: bool = False,
    navigators: bool = False,
) -> SyntheticScan:
    """A seeded tiny scan: an optional noise scan (dwell 5 us), then per slice and phase the lines
    ``0, R, 2R, ...`` plus ``n_acs`` central lines (dwell 2.5 us). Lines on the grid inside the
    calibration region carry ``PARALLEL_CALIBRATION_AND_IMAGING``, off-grid calibration lines
    ``PARALLEL_CALIBRATION``. Coils mix correlated noise into every line, so prewhitening matters.
    """
    enc_x = n_ro * oversampling
    centre = n_e1 // 2
    acs = list(range(centre - n_acs // 2, centre - n_acs // 2 + n_acs)) if n_acs else []
    grid = list(range(0, n_e1, acceleration))
    lines = sorted(set(grid) | set(acs))
    parallel = _PARALLEL.format(r=acceleration) if acceleration > 1 or n_acs else ""
    xml = _HEADER_TEMPLATE.format(
        bandwidth=bandwidth, n_coils=n_coils, enc_x=enc_x, n_e1=n_e1, enc_fov=300 * oversampling, n_ro=n_ro,
        e1_max=n_e1 - 1, e1_center=centre, slice_max=n_slices - 1, phase_max=n_phases - 1, parallel=parallel,
    )
    mixing = (rng.standard_normal((n_coils, n_coils)) + 1j * rng.standard_normal((n_coils, n_coils))) * 0.3
    mixing += np.eye(n_coils)

    def noisy(shape: tuple[int, int]) -> np.ndarray:
        white = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        return (mixing @ white).astype(np.complex64)

    acquisitions: list[ismrmrd.Acquisition] = []
    counter = 0

    def new(data: np.ndarray, dwell: float) -> ismrmrd.Acquisition:
        nonlocal counter
        acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(data, dtype=np.complex64))
        acq.version = 1
        acq.scan_counter = counter
        acq.sample_time_us = dwell
        acq.available_channels = n_coils
        counter += 1
        return acq

    if noise_samples:
        noise = new(noisy((n_coils, noise_samples)), 5.0)
        noise.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
        acquisitions.append(noise)
    for slice_ in range(n_slices):
        for phase in range(n_phases):
            for number, e1 in enumerate(lines):
                if navigators and number == 0:
                    nav = new(noisy((n_coils, enc_x)), 2.5)
                    nav.set_flag(ismrmrd.ACQ_IS_NAVIGATION_DATA)
                    nav.idx.slice = slice_
                    nav.idx.phase = phase
                    acquisitions.append(nav)
                data = noisy((n_coils, enc_x)) + 5 * np.exp(-((np.arange(enc_x) - enc_x / 2) ** 2) / 8.0)
                acq = new(data, 2.5)
                acq.center_sample = enc_x // 2
                acq.idx.kspace_encode_step_1 = e1
                acq.idx.slice = slice_
                acq.idx.phase = phase
                if e1 in acs:
                    acq.set_flag(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING if e1 in grid
                                 else ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
                if reverse_odd_lines and e1 % 2:
                    acq.set_flag(ismrmrd.ACQ_IS_REVERSE)
                    acq.data[:] = acq.data[:, ::-1].copy()
                if number == 0:
                    acq.set_flag(ismrmrd.ACQ_FIRST_IN_SLICE)
                if number == len(lines) - 1 and phase == n_phases - 1:
                    acq.set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
                acquisitions.append(acq)
    return SyntheticScan(xml, acquisitions, grid, acs)


# --------------------------------------------------------------------------- gadgets for protocol tests


from gadgets.protocol.params import Param  # noqa: E402
from gadgets.protocol.stream import Gadget  # noqa: E402


class EchoGadget(Gadget):
    """Passes every item through; ``fail_after`` > 0 raises after that many acquisitions."""

    PARAMETERS = (Param("fail_after", int, 0, low=0, doc="raise after this many acquisitions (0: never)"),)

    def start(self, header: Any) -> None:
        self._seen = 0

    def accepts(self, item: Any) -> bool:
        return isinstance(item, ismrmrd.Acquisition)

    def process(self, item: Any) -> Any:
        self._seen += 1
        if self.params.fail_after and self._seen > self.params.fail_after:
            raise RuntimeError(f"EchoGadget was told to fail after {self.params.fail_after} acquisitions")
        return (item,)
