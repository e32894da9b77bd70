"""Interpreter-level guard against gadgetron-python 1.4.1's spinning socket read.

gadgetron-python 1.4.1's ``Connection.SocketWrapper.read`` loops forever at 100% CPU when the peer
has closed the socket (``recv`` keeps returning no bytes). Gadgetron starts every external Python
node as ``python -m gadgetron PORT MODULE TARGET``; the child reads CONFIG and HEADER inside
``Connection.__init__``, *before* the gadget module is imported, so a guard inside the gadgets
comes too late when Gadgetron closes the socket early (a header it rejects, a failed node).

This module is therefore loaded at interpreter start by ``cardiomm_guard.pth``, which the package
installs into site-packages (wheel and editable installs alike; see ``setup.py``). It only
registers a tiny meta-path finder: every import other than ``gadgetron.external.connection`` costs
one string comparison. When that module is imported, the finder lets the normal loader execute it
and then patches ``Connection.SocketWrapper``:

* ``read(n)`` returns exactly ``n`` bytes or raises :class:`PeerVanished` (a ``ConnectionError``)
  when the peer closed or reset the connection: never a spin. In a child whose Gadgetron went away
  before CONFIG/HEADER, the exception ends ``python -m gadgetron`` (exit status 1) at once.
* ``close()`` tolerates a peer that is already gone.
* ``Connection._read_header`` logs a warning, not a failure, for an ISMRMRD header whose
  ``<version>`` differs from :data:`CURRENT_HEADER_VERSION` (older files that the C++ server's
  native gadgets accept).

Only the standard library is imported here (no numpy, ismrmrd or gadgetron at start-up).
``CARDIOMM_SPIN_GUARD=0`` in the environment disables the guard (to demonstrate the defect).
"""

from __future__ import annotations

import os
import sys

# Annotations only: nothing from `typing` is imported at interpreter start (type checkers treat a
# name TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "CHUNK_BYTES",
    "CURRENT_HEADER_VERSION",
    "DISABLE_VARIABLE",
    "PeerVanished",
    "TARGET_MODULE",
    "install",
    "is_patched",
    "patch_connection_module",
    "recv_exactly",
]

#: The module whose socket wrapper is patched.
TARGET_MODULE = "gadgetron.external.connection"
#: ``CARDIOMM_SPIN_GUARD=0`` (or ``false``/``no``/``off``) leaves gadgetron-python unpatched.
DISABLE_VARIABLE = "CARDIOMM_SPIN_GUARD"
#: ISMRMRD schema version of ISMRMRD 1.14.x (Gadgetron 4.7.2); same as gadgets.ismrmrd_io's.
CURRENT_HEADER_VERSION = 14

_MARK = "_cardiomm_guarded"


class PeerVanished(ConnectionError):
    """The peer closed (or reset) the connection without sending CLOSE.

    ``received``: how many bytes of the interrupted read had arrived (0: between reads).
    """

    def __init__(self, message: str, received: int = 0) -> None:
        super().__init__(message)
        self.received = received


#: Reads longer than this grow their buffer as the data arrive (a peer that claims a large length
#: and sends nothing makes nothing be allocated); shorter ones are allocated at once.
CHUNK_BYTES = 1 << 20


def recv_exactly(sock: Any, nbytes: int) -> bytes | bytearray:
    """Exactly ``nbytes`` bytes from the socket ``sock`` (``nbytes >= 0``).

    Up to :data:`CHUNK_BYTES` the buffer is allocated at once; larger reads grow it piece by piece
    as the data arrive (and return the ``bytearray``).

    Raises :class:`PeerVanished` when the peer closes the connection first (``recv`` returns no
    bytes: never a spin) or resets it (then with the reset as ``__cause__``). Timeouts and other
    OSErrors propagate unchanged.
    """
    if nbytes > CHUNK_BYTES:
        return _recv_growing(sock, nbytes)
    buffer = bytearray(nbytes)
    view = memoryview(buffer)
    received = 0
    while received < nbytes:
        try:
            count = sock.recv_into(view[received:], nbytes - received)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
            raise PeerVanished(f"connection lost while reading ({exc})", received) from exc
        if count == 0:
            raise PeerVanished(f"peer closed the connection ({received} of {nbytes} bytes read)", received)
        received += count
    return bytes(buffer)


def _recv_growing(sock: Any, nbytes: int) -> bytearray:
    buffer = bytearray()
    while len(buffer) < nbytes:
        try:
            piece = sock.recv(min(CHUNK_BYTES, nbytes - len(buffer)))
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
            raise PeerVanished(f"connection lost while reading ({exc})", len(buffer)) from exc
        if not piece:
            raise PeerVanished(f"peer closed the connection ({len(buffer)} of {nbytes} bytes read)", len(buffer))
        buffer += piece
    return buffer


# --------------------------------------------------------------------------- the patch


def _recv_exactly_plain(sock: Any, nbytes: int) -> bytes:
    """:func:`recv_exactly` for socket-like objects that offer ``recv`` only."""
    chunks: list[bytes] = []
    received = 0
    while received < nbytes:
        try:
            chunk = sock.recv(nbytes - received)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
            raise PeerVanished(f"connection lost while reading ({exc})", received) from exc
        if not chunk:
            raise PeerVanished(f"peer closed the connection ({received} of {nbytes} bytes read)", received)
        chunks.append(chunk)
        received += len(chunk)
    return b"".join(chunks)


def _safe_read(self: Any, nbytes: int) -> bytes | bytearray:
    if nbytes <= 0:
        return b""
    if hasattr(self.socket, "recv_into"):
        return recv_exactly(self.socket, nbytes)
    return _recv_exactly_plain(self.socket, nbytes)


def _safe_close(self: Any) -> None:
    try:
        self.socket.sendall((4).to_bytes(2, "little"))  # CLOSE
    except OSError:
        pass  # the peer has gone: nothing to tell it
    try:
        self.socket.close()
    except OSError:
        pass


def _header_version(text: str) -> int | None:
    import re

    match = re.search(r"<(?:[A-Za-z_][\w.-]*:)?version\s*>\s*([^<]*?)\s*</", text)
    if match is None:
        return None
    try:
        return int(match.group(1))
    except ValueError:
        return None


def _wrap_read_header(original: Any) -> Any:
    def _read_header(self: Any) -> Any:
        header, header_bytes = original(self)
        try:
            text = header_bytes.decode("utf-8", "replace") if isinstance(header_bytes, bytes) else str(header_bytes)
            version = _header_version(text[:4096])
        except Exception:  # noqa: BLE001 - a warning must never break the connection
            version = None
        if version is not None and version != CURRENT_HEADER_VERSION:
            import logging

            logging.getLogger("cardiomm_guard").warning(
                "ISMRMRD header version %d differs from the schema version %d; accepted (read as version %d)",
                version, CURRENT_HEADER_VERSION, CURRENT_HEADER_VERSION)
        return header, header_bytes

    _read_header.__wrapped__ = original  # type: ignore[attr-defined]
    return _read_header


def patch_connection_module(module: Any) -> bool:
    """Patch ``module.Connection`` (gadgetron-python's ``gadgetron.external.connection``).

    Returns True when it patched now, False when it was patched already.
    """
    connection = module.Connection
    wrapper = connection.SocketWrapper
    if getattr(wrapper, _MARK, False):
        return False
    wrapper.read = _safe_read
    wrapper.close = _safe_close
    connection._read_header = _wrap_read_header(connection._read_header)
    setattr(wrapper, _MARK, True)
    return True


def is_patched() -> bool:
    """Whether gadgetron-python's socket wrapper in this interpreter is the non-spinning one."""
    module = sys.modules.get(TARGET_MODULE)
    return bool(module is not None and getattr(module.Connection.SocketWrapper, _MARK, False))


class _PatchingLoader:
    """Delegates to the real loader, then patches the executed module."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        patch_connection_module(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _GuardFinder:
    """A meta-path finder that reacts to :data:`TARGET_MODULE` only."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != TARGET_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, _GuardFinder):
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None

    def invalidate_caches(self) -> None:
        pass


def _disabled() -> bool:
    return os.environ.get(DISABLE_VARIABLE, "").strip().lower() in ("0", "false", "no", "off")


def install() -> bool:
    """Register the guard (idempotent); patch at once if the module is already imported.

    Returns False when disabled by ``CARDIOMM_SPIN_GUARD=0``.
    """
    if _disabled():
        return False
    module = sys.modules.get(TARGET_MODULE)
    if module is not None:
        patch_connection_module(module)
    if not any(isinstance(finder, _GuardFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _GuardFinder())
    return True


install()
