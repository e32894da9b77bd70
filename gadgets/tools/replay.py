"""``cardiomm-replay``: replay an ISMRMRD raw file through a chain, locally or on a Gadgetron server.

Local (no Gadgetron needed; the chain runs in this process, see :func:`gadgets.tools.chain_runner.run_chain`)::

    cardiomm-replay IN.h5 --chain chains/cardiomm_cine_python.xml -o OUT.h5 [--group NAME]
                    [--preview OUT.png] [--checkpoint packaged|none|PATH] [--device auto|cpu|cuda]
    cardiomm-replay IN.h5 --chain chains/cardiomm_cine_python.xml --format dicom -o OUT_DIR   # or nifti, png

Through a Gadgetron 4.x server (what ``gadgetron_ismrmrd_client`` does)::

    cardiomm-replay IN.h5 --server HOST:PORT --config NAME.xml -o OUT.h5      # config on the server (message 1)
    cardiomm-replay IN.h5 --server HOST:PORT --config chains/X.xml -o OUT.h5  # a local file: sent as XML (message 2)
    cardiomm-replay IN.h5 --server HOST:PORT --chain chains/X.xml -o OUT.h5   # the chain's XML as text (message 2)

With ``--format dicom|nifti|png`` the images go to the folder ``OUT`` instead (see
:mod:`gadgets.io.export`: DICOM MR images with geometry, NIfTI with the scanner affine, labelled PNG
montages). Otherwise images are appended to ``OUT.h5`` under ``<group>/image_<series>/{data,header,attributes}`` as
``gadgetron_ismrmrd_client`` stores them (:func:`gadgets.io.image_io.write_images`); the group
defaults to the current local time, ``YYYY-MM-DD HH:MM:SS``, as the client's does.
``--checkpoint`` and ``--device`` set the CardioMMRecon stage's parameters of the chain (local,
or the XML sent with ``--chain`` in server mode). A local run loads the model of each in-process
CardioMMRecon stage before the scan starts: a checkpoint that does not exist or cannot be loaded,
or a device that is not available, ends the run with one line and exit status 2 (with
``--allow-fallback`` the scan runs and its images come from the fallback, marked as such). A
failure during the scan still gives fallback images. With ``--server`` the checkpoint and the device
are the server's, checked there. ``--header-version 14`` rewrites the file's
ISMRMRD header version before use: Gadgetron 4.7.2 rejects any other version ("XML header
version does not match library schema version"), e.g. the 8 of files written by Debian's
ismrmrd-tools; without the option such a file is reported before it is sent.

Progress goes to stderr every couple of seconds; a summary closes the run (images, series,
seconds, acquisitions per second, the method that produced the images). Server errors and texts
are printed to stderr.

Images are written to a temporary file beside ``OUT.h5`` and moved into place only when complete
(:func:`gadgets.io.image_io.write_images_atomic`): a full disk or any other I/O error leaves an
existing ``OUT.h5`` exactly as it was, prints one line and exits with 4. Unexpected failures are
one line too; ``--verbose`` adds the traceback.

Exit codes (also in ``--help``):
    0  images were written
    1  the chain or the server reported an error, or no image came back
    2  usage error: bad arguments, an unreadable input file or chain file, an invalid chain, a
       checkpoint or device that cannot be used (local runs, without --allow-fallback)
    3  the server or a ``<connect>`` worker could not be reached, or the connection broke before
       its CLOSE (e.g. the worker was killed)
    4  the images could not be written (disk full, no permission); an existing OUT.h5 is unchanged
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import ismrmrd

from ..data_checks import dropped_in_images
from ..io import ismrmrd_io
from ..io.export import FORMATS, export_images
from ..io.image_io import default_group_name, write_images_atomic
from ..protocol.chain_format import Chain, load_chain
from ..protocol.external_peer import ExternalGadgetError
from .chain_runner import run_chain

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_OUTPUT = 4
#: The epilog of --help: the exit codes.
EXIT_CODES_HELP = (
    "exit codes:\n"
    "  0  images written\n"
    "  1  the chain or the server reported an error, or no image came back\n"
    "  2  usage error: bad arguments, unreadable input or chain, a checkpoint or device that cannot be used\n"
    "  3  server or <connect> worker unreachable, or the connection broke before its CLOSE (e.g. a killed worker)\n"
    "  4  the images could not be written (disk full, permissions); an existing output file is left unchanged")


class OutputError(RuntimeError):
    """The images (or the preview) could not be written; the message is one line for the user."""

#: The stage that --checkpoint / --device configure.
RECON_TARGET = "CardioMMRecon"
#: Seconds between progress lines.
PROGRESS_INTERVAL_S = 2.0
DEFAULT_SERVER_PORT = 9002


class Progress:
    """Throttled progress lines on a stream: ``replay: 1200/2400 acquisitions (50%), 3 images``."""

    def __init__(self, total: int, *, stream: TextIO | None = None, enabled: bool = True,
                 interval: float = PROGRESS_INTERVAL_S) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interval = interval
        self.started = time.monotonic()
        self.last = self.started
        self.sent = 0
        self.images = 0

    def update(self, sent: int | None = None, images: int | None = None) -> None:
        if sent is not None:
            self.sent = sent
        if images is not None:
            self.images = images
        now = time.monotonic()
        if self.enabled and now - self.last >= self.interval:
            self.last = now
            share = f" ({100.0 * self.sent / self.total:.0f}%)" if self.total else ""
            print(f"replay: {self.sent}/{self.total} items sent{share}, {self.images} images, "
                  f"{now - self.started:.0f} s", file=self.stream, flush=True)


def parse_server(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``HOST``, port 9002; ``[v6]:PORT``) -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, str(DEFAULT_SERVER_PORT)
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--server must be HOST:PORT, got {text!r}") from None
    if not host or not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"--server must be HOST:PORT with a port in 1..65535, got {text!r}")
    return host, port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cardiomm-replay",
        description="Replay an ISMRMRD raw file through a reconstruction chain, locally or on a Gadgetron server, "
                    "and write the images as gadgetron_ismrmrd_client does.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXIT_CODES_HELP + "\n\nexamples:\n"
               "  cardiomm-simulate scan.h5 && cardiomm-replay scan.h5 --chain chains/cardiomm_cine_python.xml "
               "-o images.h5 --preview images.png\n"
               "  cardiomm-replay scan.h5 --chain chains/cardiomm_cine_python.xml --format dicom -o images_dicom/\n"
               "  cardiomm-replay scan.h5 --server localhost:9002 --config cardiomm_cine_python.xml -o images.h5")
    parser.add_argument("input", type=Path, metavar="IN.h5", help="ISMRMRD raw data file")
    parser.add_argument("--chain", type=Path, metavar="CHAIN.xml|yaml",
                        help="chain to run locally, or (with --server) to send as the stream config text")
    parser.add_argument("--server", type=parse_server, metavar="HOST:PORT",
                        help="stream to this Gadgetron server instead of running locally (default port 9002)")
    parser.add_argument("--config", metavar="NAME",
                        help="with --server: the name of a config file on the server (e.g. default.xml); "
                             "a path to a local file sends that file's XML instead, as --chain does")
    parser.add_argument("-o", "--out", type=Path, required=True, metavar="OUT",
                        help="image file (appended to) for --format ismrmrd; a folder for dicom, nifti and png")
    parser.add_argument("--format", choices=FORMATS, default="ismrmrd",
                        help="ismrmrd (default: the client's HDF5 layout), dicom (one MR image per file, with "
                             "geometry), nifti (one file per series and slice) or png (a labelled montage per series)")
    parser.add_argument("--group", help="output group (default: the local date and time, as the client does)")
    parser.add_argument("--dataset-group", default="dataset", help="input group (default dataset)")
    parser.add_argument("--preview", type=Path, metavar="OUT.png", help="also write a PNG montage of the images")
    parser.add_argument("--checkpoint", help="CardioMMRecon checkpoint: packaged, none or a path")
    parser.add_argument("--device", help="CardioMMRecon device: auto, cpu, cuda or cuda:N")
    parser.add_argument("--allow-fallback", action="store_true",
                        help="local runs: a checkpoint or device that cannot be used gives fallback images "
                             "(marked) instead of exit status 2 before the scan")
    parser.add_argument("--header-version", type=int, metavar="N",
                        help="rewrite the ISMRMRD header version to N before use (Gadgetron 4.7.2 needs 14)")
    parser.add_argument("--connect", choices=("inprocess", "socket"), default="inprocess",
                        help="local runs: run <connect> stages in-process (default) or reach the running worker")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return parser


def _apply_overrides(chain: Chain, checkpoint: str | None, device: str | None) -> Chain:
    overrides = {k: v for k, v in (("checkpoint", checkpoint), ("device", device)) if v is not None}
    if not overrides:
        return chain
    return chain.with_properties(RECON_TARGET, **overrides)


def check_models(chain: Chain, connect: str) -> None:
    """Before a local scan: load the model of every CardioMMRecon stage that runs in this process,
    with its checkpoint and device (``gadgets.recon.check_model_setting``); ValueError with one
    line when one cannot be used. The engines stay cached for the scan."""
    from ..recon import CardioMMRecon, check_model_setting

    for stage in chain.stages:
        in_process = stage.kind == "python" or (stage.kind == "connect" and connect == "inprocess")
        if stage.target != RECON_TARGET or not in_process:
            continue
        params = CardioMMRecon(**stage.properties).params
        check_model_setting(params.checkpoint, params.device)


def _counted(items: Iterable[Any], progress: Progress) -> Iterator[Any]:
    for number, item in enumerate(items, 1):
        progress.update(sent=number)
        yield item


def _header_text(xml: str, version: int | None, path: Path, *, for_server: bool) -> str:
    current = ismrmrd_io.header_version(xml)
    expected = ismrmrd_io.CURRENT_HEADER_VERSION
    if version is not None:
        if current != version:
            logger.info("rewriting the header version of %s: %s -> %d", path, current, version)
            return ismrmrd_io.set_header_version(xml, version)
        return xml
    if for_server and current is not None and current != expected:
        print(f"cardiomm-replay: {path} has ISMRMRD header version {current}; Gadgetron 4.7.2 (ISMRMRD schema "
              f"{expected}) reads it, but fails the scan at the first external (Python) node, to which it cannot "
              f"send the header ('XML header version does not match library schema version'); every shipped "
              f"chain has one. Rerun with --header-version {expected} to rewrite the version while sending.",
              file=sys.stderr)
    return xml


def _describe_images(images: Sequence[ismrmrd.Image]) -> str:
    by_series: dict[int, list[ismrmrd.Image]] = {}
    for image in images:
        by_series.setdefault(int(image.image_series_index), []).append(image)
    parts = []
    for series, members in sorted(by_series.items()):
        z, y, x = members[0].data.shape[1:]
        parts.append(f"image_{series}: {len(members)} x {x}x{y}" + (f"x{z}" if z > 1 else ""))
    return ", ".join(parts)


def image_methods(images: Sequence[ismrmrd.Image]) -> Counter[str]:
    """How many images each method produced (``CardioMM.Method`` meta attribute; 'unknown' without)."""
    methods: Counter[str] = Counter()
    for image in images:
        try:
            method = image.meta.get("CardioMM.Method")
        except Exception:  # noqa: BLE001 - images from other servers may carry odd meta
            method = None
        fallback = None
        try:
            fallback = image.meta.get("CardioMM.Fallback")
        except Exception:  # noqa: BLE001
            pass
        label = str(method) if method else "unknown"
        if fallback == "true":
            label += " (fallback)"
        methods[label] += 1
    return methods


def write_preview(images: Sequence[ismrmrd.Image], path: Path, name: str) -> Path:
    """A labelled PNG montage of the first series (a row per slice, a column per frame), titled with
    the input's name, the method that made the images, and the sampling the model was told."""
    from PIL import Image

    from ..io.export import describe_method, group_series, series_montage

    series, slices = next(iter(group_series(images).items()))
    members = [im for m in slices.values() for im in m]
    sampling = ""
    try:
        pattern, acceleration = members[0].meta.get("CardioMM.Pattern"), members[0].meta.get("CardioMM.Acceleration")
        if pattern and acceleration:
            sampling = f", {pattern} R={float(acceleration):.1f}"
    except Exception:  # noqa: BLE001 - images from other servers may carry odd meta
        pass
    title = f"{name}: series {series}, {len(members)} images, {describe_method(members)}{sampling}"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(series_montage(slices, title=title)).save(path, format="PNG")
    return path


def _write_outputs(images: list[ismrmrd.Image], args: argparse.Namespace, group: str, header_xml: str) -> None:
    """Write the images (and the preview), each file whole or not at all; OutputError on I/O errors."""
    if args.format == "ismrmrd":
        existed = args.out.exists()
        try:
            counts = write_images_atomic(args.out, images, group)
        except (OSError, ValueError) as exc:
            logger.debug("writing %s failed", args.out, exc_info=True)
            state = "is unchanged" if existed else "was not created"
            raise OutputError(f"cannot write the images to {args.out}: {_one_line(exc)}; {args.out} {state}") from None
        logger.info("wrote %s to %s:/%s", counts, args.out, group)
    else:
        try:
            files = export_images(images, args.format, args.out, header_xml=header_xml, name=args.input.stem)
        except OSError as exc:
            logger.debug("export failed", exc_info=True)
            raise OutputError(f"cannot write {args.format} images to {args.out}: {_one_line(exc)}") from None
        except ValueError as exc:
            logger.debug("export failed", exc_info=True)
            print(f"cardiomm-replay: cannot write {args.format} images to {args.out}: {exc}", file=sys.stderr)
            raise SystemExit(EXIT_FAILED) from None
        logger.info("wrote %d %s file(s) under %s", len(files), args.format, args.out)
    if args.preview is not None:
        _write_preview_whole(images, args)


def _write_preview_whole(images: list[ismrmrd.Image], args: argparse.Namespace) -> None:
    """:func:`write_preview` into a temporary file beside ``--preview``, moved into place when complete."""
    import os
    import tempfile

    folder = args.preview.resolve().parent
    temporary = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{args.preview.name}.", suffix=".png", dir=folder)
        os.close(handle)
        write_preview(images, Path(temporary), args.input.name)
        os.chmod(temporary, 0o644)
        os.replace(temporary, args.preview)
    except OSError as exc:
        logger.debug("writing %s failed", args.preview, exc_info=True)
        raise OutputError(f"the images were written, but the preview {args.preview} could not be: "
                          f"{_one_line(exc)}") from None
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _destination(args: argparse.Namespace, group: str) -> str:
    return f"{args.out}:/{group}" if args.format == "ismrmrd" else f"{args.out}/ ({args.format})"


def _summary(images: list[ismrmrd.Image], args: argparse.Namespace, group: str, seconds: float,
             n_acquisitions: int, where: str) -> None:
    rate = n_acquisitions / seconds if seconds > 0 else float("inf")
    methods = image_methods(images)
    method_text = ", ".join(f"{name}: {count}" for name, count in methods.most_common())
    print(f"cardiomm-replay: {len(images)} images in {len({int(i.image_series_index) for i in images})} series "
          f"({_describe_images(images)}) from {where} -> {_destination(args, group)} in {seconds:.1f} s, "
          f"{n_acquisitions} acquisitions ({rate:.0f} acquisitions/s); method {method_text}", file=sys.stderr)
    dropped = dropped_in_images(images)
    if dropped.total:
        print(f"cardiomm-replay: dropped acquisitions: {dropped.describe()}", file=sys.stderr)
    if args.preview is not None:
        print(f"cardiomm-replay: preview {args.preview}", file=sys.stderr)


def run_local(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Replay through the chain in this process."""
    try:
        chain = _apply_overrides(load_chain(args.chain), args.checkpoint, args.device)
        raw = ismrmrd_io.RawFile(args.input, args.dataset_group)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    if not args.allow_fallback:
        try:
            check_models(chain, args.connect)
        except ValueError as exc:
            raw.close()
            print(f"cardiomm-replay: error: {exc} (--allow-fallback: fallback images instead)", file=sys.stderr)
            return EXIT_USAGE
    group = args.group or default_group_name()
    with raw:
        try:
            xml = _header_text(raw.xml, args.header_version, args.input, for_server=False)
            total = len(raw) + raw.n_waveforms
        except (ValueError, OSError, KeyError) as exc:
            parser.error(f"{args.input} is not a readable ISMRMRD raw file: {_one_line(exc)}")
        progress = Progress(total, enabled=not args.quiet)
        started = time.monotonic()
        try:
            items = _counted(ismrmrd_io.iter_items_in_time_order(raw), progress)
            outputs = run_chain(chain, xml, items, connect=args.connect)
        except (ValueError, ImportError) as exc:
            parser.error(str(exc))
        images: list[ismrmrd.Image] = []
        others = 0
        try:
            for item in outputs:
                if isinstance(item, ismrmrd.Image):
                    images.append(item)
                    progress.update(images=len(images))
                else:
                    others += 1
        except ExternalGadgetError as exc:
            print(f"cardiomm-replay: {exc}", file=sys.stderr)
            # a worker that reported an error: 1; one that could not be reached or broke the connection: 3
            return EXIT_FAILED if getattr(exc, "kind", "connection") == "reported" else EXIT_CONNECTION
        except Exception as exc:  # noqa: BLE001 - any gadget failure ends the run with its message
            logger.debug("chain failure", exc_info=True)
            print(f"cardiomm-replay: chain {chain.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        seconds = time.monotonic() - started
        n_acquisitions = len(raw)
    if others:
        logger.info("the chain also returned %d items that are not images (not written)", others)
    if not images:
        print(f"cardiomm-replay: chain {chain.name} produced no images", file=sys.stderr)
        return EXIT_FAILED
    _write_outputs(images, args, group, xml)
    _summary(images, args, group, seconds, n_acquisitions, f"chain {chain.name} (local)")
    return EXIT_OK


def run_server(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Replay through a Gadgetron server."""
    from .client import has_noise_measurement, native_noise_adjust_problem, stream_file

    host, port = args.server
    config_text = None
    if args.chain is not None:
        try:
            config_text = _apply_overrides(load_chain(args.chain), args.checkpoint, args.device).to_xml()
        except (ValueError, OSError) as exc:
            parser.error(str(exc))
    try:
        xml = ismrmrd_io.read_xml(args.input, args.dataset_group)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    _header_text(xml, args.header_version, args.input, for_server=True)
    try:
        problem = native_noise_adjust_problem(xml, config_text, has_noise_measurement(args.input, args.dataset_group))
    except (OSError, KeyError, ValueError) as exc:  # the stream itself will report an unreadable file
        logger.debug("could not check the noise IDs: %s", exc)
        problem = None
    if problem:
        print(f"cardiomm-replay: {args.input}: {problem}", file=sys.stderr)
    progress = Progress(0, enabled=not args.quiet)

    def report(sent: int, total: int) -> None:
        progress.total = total
        progress.update(sent=sent)

    try:
        result = stream_file(host, port, args.input, config_name=args.config, config_text=config_text,
                             progress=report, header_version=args.header_version,
                             dataset_group=args.dataset_group)
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        print(f"cardiomm-replay: cannot reach the Gadgetron server at {host}:{port}: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    for text in result.texts:
        print(f"server: {text}", file=sys.stderr)
    group = args.group or default_group_name()
    if result.images:
        _write_outputs(result.images, args, group, xml)
    if result.errors:
        for message in result.errors:
            print(f"server error: {message}", file=sys.stderr)
        return EXIT_FAILED if result.close_received else EXIT_CONNECTION
    if not result.close_received:
        print("cardiomm-replay: the server closed the connection without CLOSE", file=sys.stderr)
        return EXIT_CONNECTION
    if not result.images:
        print(f"cardiomm-replay: the server at {host}:{port} sent no images", file=sys.stderr)
        return EXIT_FAILED
    config = args.config or f"chain {args.chain}"
    _summary(result.images, args, group, result.seconds, result.n_acquisitions, f"{host}:{port} ({config})")
    return EXIT_OK


def _resolve_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``--config``: a path that exists here is sent as the chain's XML (message 2, as ``--chain``;
    Gadgetron looks a CONFIG by name up in its own config folder only); a bare name goes by name
    (message 1). A path with a folder that does not exist here is a usage error."""
    if args.config is None:
        return
    local = Path(args.config).expanduser()
    if local.is_file():
        print(f"cardiomm-replay: note: --config {args.config} is a local file: sending its XML to the server "
              f"(message 2, as --chain does); a bare name such as {local.name} would be looked up in the "
              "server's config folder", file=sys.stderr)
        args.chain, args.config = local, None
    elif "/" in args.config or os.sep in args.config:
        parser.error(f"--config {args.config!r} is not a local file, and a config on the server is named without "
                     f"a folder (e.g. --config {local.name}); give --chain FILE to send a local chain")


def main(argv: Sequence[str] | None = None) -> int:
    """``cardiomm-replay``; returns the exit status (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.server is None:
        if args.config is not None:
            parser.error("--config names a config on a server: give --server HOST:PORT too")
        if args.chain is None:
            parser.error("give --chain CHAIN.xml|yaml (local run) or --server HOST:PORT")
    elif (args.config is None) == (args.chain is None):
        parser.error("with --server give exactly one of --config NAME (on the server) or --chain FILE (sent as text)")
    else:
        _resolve_config(args, parser)
        if args.config is not None and (args.checkpoint or args.device):
            parser.error("--checkpoint/--device change a chain file; they cannot change --config (a config on the server)")
    if args.header_version is not None and args.header_version < 0:
        parser.error(f"--header-version must be >= 0, got {args.header_version}")
    if not args.input.is_file():
        parser.error(f"input {str(args.input)!r} is not a file")
    if args.out.exists() and args.out.resolve() == args.input.resolve():
        parser.error("-o must not be the input file")
    if args.format != "ismrmrd" and args.out.exists() and not args.out.is_dir():
        parser.error(f"--format {args.format} writes a folder: -o {str(args.out)!r} is an existing file")
    if args.format == "ismrmrd":  # checked now, not after the whole reconstruction
        import h5py

        if args.out.is_dir():
            parser.error(f"-o {str(args.out)!r} is a folder; the ismrmrd format appends to an HDF5 file")
        if args.out.exists() and not h5py.is_hdf5(args.out):
            parser.error(f"-o {str(args.out)!r} exists and is not an HDF5 file (images are appended to one)")
        if not args.out.parent.is_dir():
            parser.error(f"-o {str(args.out)!r}: the folder {str(args.out.parent)!r} does not exist")
    return _run_guarded(run_local if args.server is None else run_server, args, parser)


def _run_guarded(run: Any, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``run(args, parser)``, with failures as one line (the traceback with --verbose only)."""
    try:
        return run(args, parser)
    except OutputError as exc:
        print(f"cardiomm-replay: {exc}", file=sys.stderr)
        return EXIT_OUTPUT
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - the user gets one line, not a traceback
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"cardiomm-replay: {type(exc).__name__}: {_one_line(exc)}"
              + ("" if args.verbose else " (--verbose shows the traceback)"), file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
