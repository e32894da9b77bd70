"""The chain itself: what the project's own steps cost beside the model, measured on one scan.

One simulated cine scan (``gadgets.io.simulated_scan.write_simulated_scan``: one slice, a noise
measurement, ktUniform 8x; ``--geometry cmrx``: 10 coils, 12 frames, 246 x 512 encoded ->
246 x 256, the slice of ``benchmarks/speed.py``) goes through the project's code paths and every
step is timed in the same run:

* **protocol**: the acquisitions written with the project's wire writer
  (``gadgets.protocol.stream.encode_item``) into a loopback TCP socket and read back with gadgetron-python's
  reader (``gadgetron.external.readers.read_acquisition``); likewise the ReconData that the worker
  chain sends to the warm worker (``read_recon_data``) and the images coming back (``read_image``);
* **prewhitening, oversampling removal, buffering, coil compression**: the gadgets of
  ``chains/cardiomm_cine_python.yaml`` as the local runner configures them
  (``gadgets.tools.chain_runner.build_gadgets``), each over the whole scan;
* **model**: that chain's CardioMMRecon stage (the packaged model, its engine loaded beforehand
  as replay does), ReconData in, images out;
* **buffering throughput**: AcquisitionBuffer alone, again and again, torch on one thread, per CPU
  and wall second, beside its memory floor and the reader (``benchmarks/buffer_rate.py``);
* **time to first image**: ``<execute>``-style, a fresh ``python -m gadgetron PORT gadgets.recon
  CardioMMRecon`` per scan (what Gadgetron starts; this script plays Gadgetron's side of the
  socket) against the warm worker (``python -m gadgets.tools.worker``, model loaded once, reached as
  Gadgetron's ``<connect>`` reaches it: ``gadgets.protocol.external_peer.ExternalPeer``); measured from the start
  of the scan's ReconData hop (process start for ``<execute>``) to the first image, at the slice
  size and at a small scan (``--small-geometry``), where start-up dominates;
* **scans per hour**: the whole worker chain (``chains/cardiomm_cine_worker.yaml``, its native
  steps through their Python equivalents, ``connect="socket"`` to the warm worker) over the raw
  acquisitions of the scan, end to end on this machine; 3600 / the measured seconds per scan.

Usage (the committed table came from the first command)::

    python benchmarks/chain.py --out benchmarks/results/chain_cpu.md
    python benchmarks/chain.py --tiny --out /tmp/chain_tiny.md        # seconds: structure only
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from benchmarks.buffer_rate import measure_buffering  # noqa: E402
from benchmarks.machine import machine_line  # noqa: E402
from gadgets.io import ismrmrd_io  # noqa: E402
from gadgets.io.simulated_scan import write_simulated_scan  # noqa: E402
from gadgets.protocol import wire  # noqa: E402
from gadgets.protocol.chain_format import Chain, load_chain  # noqa: E402
from gadgets.protocol.external_peer import ExternalPeer, configuration_xml  # noqa: E402
from gadgets.protocol.stream import encode_item, recv_exactly  # noqa: E402
from gadgets.recon import check_model_setting  # noqa: E402
from gadgets.tools.chain_runner import build_gadgets, run_chain  # noqa: E402
from gadgets.tools.worker_process import WorkerProcess  # noqa: E402

log = logging.getLogger(__name__)

#: (coils, frames, ky, kx after oversampling removal); the readout is written 2x oversampled
GEOMETRIES: dict[str, tuple[int, int, int, int]] = {
    "cmrx": (10, 12, 246, 256),
    "reduced": (10, 12, 112, 128),
    "small": (8, 12, 80, 96),
    "tiny": (4, 4, 32, 32),
}
PYTHON_CHAIN = ROOT / "chains" / "cardiomm_cine_python.yaml"
WORKER_CHAIN = ROOT / "chains" / "cardiomm_cine_worker.yaml"
RECON = "CardioMMRecon"
PRE_STAGES = ("NoiseAdjust", "RemoveOversampling", "AcquisitionBuffer", "CoilCompression")
TARGET_CHAIN_SHARE = 0.10
TARGET_BUFFER_RATE = 100_000.0
TARGET_WORKER_SPEEDUP = 5.0
TIMEOUT_S = 900.0  # hang guard for one scan on a loaded CPU


# --------------------------------------------------------------------------- helpers


def simulate(path: Path, geometry: str, seed: int = 0) -> Path:
    """A one-slice cine scan of ``geometry`` with a noise measurement, ktUniform 8x."""
    n_coils, n_frames, n_ky, n_kx = GEOMETRIES[geometry]
    write_simulated_scan(path, n_slices=1, n_phases=n_frames, n_coils=n_coils, matrix=(n_kx, n_ky),
                         acceleration=8.0, pattern="ktUniform", seed=seed, noise_scan=True)
    return path


def child_env(threads: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.setdefault("GADGETRON_EXTERNAL_LOG_LEVEL", "INFO")
    if threads:
        env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    return env


class _Source:
    """``read(n)``: exactly n bytes from a socket (what gadgetron-python's readers call)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def read(self, n: int) -> bytes | bytearray:
        return recv_exactly(self.sock, n)


def read_messages(sock: socket.socket, on_item: Callable[[Any], None] | None = None) -> list[Any]:
    """Items read from ``sock`` until CLOSE; an ERROR raises RuntimeError with its text."""
    by_id = wire.message_readers()
    source = _Source(sock)
    items = []
    while True:
        message_id = wire.read_message_id(source)
        if message_id == wire.CLOSE:
            return items
        if message_id == wire.ERROR:
            (length,) = wire.ERROR_LENGTH.unpack(source.read(wire.ERROR_LENGTH.size))
            raise RuntimeError(bytes(source.read(min(length, 1 << 20))).decode("utf-8", "replace"))
        reader = by_id.get(message_id)
        if reader is None:
            raise RuntimeError(f"unexpected message id {message_id}")
        item = reader(source)
        if on_item is not None:
            on_item(item)
        items.append(item)


def loopback_roundtrip(items: Sequence[Any]) -> tuple[float, int, list[Any]]:
    """Seconds to write ``items`` into a loopback socket and read them all back; bytes; the items read."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    writer = socket.create_connection(listener.getsockname(), timeout=TIMEOUT_S)
    reader, _ = listener.accept()
    reader.settimeout(TIMEOUT_S)
    listener.close()
    sent = [0]
    got: list[Any] = []

    def send() -> None:
        for item in items:
            data = encode_item(item)
            sent[0] += len(data)
            writer.sendall(data)
        writer.sendall(wire.CLOSE_MESSAGE)

    started = time.perf_counter()
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        got = read_messages(reader)
        elapsed = time.perf_counter() - started
        thread.join(TIMEOUT_S)
    finally:
        writer.close()
        reader.close()
    if len(got) != len(items):
        raise RuntimeError(f"loopback: sent {len(items)} items, read {len(got)}")
    return elapsed, sent[0], got


def timed_stage(gadget: Any, items: Sequence[Any], header: Any) -> tuple[float, list[Any]]:
    started = time.perf_counter()
    out = list(gadget(iter(items), header))
    return time.perf_counter() - started, out


def execute_first_image(header_xml: str, items: Sequence[Any], properties: dict[str, str],
                        threads: int | None) -> dict[str, float]:
    """``<execute>``: a fresh ``python -m gadgetron PORT gadgets.recon CardioMMRecon`` for one scan.

    This process plays Gadgetron: listen, start the child, accept its connection, send CONFIG,
    HEADER, the items and CLOSE, read images until CLOSE. Returns seconds from the child's start
    to its connection, to the first image and to the CLOSE, and the number of images."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(TIMEOUT_S)
    port = listener.getsockname()[1]
    log_file = tempfile.TemporaryFile()
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gadgetron", str(port), "gadgets.recon", RECON],
                            env=child_env(threads), stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
    first: list[float] = []
    try:
        conn, _ = listener.accept()
        connected = time.perf_counter() - started
        conn.settimeout(TIMEOUT_S)

        def send() -> None:
            conn.sendall(wire.text_message(wire.CONFIG_SCRIPT, configuration_xml(properties)))
            conn.sendall(wire.text_message(wire.HEADER, header_xml))
            for item in items:
                conn.sendall(encode_item(item))
            conn.sendall(wire.CLOSE_MESSAGE)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        images = read_messages(conn, lambda _item: first.append(time.perf_counter() - started) if not first else None)
        done = time.perf_counter() - started
        sender.join(TIMEOUT_S)
        conn.close()
        proc.wait(60)
    except BaseException:
        log_file.seek(0)
        log.error("execute child output:\n%s", log_file.read().decode("utf-8", "replace")[-4000:])
        raise
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log_file.close()
    if not images:
        raise RuntimeError("the <execute> child sent no image")
    return {"connected_s": connected, "first_image_s": first[0], "all_images_s": done, "images": len(images)}


def worker_first_image(port: int, header_xml: str, items: Sequence[Any], properties: dict[str, str]) -> dict[str, float]:
    """The warm worker, reached as Gadgetron's ``<connect>`` reaches it (``ExternalPeer``)."""
    peer = ExternalPeer("127.0.0.1", port, properties)
    started = time.perf_counter()
    first = None
    images = 0
    for _item in peer.run(iter(items), header_xml):
        images += 1
        if first is None:
            first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("the worker sent no image")
    return {"first_image_s": first, "all_images_s": time.perf_counter() - started, "images": images}


def worker_chain(port: int, device: str = "cpu") -> Chain:
    """chains/cardiomm_cine_worker.yaml pointed at ``port`` (its CardioMMRecon on ``device``)."""
    chain = load_chain(WORKER_CHAIN).with_properties(RECON, device=device)
    stages = tuple(dataclasses.replace(s, port=port, address="127.0.0.1") if s.kind == "connect" else s
                   for s in chain.stages)
    return dataclasses.replace(chain, stages=stages)


# --------------------------------------------------------------------------- the measurement


def measure(args: argparse.Namespace, workdir: Path, report: dict[str, Any]) -> None:
    checkpoint = args.checkpoint
    threads = args.threads or None
    scan_path = simulate(workdir / "scan.h5", args.geometry)
    header, header_xml = ismrmrd_io.read_header(scan_path)
    acquisitions = ismrmrd_io.read_acquisitions(scan_path)
    report["scan"] = {"acquisitions": len(acquisitions), "noise_acquisitions": sum(
        1 for a in acquisitions if a.is_flag_set(19)), "bytes_on_disk": scan_path.stat().st_size}
    props = {RECON: {"checkpoint": checkpoint, "device": "cpu"}}
    chain = load_chain(PYTHON_CHAIN).with_properties(RECON, **props[RECON])
    built = {step.label: gadget for step, gadget in build_gadgets(chain)}
    recon_props = dict(chain.stage_for(RECON).properties)
    stages: dict[str, float] = {}

    # protocol: acquisitions over loopback with the real writer and gadgetron-python's reader
    wire_s, wire_bytes, _ = loopback_roundtrip(acquisitions)
    report["protocol_acquisitions"] = {"seconds": wire_s, "bytes": wire_bytes, "items": len(acquisitions)}

    # the small scan (time to first image, and the model stage's warm-up)
    small: tuple[Any, str, list[Any]] | None = None
    if args.small_geometry and args.small_geometry != args.geometry:
        small_path = simulate(workdir / "small.h5", args.small_geometry, seed=1)
        small_header, small_xml = ismrmrd_io.read_header(small_path)
        small_items: list[Any] = ismrmrd_io.read_acquisitions(small_path)
        for name in PRE_STAGES:
            _, small_items = timed_stage(built[name], small_items, small_header)
        small = (small_header, small_xml, small_items)

    # the chain's own steps, each over the whole scan: one untimed pass (first-call costs), one timed
    for timed in (False, True):
        items: list[Any] = list(acquisitions)
        for name in PRE_STAGES:
            seconds, items = timed_stage(built[name], items, header)
            if timed:
                stages[name] = seconds
    recon_items = items
    started = time.perf_counter()
    check_model_setting(checkpoint, "cpu")  # replay loads the engine before the scan starts
    report["model_load_in_process_s"] = time.perf_counter() - started
    # warm-up of the model stage (text embeddings, first-call allocations): on the small scan if
    # there is one (a forward at the slice size costs as much as the measurement), else this one
    started = time.perf_counter()
    if small is not None:
        timed_stage(built[RECON], small[2], small[0])
    else:
        timed_stage(built[RECON], recon_items, header)
    report["model_stage_warmup_s"] = time.perf_counter() - started
    stages[RECON], images = timed_stage(built[RECON], recon_items, header)
    report["images"] = len(images)
    report["images_finite"] = bool(all(np.isfinite(np.asarray(image.data)).all() for image in images))
    wire_rd_s, rd_bytes, _ = loopback_roundtrip(recon_items)
    wire_img_s, img_bytes, _ = loopback_roundtrip(images)
    report["protocol_recondata"] = {"seconds": wire_rd_s, "bytes": rd_bytes, "items": len(recon_items)}
    report["protocol_images"] = {"seconds": wire_img_s, "bytes": img_bytes, "items": len(images)}
    report["stages_s"] = stages
    own = wire_s + wire_rd_s + wire_img_s + sum(stages[n] for n in PRE_STAGES)
    report["chain_own_s"] = own
    report["chain_share_of_model"] = own / stages[RECON]
    log.info("chain's own steps %.3f s vs model stage %.3f s (%.1f%%)", own, stages[RECON], 100 * own / stages[RECON])

    # buffering throughput on one core, beside the memory floor and the reader (benchmarks/buffer_rate.py)
    buffered_input = []
    for name in PRE_STAGES[:2]:
        _, buffered_input = timed_stage(built[name], buffered_input or list(acquisitions), header)
    report["buffering"] = measure_buffering(built["AcquisitionBuffer"], buffered_input, header, acquisitions,
                                            args.buffer_passes, args.buffer_min_s)
    log.info("buffering: %.0f acquisitions per CPU second (one thread)", report["buffering"]["per_cpu_s"])

    # time to first image: <execute> (fresh process + model load per scan) vs the warm worker
    ttfi: dict[str, Any] = {}
    sizes = [(args.geometry, header_xml, recon_items)]
    if small is not None:
        sizes.append((args.small_geometry, small[1], small[2]))
    worker = WorkerProcess("--checkpoint", checkpoint, "--device", "cpu", "--idle-timeout", "1800", threads=threads)
    try:
        port = worker.wait_ready(TIMEOUT_S)
        report["worker_start_to_ready_s"] = worker.ready_s
        for geometry, xml, scan_items in sizes:
            entry: dict[str, Any] = {"execute": [], "worker": []}
            for _ in range(args.ttfi_repeats):
                entry["execute"].append(execute_first_image(xml, scan_items, recon_props, threads))
                log.info("%s: <execute> first image after %.2f s", geometry, entry["execute"][-1]["first_image_s"])
            worker_first_image(port, xml, scan_items, recon_props)  # untimed: the worker's first scan of this size
            for _ in range(args.ttfi_repeats):
                entry["worker"].append(worker_first_image(port, xml, scan_items, recon_props))
                log.info("%s: worker first image after %.2f s", geometry, entry["worker"][-1]["first_image_s"])
            execute_s = statistics.median(r["first_image_s"] for r in entry["execute"])
            worker_s = statistics.median(r["first_image_s"] for r in entry["worker"])
            entry.update({"execute_first_image_s": execute_s, "worker_first_image_s": worker_s,
                          "speedup": execute_s / worker_s})
            ttfi[geometry] = entry
        report["time_to_first_image"] = ttfi

        # scans per hour: the whole worker chain over the raw scan, end to end
        wchain = worker_chain(port)
        seconds = []
        for _ in range(args.scan_repeats):
            started = time.perf_counter()
            out = list(run_chain(wchain, header_xml, iter(acquisitions), connect="socket"))
            seconds.append(time.perf_counter() - started)
            if len(out) != len(images):
                raise RuntimeError(f"worker chain gave {len(out)} images, the python chain {len(images)}")
        per_scan = statistics.median(seconds)
        report["scans"] = {"seconds": seconds, "per_scan_s": per_scan, "scans_per_hour": 3600.0 / per_scan,
                           "slices_per_scan": 1}
    finally:
        worker.stop()


# --------------------------------------------------------------------------- report


def _get(report: dict[str, Any], *keys: str) -> Any:
    value: Any = report
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _f(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(report: dict[str, Any]) -> str:
    g = report["geometry"]
    stages = report.get("stages_s", {})
    model_s = stages.get(RECON)
    lines = [
        "# The chain itself (CPU)",
        "",
        f"- machine: {report['machine']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        f"- date: {report['started_utc']}; load average at start {report['loadavg_start']}, at end "
        f"{report.get('loadavg_end')}",
        f"- command: `{report['command']}` ({report.get('elapsed_s', 0):.0f} s in all)",
        f"- scan: one slice, {g['coils']} coils, {g['frames']} frames, {g['ky']} x {2 * g['kx']} encoded -> "
        f"{g['ky']} x {g['kx']}, ktUniform 8x, with a noise measurement: "
        f"{_get(report, 'scan', 'acquisitions')} acquisitions; model: checkpoint `{report['checkpoint']}` on the CPU "
        f"(torch threads in this process: {report['threads']})",
        "",
        "## Where the time goes (one scan, same run)",
        "",
        "| step | seconds | share of the model stage |",
        "|---|---:|---:|",
    ]

    def row(name: str, seconds: float | None) -> None:
        share = f"{100 * seconds / model_s:.2f} %" if (seconds is not None and model_s) else "-"
        lines.append(f"| {name} | {_f(seconds, '.4f')} | {share} |")

    row("protocol: acquisitions over loopback (write + gadgetron-python read)", _get(report, "protocol_acquisitions", "seconds"))
    row("prewhitening (NoiseAdjust)", stages.get("NoiseAdjust"))
    row("oversampling removal (RemoveOversampling)", stages.get("RemoveOversampling"))
    row("buffering (AcquisitionBuffer)", stages.get("AcquisitionBuffer"))
    row("coil compression (CoilCompression, 8 virtual coils)", stages.get("CoilCompression"))
    row("protocol: ReconData to the worker over loopback", _get(report, "protocol_recondata", "seconds"))
    row("protocol: images back over loopback", _get(report, "protocol_images", "seconds"))
    row("**the chain's own steps, in all**", report.get("chain_own_s"))
    row("model: CardioMMRecon stage (engine loaded and warmed up beforehand)", model_s)
    share = report.get("chain_share_of_model")
    lines += ["", f"The chain's own share: **{_f(None if share is None else 100 * share, '.2f')} %** of the model's "
              f"time (target < {100 * TARGET_CHAIN_SHARE:.0f} %). Model load in this process (not in the table): "
              f"{_f(report.get('model_load_in_process_s'), '.2f')} s.", ""]
    b = report.get("buffering") or {}
    lines += ["## Buffering throughput (one core)", "",
              f"AcquisitionBuffer alone, {b.get('passes', '-')} passes over the scan's "
              f"{_get(report, 'scan', 'acquisitions')} acquisitions, torch on one thread: "
              f"**{_f(b.get('per_cpu_s'), ',.0f')} acquisitions per CPU second** "
              f"({_f(b.get('acquisitions_per_s'), ',.0f')} per wall second; target >= {TARGET_BUFFER_RATE:,.0f}).", "",
              "In the same run, per CPU second (`benchmarks/buffer_rate.py`): the buffer with the garbage collector "
              f"paused {_f(_get(report, 'buffering', 'gc_paused', 'per_cpu_s'), ',.0f')}; the memory floor (its "
              "ReconData buffers allocated afresh, the same lines copied in with plain numpy) "
              f"{_f(_get(report, 'buffering', 'floor', 'per_cpu_s'), ',.0f')}; the reader (ismrmrd-python's "
              f"`Acquisition.deserialize_from` over the raw acquisitions) {_f(_get(report, 'buffering', 'reader', 'per_cpu_s'), ',.0f')}.", ""]
    lines += ["## Time to first image: `<execute>` (fresh process + model load per scan) vs the warm worker", "",
              "| scan | `<execute>` first image (s) | warm worker first image (s) | worker speed-up | target |",
              "|---|---:|---:|---:|---:|"]
    for geometry, entry in (report.get("time_to_first_image") or {}).items():
        c, f, y, x = GEOMETRIES[geometry]
        lines.append(f"| {geometry}: {c} coils, {f} frames, {y} x {x} | {entry['execute_first_image_s']:.2f} | "
                     f"{entry['worker_first_image_s']:.2f} | **{entry['speedup']:.1f}x** | >= {TARGET_WORKER_SPEEDUP:.0f}x |")
    n = report["args"]["ttfi_repeats"]
    lines += ["", f"{'One scan' if n == 1 else f'Medians of {n} scans'} each; the worker started and loaded the model once, "
              f"in {_f(report.get('worker_start_to_ready_s'), '.1f')} s (not counted), and served one untimed scan of each "
              "size first. `<execute>` is timed from the child's start (what Gadgetron pays per scan), the worker from the "
              "ReconData hop's start; both send the same coil-compressed ReconData over loopback.", ""]
    s = report.get("scans") or {}
    lines += ["## Scans per hour", "",
              f"The whole worker chain (`chains/cardiomm_cine_worker.yaml`, its native steps through their Python "
              f"equivalents, the model in the warm worker) over the raw scan: {_f(s.get('per_scan_s'), '.2f')} s per "
              f"one-slice scan -> **{_f(s.get('scans_per_hour'), ',.0f')} one-slice scans per hour** on this machine "
              "(both processes on the same CPUs)."]
    if report.get("errors"):
        lines += ["", "Errors: " + "; ".join(report["errors"])]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--geometry", choices=sorted(GEOMETRIES), default=None, help="the scan (default cmrx; --tiny: tiny)")
    p.add_argument("--small-geometry", choices=sorted(GEOMETRIES), default=None,
                   help="a second, small scan for the time to first image (default small; --tiny: none)")
    p.add_argument("--checkpoint", default="packaged", help="the model: packaged, none or a path")
    p.add_argument("--threads", type=int, default=0, help="torch threads here and in the children (0: default)")
    p.add_argument("--ttfi-repeats", type=int, default=2, help="scans per route for the time to first image")
    p.add_argument("--scan-repeats", type=int, default=1, help="whole-chain scans for scans per hour")
    p.add_argument("--buffer-passes", type=int, default=5, help="at least this many passes for the buffering rate")
    p.add_argument("--buffer-min-s", type=float, default=2.0, help="and at least this many seconds")
    p.add_argument("--tiny", action="store_true", help="tiny scan, one repeat: checks the script in seconds")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "chain_cpu.md"),
                   help="the Markdown report; the JSON goes beside it (.json)")
    args = p.parse_args(argv)
    if args.tiny:
        args.geometry = args.geometry or "tiny"
        args.ttfi_repeats = 1
        args.buffer_passes, args.buffer_min_s = 2, 0.0
    else:
        args.small_geometry = args.small_geometry or "small"
    args.geometry = args.geometry or "cmrx"
    for name in ("ttfi_repeats", "scan_repeats", "buffer_passes"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    import gadgetron.version
    import ismrmrd

    n_coils, n_frames, n_ky, n_kx = GEOMETRIES[args.geometry]
    report: dict[str, Any] = {
        "command": ("python benchmarks/chain.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip(),
        "machine": machine_line(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                     "gadgetron-python": str(gadgetron.version.version),
                     "ismrmrd-python": getattr(ismrmrd, "__version__", "?")},
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "geometry": {"name": args.geometry, "coils": n_coils, "frames": n_frames, "ky": n_ky, "kx": n_kx},
        "checkpoint": args.checkpoint, "threads": torch.get_num_threads(), "args": vars(args), "errors": [],
    }
    began = time.perf_counter()
    out = Path(args.out)
    status = 0
    with tempfile.TemporaryDirectory(prefix="chain-bench-") as tmp:
        try:
            measure(args, Path(tmp), report)
        except Exception as exc:  # noqa: BLE001 - keep what was measured, say what failed
            log.exception("chain benchmark failed")
            report["errors"].append(f"{type(exc).__name__}: {exc}")
            status = 1
    report["elapsed_s"] = time.perf_counter() - began
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(report))
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    sys.stdout.write(out.read_text())
    return status


if __name__ == "__main__":
    raise SystemExit(main())
