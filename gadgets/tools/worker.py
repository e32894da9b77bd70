"""cardiomm-worker: a warm CardioMM process that Gadgetron reaches with ``<connect port=.../>``.

A ``<execute ... type="python"/>`` node starts a fresh Python per scan and pays the model load
(and CUDA start-up) every time. This worker loads the model once and then serves Gadgetron's
external-node connections, one after another and concurrently (one thread per connection)::

    cardiomm-worker --port 18000 [--host 127.0.0.1] [--checkpoint packaged|none|PATH] [--device auto]
                    [--max-connections N] [--idle-timeout SECONDS] [--max-concurrent N]
                    [--handshake-timeout SECONDS] [--connection-timeout SECONDS] [--max-message-mb MIB]

and in the chain::

    <external>
        <connect port="18000" address="127.0.0.1"/>
        <configuration> <property name="modality" value="Cine"/> ... </configuration>
    </external>

What Gadgetron 4.x does on ``<connect>`` (``apps/gadgetron/connection/nodes/External.cpp``,
``open_connection(Config::Connect)``): it opens a TCP connection to ``address:port`` and builds
an ``ExternalChannel``, whose constructor sends CONFIG (2) and HEADER (3) at once, exactly as on
the ``<execute>`` route where the child connects back; then the items, then CLOSE (4). So the
worker accepts, reads CONFIG and HEADER with ``gadgetron.external.connection.Connection`` and
hands the connection to ``CardioMMRecon(...).handle`` (which sends the images, or an ERROR, and
our CLOSE follows), exactly what a ``python -m gadgetron PORT gadgets.recon CardioMMRecon`` child
speaks. The CONFIG's properties configure that connection's gadget; ``--checkpoint`` and
``--device`` are the defaults a CONFIG may override.

Guarding against peers (anyone who can reach the port): gadgetron-python's socket wrapper spins
forever on a peer that closes before CONFIG/HEADER (a port probe or health check does exactly
that). The worker reads the handshake through a socket that raises instead, with one deadline
for the whole handshake (``--handshake-timeout``, a peer trickling bytes cannot extend it) and
a 16 MiB bound on CONFIG + HEADER. In the data phase a connection silent for
``--connection-timeout`` seconds is closed; every message is limited to what the scan's header
allows (matrix x coils x encoding limits, at most ``--max-message-mb``,
:mod:`gadgets.protocol.wire_limits`): a larger claim gets an ERROR before anything is allocated, and
large bodies are read as they arrive. At most ``--max-concurrent`` connections are served at
once; one more is answered with an ERROR naming the limit (``cardiomm-worker is busy: ...``).

The model is loaded once at start-up (``gadgets.recon.load_engine``, which logs
``model loaded: ...`` and counts loads); every connection's gadget finds it in the per-process
engine cache. A checkpoint that does not exist or cannot be loaded, or a device that is not
available, stops the worker before it is ready (one line on stderr, exit status 2): nothing
would otherwise tell the scanner's operator that every scan gets the fallback. With
``--allow-fallback`` the worker starts anyway, logs why, and the scans get the fallback
reconstruction (marked in the images). A failure during a scan always gives fallback images.

It binds 127.0.0.1 unless told otherwise, logs each connection, and exits cleanly (status 0) on
SIGTERM/SIGINT, after ``--max-connections`` connections have been served, or after
``--idle-timeout`` seconds without a connection (so tests and CI never leave it running).
On stop, connections that wait for their handshake or their next message are closed at once;
scans in progress are finished (up to ``SHUTDOWN_GRACE_S``) before it exits.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from gadgetron.external.connection import Connection

from ..protocol.stream import PeerVanished, SafeSocket, discard_socket_input, guard_connection, setup_logging
from ..protocol.wire import error_message
from ..protocol.wire_limits import (
    CHUNK_BYTES,
    HANDSHAKE_LIMIT_BYTES,
    MessageBudget,
    MessageTooLarge,
    ceiling_bytes,
    message_limit,
)

logger = logging.getLogger(__name__)

DEFAULT_PORT = 18000
DEFAULT_HOST = "127.0.0.1"
#: Seconds a new connection has to deliver CONFIG and HEADER.
HANDSHAKE_TIMEOUT_S = 30.0
#: Seconds the worker waits for connections in progress when it is told to stop.
SHUTDOWN_GRACE_S = 60.0
#: Seconds a connection may stay silent in the data phase (between or within messages). Gadgetron
#: sends a ReconData only when its buffer triggers, which for one long acquisition may be many
#: minutes after the stream opened; raise it for scans whose first trigger comes later still.
CONNECTION_IDLE_TIMEOUT_S = 1800.0
#: Connections served at the same time; more are answered with a busy ERROR.
MAX_CONCURRENT = 64
#: Seconds a refused (busy) connection is given to read its ERROR.
_REFUSE_LINGER_S = 2.0
_ACCEPT_POLL_S = 0.2


class _HandshakeSocket:
    """What gadgetron-python's ``Connection`` reads CONFIG and HEADER through: a socket whose
    ``recv`` raises :class:`PeerVanished` on a closed peer (instead of returning b'' forever),
    holds a deadline for the *whole* handshake (a peer trickling one byte at a time cannot keep it
    open; ``settimeout(None)`` from the wrapper is ignored), and refuses CONFIG/HEADER lengths
    over ``limit`` bytes in all before allocating anything (it returns at most
    :data:`~gadgets.protocol.wire_limits.CHUNK_BYTES` per call; the wrapper loops)."""

    def __init__(self, sock: socket.socket, timeout: float, limit: int = HANDSHAKE_LIMIT_BYTES) -> None:
        self._sock = sock
        self._timeout = timeout
        self._deadline = time.monotonic() + timeout
        self._left = limit
        self._limit = limit

    def settimeout(self, value: float | None) -> None:
        pass

    def recv(self, nbytes: int, flags: int = 0) -> bytes:
        if nbytes > self._left:
            raise MessageTooLarge(f"CONFIG/HEADER claim {nbytes} bytes, more than the {self._limit} bytes allowed "
                                  "for the handshake")
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"CONFIG and HEADER did not arrive within {self._timeout:g} s")
        self._sock.settimeout(remaining)
        try:
            data = self._sock.recv(min(nbytes, CHUNK_BYTES))
        except TimeoutError:
            raise TimeoutError(f"CONFIG and HEADER did not arrive within {self._timeout:g} s") from None
        if nbytes > 0 and not data:
            raise PeerVanished("peer closed the connection during the handshake")
        self._left -= len(data)
        return data

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def send(self, data: bytes) -> int:
        return self._sock.send(data)

    def close(self) -> None:
        self._sock.close()


def open_connection(sock: socket.socket, handshake_timeout: float = HANDSHAKE_TIMEOUT_S, *,
                    idle_timeout: float | None = None, ceiling: int | None = None) -> Connection:
    """A gadgetron-python ``Connection`` over an accepted socket (CONFIG and HEADER read within
    ``handshake_timeout`` seconds in all), whose socket is then a
    :class:`~gadgets.protocol.stream.SafeSocket` (no spinning; reads wait at most ``idle_timeout`` s for
    the peer; each message limited to what the scan's header allows, at most ``ceiling`` bytes)
    with the checked readers (:func:`gadgets.protocol.stream.guard_connection`)."""
    connection = Connection(_HandshakeSocket(sock, handshake_timeout))
    limit, why = message_limit(connection.header, ceiling)
    connection.socket = SafeSocket(sock, budget=MessageBudget(limit, why), timeout=idle_timeout)
    guard_connection(connection)
    return connection


def handshake_problem(exc: BaseException) -> str:
    """One line saying why CONFIG/HEADER could not be read (gadgetron-python asserts the message
    ids without a message, and its header parser raises whatever the XML provokes)."""
    if isinstance(exc, AssertionError) and not str(exc):
        return ("the first messages were not CONFIG (message id 1 or 2) and HEADER (3), as Gadgetron sends "
                "them to an external node")
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Worker:
    """Accept loop and per-connection threads; see the module docstring."""

    def __init__(self, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, checkpoint: str = "packaged",
                 device: str = "auto", max_connections: int | None = None, idle_timeout: float | None = None,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT_S, max_concurrent: int = MAX_CONCURRENT,
                 connection_timeout: float | None = CONNECTION_IDLE_TIMEOUT_S,
                 max_message_bytes: int | None = None) -> None:
        self.host, self.port = host, port
        self.defaults = {"checkpoint": checkpoint, "device": device}
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.max_concurrent = int(max_concurrent)
        self.connection_timeout = connection_timeout
        self.ceiling = ceiling_bytes() if max_message_bytes is None else int(max_message_bytes)
        self.refused = 0
        #: socket -> the SafeSocket of its data phase (None during the handshake)
        self._open: dict[socket.socket, SafeSocket | None] = {}
        self._refusing = threading.BoundedSemaphore(8)
        self._closed_idle: set[socket.socket] = set()
        self.stop = threading.Event()
        self.accepted = 0
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._active = 0
        self._last_activity = time.monotonic()
        self.listener: socket.socket | None = None

    # -- start-up ------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Load the model now (once per process); a failure is logged, the scans get the fallback."""
        from cardiomm_core.packaged import resolve_checkpoint

        from ..recon import load_engine

        try:
            path = resolve_checkpoint(self.defaults["checkpoint"])
        except ValueError as exc:
            logger.error("worker: %s; scans will get the fallback reconstruction", exc)
            return
        if path is None:
            logger.warning("worker: no model (checkpoint %r); scans will get the fallback reconstruction",
                           self.defaults["checkpoint"])
            return
        started = time.perf_counter()
        try:
            load_engine(path, self.defaults["device"])
        except Exception as exc:  # noqa: BLE001 - keep serving: each scan falls back and says why
            logger.error("worker: could not load %s (%s: %s); scans will get the fallback reconstruction",
                         path, type(exc).__name__, exc)
            logger.debug("loading %s failed", path, exc_info=True)
            return
        logger.info("worker: model ready in %.1f s", time.perf_counter() - started)

    def bind(self) -> int:
        """Bind and listen; return the port (useful with --port 0)."""
        listener = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(16)
        listener.settimeout(_ACCEPT_POLL_S)
        self.listener = listener
        self.port = listener.getsockname()[1]
        return self.port

    # -- serving -------------------------------------------------------------------------
    def _serve_one(self, sock: socket.socket, peer: Any, number: int) -> None:
        from ..recon import CardioMMRecon

        started = time.perf_counter()
        try:
            try:
                connection = open_connection(sock, self.handshake_timeout, idle_timeout=self.connection_timeout,
                                             ceiling=self.ceiling)
            except Exception as exc:  # noqa: BLE001 - PeerVanished, timeout, wrong message id, bad XML, too long
                reason = handshake_problem(exc)
                logger.warning("connection %d from %s: no valid CONFIG/HEADER (%s); closed", number, peer, reason)
                if isinstance(exc, MessageTooLarge):
                    self._send_quietly(sock, f"cardiomm-worker: {exc}")
                    sock.close()
                elif isinstance(exc, (ConnectionError, TimeoutError)):
                    sock.close()  # gone, or too slow to be told anything
                else:  # the peer sent something we cannot read as CONFIG and HEADER: tell it what
                    self._answer_and_close(sock, f"cardiomm-worker: no valid CONFIG/HEADER: {reason}")
                return
            with self._lock:
                self._open[sock] = connection.socket
            if self.stop.is_set():  # told to stop during the handshake: nothing started yet
                sock.close()
                return
            with connection:  # Connection.__exit__ sends our CLOSE
                try:
                    gadget = CardioMMRecon(**self.defaults)
                except ValueError as exc:  # not expected: the defaults were checked at start-up
                    logger.error("connection %d: %s", number, exc)
                    from ..protocol.stream import send_error

                    send_error(connection, f"CardioMMRecon: {exc}")
                    return
                gadget.handle(connection)
            logger.info("connection %d from %s done in %.2f s", number, peer, time.perf_counter() - started)
        except Exception:  # noqa: BLE001 - one connection's failure must not end the worker
            logger.exception("connection %d from %s failed", number, peer)
        finally:
            with self._lock:
                self._open.pop(sock, None)
                self._closed_idle.discard(sock)
                self._active -= 1
                self._last_activity = time.monotonic()

    @staticmethod
    def _send_quietly(sock: socket.socket, text: str) -> None:
        try:
            sock.settimeout(_REFUSE_LINGER_S)
            sock.sendall(error_message(text))
        except OSError:
            pass

    @classmethod
    def _answer_and_close(cls, sock: socket.socket, text: str) -> None:
        """Send one ERROR, let the peer read it (what it still sends is read and dropped for a
        moment: closing with data unread would reset the connection and lose the ERROR), close."""
        try:
            cls._send_quietly(sock, text)
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            else:
                discard_socket_input(sock, timeout=_REFUSE_LINGER_S, limit=2**20, within=_REFUSE_LINGER_S)
        finally:
            sock.close()

    def _refuse(self, sock: socket.socket, peer: str) -> None:
        """Answer a connection over ``max_concurrent`` with a busy ERROR, let the peer read it, close."""
        try:
            self._answer_and_close(sock, f"cardiomm-worker is busy: {self.max_concurrent} connections in progress "
                                         f"(its limit, --max-concurrent {self.max_concurrent}); try again later")
        finally:
            self._refusing.release()

    def close_idle(self) -> int:
        """Shut down every connection that waits for its handshake or for its next message (the
        scans in progress go on); returns how many."""
        with self._lock:
            idle = [sock for sock, safe in self._open.items()
                    if (safe is None or safe.idle) and sock not in self._closed_idle]
            self._closed_idle.update(idle)
        for sock in idle:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if idle:
            logger.info("worker: closed %d idle connection(s)", len(idle))
        return len(idle)

    def _should_stop(self) -> bool:
        if self.stop.is_set():
            return True
        with self._lock:
            if self.max_connections is not None and self.accepted >= self.max_connections:
                logger.info("worker: served its %d connection(s)", self.max_connections)
                return True
            if self.idle_timeout is not None and self._active == 0 \
                    and time.monotonic() - self._last_activity > self.idle_timeout:
                logger.info("worker: idle for %.0f s", self.idle_timeout)
                return True
        return False

    def serve(self) -> None:
        """Accept connections until told to stop; then wait for those in progress."""
        if self.listener is None:
            self.bind()
        assert self.listener is not None
        logger.info("worker listening on %s:%d", self.host, self.port)
        with self._lock:
            self._last_activity = time.monotonic()
        try:
            while not self._should_stop():
                try:
                    sock, peer = self.listener.accept()
                except TimeoutError:
                    continue
                except OSError as exc:
                    if self.stop.is_set():
                        break
                    logger.warning("accept failed: %s", exc)
                    continue
                with self._lock:
                    busy = self._active >= self.max_concurrent
                    if not busy:
                        self.accepted += 1
                        self._active += 1
                        number = self.accepted
                        self._open[sock] = None
                if busy:
                    self.refused += 1
                    logger.warning("connection from %s:%s refused: %d connections in progress (--max-concurrent)",
                                   peer[0], peer[1], self.max_concurrent)
                    if self._refusing.acquire(blocking=False):
                        threading.Thread(target=self._refuse, args=(sock, f"{peer[0]}:{peer[1]}"),
                                         name="cardiomm-refuse", daemon=True).start()
                    else:
                        sock.close()
                    continue
                logger.info("connection %d from %s:%s", number, *peer[:2])
                thread = threading.Thread(target=self._serve_one, args=(sock, f"{peer[0]}:{peer[1]}", number),
                                          name=f"cardiomm-connection-{number}", daemon=True)
                thread.start()
                self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        finally:
            self.listener.close()
            deadline = time.monotonic() + SHUTDOWN_GRACE_S
            while any(t.is_alive() for t in self.threads) and time.monotonic() < deadline:
                if self.stop.is_set():  # a signal: also those that finish a message and wait for the next
                    self.close_idle()
                for thread in self.threads:
                    thread.join(min(0.2, max(0.0, deadline - time.monotonic())))
            alive = sum(t.is_alive() for t in self.threads)
            if alive:
                logger.warning("worker: %d connection(s) still running after %.0f s; exiting anyway",
                               alive, SHUTDOWN_GRACE_S)
            logger.info("worker stopped after %d connection(s)", self.accepted)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cardiomm-worker",
        description="Warm CardioMM worker for Gadgetron's <connect port=... address=.../> external node.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example (then replay through the chain that connects to it):\n"
               "  cardiomm-worker --port 18000 --checkpoint packaged --device auto &\n"
               "  cardiomm-replay scan.h5 --chain chains/cardiomm_cine_worker.xml --connect socket -o images.h5")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0: any)")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    parser.add_argument("--checkpoint", default="packaged",
                        help="'packaged' (default), 'none' (conventional recon only) or a checkpoint path")
    parser.add_argument("--device", default="auto", help="'auto' (default), 'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument("--allow-fallback", action="store_true",
                        help="start even when the checkpoint or device cannot be used (scans get the fallback)")
    parser.add_argument("--max-connections", type=int, default=None,
                        help="exit after serving this many connections")
    parser.add_argument("--idle-timeout", type=float, default=None,
                        help="exit after this many seconds without a connection")
    parser.add_argument("--max-concurrent", type=int, default=MAX_CONCURRENT,
                        help=f"connections served at the same time; more get a busy ERROR (default {MAX_CONCURRENT})")
    parser.add_argument("--handshake-timeout", type=float, default=HANDSHAKE_TIMEOUT_S,
                        help=f"seconds a connection has to deliver CONFIG and HEADER (default {HANDSHAKE_TIMEOUT_S:g})")
    parser.add_argument("--connection-timeout", type=float, default=CONNECTION_IDLE_TIMEOUT_S,
                        help="seconds a connection may stay silent while data are expected "
                             f"(default {CONNECTION_IDLE_TIMEOUT_S:g})")
    parser.add_argument("--max-message-mb", type=float, default=None,
                        help="ceiling of one message in MiB (default $CARDIOMM_MAX_MESSAGE_MB or "
                             "2048); each scan's header sets a lower limit from its matrix, coils and limits")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    if not 0 <= args.port <= 65535:
        print(f"cardiomm-worker: --port must be in 0..65535, got {args.port}", file=sys.stderr)
        return 2
    if args.max_connections is not None and args.max_connections < 1:
        print(f"cardiomm-worker: --max-connections must be >= 1, got {args.max_connections}", file=sys.stderr)
        return 2
    if args.idle_timeout is not None and not args.idle_timeout > 0:
        print(f"cardiomm-worker: --idle-timeout must be > 0, got {args.idle_timeout}", file=sys.stderr)
        return 2
    for name in ("max_concurrent",):
        if getattr(args, name) < 1:
            print(f"cardiomm-worker: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}",
                  file=sys.stderr)
            return 2
    for name in ("handshake_timeout", "connection_timeout"):
        if not getattr(args, name) > 0:
            print(f"cardiomm-worker: --{name.replace('_', '-')} must be > 0, got {getattr(args, name)}",
                  file=sys.stderr)
            return 2
    try:
        ceiling = ceiling_bytes(args.max_message_mb)
    except ValueError as exc:
        print(f"cardiomm-worker: {exc}", file=sys.stderr)
        return 2
    from ..recon import CardioMMRecon

    try:
        CardioMMRecon(checkpoint=args.checkpoint, device=args.device)  # checks the settings' syntax
    except ValueError as exc:
        print(f"cardiomm-worker: {exc}", file=sys.stderr)
        return 2
    worker = Worker(host=args.host, port=args.port, checkpoint=args.checkpoint, device=args.device,
                    max_connections=args.max_connections, idle_timeout=args.idle_timeout,
                    handshake_timeout=args.handshake_timeout, max_concurrent=args.max_concurrent,
                    connection_timeout=args.connection_timeout, max_message_bytes=ceiling)
    try:
        port = worker.bind()
    except OSError as exc:
        print(f"cardiomm-worker: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1

    def on_signal(number: int, _frame: Any) -> None:
        logger.info("worker: received %s; stopping", signal.Signals(number).name)
        worker.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.allow_fallback:
        worker.warm_up()
    else:
        from ..recon import check_model_setting

        started = time.perf_counter()
        try:
            loaded = check_model_setting(args.checkpoint, args.device)
        except ValueError as exc:
            if worker.listener is not None:
                worker.listener.close()
            print(f"cardiomm-worker: error: {exc} (--allow-fallback: start anyway, scans get the fallback)",
                  file=sys.stderr)
            return 2
        if loaded is not None:
            logger.info("worker: model ready in %.1f s", time.perf_counter() - started)
    logger.info("cardiomm-worker ready on %s:%d", args.host, port)
    worker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
