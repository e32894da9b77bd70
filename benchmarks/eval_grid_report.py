"""The report of ``benchmarks/eval_grid.py``: means per cell, the summary per candidate against
CG-SENSE, the machine, and the markdown (the JSON is the same report, written by the script)."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.eval_grid_acceptance import mapping_markdown, readme_markdown
from benchmarks.eval_grid_cells import (
    CONVENTIONAL,
    GRID_MODALITIES,
    GRID_PATTERNS,
    LABELS,
    MODALITY_LABELS,
    TARGET_MARGIN_DB,
)
from benchmarks.machine import cpu_model_name
from train.evaluate import format_duration

ROOT = Path(__file__).resolve().parents[1]


def cell_table(rows: Sequence[dict[str, Any]], candidates: Sequence[str]) -> list[dict[str, Any]]:
    """Means per cell (matrix, modality, pattern, R) and method, the differences of each candidate
    to CG-SENSE and the winner (the best method in PSNR and in SSIM)."""
    groups: dict[tuple[str, str, str, float], dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        key = (row["matrix"], row["modality"], row["pattern"], float(row["acceleration"]))
        groups.setdefault(key, {}).setdefault(row["method"], []).append(row)
    matrices = list(dict.fromkeys(r["matrix"] for r in rows))
    order = {m: i for i, m in enumerate(sorted(matrices, key=lambda t: [int(v) for v in t.split("x")]))}
    cells = []
    for key in sorted(groups, key=lambda k: (order[k[0]], list(GRID_MODALITIES).index(k[1]) if k[1] in GRID_MODALITIES
                                             else 99, GRID_PATTERNS.index(k[2]) if k[2] in GRID_PATTERNS else 99,
                                             k[3])):
        by_method = groups[key]
        methods = {m: {"psnr": float(np.mean([r["psnr"] for r in rs])), "ssim": float(np.mean([r["ssim"] for r in rs])),
                       "nmse": float(np.mean([r["nmse"] for r in rs])), "n": len(rs)}
                   for m, rs in by_method.items()}
        delta = {}
        for name in candidates:
            if name in methods and "cg_sense" in methods:
                delta[name] = {"psnr": methods[name]["psnr"] - methods["cg_sense"]["psnr"],
                               "ssim": methods[name]["ssim"] - methods["cg_sense"]["ssim"]}
        best_psnr = max(methods, key=lambda m: methods[m]["psnr"])
        best_ssim = max(methods, key=lambda m: methods[m]["ssim"])
        winner = best_psnr if best_psnr == best_ssim else f"PSNR: {best_psnr}, SSIM: {best_ssim}"
        cells.append({"matrix": key[0], "modality": key[1], "pattern": key[2], "acceleration": key[3],
                      "n": max(v["n"] for v in methods.values()), "methods": methods, "delta": delta,
                      "winner": winner})
    return cells


def summarise(cells: Sequence[dict[str, Any]], candidates: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per candidate: cells won against CG-SENSE (PSNR and SSIM both higher; and each alone),
    min / mean PSNR and SSIM margins, and the R = 8 cells reaching +2 dB."""
    out = {}
    for name in candidates:
        deltas = [c["delta"][name] for c in cells if name in c["delta"]]
        r8 = [c["delta"][name] for c in cells if name in c["delta"] and c["acceleration"] == 8.0]
        if not deltas:
            continue
        out[name] = {
            "cells": len(deltas),
            "won": sum(d["psnr"] > 0 and d["ssim"] > 0 for d in deltas),
            "won_psnr": sum(d["psnr"] > 0 for d in deltas),
            "won_ssim": sum(d["ssim"] > 0 for d in deltas),
            "min_psnr_margin": min(d["psnr"] for d in deltas),
            "mean_psnr_margin": float(np.mean([d["psnr"] for d in deltas])),
            "min_ssim_margin": min(d["ssim"] for d in deltas),
            "mean_ssim_margin": float(np.mean([d["ssim"] for d in deltas])),
            "r8_cells": len(r8),
            "r8_at_target": sum(d["psnr"] >= TARGET_MARGIN_DB for d in r8),
        }
    return out


def slice_table(rows: Sequence[dict[str, Any]], candidates: Sequence[str]) -> list[dict[str, Any]]:
    """Per slice of the stacks (``--stack``, base to apex) and candidate: the mean PSNR / SSIM of the
    candidate and of CG-SENSE over every cell, the mean differences and the cells won (PSNR and SSIM)."""
    from cardiomm_core.phantom.anatomy import slice_fractions

    by_cell: dict[tuple[int, int, str, str, str, float], dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        key = (int(row.get("stack", 1)), int(row.get("slice", 0)), row["matrix"], row["modality"], row["pattern"],
               float(row["acceleration"]))
        by_cell.setdefault(key, {}).setdefault(row["method"], []).append(row)
    out = []
    for stack, index in sorted({k[:2] for k in by_cell}):
        cells = [v for k, v in by_cell.items() if k[:2] == (stack, index) and "cg_sense" in v]
        for name in candidates:
            pairs = [(np.mean([r["psnr"] for r in c[name]]), np.mean([r["ssim"] for r in c[name]]),
                      np.mean([r["psnr"] for r in c["cg_sense"]]), np.mean([r["ssim"] for r in c["cg_sense"]]))
                     for c in cells if name in c]
            if not pairs:
                continue
            a = np.asarray(pairs, dtype=np.float64)
            out.append({"stack": stack, "slice": index, "position": float(slice_fractions(stack)[index]),
                        "candidate": name, "cells": len(pairs), "psnr": float(a[:, 0].mean()),
                        "ssim": float(a[:, 1].mean()), "cg_psnr": float(a[:, 2].mean()), "cg_ssim": float(a[:, 3].mean()),
                        "delta_psnr": float((a[:, 0] - a[:, 2]).mean()), "delta_ssim": float((a[:, 1] - a[:, 3]).mean()),
                        "min_delta_psnr": float((a[:, 0] - a[:, 2]).min()),
                        "won": int(((a[:, 0] > a[:, 2]) & (a[:, 1] > a[:, 3])).sum())})
    return out


def machine_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                            "cpus": os.cpu_count(), "python": platform.python_version(),
                            "torch": torch.__version__, "numpy": np.__version__, "device": device}
    cpu = cpu_model_name()
    if cpu:
        info["cpu"] = cpu
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        from cardiomm_core import __version__ as version

        info["cardiomm"] = version
    except ImportError:
        pass
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                            text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _fmt_delta(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}"


def _timing(report: dict[str, Any]) -> str:
    """How long the report's parts took, in words."""
    parts = []
    if report["cells"]:
        kind = ("grid time (sum of the finished jobs' times / processes; --report-only)"
                if report["settings"].get("report_only") else "grid wall time")
        parts.append(f"{kind} {format_duration(report['wall_s'])} ({report['settings']['jobs']} process(es) x "
                     f"{report['settings']['threads']} torch thread(s))")
    if "mapping_s" in report:
        parts.append(f"mapping scans {format_duration(report['mapping_s'])}")
    if "readme_example" in report:
        parts.append(f"README example {format_duration(report['readme_example']['seconds'])}")
    return "; ".join(parts)


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    """The report as markdown (see the module docstring)."""
    names = [c["name"] for c in report["candidates"]]
    lines = ["# Held-out evaluation grid (issue 11)", ""]
    labels = []
    for c in report["candidates"]:
        what = "the current packaged model" if c.get("packaged") else "candidate"
        labels.append(f"- `{c['name']}`: {what}, `{c['path_display']}` (weights sha256 {c['sha256'][:12] or '?'}, "
                      f"text encoder {c['encoder']}, prompt style {c['style']}, masks {c['mask_convention']})")
    lines += ["Models:", "", *labels, ""]
    if report.get("missing_jobs"):
        lines += [f"**PARTIAL: {len(report['missing_jobs'])} job(s) not finished when this report was written "
                  f"(--report-only); their cells are missing: {', '.join(report['missing_jobs'])}.**", ""]
    lines += [f"- command: `{report['command']}`",
              f"- date: {report['date']}; {_timing(report)}",
              f"- machine: {report['machine'].get('cpu', report['machine']['machine'])}, "
              f"{report['machine']['cpus']} CPUs" + (f", GPU {report['machine']['gpu']}" if 'gpu' in report['machine']
                                                     else "") + f"; device {report['machine']['device']}",
              f"- versions: Python {report['machine']['python']}, torch {report['machine']['torch']}, numpy "
              f"{report['machine']['numpy']}, cardiomm {report['machine'].get('cardiomm', '?')} "
              f"(commit {report['machine'].get('git_commit', '?')})",
              *([f"- data: {report['data']}", f"- methods: {report['methods_note']}"] if report["cells"] else []),
              ""]
    if not report["cells"]:  # --no-grid: only the mapping scans / the README example
        lines += [*(mapping_markdown(report["mapping"]) if report.get("mapping") else []),
                  *(readme_markdown(report["readme_example"]) if report.get("readme_example") else [])]
        path.write_text("\n".join(lines), encoding="utf-8")
        return
    lines += ["## Summary (each candidate against CG-SENSE, the chain's fallback)", "",
              "| model | cells won (PSNR and SSIM) | won in PSNR | won in SSIM | PSNR margin min / mean (dB) | "
              f"SSIM margin min / mean | R = 8 cells at +{TARGET_MARGIN_DB:g} dB |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in report["summary"].items():
        lines.append(f"| {name} | {s['won']} / {s['cells']} | {s['won_psnr']} / {s['cells']} | {s['won_ssim']} / "
                     f"{s['cells']} | {s['min_psnr_margin']:+.2f} / {s['mean_psnr_margin']:+.2f} | "
                     f"{s['min_ssim_margin']:+.4f} / {s['mean_ssim_margin']:+.4f} | {s['r8_at_target']} / "
                     f"{s['r8_cells']} |")
    if report.get("by_slice"):
        lines += ["", "## Per slice of the stacks (base to apex)", "",
                  "Each row: one slice position of every subject's stack, over all cells (means of the cells' "
                  "means; won: cells where the model is ahead of CG-SENSE in PSNR and SSIM).", "",
                  "| slice (position, 0 = base, 1 = apex) | model | PSNR / SSIM | CG-SENSE PSNR / SSIM | "
                  "Δ PSNR mean / min (dB) | Δ SSIM | cells won |", "|---|---|---:|---:|---:|---:|---:|"]
        for r in report["by_slice"]:
            lines.append(f"| {r['slice'] + 1} of {r['stack']} ({r['position']:.2f}) | {r['candidate']} | "
                         f"{r['psnr']:.2f} / {r['ssim']:.4f} | {r['cg_psnr']:.2f} / {r['cg_ssim']:.4f} | "
                         f"{r['delta_psnr']:+.2f} / {r['min_delta_psnr']:+.2f} | {r['delta_ssim']:+.4f} | "
                         f"{r['won']} / {r['cells']} |")
    lines += ["", "## Cells", "",
              "PSNR (dB) / SSIM: mean over the cell's slices (n). Delta: model minus CG-SENSE. Winner: the best "
              "method in PSNR and SSIM (named per metric when they differ).", ""]
    header = ["matrix", "modality", "pattern", "R"]
    for name in names:
        header += [f"{name} PSNR", f"{name} SSIM"]
    header += ["CG-SENSE PSNR", "CG-SENSE SSIM", "zero-filled PSNR", "zero-filled SSIM"]
    for name in names:
        header += [f"Δ PSNR {name}", f"Δ SSIM {name}"]
    header += ["winner", "n"]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * (len(header) - 6)
                                                               + ["---", "---:"]) + "|"]
    for cell in report["cells"]:
        m = cell["methods"]
        values = [cell["matrix"], MODALITY_LABELS.get(cell["modality"], cell["modality"]), cell["pattern"],
                  f"{cell['acceleration']:g}"]
        for name in [*names, *CONVENTIONAL]:
            values += [f"{m[name]['psnr']:.2f}", f"{m[name]['ssim']:.4f}"] if name in m else ["", ""]
        for name in names:
            d = cell["delta"].get(name)
            values += [_fmt_delta(d["psnr"], 2), _fmt_delta(d["ssim"], 4)] if d else ["", ""]
        winner = cell["winner"]
        for key, label in LABELS.items():
            winner = winner.replace(key, label)
        values += [winner, str(cell["n"])]
        lines.append("| " + " | ".join(values) + " |")
    lines.append("")
    if report.get("mapping"):
        lines += mapping_markdown(report["mapping"])
    if report.get("readme_example"):
        lines += readme_markdown(report["readme_example"])
    path.write_text("\n".join(lines), encoding="utf-8")
