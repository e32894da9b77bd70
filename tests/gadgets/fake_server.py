"""A tiny Gadgetron-like server for tests: the server side of the ISMRMRD streaming protocol.

It binds 127.0.0.1 on an ephemeral port, serves ONE connection on a daemon thread and stops by
itself after ``timeout`` seconds (every accept/recv/send has that timeout), so a test cannot
hang on it. It records what it received and answers according to ``mode``:

``"echo"``
    For each slice, after the acquisition flagged ACQ_LAST_IN_SLICE, reconstruct a trivial image
    (centred inverse 2D FFT of the received lines per coil, root-sum-of-squares; ky =
    ``idx.kspace_encode_step_1``), send it as a float32 ``ismrmrd.Image`` (1022) with meta
    attributes, and with ``mirror=True`` also send every acquisition straight back. After the
    client's CLOSE: one TEXT log line, then CLOSE.
``"error"``
    After ``fail_after`` acquisitions (0: right after the header) report ``error_text`` the way
    Gadgetron 4.7.2 does (TEXT, id 5, ``"[Connection Main Thread] ERROR: ..."``, from
    ``ErrorSender``/``TextWriter``) or, with ``error_message_id=8``, as an ERROR message; then
    CLOSE and close the socket at once (whatever the client is still sending).
``"vanish"``
    After ``fail_after`` acquisitions close the socket without CLOSE.
``"silent"``
    Read everything, answer nothing, keep the socket open until ``timeout``.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field

import ismrmrd
import numpy as np

MSG_CONFIG_FILE = 1
MSG_CONFIG_SCRIPT = 2
MSG_HEADER = 3
MSG_CLOSE = 4
MSG_TEXT = 5
MSG_ERROR = 8
MSG_ACQUISITION = 1008
MSG_IMAGE = 1022
MSG_WAVEFORM = 1026

DEFAULT_ERROR_TEXT = "XML header version does not match library schema version."
MODES = ("echo", "error", "vanish", "silent")


class _Closed(Exception):
    pass


@dataclass
class Received:
    """What the fake server read from its client."""

    config_name: str | None = None
    config_text: str | None = None
    header: str | None = None
    acquisitions: list[ismrmrd.Acquisition] = field(default_factory=list)
    waveforms: list[ismrmrd.Waveform] = field(default_factory=list)
    message_ids: list[int] = field(default_factory=list)
    close: bool = False


def rss_image(lines: dict[int, np.ndarray]) -> np.ndarray:
    """(y, x) float32 root-sum-of-squares of the centred inverse FFT of lines {ky: (coils, x)}."""
    n_y = max(lines) + 1
    first = next(iter(lines.values()))
    kspace = np.zeros((first.shape[0], n_y, first.shape[1]), dtype=np.complex64)
    for ky, line in lines.items():
        kspace[:, ky, :] = line
    img = np.fft.fftshift(
        np.fft.ifft2(np.fft.ifftshift(kspace, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
    )
    return np.sqrt((np.abs(img) ** 2).sum(axis=0)).astype(np.float32)


class FakeGadgetronServer:
    """Serve one client connection on a background thread (see the module docstring)."""

    def __init__(
        self,
        mode: str = "echo",
        *,
        timeout: float = 10.0,
        fail_after: int = 0,
        error_text: str = DEFAULT_ERROR_TEXT,
        error_message_id: int = MSG_TEXT,
        mirror: bool = False,
        series_index: int = 1,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.timeout = timeout
        self.fail_after = fail_after
        self.error_text = error_text
        self.error_message_id = error_message_id
        self.mirror = mirror
        self.series_index = series_index
        self.received = Received()
        self.sent_images: list[ismrmrd.Image] = []
        self.exception: BaseException | None = None
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self._listener.settimeout(timeout)
        self.host, self.port = self._listener.getsockname()
        self._conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, name="fake-gadgetron", daemon=True)

    # -- lifecycle

    def start(self) -> FakeGadgetronServer:
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(self.timeout + 5.0 if timeout is None else timeout)

    def __enter__(self) -> FakeGadgetronServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.join()
        self._listener.close()

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()

    # -- protocol helpers

    def _recv_exact(self, n: int) -> bytes:
        assert self._conn is not None
        chunks = bytearray()
        while len(chunks) < n:
            chunk = self._conn.recv(min(n - len(chunks), 1 << 20))
            if not chunk:
                raise _Closed()
            chunks += chunk
        return bytes(chunks)

    def _send(self, payload: bytes) -> None:
        assert self._conn is not None
        self._conn.sendall(payload)

    def send_text(self, text: str, message_id: int = MSG_TEXT) -> None:
        encoded = text.encode("utf-8")
        self._send(struct.pack("<HI", message_id, len(encoded)) + encoded)

    def _send_close(self) -> None:
        self._send(struct.pack("<H", MSG_CLOSE))

    def _read_length_prefixed(self) -> str:
        (length,) = struct.unpack("<I", self._recv_exact(4))
        # Gadgetron 4.x reads exactly `length` bytes (older clients added a trailing NUL).
        return self._recv_exact(length).rstrip(b"\0").decode("utf-8")

    # -- the connection

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError as exc:  # nobody connected before the timeout
            self.exception = exc
            return
        self._conn = conn
        conn.settimeout(self.timeout)
        try:
            self._handle()
        except _Closed:
            pass
        except BaseException as exc:  # recorded for the test to inspect
            self.exception = exc
        finally:
            conn.close()

    def _handle(self) -> None:
        slices: dict[int, dict[int, np.ndarray]] = {}
        while True:
            (message_id,) = struct.unpack("<H", self._recv_exact(2))
            self.received.message_ids.append(message_id)
            if message_id == MSG_CONFIG_FILE:
                name = self._recv_exact(1024)
                self.received.config_name = name.split(b"\0", 1)[0].decode("utf-8")
            elif message_id == MSG_CONFIG_SCRIPT:
                self.received.config_text = self._read_length_prefixed()
            elif message_id == MSG_HEADER:
                self.received.header = self._read_length_prefixed()
                if self._fail_now():
                    return
            elif message_id == MSG_ACQUISITION:
                acq = ismrmrd.Acquisition.deserialize_from(self._recv_exact)
                self.received.acquisitions.append(acq)
                if self.mode == "echo":
                    self._echo(acq, slices)
                if self._fail_now():
                    return
            elif message_id == MSG_WAVEFORM:
                self.received.waveforms.append(ismrmrd.Waveform.deserialize_from(self._recv_exact))
            elif message_id == MSG_CLOSE:
                self.received.close = True
                break
            else:
                raise ValueError(f"fake server: unexpected message id {message_id}")
        if self.mode == "echo":
            self.send_text(
                f"fake gadgetron: {len(self.received.acquisitions)} acquisitions, "
                f"{len(self.sent_images)} images"
            )
            self._send_close()
        elif self.mode == "silent":
            self._wait_for_timeout()
        else:  # error / vanish configured to fail after more items than were sent
            self._fail()

    def _fail_now(self) -> bool:
        if self.mode not in ("error", "vanish"):
            return False
        if len(self.received.acquisitions) < self.fail_after:
            return False
        self._fail()
        return True

    def _fail(self) -> None:
        if self.mode == "error":
            text = f"[Connection Main Thread] ERROR: {self.error_text}"
            self.send_text(text, self.error_message_id)
            self._send_close()
        # vanish: just return; the caller closes the socket without CLOSE

    def _wait_for_timeout(self) -> None:
        try:
            while self._recv_exact(1):
                pass
        except (TimeoutError, _Closed):
            pass

    def _echo(self, acq: ismrmrd.Acquisition, slices: dict[int, dict[int, np.ndarray]]) -> None:
        if self.mirror:
            self._send(struct.pack("<H", MSG_ACQUISITION) + acq.to_bytes())
        lines = slices.setdefault(acq.idx.slice, {})
        lines[acq.idx.kspace_encode_step_1] = acq.data.copy()
        if not acq.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE):
            return
        rss = rss_image(slices.pop(acq.idx.slice))
        image = ismrmrd.Image.from_array(
            rss[np.newaxis],  # (z=1, y, x)
            acquisition=acq,
            image_index=len(self.sent_images) + 1,
            image_series_index=self.series_index,
            image_type=ismrmrd.IMTYPE_MAGNITUDE,
        )
        image.meta = {
            "GADGETRON_DataRole": "Image",
            "CardioMM_slice": str(acq.idx.slice),
            "CardioMM_lines": [str(ky) for ky in sorted(lines)],
        }
        self.sent_images.append(image)
        self._send(struct.pack("<H", MSG_IMAGE) + image.to_bytes())

