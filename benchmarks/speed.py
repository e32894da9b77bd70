"""Speed and memory of CardioMM against its peers: warm latency per slice, in one run, ratios to E2E-VarNet.

One seeded synthetic cine slice (``--geometry cmrx``: the CMRxRecon cine size, 10 coils, 12
frames, 246 x 512 readout-oversampled k-space cropped to 246 x 256 as RemoveOversampling does,
ktUniform 8x; ``reduced``: 112 x 256 -> 112 x 128; ``tiny``: for tests) is reconstructed by

* CardioMM ``small`` / ``base`` (and ``official``, the authors' architecture; ``tiny`` for tests),
  random weights, through :mod:`benchmarks.model_speed` (``build_model``, ``model_runner``);
* E2E-VarNet at its published size (``fastmri.models.VarNet``: 12 cascades, 18 channels, 8
  sensitivity channels; ``varnet-tiny``: 2 / 4 / 4), every frame of the slice as one batch of
  2D k-spaces (fastMRI's layout: readout as rows, phase encoding as columns);
* compressed sensing (``cs``): sigpy's primal-dual solver (``sigpy.app.LinearLeastSquares``) for
  L1-wavelet in space plus total variation in time, ESPIRiT maps (``sigpy.mri.app.EspiritCalib``),
  a fixed number of iterations, on the CPU (sigpy runs on numpy here);
* the project's conventional fallback (``cg_sense``: ``cardiomm_core.conventional.conventional_recon``).

Every latency is the median wall time of the timed runs after the warm-up runs, and is also
given as a ratio to VarNet's in the same run (same dtype when VarNet has it, else fp32). On CUDA
each row has the peak GPU memory (``torch.cuda.max_memory_allocated``) and ``--compile`` adds
``torch.compile``d rows. ``fastmri`` and ``sigpy`` are imported only when asked for: without
them the row says so and the run goes on. ``fastmri.models`` imports ``fastmri.data``, whose
data-set modules need pandas and requests; when those are missing, ``fastmri.data`` is loaded
as a bare package (its ``transforms`` and ``subsample`` modules only need torch and numpy), so
only the fastmri wheel itself is needed (the JSON records which way it was loaded).

Every (method, dtype, compiled) is its own try/except; the run stops starting new rows after
``--budget-s`` seconds; the table and JSON are rewritten after every row, so a run cut short
still leaves what it measured.

Usage (the committed tables came from these commands)::

    python benchmarks/speed.py --geometry reduced --threads 2 --out benchmarks/results/speed_cpu.md
    python benchmarks/speed.py --device cuda --compile --budget-s 150 --out "$OUT/speed_cuda.md"
    python benchmarks/speed.py --tiny --out /tmp/speed_tiny.md          # seconds: structure only
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import model_speed as ms  # noqa: E402

from benchmarks.machine import cpu_model_name  # noqa: E402
from cardiomm_core.coils import acs_region_mask  # noqa: E402
from cardiomm_core.model import count_parameters  # noqa: E402

log = logging.getLogger(__name__)

#: (coils, frames, ky, kx encoded, kx after oversampling removal)
GEOMETRIES: dict[str, tuple[int, int, int, int, int]] = {
    "cmrx": (10, 12, 246, 512, 256),
    "reduced": (10, 12, 112, 256, 128),
    "tiny": (4, 4, 32, 64, 32),
}
#: E2E-VarNet sizes: (cascades, chans, sens_chans, pools, sens_pools)
VARNET_SIZES: dict[str, tuple[int, int, int, int, int]] = {
    "varnet": (12, 18, 8, 4, 4),  # the fastMRI paper's / fastmri.models.VarNet's published size
    "varnet-tiny": (2, 4, 4, 2, 2),
}
CARDIOMM_METHODS = ("tiny", "small", "base", "official", "official-tiny")
LARGE_METHODS = ("base", "official", "varnet", "cs")
#: the bar (published, not measured here): PromptMR+ paper's per-slice figures on one H100, bf16
PEER_BAR_MS = {"varnet (H100, bf16, published)": 97.0, "PromptMR+ (H100, bf16, published)": 416.0}
#: targets for CardioMM base on a GPU (issue 14)
TARGET_BASE_MS = 50.0
TARGET_BASE_GIB = 2.0
CS_ITERATIONS = 40
CS_WAVELET_WEIGHT = 1e-3
CS_TEMPORAL_WEIGHT = 1e-2


@dataclass
class Row:
    """One timed (method, dtype, compiled) on one device."""

    method: str
    dtype: str
    compiled: bool
    device: str
    params_m: float | None = None
    gflop: float | None = None
    median_ms: float | None = None
    min_ms: float | None = None
    runs: int = 0
    warmup: int = 0
    first_call_s: float | None = None
    peak_mem_gib: float | None = None
    ratio_varnet: float | None = None
    cpu_ms: float | None = None
    ratio_varnet_cpu: float | None = None
    finite: bool | None = None
    note: str = ""


@dataclass
class Run:
    """Everything the table and the JSON need."""

    device: str
    machine: str
    geometry: dict[str, int]
    command: str
    versions: dict[str, str]
    started_utc: str
    threads: int
    loadavg_start: list[float]
    rows: list[Row] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    loadavg_end: list[float] | None = None
    elapsed_s: float = 0.0
    fastmri_import: str = ""
    #: the row being measured when the table was last saved ("" once it is done): a run stopped from
    #: outside (a timeout) says which row it was in
    in_progress: str = ""


# --------------------------------------------------------------------------- optional peers (lazy imports)


def import_fastmri_models() -> tuple[Any, str]:
    """``fastmri.models`` and how it was imported: ``"full"``, or ``"bare fastmri.data"`` when the
    data-set modules' dependencies (pandas, requests, tqdm) are missing. Raises ImportError when
    fastmri itself is not installed."""
    try:
        return importlib.import_module("fastmri.models"), "full"
    except ModuleNotFoundError as exc:
        if exc.name == "fastmri" or exc.name is None:
            raise
        missing = exc.name
    for name in [n for n in sys.modules if n == "fastmri.data" or n.startswith(("fastmri.data.", "fastmri.models"))]:
        del sys.modules[name]
    import fastmri  # noqa: F401 - needs torch, numpy, h5py only

    spec = importlib.util.find_spec("fastmri")
    assert spec is not None and spec.submodule_search_locations
    bare = types.ModuleType("fastmri.data")
    bare.__path__ = [str(Path(list(spec.submodule_search_locations)[0]) / "data")]
    sys.modules["fastmri.data"] = bare
    bare.transforms = importlib.import_module("fastmri.data.transforms")  # type: ignore[attr-defined]
    bare.subsample = importlib.import_module("fastmri.data.subsample")  # type: ignore[attr-defined]
    return importlib.import_module("fastmri.models"), f"bare fastmri.data ({missing} missing)"


def build_varnet(name: str, device: torch.device, seed: int = 0) -> tuple[torch.nn.Module, str]:
    """fastmri's E2E-VarNet of size ``name`` (:data:`VARNET_SIZES`), random weights, eval mode."""
    models, how = import_fastmri_models()
    cascades, chans, sens_chans, pools, sens_pools = VARNET_SIZES[name]
    torch.manual_seed(seed)
    model = models.VarNet(num_cascades=cascades, chans=chans, sens_chans=sens_chans, pools=pools,
                          sens_pools=sens_pools).eval().to(device)
    return model, how


def varnet_inputs(kspace: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Our slice in fastMRI's layout: every frame is a 2D multi-coil k-space.

    ``kspace (1, C, T, ky, kx)`` complex64, ``mask (1, 1, T, ky, 1)`` -> masked k-space
    ``(T, C, kx, ky, 2)`` float32 (readout as rows, phase encoding as columns, where fastMRI's
    masks act), mask ``(T, 1, 1, ky, 1)`` bool, and the calibration lines' count.
    """
    if kspace.ndim != 5 or kspace.shape[0] != 1:
        raise ValueError(f"kspace must be (1, C, T, ky, kx), got {tuple(kspace.shape)}")
    frames = kspace[0].permute(1, 0, 3, 2)  # (T, C, kx, ky)
    masked = torch.view_as_real(frames.contiguous()).contiguous()
    line_mask = mask[0, 0, :, :, 0]  # (T, ky)
    vn_mask = (line_mask > 0)[:, None, None, :, None]
    n_acs = int(acs_region_mask(mask)[0, 0, 0, :, 0].sum().item())
    return masked, vn_mask, max(n_acs, 2)


def varnet_runner(model: torch.nn.Module, kspace: torch.Tensor, mask: torch.Tensor, dtype: str,
                  device: torch.device, compiled: bool = False) -> Callable[[], torch.Tensor]:
    masked, vn_mask, n_low = varnet_inputs(kspace.cpu(), mask.cpu())
    masked, vn_mask = masked.to(device), vn_mask.to(device)
    forward: Callable[..., torch.Tensor] = torch.compile(model, dynamic=False) if compiled else model

    def run() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                                                    enabled=dtype == "bf16"):
            return forward(masked, vn_mask, n_low)

    return run


def cs_runner(kspace: torch.Tensor, mask: torch.Tensor, iterations: int = CS_ITERATIONS,
              wavelet_weight: float = CS_WAVELET_WEIGHT, temporal_weight: float = CS_TEMPORAL_WEIGHT
              ) -> Callable[[], np.ndarray]:
    """Compressed sensing with sigpy on the CPU: ESPIRiT maps, then L1-wavelet (space) + TV (time).

    ``kspace (1, C, T, ky, kx)`` complex64, ``mask (1, 1, T, ky, 1)``; the callable returns the
    image ``(T, ky, kx)`` complex64. Solver: ``sigpy.app.LinearLeastSquares`` with
    ``G = [Wavelet; FiniteDifference(time)]`` and ``proxg = [L1; L1]`` (primal-dual hybrid
    gradient), ``iterations`` iterations; the maps come from the time-averaged k-space.
    """
    import sigpy as sp
    import sigpy.mri as mr

    ksp = kspace[0].cpu().numpy().astype(np.complex64)  # (C, T, ky, kx)
    m = np.broadcast_to(mask[0].cpu().numpy(), ksp.shape).astype(np.float32)  # (C, T, ky, kx)
    n_coils, n_frames, n_ky, n_kx = ksp.shape
    n_acs = int(acs_region_mask(mask.cpu())[0, 0, 0, :, 0].sum().item())

    def run() -> np.ndarray:
        sampled = np.maximum(m.sum(axis=1), 1.0)
        averaged = ksp.sum(axis=1) / sampled  # (C, ky, kx): time-averaged k-space for the maps
        mps = mr.app.EspiritCalib(averaged, calib_width=max(min(n_acs, n_ky), 6), kernel_width=5,
                                  show_pbar=False).run()
        img_shape = (n_frames, n_ky, n_kx)
        sense = sp.linop.Multiply(img_shape, mps[:, None, :, :])
        fourier = sp.linop.FFT(sense.oshape, axes=(-2, -1))
        sampling = sp.linop.Multiply(fourier.oshape, m)
        forward = sampling * fourier * sense
        wavelet = sp.linop.Wavelet(img_shape, axes=(-2, -1))
        temporal = sp.linop.FiniteDifference(img_shape, axes=(0,))
        g_op = sp.linop.Vstack([wavelet, temporal])
        prox = sp.prox.Stack([sp.prox.L1Reg(wavelet.oshape, wavelet_weight),
                              sp.prox.L1Reg(temporal.oshape, temporal_weight)])
        app = sp.app.LinearLeastSquares(forward, ksp, proxg=prox, G=g_op, max_iter=iterations,
                                        max_power_iter=10, show_pbar=False)
        return np.asarray(app.run(), dtype=np.complex64)

    return run


def cg_sense_runner(kspace: torch.Tensor, mask: torch.Tensor) -> Callable[[], Any]:
    from cardiomm_core.conventional import conventional_recon

    return lambda: conventional_recon(kspace, mask, method="cg_sense")


# --------------------------------------------------------------------------- measurement


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _finite(result: Any) -> bool:
    value = getattr(result, "images", result)
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(torch.view_as_real(value) if value.is_complex() else value).all().item())
    array = np.asarray(value)
    return bool(np.isfinite(array.view(np.float32) if np.iscomplexobj(array) else array).all())


def time_runner(run: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> dict[str, Any]:
    """First call (compile / cuDNN autotune / caches), then ``warmup`` untimed and ``repeats`` timed calls."""
    start = time.perf_counter()
    first = run()
    _sync(device)
    first_s = time.perf_counter() - start
    finite = _finite(first)
    del first
    ms.time_call(run, device, warmup, 0)
    times, cpu_times = [], []
    for _ in range(repeats):
        cpu_start = time.process_time()
        times += ms.time_call(run, device, 0, 1)
        cpu_times.append(time.process_time() - cpu_start)
    return {"first_call_s": first_s, "finite": finite, "median_ms": 1e3 * statistics.median(times),
            "min_ms": 1e3 * min(times), "runs": len(times), "cpu_ms": 1e3 * statistics.median(cpu_times)}


def varnet_flops(name: str, n_coils: int, n_frames: int, n_ky: int, n_kx: int) -> float | None:
    """Convolutions and matrix products of one VarNet forward on the slice (meta device), or None."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        models, _ = import_fastmri_models()
        cascades, chans, sens_chans, pools, sens_pools = VARNET_SIZES[name]
        # the U-Nets alone (the full forward calls .item(), which the meta device cannot): the
        # sensitivity U-Net sees every coil of every frame, each cascade's U-Net every frame, both
        # on the image padded to a multiple of 16 as NormUnet pads it
        h, w = ((n_kx - 1) | 15) + 1, ((n_ky - 1) | 15) + 1
        total = 0.0
        for batch, unet, times in ((n_frames * n_coils, models.Unet(2, 2, sens_chans, sens_pools), 1),
                                   (n_frames, models.Unet(2, 2, chans, pools), cascades)):
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter:  # (the U-Net builds a small CPU tensor: not in a meta context)
                unet.eval().to("meta")(torch.empty(batch, 2, h, w, device="meta"))
            total += float(counter.get_total_flops()) * times
        return total
    except Exception as exc:  # noqa: BLE001 - a count is a nicety, never a reason to fail the run
        log.debug("VarNet FLOP count failed: %s", exc)
        return None


def _ratios(rows: list[Row]) -> None:
    """ratio_varnet: latency / VarNet's (same device, same dtype, same compiled if measured, else eager fp32)."""
    for attr, ratio in (("median_ms", "ratio_varnet"), ("cpu_ms", "ratio_varnet_cpu")):
        varnet = {(r.device, r.dtype, r.compiled): getattr(r, attr) for r in rows
                  if r.method.startswith("varnet") and getattr(r, attr)}
        for r in rows:
            ref = varnet.get((r.device, r.dtype, r.compiled)) or varnet.get((r.device, r.dtype, False)) \
                or varnet.get((r.device, "fp32", False))
            value = getattr(r, attr)
            setattr(r, ratio, value / ref if (ref and value) else None)


def machine_description(device: torch.device) -> str:
    cpu = cpu_model_name() or platform.processor() or platform.machine()
    text = f"{cpu}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        text = f"{torch.cuda.get_device_name(device)} ({props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}); " + text
    return text


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "platform": platform.platform()}
    for name in ("fastmri", "sigpy"):
        try:
            from importlib.metadata import version

            out[name] = version(name)
        except Exception:  # noqa: BLE001 - not installed
            out[name] = "not installed"
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def render(run: Run) -> str:
    g = run.geometry
    lines = [
        f"# Speed and memory per slice ({run.device})",
        "",
        f"- machine: {run.machine}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in run.versions.items()),
        f"- date: {run.started_utc}; load average at start {run.loadavg_start}, at end {run.loadavg_end}",
        f"- command: `{run.command}` ({run.elapsed_s:.0f} s in all)",
        f"- slice: {g['coils']} coils, {g['frames']} frames, {g['ky']} x {g['kx_encoded']} k-space cropped to "
        f"{g['ky']} x {g['kx']}, ktUniform 8x; random weights (CardioMM text dim 64, official 512)",
        "- latency: median wall time of the timed runs after the first call and the warm-up runs; "
        "x VarNet: latency / VarNet's in this run (same dtype, else fp32); CPU time: this process's CPU seconds "
        "per timed call (all threads; on a shared CPU steadier than wall time, on a GPU only the host's share); "
        "peak: torch.cuda.max_memory_allocated; "
        "GFLOP: convolutions and matrix products of one forward (FlopCounterMode; FFTs not counted)",
        "",
        "| method | params (M) | GFLOP/slice | dtype | compiled | latency/slice (ms) | runs (+warm-up) | x VarNet "
        "| peak GPU mem (GiB) | first call (s) | CPU time/slice (ms) | x VarNet (CPU time) | finite | note |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in run.rows:
        lines.append(
            f"| {r.method} | {_fmt(r.params_m, '.2f')} | {_fmt(r.gflop, '.3g')} | {r.dtype} | "
            f"{'yes' if r.compiled else 'no'} | {_fmt(r.median_ms, '.1f')} | {r.runs} (+{r.warmup}) | "
            f"{_fmt(r.ratio_varnet, '.3g')} | {_fmt(r.peak_mem_gib, '.2f')} | {_fmt(r.first_call_s, '.1f')} | "
            f"{_fmt(r.cpu_ms, '.0f')} | {_fmt(r.ratio_varnet_cpu, '.3g')} | "
            f"{'-' if r.finite is None else ('yes' if r.finite else 'NO')} | {r.note} |")
    lines += ["", "The bar and the targets (not measured here):", ""]
    lines += [f"- {name}: {ms_:.0f} ms per slice" for name, ms_ in PEER_BAR_MS.items()]
    lines.append(f"- target for CardioMM base on a GPU: <= {TARGET_BASE_MS:.0f} ms and <= {TARGET_BASE_GIB:.0f} GiB "
                 "per slice at the CMRxRecon cine size")
    if run.skipped:
        lines += ["", "Skipped or failed: " + "; ".join(run.skipped)]
    if run.in_progress:
        lines += ["", f"Stopped while measuring: {run.in_progress} (the rows above are complete)"]
    return "\n".join(lines) + "\n"


def save(run: Run, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    _ratios(run.rows)
    out.write_text(render(run))
    out.with_suffix(".json").write_text(json.dumps(asdict(run), indent=2) + "\n")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--geometry", choices=sorted(GEOMETRIES), default=None,
                   help="slice size (default: cmrx; tiny with --tiny)")
    p.add_argument("--methods", default=None,
                   help="comma list of small, base, official, tiny, varnet, varnet-tiny, cs, cg_sense "
                        "(default: small,base,varnet,cs,cg_sense; --tiny: tiny,varnet-tiny,cs,cg_sense)")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16 (cs and cg_sense: fp32 only)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd bf16 models (CUDA)")
    p.add_argument("--compile-methods", default="base,varnet,small", help="methods compiled with --compile, in order")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs after the first call (CUDA 3, CPU 1)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs (CUDA 10, CPU 2)")
    p.add_argument("--large-warmup", type=int, default=None, help="base/official/varnet/cs (CUDA 3, CPU 0)")
    p.add_argument("--large-repeats", type=int, default=None, help="base/official/varnet/cs (CUDA 10, CPU 1)")
    p.add_argument("--cs-iterations", type=int, default=CS_ITERATIONS)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--budget-s", type=float, default=0.0, help="start no new row after this many seconds (0: none)")
    p.add_argument("--tiny", action="store_true", help="tiny geometry and models: checks the script in seconds")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speed_cpu.md"),
                   help="the Markdown table; the JSON goes beside it (.json)")
    args = p.parse_args(argv)
    args.geometry = args.geometry or ("tiny" if args.tiny else "cmrx")
    args.methods = args.methods or ("tiny,varnet-tiny,cs,cg_sense" if args.tiny else "small,base,varnet,cs,cg_sense")
    known = set(CARDIOMM_METHODS) | set(VARNET_SIZES) | {"cs", "cg_sense"}
    unknown = [m for m in args.methods.split(",") if m and m not in known]
    if unknown:
        p.error(f"unknown method(s) {unknown}; known: {sorted(known)}")
    bad = [d for d in args.dtypes.split(",") if d and d not in ("fp32", "bf16")]
    if bad:
        p.error(f"unknown dtype(s) {bad}; known: fp32, bf16")
    if args.tiny:
        args.cs_iterations = min(args.cs_iterations, 5)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = ms.start_run(args)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("speed.py: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    is_cuda = device.type == "cuda"
    if is_cuda:
        torch.backends.cudnn.benchmark = True
    began = time.perf_counter()
    n_coils, n_frames, n_ky, n_kx_enc, n_kx = GEOMETRIES[args.geometry]
    command = "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    run = Run(device=device.type, machine=machine_description(device),
              geometry={"coils": n_coils, "frames": n_frames, "ky": n_ky, "kx_encoded": n_kx_enc, "kx": n_kx},
              command=command.strip(), versions=versions(),
              started_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              threads=torch.get_num_threads(), loadavg_start=[round(x, 2) for x in os.getloadavg()])
    out = Path(args.out)
    kspace_cpu, mask_cpu = ms.make_slice(seed=0, n_coils=n_coils, n_frames=n_frames, n_ky=n_ky,
                                         n_kx_enc=n_kx_enc, n_kx=n_kx)
    kspace, mask = kspace_cpu.to(device), mask_cpu.to(device)
    dtypes = [d for d in args.dtypes.split(",") if d]
    methods = [m for m in args.methods.split(",") if m]

    def counts(method: str) -> tuple[int, int]:
        large = method in LARGE_METHODS
        if large:
            w = args.large_warmup if args.large_warmup is not None else (3 if is_cuda else 0)
            r = args.large_repeats if args.large_repeats is not None else (10 if is_cuda else 1)
        else:
            w = args.warmup if args.warmup is not None else (3 if is_cuda else 1)
            r = args.repeats if args.repeats is not None else (10 if is_cuda else 2)
        return w, max(r, 1)

    def over_budget() -> bool:
        return bool(args.budget_s) and time.perf_counter() - began > args.budget_s

    def measure(method: str, dtype: str, compiled: bool, make: Callable[[], tuple[Callable[[], Any], dict[str, Any]]],
                on: torch.device) -> None:
        label = f"{method} {dtype}{' compiled' if compiled else ''}"
        if over_budget():
            run.skipped.append(f"{label}: time budget ({args.budget_s:.0f} s) spent")
            return
        warmup, repeats = counts(method)
        row = Row(method=method, dtype=dtype, compiled=compiled, device=on.type, warmup=warmup)
        run.in_progress = label
        save(run, out)
        try:
            if on.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(on)
            runner, extra = make()
            for key, value in extra.items():
                setattr(row, key, value)
            log.info("%s: first call + %d warm-up + %d timed", label, warmup, repeats)
            for key, value in time_runner(runner, on, warmup, repeats).items():
                setattr(row, key, value)
            if on.type == "cuda":
                row.peak_mem_gib = torch.cuda.max_memory_allocated(on) / 2**30
            log.info("  -> %.1f ms/slice%s", row.median_ms,
                     f", peak {row.peak_mem_gib:.2f} GiB" if row.peak_mem_gib is not None else "")
            run.rows.append(row)
        except ImportError as exc:
            log.warning("%s skipped: %s", label, exc)
            run.skipped.append(f"{label}: not installed ({exc})")
        except Exception as exc:  # noqa: BLE001 - one failure must not lose the other rows
            log.exception("%s failed", label)
            row.note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
            run.rows.append(row)
        finally:
            run.in_progress = ""
            run.elapsed_s = time.perf_counter() - began
            run.loadavg_end = [round(x, 2) for x in os.getloadavg()]
            save(run, out)

    cpu = torch.device("cpu")
    for method in methods:
        if method in CARDIOMM_METHODS:
            try:
                flops = ms.count_flops(method, n_coils, n_frames, n_ky, n_kx) / 1e9
                model = ms.build_model(method, device)
            except Exception as exc:  # noqa: BLE001
                log.exception("building %s failed", method)
                run.skipped.append(f"{method}: build failed ({type(exc).__name__}: {exc})")
                continue
            extra = {"params_m": count_parameters(model) / 1e6, "gflop": flops}
            for dtype in dtypes:
                measure(method, dtype, False,
                        lambda model=model, dtype=dtype, extra=extra: (ms.model_runner(model, kspace, mask, dtype, device, False), extra), device)
            del model
        elif method in VARNET_SIZES:
            try:
                model, how = build_varnet(method, device)
            except ImportError as exc:
                msg = f"{method}: skipped, fastmri is not installed ({exc}); pip install --no-deps fastmri==0.3.0"
                log.warning(msg)
                run.skipped.append(msg)
                continue
            except Exception as exc:  # noqa: BLE001
                log.exception("building %s failed", method)
                run.skipped.append(f"{method}: build failed ({type(exc).__name__}: {exc})")
                continue
            run.fastmri_import = how
            gflop = varnet_flops(method, n_coils, n_frames, n_ky, n_kx)
            extra = {"params_m": count_parameters(model) / 1e6, "gflop": gflop / 1e9 if gflop else None,
                     "note": "" if how == "full" else "fastmri.data loaded bare"}
            for dtype in dtypes:
                measure(method, dtype, False,
                        lambda model=model, dtype=dtype, extra=extra: (varnet_runner(model, kspace, mask, dtype, device, False), extra), device)
            del model
        elif method == "cs":
            note = (f"sigpy L1-wavelet + temporal TV, {args.cs_iterations} PDHG iterations, ESPIRiT maps; CPU "
                    f"({torch.get_num_threads()} threads){' (sigpy has no CUDA here)' if is_cuda else ''}")
            measure("cs", "fp32", False,
                    lambda note=note: (cs_runner(kspace_cpu, mask_cpu, args.cs_iterations), {"note": note}), cpu)
        elif method == "cg_sense":
            measure("cg_sense", "fp32", False,
                    lambda: (cg_sense_runner(kspace, mask), {"note": "the project's fallback (conventional_recon)"}),
                    device)
    if args.compile:
        for method in [m for m in args.compile_methods.split(",") if m in methods]:
            if method in CARDIOMM_METHODS:
                try:
                    model = ms.build_model(method, device)
                except Exception as exc:  # noqa: BLE001
                    run.skipped.append(f"{method} compiled: {type(exc).__name__}: {exc}")
                    continue
                extra = {"params_m": count_parameters(model) / 1e6}
                measure(method, "bf16", True,
                        lambda model=model, extra=extra: (ms.model_runner(model, kspace, mask, "bf16", device, True), extra), device)
            elif method in VARNET_SIZES:
                try:
                    model, _ = build_varnet(method, device)
                except Exception as exc:  # noqa: BLE001
                    run.skipped.append(f"{method} compiled: {type(exc).__name__}: {exc}")
                    continue
                extra = {"params_m": count_parameters(model) / 1e6}
                measure(method, "bf16", True,
                        lambda model=model, extra=extra: (varnet_runner(model, kspace, mask, "bf16", device, True), extra), device)
    run.elapsed_s = time.perf_counter() - began
    run.loadavg_end = [round(x, 2) for x in os.getloadavg()]
    save(run, out)
    sys.stdout.write(out.read_text())
    return 1 if any(r.note.startswith("failed") for r in run.rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
