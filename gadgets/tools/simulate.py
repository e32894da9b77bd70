"""``cardiomm-simulate``: write a simulated multi-coil cardiac scan as ISMRMRD raw data, with its ground
truth (:func:`gadgets.io.simulated_scan.write_simulated_scan`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ..io.simulated_header import MODALITIES
from ..io.simulated_scan import LINE_PATTERNS, TRUTH_GROUP, write_simulated_scan


def parse_matrix(text: str) -> tuple[int, int]:
    """``"RxP"`` (readout x phase, e.g. ``"128x112"``) -> ``(nx, ny)``; an argparse ``type``."""
    try:
        nx, ny = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"matrix must be RxP (readout x phase), e.g. 128x112, got {text!r}") from None
    return nx, ny


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cardiomm-simulate",
        description="Write a simulated multi-coil cardiac scan as ISMRMRD raw data (with its ground truth "
                    f"in /{TRUTH_GROUP}).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples (a 3-slice cine at R = 8; a fully sampled one for training or cardiomm-eval):\n"
               "  cardiomm-simulate scan.h5 --slices 3 --phases 12 --coils 10 --matrix 192x156 --accel 8\n"
               "  cardiomm-simulate full.h5 --pattern full --accel 1")
    parser.add_argument("out", type=Path, metavar="OUT.h5", help="file to write (replaced if it exists)")
    parser.add_argument("--slices", type=int, default=2, help="number of slices (default 2)")
    parser.add_argument("--phases", type=int, default=12, help="cine phases or mapping contrasts (default 12)")
    parser.add_argument("--coils", type=int, default=8, help="receiver coils (default 8)")
    parser.add_argument("--matrix", type=parse_matrix, default=(128, 112), metavar="RxP",
                        help="recon matrix, readout x phase (default 128x112); the readout is 2x oversampled")
    parser.add_argument("--accel", type=float, default=8.0, help="nominal acceleration (default 8)")
    parser.add_argument("--pattern", default="ktGaussian", metavar="|".join(LINE_PATTERNS),
                        help="line sampling pattern (default ktGaussian; ktRadial is not line-based)")
    parser.add_argument("--acs", type=int, default=None, help="calibration lines (default: the pattern's)")
    parser.add_argument("--modality", default="cine", choices=MODALITIES, help="default cine")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--noise-level", type=float, default=0.01, help="k-space noise level (default 0.01)")
    parser.add_argument("--noise-scan", action=argparse.BooleanOptionalAction, default=True,
                        help="write a noise measurement first (default yes)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``cardiomm-simulate OUT.h5 [options]``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(message)s")
    try:
        summary = write_simulated_scan(
            args.out, n_slices=args.slices, n_phases=args.phases, n_coils=args.coils, matrix=args.matrix,
            acceleration=args.accel, pattern=args.pattern, n_acs=args.acs, modality=args.modality, seed=args.seed,
            noise_scan=args.noise_scan, noise_level=args.noise_level, progress=not args.quiet)
    except ValueError as error:
        parser.error(str(error))
    except OSError as error:
        parser.exit(1, f"cardiomm-simulate: cannot write {str(args.out)!r}: {error}\n")
    print(f"{summary.path}: {summary.n_acquisitions} acquisitions ({summary.n_sampled_lines} sampled lines, "
          f"{summary.n_noise_acquisitions} noise), {summary.pattern} nominal R={summary.nominal_acceleration:g}, "
          f"realised R={summary.realised_acceleration:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
