"""cardiomm-worker: a warm CardioMM process that Gadgetron reaches with ``<connect port=.../>``.

A ``<execute ... type="python"/>`` node starts a fresh Python per scan and pays the model load
(and CUDA start-up) every time. This worker loads the model once and then serves Gadgetron's
external-node connections, one after another and concurrently (one thread per connection)::

    cardiomm-worker --port 18000 [--host 127.0.0.1] [--checkpoint packaged|none|PATH] [--device auto]
                    [--max-connections N] [--idle-timeout SECONDS]

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

Guarding the handshake: gadgetron-python's socket wrapper spins forever on a peer that closes
before CONFIG/HEADER (a port probe or health check does exactly that). The worker reads the
handshake through a socket that raises instead and has a timeout (``HANDSHAKE_TIMEOUT_S``).

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
Connections in progress are finished (up to ``SHUTDOWN_GRACE_S``) before it exits.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
import time
from typing import Any, Sequence

from gadgetron.external.connection import Connection

from .stream import PeerVanished, SafeSocket, setup_logging

logger = logging.getLogger("gadgets.worker")

DEFAULT_PORT = 18000
DEFAULT_HOST = "127.0.0.1"
#: Seconds a new connection has to deliver CONFIG and HEADER.
HANDSHAKE_TIMEOUT_S = 30.0
#: Seconds the worker waits for connections in progress when it is told to stop.
SHUTDOWN_GRACE_S = 60.0
_ACCEPT_POLL_S = 0.2


class _HandshakeSocket:
    """What gadgetron-python's ``Connection`` reads CONFIG and HEADER through: a socket whose
    ``recv`` raises :class:`PeerVanished` on a closed peer (instead of returning b'' forever) and
    keeps a timeout (``settimeout(None)`` from the wrapper is ignored)."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self._sock = sock
        self._sock.settimeout(timeout)

    def settimeout(self, value: float | None) -> None:
        pass

    def recv(self, nbytes: int, flags: int = 0) -> bytes:
        data = self._sock.recv(nbytes, flags)
        if nbytes > 0 and not data:
            raise PeerVanished("peer closed the connection during the handshake")
        return data

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def send(self, data: bytes) -> int:
        return self._sock.send(data)

    def close(self) -> None:
        self._sock.close()


def open_connection(sock: socket.socket, handshake_timeout: float = HANDSHAKE_TIMEOUT_S) -> Connection:
    """A gadgetron-python ``Connection`` over an accepted socket (CONFIG and HEADER read), whose
    socket is then a :class:`~gadgets.stream.SafeSocket` (no timeout, no spinning)."""
    connection = Connection(_HandshakeSocket(sock, handshake_timeout))
    sock.settimeout(None)
    connection.socket = SafeSocket(sock)
    return connection


class Worker:
    """Accept loop and per-connection threads; see the module docstring."""

    def __init__(self, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, checkpoint: str = "packaged",
                 device: str = "auto", max_connections: int | None = None, idle_timeout: float | None = None,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT_S) -> None:
        self.host, self.port = host, port
        self.defaults = {"checkpoint": checkpoint, "device": device}
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
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

        from .recon import load_engine

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
        except Exception:  # noqa: BLE001 - keep serving: each scan falls back and says why
            logger.exception("worker: could not load %s; scans will get the fallback reconstruction", path)
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
        from .recon import CardioMMRecon

        started = time.perf_counter()
        try:
            try:
                connection = open_connection(sock, self.handshake_timeout)
            except Exception as exc:  # noqa: BLE001 - PeerVanished, timeout, wrong message id, bad XML
                logger.warning("connection %d from %s: no valid CONFIG/HEADER (%s: %s); closed",
                               number, peer, type(exc).__name__, exc)
                sock.close()
                return
            with connection:  # Connection.__exit__ sends our CLOSE
                try:
                    gadget = CardioMMRecon(**self.defaults)
                except ValueError as exc:  # not expected: the defaults were checked at start-up
                    logger.error("connection %d: %s", number, exc)
                    from .stream import send_error

                    send_error(connection, f"CardioMMRecon: {exc}")
                    return
                gadget.handle(connection)
            logger.info("connection %d from %s done in %.2f s", number, peer, time.perf_counter() - started)
        except Exception:  # noqa: BLE001 - one connection's failure must not end the worker
            logger.exception("connection %d from %s failed", number, peer)
        finally:
            with self._lock:
                self._active -= 1
                self._last_activity = time.monotonic()

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
                except socket.timeout:
                    continue
                except OSError as exc:
                    if self.stop.is_set():
                        break
                    logger.warning("accept failed: %s", exc)
                    continue
                with self._lock:
                    self.accepted += 1
                    self._active += 1
                    number = self.accepted
                logger.info("connection %d from %s:%s", number, *peer[:2])
                thread = threading.Thread(target=self._serve_one, args=(sock, f"{peer[0]}:{peer[1]}", number),
                                          name=f"cardiomm-connection-{number}", daemon=True)
                thread.start()
                self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        finally:
            self.listener.close()
            deadline = time.monotonic() + SHUTDOWN_GRACE_S
            for thread in self.threads:
                thread.join(max(0.0, deadline - time.monotonic()))
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
    from .recon import CardioMMRecon

    try:
        CardioMMRecon(checkpoint=args.checkpoint, device=args.device)  # checks the settings' syntax
    except ValueError as exc:
        print(f"cardiomm-worker: {exc}", file=sys.stderr)
        return 2
    worker = Worker(host=args.host, port=args.port, checkpoint=args.checkpoint, device=args.device,
                    max_connections=args.max_connections, idle_timeout=args.idle_timeout)
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
        from .recon import check_model_setting

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
