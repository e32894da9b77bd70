"""The chain-level checks that ``benchmarks/eval_grid.py`` adds to its report on request (they need
``ismrmrd``, i.e. the project's full install): ``--mapping``, a T1 and a T2 mapping scan written by
``cardiomm-simulate`` and replayed through ``chains/cardiomm_mapping_python.xml``, scored against
the stored ground truth; ``--readme-example``, the README's Tools example run and read back.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.eval_grid_cells import GRID_SEED, LABELS, N_COILS, matrix_text

ROOT = Path(__file__).resolve().parents[1]

#: The README's Tools example (``python -m gadgets.demo`` options).
README_EXAMPLE = ["--slices", "3", "--coils", "10", "--matrix", "192x156", "--seed", "7"]
#: The mapping scans of the acceptance: (simulator modality, weightings).
MAPPING_SCANS = (("mapping", 9), ("t2map", 3))
MAPPING_CHAIN = ROOT / "chains" / "cardiomm_mapping_python.xml"
MAPPING_SETTINGS = {"slices": 2, "coils": N_COILS, "matrix": (192, 156), "accel": 8.0, "pattern": "ktGaussian",
                    "seed": GRID_SEED + 7}


class _ForwardLog(logging.Handler):
    """Collects CardioMMRecon's per-forward log lines ("CardioMMRecon: k-space (...), ...")."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.shapes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("CardioMMRecon: k-space"):
            self.shapes.append(message.split("k-space", 1)[1].split(")", 1)[0].strip() + ")")
        if record.levelno >= logging.WARNING:  # warnings still reach the user's log
            logging.getLogger().handle(record)


def _replay_chain(chain: Any, scan: Path) -> tuple[list[Any], list[str]]:
    import ismrmrd

    from gadgets.chain import run_chain
    from gadgets.ismrmrd_io import RawFile

    handler = _ForwardLog()
    recon_logger = logging.getLogger("gadgets.recon")
    level, propagate = recon_logger.level, recon_logger.propagate
    recon_logger.addHandler(handler)
    recon_logger.setLevel(logging.INFO)
    recon_logger.propagate = False  # its INFO lines are collected here, not printed
    try:
        with RawFile(scan) as raw:
            images = [item for item in run_chain(chain, raw.xml, raw.acquisitions()) if isinstance(item, ismrmrd.Image)]
    finally:
        recon_logger.removeHandler(handler)
        recon_logger.setLevel(level)
        recon_logger.propagate = propagate
    return images, handler.shapes


def mapping_rows(candidates: Sequence[Any], device: str, workdir: Path, *,
                 matrix: tuple[int, int] = MAPPING_SETTINGS["matrix"],
                 slices: int = MAPPING_SETTINGS["slices"]) -> list[dict[str, Any]]:
    """The mapping acceptance: each MAPPING_SCANS scan simulated by ``cardiomm-simulate`` and replayed
    through the mapping chain per candidate (``eval_grid.Candidate``: ``name``, ``path``) and with
    ``checkpoint=none``; scores against the stored ground truth (``gadgets.demo``'s reference and
    zero-filled images)."""
    from cardiomm_core.metrics import evaluate
    from gadgets.chain import load_chain
    from gadgets.demo import images_to_array, reference_images, zero_filled_rss
    from gadgets.simulate import main as simulate_main
    from gadgets.simulate import read_ground_truth

    rows = []
    workdir.mkdir(parents=True, exist_ok=True)
    s = {**MAPPING_SETTINGS, "matrix": tuple(matrix), "slices": int(slices)}
    for modality, n_frames in MAPPING_SCANS:
        scan = workdir / f"grid_{modality}.h5"
        argv = [str(scan), "--modality", modality, "--phases", str(n_frames), "--slices", str(s["slices"]),
                "--coils", str(s["coils"]), "--matrix", matrix_text(s["matrix"]), "--accel", f"{s['accel']:g}",
                "--pattern", s["pattern"], "--seed", str(s["seed"]), "--quiet"]
        if simulate_main(argv) != 0:
            raise RuntimeError(f"cardiomm-simulate {' '.join(argv)} failed")
        truth = reference_images(read_ground_truth(scan))
        n_slices = truth.shape[0]
        chain = load_chain(MAPPING_CHAIN)
        scored: dict[str, dict[str, Any]] = {}
        for name, checkpoint in [*((c.name, c.path) for c in candidates), ("cg_sense", "none")]:
            tic = time.perf_counter()
            images, shapes = _replay_chain(chain.with_properties("CardioMMRecon", checkpoint=checkpoint,
                                                                 device=device if checkpoint != "none" else "cpu"),
                                           scan)
            array = images_to_array(images, n_slices, n_frames, "contrast")
            methods = sorted({str(i.meta.get("CardioMM.Method", "?")) for i in images})
            fallback = any(i.meta.get("CardioMM.Fallback") == "true" for i in images)
            scored[name] = {**evaluate(array, truth), "forwards": shapes, "method": ",".join(methods),
                            "fallback": fallback, "seconds": time.perf_counter() - tic}
        scored["zero_filled"] = {**evaluate(zero_filled_rss(scan), truth), "forwards": [], "method": "zero-filled RSS",
                                 "fallback": False, "seconds": 0.0}
        rows.append({"scan": modality, "weightings": n_frames, "slices": n_slices,
                     "simulate": "cardiomm-simulate " + " ".join(a if a != str(scan) else "SCAN.h5" for a in argv),
                     "replay": f"cardiomm-replay SCAN.h5 --chain chains/{MAPPING_CHAIN.name} --checkpoint CKPT|none -o OUT",
                     "methods": scored})
    return rows


def mapping_markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["## Mapping scans through the mapping chain", "",
             f"Each scan: written by `cardiomm-simulate` ({N_COILS} coils, readout oversampled, a noise "
             f"scan first, ground truth stored beside the raw data), replayed with the local runner through "
             f"`chains/{MAPPING_CHAIN.name}` (NoiseAdjust -> RemoveOversampling -> AcquisitionBuffer with N = contrast "
             "-> CoilCompression to 8 -> CardioMMRecon), once per model and once with `checkpoint=none` (the "
             "fallback, CG-SENSE); scored against the noise-free RSS of the prewhitened coil images from the stored "
             "ground truth (CMRxRecon 2024 convention, as `gadgets.demo` scores). Forwards: the k-space CardioMMRecon "
             "reconstructed, one entry per call (frames are the third axis).", ""]
    for row in rows:
        lines += [f"### {row['scan']} ({row['weightings']} weightings, {row['slices']} slices)", "",
                  f"`{row['simulate']}`, then `{row['replay']}`", "",
                  "| method | PSNR (dB) | SSIM | Δ PSNR vs fallback | Δ SSIM vs fallback | forwards | images made by |",
                  "|---|---:|---:|---:|---:|---|---|"]
        base = row["methods"]["cg_sense"]
        for name, m in row["methods"].items():
            label = LABELS.get(name, name) + (" (fallback, checkpoint=none)" if name == "cg_sense" else "")
            forwards = (f"{len(m['forwards'])} x {m['forwards'][0]}" if m["forwards"] and len(set(m["forwards"])) == 1
                        else ", ".join(m["forwards"]) or "-")
            dp = "" if name == "cg_sense" else f"{m['psnr'] - base['psnr']:+.2f}"
            ds = "" if name == "cg_sense" else f"{m['ssim'] - base['ssim']:+.4f}"
            lines.append(f"| {label} | {m['psnr']:.2f} | {m['ssim']:.4f} | {dp} | {ds} | {forwards} | "
                         f"{m['method']}{' (fallback)' if m['fallback'] and name != 'cg_sense' else ''} |")
        lines.append("")
    return lines


_DEMO_LINE = re.compile(r"^\s{2}(?P<label>\S.*?)\s+PSNR\s+(?P<psnr>[-\d.]+) dB\s+SSIM (?P<ssim>[-\d.]+)\s+NMSE (?P<nmse>[-\d.]+)")


def parse_demo_output(text: str) -> list[dict[str, Any]]:
    """The step-4 score lines of ``gadgets.demo``'s output: [{"label", "psnr", "ssim", "nmse"}, ...]."""
    rows = []
    for line in text.splitlines():
        match = _DEMO_LINE.match(line)
        if match:
            rows.append({"label": match.group("label").strip(), "psnr": float(match.group("psnr")),
                         "ssim": float(match.group("ssim")), "nmse": float(match.group("nmse"))})
    return rows


def readme_example(workdir: Path, checkpoint: str = "packaged", device: str = "auto") -> dict[str, Any]:
    """Run the README's Tools example and say which method it prints ahead."""
    argv = [sys.executable, "-m", "gadgets.demo", *README_EXAMPLE, "--out", str(workdir),
            "--checkpoint", checkpoint, "--device", device]
    tic = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    rows = parse_demo_output(done.stdout)
    model = next((r for r in rows if r["label"] == "CardioMM"), None)
    fallback = next((r for r in rows if "(fallback)" in r["label"]), None)
    ahead = None
    if model and fallback:
        ahead = model["psnr"] > fallback["psnr"] and model["ssim"] > fallback["ssim"]
    return {"command": "python -m gadgets.demo " + " ".join(README_EXAMPLE), "checkpoint": checkpoint,
            "returncode": done.returncode, "rows": rows, "cardiomm_ahead": ahead,
            "seconds": time.perf_counter() - tic, "stdout_tail": done.stdout[-3000:], "stderr_tail": done.stderr[-2000:]}


def readme_markdown(result: dict[str, Any]) -> list[str]:
    verdict = {True: "CardioMM is ahead (PSNR and SSIM)", False: "CardioMM is NOT ahead in PSNR and SSIM",
               None: "no CardioMM vs fallback comparison was printed"}[result["cardiomm_ahead"]]
    lines = ["## The README's Tools example", "", f"`{result['command']}` (checkpoint {result['checkpoint']}, exit "
             f"status {result['returncode']}, {result['seconds']:.0f} s): {verdict}.", "",
             "| printed | PSNR (dB) | SSIM | NMSE |", "|---|---:|---:|---:|"]
    lines += [f"| {r['label']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['nmse']:.4f} |" for r in result["rows"]]
    return lines + [""]
