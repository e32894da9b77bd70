"""Stream ISMRMRD raw data to a Gadgetron 4.x server, the way ``gadgetron_ismrmrd_client`` does.

The byte protocol (little-endian; every message starts with a ``uint16`` id) follows Gadgetron's
own C++ client (``apps/clients/gadgetron_ismrmrd_client``) and the server's connection code
(``core/connection``: ``ConfigConnection``, ``Core.cpp``, ``Writers.cpp``):

client -> server
    1     CONFIG_FILE    1024-byte null-padded name of a config file on the server
    2     CONFIG_SCRIPT  uint32 length + stream-config XML text
    3     HEADER         uint32 length + ISMRMRD XML header
    1008  acquisition    AcquisitionHeader (340 bytes) + trajectory float32
                         (number_of_samples x trajectory_dimensions) + data complex64
                         (active_channels x number_of_samples)
    1026  waveform       WaveformHeader (40 bytes) + data uint32 (channels x number_of_samples)
    4     CLOSE

server -> client
    1022  image          ImageHeader (198 bytes) + uint64 attribute length + attribute XML
                         (ISMRMRD meta) + data in the header's ``data_type``,
                         (channels, z, y, x) in C order
    1008 / 1026          acquisitions / waveforms, when a chain returns them
    5     TEXT           uint32 length + text. Gadgetron 4.x reports a failed stream this way:
                         ``"[<location>] ERROR: <message>"`` (``ErrorSender`` -> ``TextWriter``)
    8     ERROR          uint32 length + text (what an external gadget sends; accepted too)
    7     RESPONSE       uint64 correlation id + uint64 length + text (answer to a query)
    4     CLOSE          end of the results

The sender and the receiver run concurrently (:func:`stream_file` reads on a background thread)
so a large scan cannot deadlock on full socket buffers. Every socket operation has a timeout; a
server that goes away without CLOSE ends the read at once (no spin, no hang).

Why not ``ismrmrd.serialization.ProtocolSerializer`` or ``Acquisition.serialize_into``: those write
the arrays in whatever dtype the caller holds (a complex128 acquisition would be sent as 16-byte
samples and desynchronise the stream), and ismrmrd-python maps ``DATATYPE_INT`` images to int64.
This module writes the wire dtypes itself and reads images with the C++ library's element sizes.
Raw files and their header versions are read through :mod:`gadgets.ismrmrd_io` (``RawFile``,
block reads that give the same objects as ``ismrmrd.Dataset.read_acquisition``, much faster).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import ismrmrd
import numpy as np
from gadgetron.external import constants as _gt

from . import ismrmrd_io
from .stream import PeerVanished, recv_exactly
from .wire_limits import SAFE_READERS, TEXT_LIMIT_BYTES, MessageBudget, MessageTooLarge, ceiling_bytes, message_limit

logger = logging.getLogger(__name__)

# Message ids (gadgetron-python's constants, which match Gadgetron's C++ enums).
MSG_CONFIG_FILE = _gt.GADGET_MESSAGE_FILENAME  # 1
MSG_CONFIG_SCRIPT = _gt.GADGET_MESSAGE_CONFIG  # 2
MSG_HEADER = _gt.GADGET_MESSAGE_HEADER  # 3
MSG_CLOSE = _gt.GADGET_MESSAGE_CLOSE  # 4
MSG_TEXT = _gt.GADGET_MESSAGE_TEXT  # 5
MSG_QUERY = _gt.GADGET_MESSAGE_QUERY  # 6
MSG_RESPONSE = _gt.GADGET_MESSAGE_RESPONSE  # 7
MSG_ERROR = _gt.GADGET_MESSAGE_ERROR  # 8
MSG_ACQUISITION = _gt.GADGET_MESSAGE_ISMRMRD_ACQUISITION  # 1008
MSG_IMAGE = _gt.GADGET_MESSAGE_ISMRMRD_IMAGE  # 1022
MSG_WAVEFORM = _gt.GADGET_MESSAGE_ISMRMRD_WAVEFORM  # 1026

DEFAULT_PORT = 9002
CONFIG_FILE_NAME_BYTES = 1024
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Longest wait for any single socket read or write (a reconstruction may think for minutes).
DEFAULT_IO_TIMEOUT = 600.0

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

# "[Connection Main Thread] ERROR: ..." is how Gadgetron 4.x reports a failure in a TEXT message.
_ERROR_TEXT = re.compile(r"\s*(\[[^\]]*\]\s*)?ERROR\b")


class GadgetronServerError(RuntimeError):
    """The server reported one or more errors (or broke the connection); ``messages`` holds them."""

    def __init__(self, messages: Sequence[str]):
        self.messages = list(messages)
        text = "\n".join(self.messages) if self.messages else "unknown error"
        super().__init__(f"Gadgetron reported {len(self.messages)} error(s):\n{text}")


class GadgetronConnectionError(ConnectionError):
    """The connection broke: the server vanished without CLOSE, timed out or spoke garbage."""


@dataclasses.dataclass(frozen=True)
class ServerText:
    """A TEXT (5) or RESPONSE (7) message that is not an error report."""

    text: str
    message_id: int = MSG_TEXT


@dataclasses.dataclass(frozen=True)
class ServerError:
    """A server error report: ERROR (8), or a TEXT (5) of the form ``[where] ERROR: ...``."""

    message: str
    message_id: int = MSG_TEXT


ServerMessage = ismrmrd.Image | ismrmrd.Acquisition | ismrmrd.Waveform | ServerText | ServerError


class _PeerClosed(Exception):
    """Internal: recv returned no bytes (or the connection was reset)."""

    def __init__(self, partial: bool):
        super().__init__("peer closed")
        self.partial = partial


# --------------------------------------------------------------------------- header version


def check_header_version(xml: str | bytes, source: str = "header") -> int | None:
    """Warn (logging) when a header's version would make Gadgetron 4.7.2 reject it; return it.

    Gadgetron 4.7.2 is built with ISMRMRD 1.14 (schema version 14) and fails a stream whose
    header carries another version with "XML header version does not match library schema
    version" (files from older converters, e.g. Debian's ismrmrd-tools 1.8, carry 8).
    """
    text = xml.decode("utf-8") if isinstance(xml, bytes) else xml
    version = ismrmrd_io.header_version(text)
    expected = ismrmrd_io.CURRENT_HEADER_VERSION
    if version is not None and version != expected:
        logger.warning(
            "%s has ISMRMRD header version %d; Gadgetron 4.7.2 (ISMRMRD schema %d) rejects it with "
            "'XML header version does not match library schema version'. Rewrite it before sending "
            "(header_version=%d, cardiomm-replay --header-version %d).",
            source, version, expected, expected, expected,
        )
    return version


_NATIVE_NOISE_ADJUST = re.compile(r"<classname>\s*NoiseAdjustGadget\s*</classname>")
_NOISE_FLAG = 1 << (ismrmrd.ACQ_IS_NOISE_MEASUREMENT - 1)


def has_noise_measurement(path: str | os.PathLike, group: str = "dataset", first: int = 256) -> bool:
    """Whether one of the first ``first`` acquisitions of the file is a noise measurement (scanners
    and converters put the noise scan first)."""
    import h5py

    with h5py.File(path, "r") as handle:
        data = handle.get(f"{group}/data")
        if data is None or len(data) == 0:
            return False
        flags = data.fields("head")[: min(first, len(data))]["flags"]
    return bool(np.any(np.asarray(flags, dtype=np.uint64) & np.uint64(_NOISE_FLAG)))


def native_noise_adjust_problem(header_xml: str | bytes, config_xml: str | None,
                                has_noise: bool) -> str | None:
    """Why Gadgetron's native NoiseAdjustGadget will fail this scan, or None.

    With a noise measurement in the scan, NoiseAdjustGadget stores the noise covariance in
    Gadgetron's storage server under the patient and measurement IDs: it needs
    ``subjectInformation/patientID`` plus ``measurementInformation/measurementID``, or a
    Siemens-style four-part measurementID (``DEVICE_PATIENT_STUDY_MEAS``). Without them Gadgetron
    4.7.2 fails the scan with only "Unknown error". ``config_xml``: the stream config sent
    (None: a config on the server, unknown here).
    """
    if not has_noise or not config_xml or not _NATIVE_NOISE_ADJUST.search(config_xml):
        return None
    text = header_xml.decode("utf-8", "replace") if isinstance(header_xml, bytes) else header_xml
    try:
        header = ismrmrd.xsd.CreateFromDocument(text)
    except Exception:  # noqa: BLE001 - an unreadable header is reported elsewhere
        return None
    subject = getattr(header, "subjectInformation", None)
    measurement = getattr(header, "measurementInformation", None)
    patient_id = getattr(subject, "patientID", None) if subject is not None else None
    measurement_id = getattr(measurement, "measurementID", None) if measurement is not None else None
    if measurement_id and (patient_id or len(str(measurement_id).split("_")) == 4):
        return None
    missing = [name for name, value in (("subjectInformation/patientID", patient_id),
                                        ("measurementInformation/measurementID", measurement_id)) if not value]
    return (f"the scan has a noise measurement and its header lacks {' and '.join(missing)}: the chain's native "
            "NoiseAdjustGadget stores the noise covariance under the patient and measurement IDs (or a four-part "
            "Siemens-style measurementID), so Gadgetron 4.7.2 will fail the scan with 'Unknown error'. Use a "
            "chain with the Python NoiseAdjust (cardiomm_cine_python), which needs no IDs, or add the IDs.")


# --------------------------------------------------------------------------- wire encoding


def encode_acquisition(acq: ismrmrd.Acquisition) -> bytes:
    """Return the payload of an acquisition message (without the id), in wire dtypes.

    ``acq.data`` must be (active_channels, number_of_samples) and ``acq.traj``
    (number_of_samples, trajectory_dimensions) as the header says; any complex / real dtype is
    converted to complex64 / float32.
    """
    if not isinstance(acq, ismrmrd.Acquisition):
        raise ValueError(f"acq must be an ismrmrd.Acquisition, got {type(acq).__name__}")
    head = acq.getHead()
    n_samples, n_channels, n_traj = (
        head.number_of_samples, head.active_channels, head.trajectory_dimensions,
    )
    data = np.asarray(acq.data)
    traj = np.asarray(acq.traj)
    if data.shape != (n_channels, n_samples):
        raise ValueError(
            f"acq.data must have shape (active_channels, number_of_samples) = "
            f"({n_channels}, {n_samples}) as its header says, got {data.shape}"
        )
    if traj.size == 0 and n_traj == 0:
        traj = np.zeros((n_samples, 0), dtype=np.float32)
    if traj.shape != (n_samples, n_traj):
        raise ValueError(
            f"acq.traj must have shape (number_of_samples, trajectory_dimensions) = "
            f"({n_samples}, {n_traj}) as its header says, got {traj.shape}"
        )
    if np.iscomplexobj(traj):
        raise ValueError(f"acq.traj must be real, got dtype {traj.dtype}")
    data_bytes = np.ascontiguousarray(data, dtype=np.complex64).tobytes()
    traj_bytes = np.ascontiguousarray(traj, dtype=np.float32).tobytes()
    return bytes(head) + traj_bytes + data_bytes


def encode_waveform(wf: ismrmrd.Waveform) -> bytes:
    """Return the payload of a waveform message: WaveformHeader + uint32 (channels, samples)."""
    if not isinstance(wf, ismrmrd.Waveform):
        raise ValueError(f"wf must be an ismrmrd.Waveform, got {type(wf).__name__}")
    head = wf.getHead()
    data = np.asarray(wf.data)
    if data.shape != (head.channels, head.number_of_samples):
        raise ValueError(
            f"wf.data must have shape (channels, number_of_samples) = "
            f"({head.channels}, {head.number_of_samples}) as its header says, got {data.shape}"
        )
    return bytes(head) + np.ascontiguousarray(data, dtype=np.uint32).tobytes()


# --------------------------------------------------------------------------- client


class GadgetronClient:
    """One connection to a Gadgetron 4.x server (context manager).

    Typical use::

        with GadgetronClient().connect("localhost", 9002) as client:
            client.send_config_name("default.xml")
            client.send_header(xml)
            for acq in acquisitions: client.send_acquisition(acq)
            client.send_close()
            for message in client.receive(): ...

    Reading and sending may happen on different threads (the send side holds a lock); send and
    receive concurrently for large scans (see :func:`stream_file`).
    """

    def __init__(self, *, io_timeout: float = DEFAULT_IO_TIMEOUT, max_message_bytes: int | None = None):
        if not io_timeout > 0:
            raise ValueError(f"io_timeout must be a positive number of seconds, got {io_timeout!r}")
        self.io_timeout = float(io_timeout)
        #: The most one message from the server may hold: the ceiling (``max_message_bytes``, else
        #: $CARDIOMM_MAX_MESSAGE_MB), lowered to what the scan's header allows once it is sent.
        self.ceiling = ceiling_bytes() if max_message_bytes is None else int(max_message_bytes)
        self.budget = MessageBudget(*message_limit(None, self.ceiling))
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        #: True once the server's CLOSE has been read.
        self.close_received = False
        #: True once our CLOSE has been sent.
        self.close_sent = False

    # -- connection

    def connect(
        self, host: str, port: int = DEFAULT_PORT, timeout: float = DEFAULT_CONNECT_TIMEOUT
    ) -> GadgetronClient:
        """Open the TCP connection (``timeout`` seconds at most); return self."""
        if self._sock is not None:
            raise RuntimeError("this client is already connected")
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        port = int(port)
        if not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, got {port}")
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.settimeout(self.io_timeout)
        self._sock = sock
        logger.debug("connected to Gadgetron at %s:%d", host, port)
        return self

    def close(self) -> None:
        """Close the socket (idempotent)."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def shutdown_send(self) -> None:
        """Half-close: no more sending (wakes a sender blocked on a dead peer)."""
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def __enter__(self) -> GadgetronClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise RuntimeError("the client is not connected (call connect first)")
        return self._sock

    # -- sending

    def _send(self, message_id: int, payload: bytes = b"") -> None:
        sock = self._socket()
        with self._send_lock:
            sock.sendall(_U16.pack(message_id) + payload)

    def send_config_name(self, name: str) -> None:
        """CONFIG_FILE (1): the name of a stream config on the server, e.g. ``default.xml``."""
        encoded = name.encode("utf-8") if isinstance(name, str) else b""
        if not encoded or b"\0" in encoded or len(encoded) >= CONFIG_FILE_NAME_BYTES:
            raise ValueError(
                f"name must be a non-empty config file name under {CONFIG_FILE_NAME_BYTES} bytes "
                f"without NUL, got {name!r}"
            )
        self._send(MSG_CONFIG_FILE, encoded.ljust(CONFIG_FILE_NAME_BYTES, b"\0"))

    def send_config_text(self, xml: str | bytes) -> None:
        """CONFIG_SCRIPT (2): a whole stream config as XML text."""
        self._send(MSG_CONFIG_SCRIPT, _length_prefixed(xml, "xml"))

    def send_header(self, xml: str | bytes) -> None:
        """HEADER (3): the ISMRMRD XML header of the scan (sent as it is). The size of what the
        server may send back per message is limited from then on by what this header allows."""
        self._send(MSG_HEADER, _length_prefixed(xml, "xml"))
        try:
            parsed = ismrmrd.xsd.CreateFromDocument(xml.decode("utf-8") if isinstance(xml, bytes) else xml)
        except Exception:  # noqa: BLE001 - the server judges the header; the ceiling still holds
            return
        self.budget = MessageBudget(*message_limit(parsed, self.ceiling))

    def send_acquisition(self, acq: ismrmrd.Acquisition) -> None:
        """Acquisition (1008): header, float32 trajectory, complex64 data (converted if needed)."""
        self._send(MSG_ACQUISITION, encode_acquisition(acq))

    def send_waveform(self, wf: ismrmrd.Waveform) -> None:
        """Waveform (1026): header and uint32 samples."""
        self._send(MSG_WAVEFORM, encode_waveform(wf))

    def send_close(self) -> None:
        """CLOSE (4): no more input; the server answers with its results and its own CLOSE."""
        self._send(MSG_CLOSE)
        self.close_sent = True

    # -- receiving

    def read(self, n: int) -> bytes | bytearray:
        """Exactly ``n`` bytes of the server's stream, charged to the message budget first."""
        return self._recv_exact(n)

    def _recv_exact(self, n: int) -> bytes | bytearray:
        if n > 0:
            self.budget.charge(n)
        try:
            return recv_exactly(self._socket(), n)
        except TimeoutError:
            raise GadgetronConnectionError(
                f"no data from the Gadgetron server for {self.io_timeout:g} s"
            ) from None
        except PeerVanished as exc:  # closed or reset
            raise _PeerClosed(partial=exc.received > 0) from None

    def _read_message(self) -> ServerMessage | None:
        """Read one message; None for CLOSE."""
        self.budget.begin()
        (message_id,) = _U16.unpack(self._recv_exact(2))
        self.budget.begin(f"message {message_id} from the server")
        try:
            return self._read_body(message_id)
        except _PeerClosed:
            raise _PeerClosed(partial=True) from None

    def _read_body(self, message_id: int) -> ServerMessage | None:
        if message_id == MSG_CLOSE:
            return None
        if message_id in (MSG_IMAGE, MSG_ACQUISITION, MSG_WAVEFORM):
            # the sizes the message claims are checked before anything is allocated
            return SAFE_READERS[message_id](self)
        if message_id in (MSG_TEXT, MSG_ERROR):
            (length,) = _U32.unpack(self._recv_exact(4))
            _check_text_length(length, message_id)
            text = self._recv_exact(length).rstrip(b"\0").decode("utf-8", "replace")
            if message_id == MSG_ERROR or _ERROR_TEXT.match(text):
                return ServerError(text, message_id)
            return ServerText(text, message_id)
        if message_id == MSG_RESPONSE:
            _correlation_id, length = struct.unpack("<QQ", self._recv_exact(16))
            _check_text_length(length, message_id)
            text = self._recv_exact(length).decode("utf-8", "replace")
            return ServerText(text, message_id)
        raise GadgetronConnectionError(
            f"the server sent message id {message_id}, which this client cannot read "
            "(the stream cannot be followed past it)"
        )

    def receive(self) -> Iterator[ServerMessage]:
        """Yield what the server sends until its CLOSE.

        Images come as ``ismrmrd.Image`` (attributes parsed into ``image.meta``), returned
        acquisitions / waveforms as ismrmrd objects, log text as :class:`ServerText` and error
        reports as :class:`ServerError`. Raises :class:`GadgetronConnectionError` when the server
        goes away without CLOSE, is silent for ``io_timeout`` seconds, or sends an unknown id.
        """
        n_messages = 0
        while True:
            try:
                message = self._read_message()
            except _PeerClosed as closed:
                where = "in the middle of a message" if closed.partial else "between messages"
                raise GadgetronConnectionError(
                    f"the Gadgetron server closed the connection without CLOSE ({where}, after "
                    f"{n_messages} message(s))"
                ) from None
            except (MessageTooLarge, ValueError, struct.error) as exc:
                raise GadgetronConnectionError(
                    f"the Gadgetron server sent an unreadable message after {n_messages} message(s): {exc}"
                ) from None
            if message is None:
                self.close_received = True
                return
            n_messages += 1
            yield message


def _check_text_length(length: int, message_id: int) -> None:
    if length > TEXT_LIMIT_BYTES:
        raise MessageTooLarge(
            f"a text message ({message_id}) claims {length} bytes, more than the {TEXT_LIMIT_BYTES} allowed"
        )


def _length_prefixed(text: str | bytes, name: str) -> bytes:
    if isinstance(text, str):
        text = text.encode("utf-8")
    if not isinstance(text, (bytes, bytearray)):
        raise ValueError(f"{name} must be str or bytes, got {type(text).__name__}")
    if len(text) >= 2**32:
        raise ValueError(f"{name} is too long for a uint32 length ({len(text)} bytes)")
    return _U32.pack(len(text)) + bytes(text)


# --------------------------------------------------------------------------- whole-file replay


@dataclasses.dataclass
class ReplayResult:
    """What one replay through a Gadgetron server produced.

    ``images`` in arrival order; ``texts``: the server's log/info text; ``errors``: the server's
    error reports, then any connection failure seen by the client; ``n_acquisitions`` /
    ``n_waveforms``: items sent; ``returned``: acquisitions / waveforms the chain sent back;
    ``close_received``: the server ended with CLOSE; ``seconds``: wall time of the exchange.
    """

    images: list[ismrmrd.Image] = dataclasses.field(default_factory=list)
    texts: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    n_acquisitions: int = 0
    n_waveforms: int = 0
    seconds: float = 0.0
    returned: list[ismrmrd.Acquisition | ismrmrd.Waveform] = dataclasses.field(
        default_factory=list
    )
    close_received: bool = False

    @property
    def ok(self) -> bool:
        """No error reported and the server closed the stream properly."""
        return not self.errors and self.close_received


def raise_for_errors(result: ReplayResult) -> None:
    """Raise :class:`GadgetronServerError` carrying ``result.errors`` if there are any."""
    if result.errors:
        raise GadgetronServerError(result.errors)


class _Collector(threading.Thread):
    """Reads the server's messages into a ReplayResult on a background thread."""

    def __init__(self, client: GadgetronClient, result: ReplayResult):
        super().__init__(name="gadgetron-client-reader", daemon=True)
        self.client = client
        self.result = result
        self.lock = threading.Lock()
        self.finished = threading.Event()
        self.connection_error: str | None = None

    def run(self) -> None:
        try:
            for message in self.client.receive():
                with self.lock:
                    self._collect(message)
            self.result.close_received = True
        except GadgetronConnectionError as exc:
            self.connection_error = str(exc)
            logger.error("%s", exc)
        except Exception as exc:  # an unreadable message: report it, never die silently
            self.connection_error = f"reading the server's messages failed: {exc!r}"
            logger.error("%s", self.connection_error)
            logger.debug("reading the server's messages failed", exc_info=True)
        finally:
            self.finished.set()

    def _collect(self, message: ServerMessage) -> None:
        if isinstance(message, ismrmrd.Image):
            self.result.images.append(message)
        elif isinstance(message, ServerError):
            logger.error("Gadgetron: %s", message.message)
            self.result.errors.append(message.message)
        elif isinstance(message, ServerText):
            logger.info("Gadgetron: %s", message.text)
            self.result.texts.append(message.text)
        else:
            self.result.returned.append(message)


def _open_raw(path_text: str, group: str) -> ismrmrd_io.RawFile:
    """``ismrmrd_io.RawFile``, with a missing or unreadable file reported as a ValueError."""
    try:
        return ismrmrd_io.RawFile(path_text, group)
    except FileNotFoundError:
        raise ValueError(f"path {path_text!r} is not an existing file") from None
    except OSError as exc:
        raise ValueError(f"path {path_text!r} is not a readable HDF5 file: {exc}") from None


def stream_file(
    host: str,
    port: int,
    path: str | os.PathLike,
    *,
    config_name: str | None = None,
    config_text: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    header_version: int | None = None,
    dataset_group: str = "dataset",
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    io_timeout: float = DEFAULT_IO_TIMEOUT,
) -> ReplayResult:
    """Replay an ISMRMRD raw file through a Gadgetron server; return what came back.

    Sends the config (``config_name``: a config file on the server, message 1, or
    ``config_text``: the XML itself, message 2; exactly one), the file's XML header, every
    acquisition (waveforms merged in by time stamp), then CLOSE, while a background thread
    collects images, texts and errors until the server's CLOSE.

    ``progress(sent, total)`` is called after each acquisition/waveform. A header whose
    ``<version>`` differs from 14 is reported with a warning naming the file; ``header_version``
    rewrites it before sending. Server errors do not raise here: they are in ``result.errors``
    (see :func:`raise_for_errors`). Raises ValueError for bad arguments or an unreadable file
    and OSError when the server cannot be reached.
    """
    if (config_name is None) == (config_text is None):
        raise ValueError("give exactly one of config_name (a config on the server) or config_text")
    if header_version is not None and (isinstance(header_version, bool) or header_version < 0):
        raise ValueError(f"header_version must be a non-negative integer, got {header_version!r}")
    path_text = os.fspath(path)

    raw = _open_raw(path_text, dataset_group)
    try:
        xml_text = raw.xml
        if header_version is None:
            check_header_version(xml_text, source=path_text)
        else:
            version = ismrmrd_io.header_version(xml_text)
            if version is not None and version != header_version:
                logger.info(
                    "rewriting the ISMRMRD header version of %s: %d -> %d",
                    path_text, version, header_version,
                )
                xml_text = ismrmrd_io.set_header_version(xml_text, header_version)
            check_header_version(xml_text, source=f"{path_text} (rewritten)")

        n_acq, n_wf = len(raw), raw.n_waveforms
        if n_acq == 0:
            logger.warning("%s holds no acquisitions", path_text)
        total = n_acq + n_wf
        result = ReplayResult()
        started = time.monotonic()

        client = GadgetronClient(io_timeout=io_timeout)
        with client.connect(host, port, timeout=connect_timeout):
            collector = _Collector(client, result)
            collector.start()
            send_error: str | None = None
            try:
                if config_name is not None:
                    client.send_config_name(config_name)
                else:
                    client.send_config_text(config_text)  # type: ignore[arg-type]
                client.send_header(xml_text)
                for item in ismrmrd_io.iter_items_in_time_order(raw):
                    if collector.finished.is_set():
                        send_error = (
                            f"the server ended the stream after {result.n_acquisitions} of {n_acq} "
                            "acquisitions had been sent"
                        )
                        break
                    if isinstance(item, ismrmrd.Waveform):
                        client.send_waveform(item)
                        result.n_waveforms += 1
                    else:
                        client.send_acquisition(item)
                        result.n_acquisitions += 1
                    if progress is not None:
                        progress(result.n_acquisitions + result.n_waveforms, total)
                if send_error is None:
                    client.send_close()
            except (OSError, GadgetronConnectionError) as exc:
                send_error = (
                    f"sending to the Gadgetron server failed after {result.n_acquisitions} of "
                    f"{n_acq} acquisitions: {exc}"
                )
            except BaseException:
                # Interrupted (or a failing progress callback): drop the connection at once.
                client.close()
                collector.join(5.0)
                raise
            if send_error is not None:
                logger.warning("%s", send_error)
                client.shutdown_send()
            # The reader ends on CLOSE, on a vanished peer, or after io_timeout of silence.
            collector.join(io_timeout + 5.0)
            if collector.is_alive():
                client.close()
                collector.join(5.0)
        result.seconds = time.monotonic() - started
    finally:
        raw.close()

    with collector.lock:
        if collector.connection_error is not None:
            result.errors.append(collector.connection_error)
        # A failed send is usually the echo of a server error already reported; report it
        # only when nothing else explains why the stream ended early.
        if send_error is not None and not result.errors:
            result.errors.append(send_error)
    logger.info(
        "replayed %s: %d acquisitions, %d waveforms sent; %d images, %d errors in %.1f s",
        path_text, result.n_acquisitions, result.n_waveforms, len(result.images),
        len(result.errors), result.seconds,
    )
    return result
