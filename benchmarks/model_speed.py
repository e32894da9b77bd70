"""CardioMM model speed: parameters, FLOPs and warm latency per slice, against a CG-SENSE baseline.

One CMRxRecon-size cine slice (10 coils, 12 frames, 246 x 512 readout-oversampled k-space, cropped
to 246 x 256 in the readout direction as the RemoveOversampling gadget does, ktUniform 8x mask)
is reconstructed by each named configuration (tiny, small, base, and ``official``: the authors'
architecture, ``cardiomm_core.official``, 10 cascades, every frame on its own, 512-d text features)
with random weights, in float32
and, where asked, bf16 autocast. In the same run the slice is reconstructed by
``conventional_recon`` (CG-SENSE, 20 iterations, and zero-filled), so every latency is also given
as a ratio to CG-SENSE on the same machine.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the meta device: the
convolutions and matrix products of one forward (2 FLOPs per multiply-add); FFTs and elementwise
work are not included.

Usage (the committed CPU table came from the first command)::

    python benchmarks/model_speed.py --out benchmarks/results/model_speed_cpu.md
    python benchmarks/model_speed.py --device cuda --configs small,base --dtypes fp32,bf16 --compile \\
        --out "$OUT/model_speed_cuda.md"
    python benchmarks/model_speed.py --configs small,base,official --dtypes fp32 \\
        --out benchmarks/results/model_speed_cpu_official.md
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cardiomm_core.coils import acs_region_mask  # noqa: E402
from cardiomm_core.conventional import conventional_recon  # noqa: E402
from cardiomm_core.fft import fft2c, ifft2c  # noqa: E402
from cardiomm_core.masks import make_mask  # noqa: E402
from cardiomm_core.model import CardioMM, CardioMMConfig, config_by_name, count_parameters  # noqa: E402
from cardiomm_core.official import OfficialCardioMM, official_config_by_name  # noqa: E402
from cardiomm_core.readout import crop_image_readout  # noqa: E402

log = logging.getLogger(__name__)

TEXT_DIM = 64  # the hashing encoder's size; the text dim only changes the projection heads
#: configuration names that build the authors' architecture (OfficialCardioMM) instead of CardioMM
OFFICIAL_CONFIGS = {"official": "official", "official-tiny": "tiny"}
N_COILS, N_FRAMES, N_KY, N_KX_ENC, N_KX = 10, 12, 246, 512, 256


def make_slice(seed: int = 0, n_coils: int = N_COILS, n_frames: int = N_FRAMES, n_ky: int = N_KY,
               n_kx_enc: int = N_KX_ENC, n_kx: int = N_KX) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded synthetic slice: masked k-space ``(1, C, T, ky, kx)`` complex64 and its mask ``(1, 1, T, ky, 1)``.

    The k-space has an MR-like 1/|k| spectrum, is acquired with ``n_kx_enc`` readout samples and
    cropped to the central ``n_kx`` image columns (image domain crop, as RemoveOversampling does).
    """
    rng = np.random.default_rng(seed)
    shape = (1, n_coils, n_frames, n_ky, n_kx_enc)
    ky = np.abs(np.arange(n_ky) - n_ky // 2)[:, None]
    kx = np.abs(np.arange(n_kx_enc) - n_kx_enc // 2)[None, :]
    envelope = 1.0 / (1.0 + np.hypot(ky, kx / 2.0))
    data = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * envelope
    kspace_enc = torch.from_numpy(data.astype(np.complex64))
    image_enc = ifft2c(kspace_enc)
    image = torch.from_numpy(crop_image_readout(image_enc.numpy(), n_kx).copy())
    kspace = fft2c(image)
    mask = make_mask("ktUniform", 8, n_frames, n_ky, n_kx, seed=seed).as_tensor()
    return (kspace * mask).contiguous(), mask


def model_config(name: str) -> CardioMMConfig:
    """A named configuration, optionally with its unroll after a dash: ``small``, ``small-proximal``."""
    base, _, unroll = name.partition("-")
    config = config_by_name(base, TEXT_DIM)
    return CardioMMConfig.from_dict({**config.to_dict(), "unroll": unroll}) if unroll else config


def _new_model(name: str) -> torch.nn.Module:
    """CardioMM for a project configuration name, OfficialCardioMM for one of OFFICIAL_CONFIGS."""
    if name in OFFICIAL_CONFIGS:
        return OfficialCardioMM(official_config_by_name(OFFICIAL_CONFIGS[name]))
    return CardioMM(model_config(name))


def count_flops(name: str, n_coils: int = N_COILS, n_frames: int = N_FRAMES, n_ky: int = N_KY,
                n_kx: int = N_KX) -> float:
    """FLOPs of one forward of configuration ``name`` on one slice (meta device, no real work).

    The proximal unroll's conventional start needs real data (it finds the calibration region), so
    its count is that of the same U-Nets in the k-space unroll: the networks are identical and the
    FFT / CG work is not counted anyway."""
    with torch.device("meta"):
        if name in OFFICIAL_CONFIGS:
            model = _new_model(name).eval()
        else:
            model = CardioMM(config_by_name(name.partition("-")[0], TEXT_DIM)).eval()
        kspace = torch.empty(1, n_coils, n_frames, n_ky, n_kx, dtype=torch.complex64)
        mask = torch.empty(1, 1, n_frames, n_ky, 1)
        acs = torch.empty(1, 1, 1, n_ky, 1)
        emb = torch.empty(1, model.config.text_dim)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(kspace, mask, emb, emb, acs)
    return float(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


@dataclass
class Row:
    name: str
    params_m: float
    gflop: float
    dtype: str
    compiled: bool
    device: str
    median_s: float
    runs: int
    peak_mem_gib: float | None = None
    ratio_cg: float | None = None
    note: str = ""


def build_model(name: str, device: torch.device, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = _new_model(name).eval().to(device)
    if device.type == "cuda":
        model.to_channels_last()
    return model


def model_runner(model: torch.nn.Module, kspace: torch.Tensor, mask: torch.Tensor, dtype: str,
                 device: torch.device, compiled: bool = False) -> Callable[[], torch.Tensor]:
    """A no-argument callable running one slice through ``model`` (inference mode, optional bf16)."""
    emb = torch.randn(1, model.config.text_dim, generator=torch.Generator().manual_seed(1)).to(device)
    emb = emb / emb.norm()
    acs = acs_region_mask(mask)
    forward: Callable[..., torch.Tensor] = model
    if compiled:
        forward = torch.compile(model, dynamic=False)

    def run() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                                                    enabled=dtype == "bf16"):
            return forward(kspace, mask, emb, emb, acs)

    return run


def baseline_rows(kspace: torch.Tensor, mask: torch.Tensor, repeats: int) -> dict[str, float]:
    out = {}
    for method in ("zero_filled", "cg_sense"):
        times = time_call(functools.partial(conventional_recon, kspace, mask, method=method), torch.device("cpu"),
                          1, repeats)
        out[method] = statistics.median(times)
        log.info("baseline %s: %.3f s", method, out[method])
    return out


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"


def write_table(path: Path, rows: list[Row], baselines: dict[str, float], device: torch.device,
                command: str, elapsed: float) -> None:
    lines = [
        f"# CardioMM model speed ({device.type})",
        "",
        f"- machine: {machine_description(device)}; {platform.platform()}",
        f"- torch {torch.__version__}, numpy {np.__version__}, Python {platform.python_version()}",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- command: `{command}` ({elapsed:.0f} s in all)",
        f"- slice: {N_COILS} coils, {N_FRAMES} frames, {N_KY} x {N_KX_ENC} k-space cropped to {N_KY} x {N_KX}, "
        "ktUniform 8x; random weights; text dim 64 (hashing encoder), 512 for official",
        "- GFLOP: convolutions and matrix products of one forward (FlopCounterMode; FFTs and elementwise work "
        "not counted); latency: median wall time of the timed runs after warm-up; ratio: latency / CG-SENSE "
        "latency on this machine in the same run; params: trainable (official: 68.7 M in all, with the "
        "frozen prompt banks)",
        "",
        "| config | params (M) | GFLOP/slice | dtype | compiled | latency/slice (s) | runs | x CG-SENSE "
        "| peak mem (GiB) | note |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        mem = f"{r.peak_mem_gib:.2f}" if r.peak_mem_gib is not None else "-"
        ratio = f"{r.ratio_cg:.2f}" if r.ratio_cg is not None else "-"
        latency = f"{r.median_s:.3f}" if r.runs else "-"
        lines.append(f"| {r.name} | {r.params_m:.2f} | {r.gflop:.0f} | {r.dtype} | {'yes' if r.compiled else 'no'} "
                     f"| {latency} | {r.runs} | {ratio} | {mem} | {r.note} |")
    lines += ["", "Baselines (CPU, same run, same slice):", ""]
    lines += [f"- {name}: {seconds:.3f} s/slice" for name, seconds in baselines.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps(
        {"rows": [asdict(r) for r in rows], "baselines_s": baselines, "command": command,
         "torch": torch.__version__, "machine": machine_description(device)}, indent=2) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--configs", default="tiny,small,base",
                   help="comma list of tiny, small, base, each optionally with its unroll: small-proximal; "
                        "official (the authors' architecture) or official-tiny")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16")
    p.add_argument("--bf16-configs", default="tiny,small",
                   help="configurations timed in bf16 (base in bf16 takes minutes on a CPU)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per (config, dtype)")
    p.add_argument("--large-repeats", type=int, default=1, help="timed runs for base")
    p.add_argument("--large-warmup", type=int, default=0, help="untimed runs for base (CPU: 0 keeps the run short)")
    p.add_argument("--baseline-repeats", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "model_speed_cpu.md"))
    return p.parse_args(argv)


def start_run(args: argparse.Namespace) -> torch.device:
    """Set up a timing run from its options: INFO logging with times, ``args.threads`` torch threads
    (0: torch's default); return ``args.device``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    return torch.device(args.device)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = start_run(args)
    command = "python benchmarks/model_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    began = time.perf_counter()
    kspace_cpu, mask_cpu = make_slice()
    baselines = baseline_rows(kspace_cpu, mask_cpu, args.baseline_repeats)
    kspace, mask = kspace_cpu.to(device), mask_cpu.to(device)
    rows: list[Row] = []
    for name in [c for c in args.configs.split(",") if c]:
        flops = count_flops(name)
        model = build_model(name, device)
        params = count_parameters(model) / 1e6
        large = name.partition("-")[0] == "base" or name == "official"
        for dtype in [d for d in args.dtypes.split(",") if d]:
            if dtype == "bf16" and device.type == "cpu" and name not in args.bf16_configs.split(","):
                continue
            for compiled in ([False, True] if args.compile else [False]):
                warmup = args.large_warmup if large else 1
                repeats = args.large_repeats if large else args.repeats
                if compiled:
                    warmup = max(warmup, 2)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                log.info("%s %s%s: %d warm-up + %d timed", name, dtype, " compiled" if compiled else "", warmup, repeats)
                note = ""
                try:
                    run = model_runner(model, kspace, mask, dtype, device, compiled)
                    times = time_call(run, device, warmup, repeats)
                except Exception as exc:  # report and go on: one failure must not lose the other rows
                    log.exception("%s %s failed", name, dtype)
                    times, note = [], f"failed: {type(exc).__name__}"
                median = statistics.median(times) if times else float("nan")
                peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
                rows.append(Row(name, params, flops / 1e9, dtype, compiled, device.type, median, len(times),
                                peak, median / baselines["cg_sense"] if times else None,
                                note or ("no warm-up run" if warmup == 0 else "")))
                log.info("  -> %.3f s/slice", median)
        del model
    elapsed = time.perf_counter() - began
    out = Path(args.out)
    write_table(out, rows, baselines, device, command, elapsed)
    sys.stdout.write(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
