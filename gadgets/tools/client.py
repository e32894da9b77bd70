"""Replay an ISMRMRD raw file through a Gadgetron 4.x server, the way ``gadgetron_ismrmrd_client`` does.

:func:`stream_file` sends the config, the file's header and every acquisition (waveforms merged
in by time stamp) through a :class:`~gadgets.protocol.gadgetron_client.GadgetronClient`, while a
:class:`ServerReplyReader` thread collects what comes back, so a large scan cannot deadlock on
full socket buffers. Before sending, :func:`check_header_version` and
:func:`native_noise_adjust_problem` say why Gadgetron 4.7.2 would reject the scan. Raw files and
their header versions are read through :mod:`gadgets.io.ismrmrd_io` (``RawFile``, block reads that
give the same objects as ``ismrmrd.Dataset.read_acquisition``, much faster).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
from collections.abc import Callable

import ismrmrd
import numpy as np

from ..io import ismrmrd_io
from ..protocol.gadgetron_client import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IO_TIMEOUT,
    GadgetronClient,
    GadgetronConnectionError,
    GadgetronServerError,
    ServerError,
    ServerMessage,
    ServerText,
)

logger = logging.getLogger(__name__)


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


class ServerReplyReader(threading.Thread):
    """Reads the server's messages into a ReplayResult on a background thread (while the file is sent)."""

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
            collector = ServerReplyReader(client, result)
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
