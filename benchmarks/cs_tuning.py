"""Tune the CS peer's regularisation on a separate tuning seed (a small grid search).

    python -m benchmarks.cs_tuning                      # writes benchmarks/results/cs_tuning.{json,md}
    python -m benchmarks.cs_tuning --quick --out /tmp/t # seconds (tests)

Tuning subjects are synthetic phantoms of seed ``TUNING_SEED`` (one per modality: cine, T1 and T2
mapping), prepared as the chain prepares them (10 coils, prewhitened, compressed to 8 virtual
coils; scored against the noise-free RSS), never the training seeds (0, 1, 100000+) nor the
held-out seeds of ``benchmarks/quality.py``. Every (lamda_wavelet, lamda_tv) of the grid
reconstructs each subject at a kt pattern and a Uniform pattern of the quality table; the pair
with the best mean PSNR (CMRxRecon 2024 normalisation, central crop) is written as ``best``,
with every score, to ``cs_tuning.json``; ``benchmarks/cs.py`` reads it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Subjects of the tuning set: a seed no training config and no quality run uses.
TUNING_SEED = 424242
GRID_WAVELET = (0.001, 0.003, 0.01)
GRID_TV = (0.03, 0.1)
MAX_ITER = 150
SETTINGS = (("ktGaussian", 12.0), ("Uniform", 8.0))


def _score(job: tuple[int, str, float, float, float, int, tuple[int, int], int]) -> dict[str, Any]:
    import numpy as np
    import torch

    from benchmarks.cs import CSSettings, cs_recon
    from cardiomm_core.masks import make_mask
    from cardiomm_core.metrics import evaluate
    from train.data.synthetic import SyntheticCardiacDataset

    index, pattern, acceleration, lamda_wavelet, lamda_tv, max_iter, matrix, n_frames = job
    torch.set_num_threads(1)
    dataset = SyntheticCardiacDataset(3, seed=TUNING_SEED, matrix=matrix, n_frames=n_frames, n_coils=10,
                                      readout_oversampling=1, prewhiten=True, compress_coils=8, target="noise_free")
    sample = dataset[index]
    n_c, n_t, n_ky, n_kx = sample.kspace.shape
    mask = make_mask(pattern, acceleration, n_t, n_ky, n_kx, seed=1000 + index,
                     n_acs=None if n_ky > 40 else 6)
    m = torch.from_numpy(np.array(mask.mask, dtype=np.float32))
    started = time.time()
    images = cs_recon(sample.kspace * m.to(torch.complex64), m, CSSettings(lamda_wavelet, lamda_tv, max_iter))
    scores = evaluate(np.abs(images), sample.scoring_target().numpy(), convention="2024", crop=True)
    return {"modality": sample.context.modality, "pattern": pattern, "acceleration": acceleration,
            "lamda_wavelet": lamda_wavelet, "lamda_tv": lamda_tv, "max_iter": max_iter,
            "seconds": round(time.time() - started, 2), **{k: float(scores[k]) for k in ("psnr", "ssim", "nmse")}}


def tune(out: Path, *, quick: bool = False, workers: int = 1) -> dict[str, Any]:
    """Run the grid; write ``out/cs_tuning.json`` and ``.md``; return the JSON's content."""
    import numpy as np

    grid = list(itertools.product(GRID_WAVELET[:2] if quick else GRID_WAVELET, GRID_TV[:1] if quick else GRID_TV))
    matrix, n_frames, max_iter = ((24, 20), 4, 10) if quick else ((96, 80), 12, MAX_ITER)
    settings = SETTINGS[:1] if quick else SETTINGS
    jobs = [(index, pattern, acc, lw, lt, max_iter, matrix, n_frames) for lw, lt in grid
            for index in range(1 if quick else 3) for pattern, acc in settings]
    started = time.time()
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, row in enumerate(pool.map(_score, jobs)):
            rows.append(row)
            elapsed = time.time() - started
            sys.stderr.write(f"[cs_tuning] {i + 1}/{len(jobs)} wavelet {row['lamda_wavelet']:g} tv {row['lamda_tv']:g} "
                             f"{row['modality']} {row['pattern']} R{row['acceleration']:g}: PSNR {row['psnr']:.2f} dB; "
                             f"ETA {elapsed / (i + 1) * (len(jobs) - i - 1):.0f} s\n")
    means = []
    for lw, lt in grid:
        members = [r for r in rows if r["lamda_wavelet"] == lw and r["lamda_tv"] == lt]
        means.append({"lamda_wavelet": lw, "lamda_tv": lt, "max_iter": max_iter, "n": len(members),
                      **{k: float(np.mean([r[k] for r in members])) for k in ("psnr", "ssim", "nmse")}})
    best = max(means, key=lambda m: m["psnr"])
    result = {"seed": TUNING_SEED, "matrix": list(matrix), "n_frames": n_frames, "settings": [list(s) for s in settings],
              "criterion": "mean PSNR (CMRxRecon 2024 normalisation, central crop) over subjects and settings",
              "best": {**best, "wave_name": "db4"}, "means": means, "rows": rows,
              "command": "python -m benchmarks.cs_tuning" + (" --quick" if quick else ""),
              "seconds": round(time.time() - started, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "cs_tuning.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lines = ["# CS peer: regularisation tuned on a separate seed", "",
             f"`{result['command']}`: synthetic seed {TUNING_SEED} (cine, T1, T2 mapping), {matrix[0]}x{matrix[1]}, "
             f"{n_frames} frames, 10 coils prewhitened and compressed to 8; settings "
             f"{', '.join(f'{p} R{a:g}' for p, a in settings)}; {max_iter} PDHG iterations; {result['criterion']}.",
             "", "| lamda_wavelet | lamda_tv | PSNR | SSIM | NMSE |", "|---|---|---|---|---|"]
    for m in means:
        mark = "**" if m is best else ""
        lines.append(f"| {mark}{m['lamda_wavelet']:g}{mark} | {mark}{m['lamda_tv']:g}{mark} | {m['psnr']:.2f} | "
                     f"{m['ssim']:.4f} | {m['nmse']:.4f} |")
    (out / "cs_tuning.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cs_tuning", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="a tiny grid on tiny phantoms (seconds)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = tune(Path(args.out), quick=args.quick, workers=args.workers)
    best = result["best"]
    sys.stderr.write(f"[cs_tuning] best: lamda_wavelet {best['lamda_wavelet']:g}, lamda_tv {best['lamda_tv']:g} "
                     f"(mean PSNR {best['psnr']:.2f} dB) -> {Path(args.out) / 'cs_tuning.json'}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
