"""A client of a Gadgetron 4.x server: the messages ``gadgetron_ismrmrd_client`` sends and reads, in wire dtypes.

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

The message ids and framing are :mod:`gadgets.protocol.wire`'s. Every socket operation has a
timeout; a server that goes away without CLOSE ends the read at once (no spin, no hang). A whole
raw file is replayed through it by :func:`gadgets.tools.client.stream_file`.

Why not ``ismrmrd.serialization.ProtocolSerializer`` or ``Acquisition.serialize_into``: those write
the arrays in whatever dtype the caller holds (a complex128 acquisition would be sent as 16-byte
samples and desynchronise the stream), and ismrmrd-python maps ``DATATYPE_INT`` images to int64.
This module writes the wire dtypes itself and reads images with the C++ library's element sizes.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import socket
import struct
import threading
from collections.abc import Iterator, Sequence
from typing import TypeAlias

import ismrmrd
import numpy as np

from . import wire
from .stream import PeerVanished, recv_exactly
from .wire_limits import TEXT_LIMIT_BYTES, MessageBudget, MessageTooLarge, ceiling_bytes, message_limit

logger = logging.getLogger(__name__)

DEFAULT_PORT = 9002
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Longest wait for any single socket read or write (a reconstruction may think for minutes).
DEFAULT_IO_TIMEOUT = 600.0

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
    message_id: int = wire.TEXT


@dataclasses.dataclass(frozen=True)
class ServerError:
    """A server error report: ERROR (8), or a TEXT (5) of the form ``[where] ERROR: ...``."""

    message: str
    message_id: int = wire.TEXT


ServerMessage: TypeAlias = ismrmrd.Image | ismrmrd.Acquisition | ismrmrd.Waveform | ServerText | ServerError


class _PeerClosed(Exception):
    """Internal: recv returned no bytes (or the connection was reset)."""

    def __init__(self, partial: bool):
        super().__init__("peer closed")
        self.partial = partial


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
    receive concurrently for large scans (see :func:`gadgets.tools.client.stream_file`).
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
            sock.sendall(wire.message(message_id, payload))

    def send_config_name(self, name: str) -> None:
        """CONFIG_FILE (1): the name of a stream config on the server, e.g. ``default.xml``."""
        encoded = name.encode("utf-8") if isinstance(name, str) else b""
        if not encoded or b"\0" in encoded or len(encoded) >= wire.CONFIG_FILE_NAME_BYTES:
            raise ValueError(
                f"name must be a non-empty config file name under {wire.CONFIG_FILE_NAME_BYTES} bytes "
                f"without NUL, got {name!r}"
            )
        self._send(wire.CONFIG_FILE, encoded.ljust(wire.CONFIG_FILE_NAME_BYTES, b"\0"))

    def send_config_text(self, xml: str | bytes) -> None:
        """CONFIG_SCRIPT (2): a whole stream config as XML text."""
        self._send(wire.CONFIG_SCRIPT, wire.length_prefixed(xml, "xml"))

    def send_header(self, xml: str | bytes) -> None:
        """HEADER (3): the ISMRMRD XML header of the scan (sent as it is). The size of what the
        server may send back per message is limited from then on by what this header allows."""
        self._send(wire.HEADER, wire.length_prefixed(xml, "xml"))
        try:
            parsed = ismrmrd.xsd.CreateFromDocument(xml.decode("utf-8") if isinstance(xml, bytes) else xml)
        except Exception:  # noqa: BLE001 - the server judges the header; the ceiling still holds
            return
        self.budget = MessageBudget(*message_limit(parsed, self.ceiling))

    def send_acquisition(self, acq: ismrmrd.Acquisition) -> None:
        """Acquisition (1008): header, float32 trajectory, complex64 data (converted if needed)."""
        self._send(wire.ACQUISITION, encode_acquisition(acq))

    def send_waveform(self, wf: ismrmrd.Waveform) -> None:
        """Waveform (1026): header and uint32 samples."""
        self._send(wire.WAVEFORM, encode_waveform(wf))

    def send_close(self) -> None:
        """CLOSE (4): no more input; the server answers with its results and its own CLOSE."""
        self._send(wire.CLOSE)
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
        message_id = wire.read_message_id(self)
        self.budget.begin(f"message {message_id} from the server")
        try:
            return self._read_body(message_id)
        except _PeerClosed:
            raise _PeerClosed(partial=True) from None

    def _read_body(self, message_id: int) -> ServerMessage | None:
        if message_id == wire.CLOSE:
            return None
        if message_id in (wire.IMAGE, wire.ACQUISITION, wire.WAVEFORM):
            # the sizes the message claims are checked before anything is allocated
            return wire.SAFE_READERS[message_id](self)
        if message_id in (wire.TEXT, wire.ERROR):
            (length,) = wire.TEXT_LENGTH.unpack(self._recv_exact(wire.TEXT_LENGTH.size))
            _check_text_length(length, message_id)
            text = self._recv_exact(length).rstrip(b"\0").decode("utf-8", "replace")
            if message_id == wire.ERROR or _ERROR_TEXT.match(text):
                return ServerError(text, message_id)
            return ServerText(text, message_id)
        if message_id == wire.RESPONSE:
            _correlation_id, length = wire.RESPONSE_HEADER.unpack(self._recv_exact(wire.RESPONSE_HEADER.size))
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
