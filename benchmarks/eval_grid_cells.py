"""The grid of ``benchmarks/eval_grid.py`` (issue 11's acceptance): its cells (matrices, modalities,
families, R), the held-out seed, how the data are prepared, the ``--quick`` subset and the method labels."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

#: The matrices (recon readout x phase).
GRID_MATRICES: tuple[tuple[int, int], ...] = ((128, 112), (192, 156), (256, 208))
#: Modalities and their frames (cine phases; CMRxRecon's MOLLI T1 mapping 9 weightings; T2 mapping 3).
GRID_MODALITIES: dict[str, int] = {"cine": 12, "t1map": 9, "t2map": 3}
MODALITY_LABELS = {"cine": "Cine", "t1map": "T1 mapping", "t2map": "T2 mapping"}
GRID_PATTERNS: tuple[str, ...] = ("ktGaussian", "ktUniform", "Uniform")
GRID_ACCELERATIONS: tuple[float, ...] = (8.0, 12.0, 16.0, 24.0)
#: Held-out seeds: the training configs use 0, 1, 2, 900001, 900002, the earlier tables 424242.
GRID_SEED = 611_000
#: How the data are prepared (the default chain: 10 coils -> prewhitened -> 8 virtual coils).
N_COILS = 10
VIRTUAL_COILS = 8
READOUT_OVERSAMPLING = 2
NOISE_LEVEL = 0.01
#: The --quick subset.
QUICK = {"matrices": ((128, 112), (256, 208)), "patterns": ("ktGaussian", "Uniform"), "accelerations": (8.0, 24.0),
         "subjects": 1}
#: The conventional methods every cell has.
CONVENTIONAL = ("cg_sense", "zero_filled")
LABELS = {"cg_sense": "CG-SENSE", "zero_filled": "Zero-filled"}
#: Margin the issue targets at R = 8.
TARGET_MARGIN_DB = 2.0


def matrix_text(matrix: Sequence[int]) -> str:
    return f"{int(matrix[0])}x{int(matrix[1])}"


def parse_matrix(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"matrix must be READOUTxPHASE such as 192x156, got {text!r}")
    return int(match.group(1)), int(match.group(2))
