"""Connection handling shared by every Python gadget, and the :class:`Gadget` base class.

A gadget is a callable over a stream (gadgetron-python's style)::

    gadget = RemoveOversampling()                      # or .from_config(xml_text | mapping)
    for item in gadget(items, header): ...             # transforms what it understands,
                                                       # passes everything else through

and ``gadget.handle(connection)`` is the entry point Gadgetron reaches with
``python -m gadgetron PORT gadgets.MODULE CLASS`` (gadgetron-python instantiates ``CLASS()`` and
calls ``handle``) or through ``gadgetron.external.listen(port, Gadget().handle)``.

What Gadgetron 4.7.2 does on the other end (``apps/gadgetron/connection/nodes/common``), and what
``handle`` therefore does:

* CONFIG (2) and HEADER (3) arrive first (gadgetron-python reads them while building the
  ``Connection``); CONFIG is the node's ``<configuration>`` element, parsed by ``gadgets.protocol.params``.
* Items follow, then CLOSE (4). Each output item is sent back; gadgetron-python's
  ``Connection.__exit__`` sends our CLOSE.
* On any exception the failure is logged, an ERROR message is sent, the input is drained up to
  Gadgetron's CLOSE (see :func:`drain`), and then our CLOSE follows. The ERROR message is
  ``uint16 8`` + ``uint64`` length + UTF-8 text: Gadgetron reads it with
  ``IO::read_string_from_stream<uint64_t>`` (``Serialization::read``), closes its side and
  reports the text as a RemoteError to the client. (TEXT, 5, is an *illegal* message from an
  external peer, so it is never used.)

gadgetron-python 1.4.1 defects worked around here:

* ``SocketWrapper.read`` loops forever at 100% CPU when the peer has gone (``recv`` returns no
  bytes). :func:`guard_connection` swaps in :class:`SafeSocket`, whose reads raise
  :class:`PeerVanished` instead; ``handle`` then stops quietly. The CONFIG and HEADER reads happen
  inside ``Connection.__init__`` before any gadget module is imported: they are guarded at
  interpreter level by :mod:`cardiomm_guard` (loaded by the ``cardiomm_guard.pth`` file the
  package installs), which patches the same read when ``gadgetron.external.connection`` is
  imported, so a child whose Gadgetron closes early exits instead of spinning.
* ``write_array`` converts dtypes with ``numpy.array(copy=False)``, which numpy 2 refuses after
  the message id and dimensions were already written; ``Acquisition.serialize_into`` writes the
  raw bytes of whatever dtype it holds. :func:`wire_ready` converts every array to its wire dtype
  first (complex64 data, float32 trajectories and densities, float32/complex64 images) and
  :func:`send_item` serialises each message into memory before writing it, so a failure never
  leaves half a message on the socket.

Logging goes to stderr only (stdout is shared with Gadgetron's); the level comes from
``GADGETRON_EXTERNAL_LOG_LEVEL`` (default INFO; gadgetron-python's own default, DEBUG, floods a scan
with the solvers' per-iteration lines).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import ismrmrd
import numpy as np
from gadgetron.external import writers
from gadgetron.types.image_array import ImageArray, write_image_array
from gadgetron.types.recon_data import ReconBit, ReconBuffer, ReconData, write_recon_data

from cardiomm_guard import PeerVanished, recv_exactly  # noqa: F401 - re-exported (the child's guard owns them)

from . import wire
from .params import Param, Params, config_properties, config_values, parse_params
from .wire_limits import MessageBudget, MessageTooLarge, message_limit, redact_paths

logger = logging.getLogger(__name__)

LOG_LEVEL_VARIABLE = "GADGETRON_EXTERNAL_LOG_LEVEL"
#: Seconds of silence after which draining the input after an error gives up.
DRAIN_TIMEOUT_S = 10.0


class SafeSocket:
    """Drop-in replacement for gadgetron-python's ``Connection.SocketWrapper`` that never spins.

    ``read(n)`` returns exactly ``n`` bytes or raises :class:`PeerVanished`; ``close()`` sends
    CLOSE once and closes the socket, ignoring a peer that has already gone.

    ``budget`` (a :class:`~gadgets.protocol.wire_limits.MessageBudget`, or None): every read is charged to
    it first, and a read over what is left raises :class:`~gadgets.protocol.wire_limits.MessageTooLarge`
    before anything is allocated (:func:`iter_items` starts a new budget per message).
    ``timeout``: seconds a read or write may wait for the peer (None: forever); ``idle`` is True
    while :func:`iter_items` waits for the next message (a worker told to stop closes such
    connections at once).
    """

    def __init__(self, sock: socket.socket, *, budget: MessageBudget | None = None,
                 timeout: float | None = None) -> None:
        self.socket = sock
        self.socket.settimeout(timeout)
        self.budget = budget
        self.idle = False
        self._closed = False

    def read(self, nbytes: int) -> bytes | bytearray:
        if nbytes <= 0:
            return b""
        if self.budget is not None:
            self.budget.charge(nbytes)
        try:
            return recv_exactly(self.socket, nbytes)
        except TimeoutError:
            raise TimeoutError(f"the peer sent nothing for {self.socket.gettimeout():g} s "
                                 "(idle connection closed)") from None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.socket.sendall(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.socket.sendall(wire.CLOSE_MESSAGE)
        except OSError as exc:
            logger.debug("could not send CLOSE (peer gone: %s)", exc)
        try:
            self.socket.close()
        except OSError:
            pass


def guard_connection(connection: Any) -> None:
    """Make ``connection`` safe to read from a peer that may be hostile or gone.

    Replaces ``connection.socket`` (gadgetron-python's SocketWrapper) by a :class:`SafeSocket`,
    gives it a per-message budget derived from the scan's header
    (:func:`gadgets.protocol.wire_limits.message_limit`) unless it has one, and replaces the readers that
    size objects from untrusted headers (acquisition, waveform, image) by checked ones.
    """
    current = connection.socket
    if not isinstance(current, SafeSocket):
        current = connection.socket = SafeSocket(current.socket)
    if current.budget is None:
        try:
            limit, why = message_limit(getattr(connection, "header", None))
        except ValueError as exc:  # a bad CARDIOMM_MAX_MESSAGE_MB
            logger.error("%s; using the default ceiling", exc)
            from .wire_limits import DEFAULT_CEILING_MB

            limit, why = message_limit(getattr(connection, "header", None), DEFAULT_CEILING_MB * 2**20)
        current.budget = MessageBudget(limit, why)
    readers = getattr(connection, "readers", None)
    if isinstance(readers, dict):
        readers.update(wire.SAFE_READERS)


def external_log_level() -> int:
    """The level ``GADGETRON_EXTERNAL_LOG_LEVEL`` names; INFO when unset or unknown.

    gadgetron-python defaults to DEBUG, which buries a scan's few lines under the solvers'
    per-iteration messages; those stay at DEBUG, for whoever sets the variable to DEBUG.
    """
    name = os.environ.get(LOG_LEVEL_VARIABLE, "INFO").strip().upper()
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.INFO


def setup_logging() -> None:
    """Log to stderr at :func:`external_log_level` (default INFO); move any stdout handler to stderr.

    ``python -m gadgetron`` (how Gadgetron starts a Python gadget) has already configured the root
    logger at its own default, DEBUG, when the variable is unset; that becomes INFO here too.
    """
    level = external_log_level()
    # gadgetron-python's readers trip numpy's PEP 3118 ctypes warning on every connection: harmless noise
    warnings.filterwarnings("ignore", message="A builtin ctypes object gave a PEP3118 format string",
                            category=RuntimeWarning)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            stream=sys.stderr,
            level=level,
            format="%(asctime)s.%(msecs)03d %(levelname)s [ext. %(process)d %(name)s] %(message)s",
            datefmt="%m-%d %H:%M:%S",
        )
    elif not os.environ.get(LOG_LEVEL_VARIABLE, "").strip() and root.level == logging.DEBUG:
        root.setLevel(level)  # gadgetron-python's unasked-for DEBUG
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is sys.stdout:
            handler.setStream(sys.stderr)


# --------------------------------------------------------------------------- wire dtypes


def _buffer_ready(buffer: ReconBuffer) -> ReconBuffer:
    data = np.asarray(buffer.data)
    if data.ndim != 7:
        raise ValueError(f"ReconBuffer data must have 7 dimensions [E0, E1, E2, CHA, N, S, LOC], got {data.shape}")
    headers = np.asarray(buffer.headers, dtype=object)
    if headers.shape != data.shape[1:3] + data.shape[4:]:
        raise ValueError(
            f"ReconBuffer headers must have shape [E1, E2, N, S, LOC] = {data.shape[1:3] + data.shape[4:]}, "
            f"got {headers.shape}"
        )
    trajectory = None if buffer.trajectory is None else np.asarray(buffer.trajectory, dtype=np.float32)
    density = None if buffer.density is None else np.asarray(buffer.density, dtype=np.float32)
    return ReconBuffer(np.asarray(data, dtype=np.complex64), trajectory, density, headers, buffer.sampling)


def wire_ready(item: Any) -> Any:
    """``item`` with every array in the dtype its wire format needs (a new object when converting).

    Acquisitions: complex64 data ``(active_channels, number_of_samples)`` and float32 trajectory;
    images: float32 for real floating data, complex64 for complex data (other ISMRMRD types
    kept); ImageArray: complex64; ReconData: complex64 data, float32 trajectory/density, object
    header arrays. Raises ValueError when the data do not match the header.
    """
    if isinstance(item, ismrmrd.Acquisition):
        head = item.getHead()
        data, traj = item.data, item.traj
        if data.shape != (head.active_channels, head.number_of_samples):
            raise ValueError(
                f"acquisition data shape {data.shape} does not match its header "
                f"(active_channels {head.active_channels}, number_of_samples {head.number_of_samples})"
            )
        if traj.shape != (head.number_of_samples, head.trajectory_dimensions):
            raise ValueError(
                f"acquisition trajectory shape {traj.shape} does not match its header "
                f"(number_of_samples {head.number_of_samples}, trajectory_dimensions {head.trajectory_dimensions})"
            )
        if data.dtype == np.complex64 and traj.dtype == np.float32:
            return item
        return ismrmrd.Acquisition(
            head, np.ascontiguousarray(data, dtype=np.complex64), np.ascontiguousarray(traj, dtype=np.float32)
        )
    if isinstance(item, ismrmrd.Image):
        data = item.data
        target: type[np.generic]
        if np.iscomplexobj(data):
            target = np.complex64
        elif np.issubdtype(data.dtype, np.floating):
            target = np.float32
        else:
            return item
        if data.dtype == target:
            return item
        return ismrmrd.Image(head=item.getHead(), attribute_string=item.attribute_string,
                             data=np.ascontiguousarray(data, dtype=target))
    if isinstance(item, ImageArray):
        data = np.asarray(item.data)
        if data.dtype == np.complex64:
            return item
        return ImageArray(data=data.astype(np.complex64), headers=item.headers, meta=item.meta,
                          waveform=item.waveform, acq_headers=item.acq_headers)
    if isinstance(item, ReconData):
        return ReconData([
            ReconBit(_buffer_ready(bit.data), None if bit.ref is None else _buffer_ready(bit.ref))
            for bit in item.bits
        ])
    return item


class ByteSink:
    """A write-only byte sink with the ``write`` method gadgetron-python's writers expect."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: Any) -> None:
        self.parts.append(bytes(data))

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


Writer = Callable[[Any, Any], None]

#: ``(accepts, writer)`` pairs for the item types of an external-gadget stream, as
#: gadgetron-python's ``Connection`` has them by default.
DEFAULT_WRITERS: tuple[tuple[Callable[[Any], bool], Writer], ...] = (
    (lambda item: isinstance(item, ismrmrd.Acquisition), writers.write_acquisition),
    (lambda item: isinstance(item, ismrmrd.Waveform), writers.write_waveform),
    (lambda item: isinstance(item, ismrmrd.Image), writers.write_image),
    (lambda item: isinstance(item, ImageArray), write_image_array),
    (lambda item: isinstance(item, ReconData), write_recon_data),
)


class UnsupportedItemError(TypeError, ValueError):
    """No writer accepts the item (a TypeError as gadgetron-python's, and a ValueError)."""


def encode_item(item: Any, item_writers: Sequence[tuple[Callable[[Any], bool], Writer]] = DEFAULT_WRITERS, *,
                convert: bool = True) -> bytes:
    """The complete message (id + body) for ``item``, serialised by gadgetron-python's writers.

    ``item_writers``: ``(accepts, writer)`` pairs, the first that accepts the item writes it
    (default: acquisition, waveform, image, ImageArray, ReconData). ``convert``: first put every
    array in its wire dtype and check it against its header (:func:`wire_ready`; ValueError when
    they do not match); False sends the item exactly as it is (a test playing Gadgetron's part
    may send malformed items on purpose). Raises :class:`UnsupportedItemError` when no writer
    accepts the item.
    """
    if convert:
        item = wire_ready(item)
    for accepts, writer in item_writers:
        if accepts(item):
            sink = ByteSink()
            writer(sink, item)
            return sink.getvalue()
    raise UnsupportedItemError(f"cannot send an item of type {type(item).__name__}: no writer accepts it")


def serialize_item(connection: Any, item: Any) -> bytes:
    """The complete message (id + body) ``connection``'s writers produce for ``item``, in dtype-safe form."""
    return encode_item(item, connection.writers)


def send_item(connection: Any, item: Any) -> None:
    """Serialise ``item`` completely, then write it to the connection in one go."""
    connection.socket.write(serialize_item(connection, item))


def send_error(connection: Any, text: str) -> None:
    """Send an ERROR message with ``text`` (Gadgetron turns it into an error for the client)."""
    connection.socket.write(wire.error_message(text))


def iter_items(connection: Any) -> Iterator[Any]:
    """Items read from ``connection`` until CLOSE, using its readers.

    Raises ValueError for a message id that no reader handles (gadgetron-python would end the
    stream silently), :class:`PeerVanished` when the peer goes away without CLOSE.
    """
    source = connection.socket
    budget = getattr(source, "budget", None)
    while True:
        if budget is not None:
            budget.begin()
        source.idle = True
        try:
            message_id = wire.read_message_id(source)
        finally:
            source.idle = False
        if message_id == wire.CLOSE:
            logger.debug("received CLOSE")
            return
        reader = connection.readers.get(message_id)
        if reader is None:
            raise ValueError(f"received message id {message_id}, which no reader handles")
        if budget is not None:
            budget.begin(wire.describe(message_id))
        yield reader(source)


# --------------------------------------------------------------------------- the gadget base class


class Gadget:
    """Base class of the Python gadgets: typed parameters, a stream transform, a connection entry.

    Subclasses declare ``PARAMETERS`` (a tuple of :class:`~gadgets.protocol.params.Param`) and implement
    ``accepts(item)``, ``process(item)`` (an iterable of outputs) and, where needed, ``start(header)``
    (reset per-stream state), ``finish()`` (flush at the end of the stream) and ``configure()``
    (derive settings from ``self.params``; raise ValueError for inconsistent combinations).
    Items that ``accepts`` rejects pass through unchanged, in order.
    """

    PARAMETERS: ClassVar[tuple[Param, ...]] = ()

    def __init__(self, **params: Any) -> None:
        self.params: Params
        self._configure(params)

    @classmethod
    def gadget_name(cls) -> str:
        return cls.__name__

    @classmethod
    def from_config(cls, config: str | bytes | Mapping[str, Any] | None) -> Gadget:
        """A gadget configured from Gadgetron's CONFIG XML text, a YAML mapping, or None (defaults)."""
        return cls(**dict(config_values(config, cls.gadget_name())))

    def _configure(self, values: Mapping[str, Any]) -> None:
        self._given = dict(values)
        self.params = parse_params(self.PARAMETERS, self._given, self.gadget_name())
        self.configure()

    # -- hooks -----------------------------------------------------------------------------
    def configure(self) -> None:
        """Derive settings from ``self.params`` (called after every (re)configuration)."""

    def start(self, header: ismrmrd.xsd.ismrmrdHeader) -> None:
        """Reset per-stream state; called before the first item of each stream."""

    def accepts(self, item: Any) -> bool:
        """Whether ``process`` handles ``item`` (everything else passes through)."""
        return False

    def process(self, item: Any) -> Iterable[Any]:
        """Outputs for one accepted item (may be none)."""
        return (item,)

    def finish(self) -> Iterable[Any]:
        """Outputs still pending at the end of the stream."""
        return ()

    # -- the stream ------------------------------------------------------------------------
    def __call__(self, items: Iterable[Any], header: ismrmrd.xsd.ismrmrdHeader) -> Iterator[Any]:
        """Transform the stream ``items``: accepted items go through ``process``, others pass through."""
        self.start(header)
        for item in items:
            if self.accepts(item):
                yield from self.process(item)
            else:
                yield item
        yield from self.finish()

    def handle(self, connection: Any) -> None:
        """Serve one Gadgetron connection: configure from CONFIG, run the stream, send results.

        Never raises: a failure is logged and reported to Gadgetron with an ERROR message; a peer
        that vanishes ends the work quietly. gadgetron-python closes the connection (CLOSE) after.
        """
        setup_logging()
        guard_connection(connection)
        name = self.gadget_name()
        sent = 0
        try:
            properties = config_properties(getattr(connection.raw_bytes, "config", None), name)
            # what the peer set (untrusted: see gadgets.protocol.checkpoint_policy) and what we were started with
            self.operator_params = getattr(self, "operator_params", None) or dict(self._given)
            self.remote_params = dict(properties or {})
            if properties:
                self._configure({**self._given, **properties})
            logger.info("%s running with %r", name, self.params)
            for item in self(iter_items(connection), connection.header):
                send_item(connection, item)
                sent += 1
            logger.info("%s done: %d items sent", name, sent)
        except (PeerVanished, BrokenPipeError, ConnectionResetError) as exc:
            logger.warning("%s: Gadgetron went away without CLOSE (%s); stopping", name, exc)
        except Exception as exc:  # report every failure to Gadgetron, then close
            if isinstance(exc, (MessageTooLarge, socket.timeout)):
                logger.error("%s: %s: %s", name, type(exc).__name__, exc)  # the peer's fault: no traceback
            else:
                logger.error("%s failed after sending %d items: %s: %s", name, sent, type(exc).__name__, exc)
                logger.debug("%s failure", name, exc_info=True)  # the traceback at debug level only
            try:
                # the peer learns what went wrong, not where this host keeps its files
                send_error(connection, redact_paths(f"{name}: {type(exc).__name__}: {exc}"))
            except OSError as send_exc:
                logger.warning("%s: could not send the error to Gadgetron (%s)", name, send_exc)
                return
            if isinstance(exc, MessageTooLarge):  # the stream cannot be followed: discard what still comes
                discard_input(connection)
            elif not isinstance(exc, socket.timeout):
                drain(connection)


def discard_socket_input(sock: socket.socket, *, timeout: float = 1.0, limit: int = 64 * 2**20,
                         within: float | None = None) -> int:
    """Read and drop what the peer still sends on ``sock`` (at most ``limit`` bytes, until ``timeout``
    s of silence, its close or, when given, ``within`` s in all), one small piece at a time, so that
    closing does not reset the connection before the peer has read our ERROR. Returns the bytes
    dropped; a broken connection ends it quietly."""
    deadline = None if within is None else time.monotonic() + within
    dropped = 0
    try:
        sock.settimeout(timeout)
        while dropped < limit:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                sock.settimeout(max(0.01, min(timeout, left)))
            piece = sock.recv(65536)
            if not piece:
                break
            dropped += len(piece)
    except OSError:
        pass
    return dropped


def discard_input(connection: Any, timeout: float = 1.0, limit: int = 64 * 2**20) -> int:
    """:func:`discard_socket_input` on a gadgetron-python connection's socket."""
    return discard_socket_input(connection.socket.socket, timeout=timeout, limit=limit)


def drain(connection: Any, timeout: float = DRAIN_TIMEOUT_S) -> int:
    """After an ERROR: read and discard items until Gadgetron's CLOSE (it sends one on ERROR).

    Closing a socket with unread input makes the kernel reset the connection, and a reset can
    destroy the ERROR message before Gadgetron reads it; draining first avoids that. Gives up
    quietly after ``timeout`` seconds of silence, on a vanished peer or on unreadable input.
    Returns the number of items discarded.
    """
    discarded = 0
    try:
        connection.socket.socket.settimeout(timeout)
        for _ in iter_items(connection):
            discarded += 1
    except Exception as exc:  # draining is best effort: never let it mask the reported error
        logger.debug("stopped draining the connection: %s", exc)
    if discarded:
        logger.info("discarded %d items after the error", discarded)
    return discarded
