"""Quality and speed of the conventional fallback (``cardiomm_core.conventional.conventional_recon``).

Synthetic cine slices (``cardiomm_core.phantom.simulate_cardiac_scan``: 1 slice, 12 frames,
10 coils, 128 x 112 recon matrix, readout 2x oversampled, noise level 0.01) are prepared as the
demo chain prepares them: prewhitened with the noise covariance (NoiseAdjust), readout
oversampling removed in the image domain (RemoveOversampling, ``cardiomm_core.readout.crop_image_readout``) and SVD-compressed
to 8 virtual coils (CoilCompression). Each is undersampled with ``make_mask`` (ktGaussian and
ktUniform at R = 4, 8, 12, 16, 24; Uniform at R = 4, 8; the pattern's default ACS) and
reconstructed by

* ``zero-filled RSS``: root-sum-of-squares of the zero-filled coil images (what the demo prints);
* ``zero-filled SENSE``: ``conventional_recon(method="zero_filled")`` (``A^H y``);
* ``old CG-SENSE``: the fallback before temporal regularisation: per-frame CG-SENSE, 20
  iterations, l2 = 1e-3, maps thresholded at 0.05 (``conventional_recon(sens_threshold=0.05,
  temporal_weight=0, prior_weight=0, tol=1e-6)``);
* ``new default``: ``conventional_recon()`` as CardioMMRecon calls it (temporally regularised
  SENSE for kt patterns, CG-SENSE with a low-resolution prior for Uniform).

Scores: ``cardiomm_core.metrics.evaluate`` (CMRxRecon 2024 convention: magnitude, central crop,
per-image normalisation) against the phantom's ground truth, averaged over the seeds; seconds:
the median wall time of one reconstruction (sensitivity estimation included) with one torch
thread.

Usage (the committed table came from this command)::

    .venv/bin/python benchmarks/fallback_quality.py --out benchmarks/results/fallback_quality.md
"""

from __future__ import annotations

import argparse
import datetime
import logging
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cardiomm_core.coils import coil_compression  # noqa: E402
from cardiomm_core.conventional import conventional_recon  # noqa: E402
from cardiomm_core.fft import fft2c, ifft2c  # noqa: E402
from cardiomm_core.masks import make_mask  # noqa: E402
from cardiomm_core.metrics import evaluate  # noqa: E402
from cardiomm_core.phantom import simulate_cardiac_scan  # noqa: E402
from cardiomm_core.readout import crop_image_readout  # noqa: E402
from cardiomm_core.sense import rss_complex  # noqa: E402

log = logging.getLogger(__name__)

CASES: tuple[tuple[str, int], ...] = tuple(
    [(pattern, r) for pattern in ("ktGaussian", "ktUniform") for r in (4, 8, 12, 16, 24)]
    + [("Uniform", 4), ("Uniform", 8)]
)
METHODS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "zero-filled RSS": lambda k, m: rss_complex(k).to(torch.complex64),
    "zero-filled SENSE": lambda k, m: conventional_recon(k, m, method="zero_filled").images,
    "old CG-SENSE": lambda k, m: conventional_recon(k, m, sens_threshold=0.05, temporal_weight=0.0,
                                                    prior_weight=0.0, tol=1e-6).images,
    "new default": lambda k, m: conventional_recon(k, m).images,
}


def prepared_slice(seed: int, n_coils: int, n_frames: int, matrix: tuple[int, int],
                   n_virtual: int) -> tuple[torch.Tensor, np.ndarray]:
    """Fully sampled k-space ``(1, n_virtual, T, ky, nx)`` complex64 as the chain delivers it, and the
    ground truth ``(T, y, x)``."""
    scan = simulate_cardiac_scan(seed=seed, n_slices=1, n_frames=n_frames, n_coils=n_coils, matrix=matrix,
                                 noise_level=0.01)
    whitener = np.linalg.inv(np.linalg.cholesky(scan.noise_covariance.astype(np.complex128))).astype(np.complex64)
    kspace = np.einsum("dc,ctyx->dtyx", whitener, scan.kspace[0])
    coil_images = crop_image_readout(ifft2c(torch.from_numpy(np.ascontiguousarray(kspace))).numpy(), matrix[0])
    kspace = fft2c(torch.from_numpy(np.ascontiguousarray(coil_images))).numpy()
    if n_virtual < n_coils:
        kspace = coil_compression(kspace, 0, n_virtual=n_virtual).apply(kspace, 0)
    return torch.from_numpy(np.ascontiguousarray(kspace[None]).astype(np.complex64)), scan.images[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="phantom subjects (and mask seeds)")
    parser.add_argument("--coils", type=int, default=10)
    parser.add_argument("--virtual-coils", type=int, default=8, help="coil compression as in the demo chain")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--matrix", type=int, nargs=2, default=(128, 112), metavar=("NX", "NY"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    parser.add_argument("--out", type=Path, help="markdown table to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    scores: dict[tuple[str, int, str], list[tuple[float, float, float]]] = {}
    for seed in args.seeds:
        full, truth = prepared_slice(seed, args.coils, args.frames, tuple(args.matrix), args.virtual_coils)
        n_ky, n_kx = full.shape[-2:]
        if seed == args.seeds[0]:  # warm-up (first-call overheads)
            warm = torch.from_numpy(make_mask("ktGaussian", 8, args.frames, n_ky, n_kx, seed=seed).mask.copy())
            conventional_recon(full * warm[None, None], warm[None, None])
        for pattern, r in CASES:
            mask = torch.from_numpy(make_mask(pattern, r, args.frames, n_ky, n_kx, seed=seed).mask.copy())[None, None]
            kspace = full * mask
            row = []
            for name, method in METHODS.items():
                tic = time.perf_counter()
                images = method(kspace, mask)
                seconds = time.perf_counter() - tic
                metrics = evaluate(images[0], truth)
                scores.setdefault((pattern, r, name), []).append((metrics["psnr"], metrics["ssim"], seconds))
                row.append(f"{name} {metrics['psnr']:.2f} dB")
            log.info("seed %d %s R=%d: %s", seed, pattern, r, ", ".join(row))

    lines = [
        "# Conventional fallback quality (synthetic cine)",
        "",
        f"- command: `.venv/bin/python benchmarks/fallback_quality.py"
        f"{'' if args.out is None else ' --out ' + str(args.out)}` ({time.perf_counter() - started:.0f} s in all)",
        f"- machine: {platform.machine()}, torch {torch.__version__}, {args.threads} torch thread(s), "
        f"Python {platform.python_version()}; date {datetime.date.today().isoformat()}",
        f"- data: simulate_cardiac_scan seeds {args.seeds} (one slice, {args.frames} frames, {args.coils} coils, "
        f"matrix {args.matrix[0]} x {args.matrix[1]}, noise 0.01), prewhitened, readout-cropped, compressed to "
        f"{args.virtual_coils} coils; masks make_mask(pattern, R, seed) with the pattern's ACS",
        "- PSNR (dB) / SSIM: cardiomm_core.metrics.evaluate (CMRxRecon 2024: magnitude, central crop, per-image "
        "normalisation), mean over seeds; s: median seconds per slice (sensitivities included)",
        "",
        "| pattern | R | " + " | ".join(f"{name} PSNR / SSIM / s" for name in METHODS)
        + " | new - best zero-filled (dB) |",
        "|---|---:|" + "---:|" * (len(METHODS) + 1),
    ]
    for pattern, r in CASES:
        cells, psnrs = [], {}
        for name in METHODS:
            values = scores[(pattern, r, name)]
            psnr = statistics.fmean(v[0] for v in values)
            psnrs[name] = psnr
            cells.append(f"{psnr:.2f} / {statistics.fmean(v[1] for v in values):.3f} / "
                         f"{statistics.median(v[2] for v in values):.2f}")
        gain = psnrs["new default"] - max(psnrs["zero-filled RSS"], psnrs["zero-filled SENSE"])
        lines.append(f"| {pattern} | {r} | " + " | ".join(cells) + f" | {gain:+.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
