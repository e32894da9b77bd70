"""``cardiomm-replay``: replay an ISMRMRD raw file through a chain, locally or on a Gadgetron server.

Local (no Gadgetron needed; the chain runs in this process, see :func:`gadgets.chain.run_chain`)::

    cardiomm-replay IN.h5 --chain chains/cardiomm_cine_python.xml -o OUT.h5 [--group NAME]
                    [--preview OUT.png] [--checkpoint packaged|none|PATH] [--device auto|cpu|cuda]
    cardiomm-replay IN.h5 --chain chains/cardiomm_cine_python.xml --format dicom -o OUT_DIR   # or nifti, png

Through a Gadgetron 4.x server (what ``gadgetron_ismrmrd_client`` does)::

    cardiomm-replay IN.h5 --server HOST:PORT --config NAME.xml -o OUT.h5      # config on the server (message 1)
    cardiomm-replay IN.h5 --server HOST:PORT --config chains/X.xml -o OUT.h5  # a local file: sent as XML (message 2)
    cardiomm-replay IN.h5 --server HOST:PORT --chain chains/X.xml -o OUT.h5   # the chain's XML as text (message 2)

With ``--format dicom|nifti|png`` the images go to the folder ``OUT`` instead (see
:mod:`gadgets.export`: DICOM MR images with geometry, NIfTI with the scanner affine, labelled PNG
montages). Otherwise images are appended to ``OUT.h5`` under ``<group>/image_<series>/{data,header,attributes}`` as
``gadgetron_ismrmrd_client`` stores them (:func:`gadgets.image_io.write_images`); the group
defaults to the current local time, ``YYYY-MM-DD HH:MM:SS``, as the client's does.
``--checkpoint`` and ``--device`` set the CardioMMRecon stage's parameters of the chain (local,
or the XML sent with ``--chain`` in server mode). ``--header-version 14`` rewrites the file's
ISMRMRD header version before use: Gadgetron 4.7.2 rejects any other version ("XML header
version does not match library schema version"), e.g. the 8 of files written by Debian's
ismrmrd-tools; without the option such a file is reported before it is sent.

Progress goes to stderr every couple of seconds; a summary closes the run (images, series,
seconds, acquisitions per second, the method that produced the images). Server errors and texts
are printed to stderr.

Exit codes:
    0  images were written
    1  the chain or the server reported an error, or no image came back
    2  usage error: bad arguments, an unreadable input file or chain file, an invalid chain
    3  the server could not be reached, or the connection broke before the server's CLOSE
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TextIO

import ismrmrd
import numpy as np

from . import ismrmrd_io
from .chain import Chain, ExternalGadgetError, load_chain, run_chain
from .export import FORMATS, export_images
from .image_io import default_group_name, write_images

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3

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
        epilog="Exit codes: 0 images written; 1 the chain or server reported an error, or no image came back; "
               "2 usage error (bad arguments, unreadable input or chain); 3 server unreachable or connection broken.")
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


def image_stack(images: Sequence[ismrmrd.Image]) -> tuple[np.ndarray, int]:
    """Magnitudes ``(n, y, x)`` of the first series' images sorted by (slice, set, phase), and the
    number of phases (montage columns)."""
    if not images:
        raise ValueError("images must not be empty")
    series = int(images[0].image_series_index)
    members = [im for im in images if int(im.image_series_index) == series]
    members.sort(key=lambda im: (int(im.slice), int(im.set), int(im.contrast), int(im.phase), int(im.image_index)))
    stack = np.stack([np.abs(np.asarray(im.data))[0, 0] for im in members if im.data.shape[1] >= 1])
    n_phases = len({(int(im.phase), int(im.contrast)) for im in members}) or 1
    return stack, n_phases


def _write_outputs(images: list[ismrmrd.Image], args: argparse.Namespace, group: str, header_xml: str) -> None:
    if args.format == "ismrmrd":
        counts = write_images(args.out, images, group)
        logger.info("wrote %s to %s:/%s", counts, args.out, group)
    else:
        try:
            files = export_images(images, args.format, args.out, header_xml=header_xml, name=args.input.stem)
        except (ValueError, OSError) as exc:
            logger.debug("export failed", exc_info=True)
            print(f"cardiomm-replay: cannot write {args.format} images to {args.out}: {exc}", file=sys.stderr)
            raise SystemExit(EXIT_FAILED) from None
        logger.info("wrote %d %s file(s) under %s", len(files), args.format, args.out)
    if args.preview is not None:
        from .preview import save_montage

        stack, n_cols = image_stack(images)
        save_montage(stack, args.preview, n_cols=n_cols, title=f"{args.input.name}: {len(stack)} images")


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
    if args.preview is not None:
        print(f"cardiomm-replay: preview {args.preview}", file=sys.stderr)


def run_local(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Replay through the chain in this process."""
    try:
        chain = _apply_overrides(load_chain(args.chain), args.checkpoint, args.device)
        raw = ismrmrd_io.RawFile(args.input, args.dataset_group)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    group = args.group or default_group_name()
    with raw:
        xml = _header_text(raw.xml, args.header_version, args.input, for_server=False)
        total = len(raw) + raw.n_waveforms
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
            return EXIT_CONNECTION if "cannot connect" in str(exc) else EXIT_FAILED
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
    if args.server is None:
        return run_local(args, parser)
    return run_server(args, parser)


if __name__ == "__main__":
    sys.exit(main())
