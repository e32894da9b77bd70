"""Buffering throughput: AcquisitionBuffer over the chain benchmark's scan, beside what bounds it.

What ``benchmarks/chain.py`` reports as "buffering throughput" comes from :func:`measure_buffering`
here: the gadget (``gadgets.buffer.AcquisitionBuffer``, configured as
``chains/cardiomm_cine_python.yaml`` configures it) over the scan's acquisitions after NoiseAdjust and
RemoveOversampling, again and again, torch on one thread; acquisitions per CPU second (process time)
and per wall second. In the same run, so that the figures are ratios:

* **garbage collector paused**: the same passes with ``gc`` disabled: what the collector's full
  passes over this process's objects (torch, the model) add to the buffer's allocations;
* **memory floor**: the same ReconData buffers (data and reference, ``[E0, E1, E2, CHA, N, S, LOC]``
  complex64, mostly zeros at 8x undersampling) allocated fresh and the same lines copied into them
  with plain numpy: what any gadget that hands over dense ReconData pays, whatever its Python;
* **reader**: ``ismrmrd.Acquisition.deserialize_from`` (what gadgetron-python's ``read_acquisition``
  calls) over the raw acquisitions in memory: building the acquisition objects the chain's first
  gadget receives, before any gadget runs (ismrmrd-python, outside the buffer).

As a script it measures the gadget of one or more source trees in the same run, each in its own
process, in turns (``--rounds``), e.g. the current tree against a baseline commit::

    git archive <commit> | tar -x -C /tmp/baseline
    python benchmarks/buffer_rate.py --tree /tmp/baseline --tree . --out benchmarks/results/buffer_rate.md
"""

from __future__ import annotations

import argparse
import gc
import importlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHAIN = Path("chains") / "cardiomm_cine_python.yaml"
PRE_STAGES = ("NoiseAdjust", "RemoveOversampling")
TARGET = 100_000.0


def _passes(run: Callable[[], Any], n_items: int, passes: int, min_s: float) -> dict[str, float]:
    total, wall, cpu, done = 0, 0.0, 0.0, 0
    while done < passes or wall < min_s:
        c0, w0 = time.process_time(), time.perf_counter()
        run()
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        total += n_items
        done += 1
    return {"acquisitions": total, "passes": done, "wall_s": wall, "cpu_s": cpu,
            "acquisitions_per_s": total / wall, "per_cpu_s": total / cpu if cpu else float("nan")}


def copy_floor(outputs: Sequence[Any]) -> Callable[[], None]:
    """A function that allocates every buffer of ``outputs`` (ReconData) afresh and copies the lines
    that arrived (header slots with samples) into them with plain numpy."""
    plans = []
    for recon_data in outputs:
        for bit in recon_data.bits:
            for buffer in (bit.data, bit.ref):
                if buffer is None:
                    continue
                filled = [position for position in np.ndindex(buffer.headers.shape)
                          if buffer.headers[position].number_of_samples > 0]
                lines = [np.ascontiguousarray(buffer.data[:, e1, e2, :, n, s, loc].T)
                         for e1, e2, n, s, loc in filled]
                plans.append((buffer.data.shape, filled, lines))

    def run() -> None:
        for shape, filled, lines in plans:
            data = np.zeros(shape, dtype=np.complex64, order="F")
            for (e1, e2, n, s, loc), line in zip(filled, lines):
                data[:, e1, e2, :, n, s, loc] = line.T

    return run


def measure_buffering(buffer: Any, items: Sequence[Any], header: Any, raw: Sequence[Any],
                      passes: int = 5, min_s: float = 2.0) -> dict[str, Any]:
    """Acquisitions per second of ``buffer`` (an AcquisitionBuffer) over ``items``, with the garbage
    collector running and paused, the memory floor of its outputs and the reader over ``raw`` (the
    acquisitions as they come off the wire); torch on one thread. Keys: those of chain.py's
    ``buffering`` entry plus ``gc_paused``, ``floor`` and ``reader`` (each with ``per_cpu_s``)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outputs = list(buffer(iter(items), header))
        if not outputs:
            raise RuntimeError("AcquisitionBuffer gave no ReconData")
        result: dict[str, Any] = _passes(lambda: list(buffer(iter(items), header)), len(items), passes, min_s)
        gc.collect()
        gc.disable()
        try:
            result["gc_paused"] = _passes(lambda: list(buffer(iter(items), header)), len(items), passes, min_s)
        finally:
            gc.enable()
        result["floor"] = _passes(copy_floor(outputs), len(items), passes, min_s)
        stream = io.BytesIO()
        for acq in raw:
            acq.serialize_into(stream.write)
        blob = stream.getvalue()

        def read() -> None:
            source = io.BytesIO(blob)
            for _ in raw:
                type(raw[0]).deserialize_from(source.read)

        result["reader"] = _passes(read, len(raw), passes, min_s)
    finally:
        torch.set_num_threads(previous)
    result["outputs"] = len(outputs)
    result["buffers"] = [list(bit.data.data.shape) for rd in outputs for bit in rd.bits]
    return result


# --------------------------------------------------------------------------- one tree, in its own process


def _stages(tree: Path) -> dict[str, Any]:
    """NoiseAdjust, RemoveOversampling and AcquisitionBuffer of ``tree``, with the chain's properties."""
    import yaml

    chain = yaml.safe_load((tree / CHAIN).read_text())
    gadgets = {}
    for stage in chain["stages"]:
        if stage.get("target") in (*PRE_STAGES, "AcquisitionBuffer"):
            cls = getattr(importlib.import_module(stage["module"]), stage["target"])
            gadgets[stage["target"]] = cls(**(stage.get("properties") or {}))
    return gadgets


def _read_scan(path: Path) -> tuple[Any, list[Any]]:
    import ismrmrd

    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    try:
        header = ismrmrd.xsd.CreateFromDocument(dataset.read_xml_header())
        acquisitions = [dataset.read_acquisition(i) for i in range(dataset.number_of_acquisitions())]
    finally:
        dataset.close()
    return header, acquisitions


def run_tree(tree: Path, scan: Path, passes: int, min_s: float) -> dict[str, Any]:
    """measure_buffering with the gadgets of ``tree`` (imported from there) over ``scan``."""
    sys.path.insert(0, str(tree))
    gadgets = _stages(tree)
    module = sys.modules[type(gadgets["AcquisitionBuffer"]).__module__]
    if not Path(module.__file__).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"gadgets.buffer came from {module.__file__}, not from {tree}")
    header, raw = _read_scan(scan)
    items = list(raw)
    for name in PRE_STAGES:
        items = list(gadgets[name](iter(items), header))
    return measure_buffering(gadgets["AcquisitionBuffer"], items, header, raw, passes, min_s)


def render(report: dict[str, Any]) -> str:
    lines = ["# Buffering throughput: trees measured in turns (one core)", "",
             f"- machine: {report.get('machine', '?')}", f"- command: `{report['command']}`",
             f"- scan: `{report['geometry']}` geometry of benchmarks/chain.py ({report['acquisitions']} acquisitions); "
             f"load average at start {report['loadavg_start']}, at end {report['loadavg_end']}", "",
             "| tree | buffer /CPU s | gc paused /CPU s | memory floor /CPU s | reader /CPU s | target |",
             "|---|---:|---:|---:|---:|---:|"]
    for tree, runs in report["trees"].items():
        def median(key: str | None, runs: list[dict[str, Any]] = runs) -> str:
            values = [(r if key is None else r[key])["per_cpu_s"] for r in runs]
            return f"{statistics.median(values):,.0f}"
        lines.append(f"| `{tree}` | {median(None)} | {median('gc_paused')} | {median('floor')} | "
                     f"{median('reader')} | {TARGET:,.0f} |")
    lines += ["", f"Medians of {report['rounds']} rounds; each round runs every tree once, in its own process."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", action="append", default=None, help="a source tree to measure (repeatable; default .)")
    p.add_argument("--geometry", default="cmrx", help="a geometry of benchmarks/chain.py (default cmrx)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; every tree runs once per round")
    p.add_argument("--passes", type=int, default=5, help="at least this many passes per figure")
    p.add_argument("--min-s", type=float, default=2.0, help="and at least this many wall seconds")
    p.add_argument("--out", default=None, help="Markdown report (JSON beside it)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: a scan path, one tree
    args = p.parse_args(argv)
    if args.worker:
        json.dump(run_tree(Path(args.tree[0]), Path(args.worker), args.passes, args.min_s), sys.stdout)
        return 0
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import chain  # the scan of chain.py (this tree's simulator)

    trees = args.tree or ["."]  # as given (the report names them so); each runs resolved
    report: dict[str, Any] = {"command": "python benchmarks/buffer_rate.py " + " ".join(argv or sys.argv[1:]),
                              "machine": chain.machine_line(),
                              "geometry": args.geometry, "rounds": args.rounds,
                              "loadavg_start": [round(x, 2) for x in os.getloadavg()],
                              "trees": {tree: [] for tree in trees}}
    with tempfile.TemporaryDirectory(prefix="buffer-rate-") as tmp:
        scan = chain.simulate(Path(tmp) / "scan.h5", args.geometry)
        for _ in range(args.rounds):
            for tree in trees:
                where = str(Path(tree).resolve())
                env = dict(os.environ, PYTHONPATH=where, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
                done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(scan), "--tree",
                                       where, "--passes", str(args.passes), "--min-s", str(args.min_s)], env=env,
                                      cwd=where, capture_output=True, text=True, check=True)
                report["trees"][tree].append(json.loads(done.stdout))
        report["acquisitions"] = len(_read_scan(scan)[1])
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    text = render(report)
    if args.out:
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
