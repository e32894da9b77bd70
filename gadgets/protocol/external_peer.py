"""Gadgetron's side of an external node: what Gadgetron does for ``<external><connect/>``, done here.

:class:`ExternalPeer` connects to a worker (``cardiomm-worker``), sends CONFIG (the node's
``<configuration>``, as :func:`configuration_xml` writes it), HEADER, the items and CLOSE, and reads
what comes back until the worker's CLOSE. The local runner (:mod:`gadgets.tools.chain_runner`)
uses it for ``connect="socket"``; the chain benchmark uses it to time the warm worker. Every
length the worker sends is untrusted: messages are read within the budget the scan's header allows
(:mod:`.wire_limits`).
"""

from __future__ import annotations

import queue
import socket
import struct
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from xml.sax.saxutils import quoteattr

import ismrmrd

from . import wire
from .chain_format import DEFAULT_CONNECT_ADDRESS
from .stream import PeerVanished, encode_item, recv_exactly
from .wire_limits import TEXT_LIMIT_BYTES, MessageBudget, MessageTooLarge, message_limit


class ExternalGadgetError(RuntimeError):
    """An external gadget (a worker reached over a socket) reported an error or broke the protocol.

    ``kind``: ``"connect"`` (it could not be reached), ``"connection"`` (the connection broke or
    timed out before its CLOSE, or it spoke something unreadable) or ``"reported"`` (it sent an
    ERROR).
    """

    def __init__(self, message: str, kind: str = "connection") -> None:
        super().__init__(message)
        self.kind = kind


def configuration_xml(properties: Mapping[str, str]) -> str:
    """The CONFIG text Gadgetron sends an external node: its ``<configuration>`` as pugixml saves it."""
    if not properties:
        return '<?xml version="1.0"?>\n<configuration />\n'
    lines = ['<?xml version="1.0"?>', "<configuration>"]
    lines.extend(f"\t<property name={quoteattr(k)} value={quoteattr(v)} />" for k, v in properties.items())
    lines.append("</configuration>")
    return "\n".join(lines) + "\n"


class _SocketSource:
    """``read(n)``: exactly n bytes or ExternalGadgetError (peer gone); each read is charged to
    ``budget`` first (MessageTooLarge before anything is allocated)."""

    def __init__(self, sock: socket.socket, where: str, budget: MessageBudget | None = None) -> None:
        self.sock = sock
        self.where = where
        self.budget = budget

    def read(self, n: int) -> bytes | bytearray:
        if self.budget is not None and n > 0:
            self.budget.charge(n)
        try:
            return recv_exactly(self.sock, n)
        except TimeoutError:
            raise ExternalGadgetError(f"{self.where}: no answer within the timeout") from None
        except PeerVanished as exc:
            if exc.__cause__ is not None:  # reset
                raise ExternalGadgetError(f"{self.where}: connection lost ({exc.__cause__})") from None
            raise ExternalGadgetError(f"{self.where}: the peer closed the connection without CLOSE") from None
        except OSError as exc:
            raise ExternalGadgetError(f"{self.where}: connection lost ({exc})") from None


def _sender_failure(exc: BaseException, where: str) -> BaseException:
    """What the sender thread's failure becomes: a broken connection is an ExternalGadgetError."""
    if isinstance(exc, OSError):
        return ExternalGadgetError(f"{where}: connection lost while sending ({exc})")
    return exc


class ExternalPeer:
    """Gadgetron's side of one external node: connect to a worker, stream items, read results.

    ``run(items, header_xml)`` connects to ``address:port``, sends CONFIG (the node's
    configuration), HEADER, every item (from a sender thread, so large streams cannot deadlock)
    and CLOSE, and yields what comes back until the worker's CLOSE. An ERROR (8) from the worker
    raises :class:`ExternalGadgetError` with its text; so does a vanished worker.
    """

    def __init__(self, address: str, port: int, properties: Mapping[str, str] | None = None, *,
                 timeout: float = 600.0, connect_timeout: float = 10.0) -> None:
        self.address = address or DEFAULT_CONNECT_ADDRESS
        self.port = int(port)
        self.properties = dict(properties or {})
        self.timeout = timeout
        self.connect_timeout = connect_timeout

    def run(self, items: Iterable[Any], header_xml: str) -> Iterator[Any]:
        read_by_id = wire.message_readers()  # sizes checked before allocating: the peer's lengths are untrusted
        where = f"external gadget at {self.address}:{self.port}"
        try:
            parsed = ismrmrd.xsd.CreateFromDocument(header_xml)
        except Exception:  # noqa: BLE001 - a header the chain accepted; the limit then is the ceiling
            parsed = None
        budget = MessageBudget(*message_limit(parsed))
        try:
            sock = socket.create_connection((self.address, self.port), timeout=self.connect_timeout)
        except OSError as exc:
            raise ExternalGadgetError(f"cannot connect to the {where}: {exc}", "connect") from None
        sock.settimeout(self.timeout)
        failure: queue.Queue[BaseException] = queue.Queue()
        stop = threading.Event()

        def send() -> None:
            try:
                sock.sendall(wire.text_message(wire.CONFIG_SCRIPT, configuration_xml(self.properties), "configuration"))
                sock.sendall(wire.text_message(wire.HEADER, header_xml, "header"))
                for item in items:
                    if stop.is_set():
                        return
                    sock.sendall(encode_item(item))
                sock.sendall(wire.CLOSE_MESSAGE)
            except BaseException as exc:  # reported by the reading side
                failure.put(exc)

        sender = threading.Thread(target=send, name=f"external-{self.port}-sender", daemon=True)
        sender.start()
        source = _SocketSource(sock, where, budget)
        try:
            while True:
                budget.begin()
                try:
                    message_id = wire.read_message_id(source)
                except ExternalGadgetError:
                    if not failure.empty():
                        raise _sender_failure(failure.get(), where) from None
                    raise
                if message_id == wire.CLOSE:
                    break
                if message_id == wire.ERROR:
                    (length,) = wire.ERROR_LENGTH.unpack(source.read(wire.ERROR_LENGTH.size))
                    if length > TEXT_LIMIT_BYTES:  # never allocate what an ERROR claims
                        raise ExternalGadgetError(f"{where} sent an ERROR claiming {length} bytes of text "
                                                  f"(more than {TEXT_LIMIT_BYTES}); connection dropped")
                    text = bytes(source.read(length)).decode("utf-8", errors="replace")
                    raise ExternalGadgetError(f"{where} reported: {text}", "reported")
                reader = read_by_id.get(message_id)
                if reader is None:
                    raise ExternalGadgetError(f"{where} sent message id {message_id}, which cannot be read")
                budget.begin(wire.describe(message_id))
                try:
                    item = reader(source)
                except (MessageTooLarge, ValueError, struct.error) as exc:
                    raise ExternalGadgetError(f"{where} sent an unreadable message: {exc}") from None
                yield item
            sender.join(self.timeout)
            if not failure.empty():
                raise _sender_failure(failure.get(), where)
        finally:
            stop.set()
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
            sender.join(5.0)


__all__ = ["ExternalPeer", "ExternalGadgetError", "configuration_xml"]
