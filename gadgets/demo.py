"""``python -m gadgets.demo --out DIR`` (what ``make demo`` runs).

Simulates an accelerated cine (2 slices, 12 phases, 10 coils, 160 x 144, ktGaussian R = 8) to
``DIR/demo_scan.h5`` with ``gadgets.simulate``, then reads the raw data back with
``gadgets.ismrmrd_io`` and writes two montages (one row per slice, one column per phase):

- ``DIR/demo_truth.png``: the ground-truth images;
- ``DIR/demo_zero_filled.png``: the root-sum-of-squares of the zero-filled sampled k-space,
  readout oversampling removed: what a reconstruction has to improve on.

It prints what it wrote and the realised acceleration.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import ismrmrd
import numpy as np
import torch

from cardiomm_core.phantom import crop_readout
from cardiomm_core.sense import rss_complex

from .ismrmrd_io import iter_acquisitions, read_header
from .preview import save_montage
from .simulate import read_ground_truth, write_simulated_scan


def _parse_matrix(text: str) -> tuple[int, int]:
    try:
        nx, ny = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"matrix must be RxP (readout x phase), e.g. 160x144, got {text!r}")
    return nx, ny


def zero_filled_rss(path: Path) -> np.ndarray:
    """Zero-filled RSS images ``(slices, frames, y, x)`` float32 of a simulated cine file.

    The sampled lines are placed at their ``kspace_encode_step_1`` in ``(slices, coils, frames, ky,
    kx_enc)`` k-space (frames from ``idx.phase``), Fourier transformed, combined by RSS and cropped
    to the recon matrix in x. Noise acquisitions are skipped.
    """
    header, _ = read_header(path)
    enc = header.encoding[0]
    limits = enc.encodingLimits
    n_slices = limits.slice.maximum + 1
    n_frames = limits.phase.maximum + 1
    n_ky = enc.encodedSpace.matrixSize.y
    nx_enc = enc.encodedSpace.matrixSize.x
    nx = enc.reconSpace.matrixSize.x
    n_coils = header.acquisitionSystemInformation.receiverChannels
    kspace = np.zeros((n_slices, n_coils, n_frames, n_ky, nx_enc), dtype=np.complex64)
    for acq in iter_acquisitions(path):
        if acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            continue
        kspace[acq.idx.slice, :, acq.idx.phase, acq.idx.kspace_encode_step_1, :] = acq.data
    images = rss_complex(torch.from_numpy(kspace)).numpy()
    return np.ascontiguousarray(crop_readout(images, nx))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m gadgets.demo", description=__doc__.split("\n\n")[1])
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder (default ./out)")
    parser.add_argument("--slices", type=int, default=2)
    parser.add_argument("--phases", type=int, default=12)
    parser.add_argument("--coils", type=int, default=10)
    parser.add_argument("--matrix", type=_parse_matrix, default=(160, 144), metavar="RxP")
    parser.add_argument("--accel", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    args.out.mkdir(parents=True, exist_ok=True)
    scan_path = args.out / "demo_scan.h5"
    try:
        summary = write_simulated_scan(scan_path, n_slices=args.slices, n_phases=args.phases, n_coils=args.coils,
                                       matrix=args.matrix, acceleration=args.accel, pattern="ktGaussian",
                                       modality="cine", seed=args.seed)
    except ValueError as error:
        parser.error(str(error))
    print(f"wrote {scan_path}: {summary.n_acquisitions} acquisitions ({summary.n_sampled_lines} sampled lines "
          f"of {summary.n_slices} slices x {summary.n_frames} phases x {summary.matrix[1]} ky, "
          f"{summary.n_noise_acquisitions} noise), {summary.n_coils} coils, matrix {summary.matrix[0]} x "
          f"{summary.matrix[1]} (readout {summary.encoded_matrix[0]} oversampled), in {summary.elapsed_s:.1f} s")
    print(f"sampling: {summary.pattern}, nominal R = {summary.nominal_acceleration:g}, realised R = "
          f"{summary.realised_acceleration:.2f} outside the {summary.n_acs} ACS lines, effective R = "
          f"{summary.effective_acceleration:.2f}")
    print(f"context: {' '.join(summary.context.sentences())}")

    truth = read_ground_truth(scan_path)
    n_frames = truth.images.shape[1]
    truth_png = save_montage(truth.images.reshape(-1, *truth.images.shape[2:]), args.out / "demo_truth.png",
                             n_cols=n_frames, title="ground truth (rows: slices, columns: phases)",
                             normalise="global")
    zero_filled = zero_filled_rss(scan_path)
    zf_png = save_montage(zero_filled.reshape(-1, *zero_filled.shape[2:]), args.out / "demo_zero_filled.png",
                          n_cols=n_frames, title=f"zero-filled RSS, R = {summary.realised_acceleration:.1f}",
                          normalise="global")
    print(f"wrote {truth_png}")
    print(f"wrote {zf_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
