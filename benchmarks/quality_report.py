"""The tables and figures of ``benchmarks/quality.py``: means per (method, modality, pattern, R),
the summary at R >= 8, ``quality.md`` and the ``quality_<modality>.png`` comparisons."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

LABELS = {"zero_filled": "Zero-filled", "cg_sense": "CG-SENSE", "cs": "CS (sigpy)", "small": "CardioMM small",
          "cardiosm": "CardioSM", "varnet": "E2E-VarNet"}
METRICS = ("psnr", "ssim", "nmse")
MODALITIES = ("Cine", "T1 mapping", "T2 mapping")


def label(method: str) -> str:
    """The table label of a method (its name where it has none)."""
    return LABELS.get(method, method)


def ordered_methods(methods: Sequence[str]) -> list[str]:
    """The methods once each, in table order: the conventional ones first, then the learned peers, then CardioMM."""
    order = ["zero_filled", "cg_sense", "cs", "varnet", "cardiosm", "small"]
    return sorted(dict.fromkeys(methods), key=lambda m: (order.index(m) if m in order else len(order), m))


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str, float], dict[str, float]]:
    """Means per (method, modality, pattern, acceleration) and modality "All" (every subject)."""
    groups: dict[tuple[str, str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["method"], row["modality"], row["pattern"], row["acceleration"])].append(row)
        groups[(row["method"], "All", row["pattern"], row["acceleration"])].append(row)
    return {key: {**{m: float(np.mean([r[m] for r in members])) for m in METRICS}, "n": len(members)}
            for key, members in groups.items()}


def mean_at_high_r(rows: Sequence[dict[str, Any]], method: str, minimum: float = 8.0,
                   matrix: str | None = None) -> float | None:
    """Mean PSNR of ``method`` over every row at R >= ``minimum`` (of one ``matrix``, or all)."""
    values = [r["psnr"] for r in rows if r["method"] == method and r["acceleration"] >= minimum
              and (matrix is None or r["matrix"] == matrix)]
    return float(np.mean(values)) if values else None


def write_markdown(path: Path, rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> None:
    """``quality.md``: the summary at R >= 8, then per modality a PSNR, SSIM and NMSE table (best in bold)."""
    table = aggregate(rows)
    methods = ordered_methods([r["method"] for r in rows])
    settings = sorted({(r["pattern"], r["acceleration"]) for r in rows},
                      key=lambda s: (s[0] != "Uniform", s[0], s[1]))
    lines = ["# Image quality against the peers (issue 14)", "",
             f"Command: `{meta['command']}`  ", f"Date: {meta['date']}; machine: {meta['machine']}; "
             f"versions: {meta['versions']}  ",
             f"Data: {meta['data']}  ", f"Scores: {meta['scores']}  ", f"Methods: {meta['methods_note']}", ""]
    high = {m: mean_at_high_r(rows, m) for m in methods}
    matrices = sorted({r["matrix"] for r in rows}, key=lambda text: [-int(v) for v in text.split("x")])
    per_matrix = {(m, mx): mean_at_high_r(rows, m, matrix=mx) for m in methods for mx in matrices}
    columns = ["mean PSNR (dB)"] + ([f"{mx} only" for mx in matrices] if len(matrices) > 1 else [])
    lines += ["## Summary: mean PSNR at R >= 8 (every subject, modality and pattern)", "",
              "| Method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    best_high = max((v for v in high.values() if v is not None), default=None)
    best_matrix = {mx: max((v for (_, x), v in per_matrix.items() if x == mx and v is not None), default=None)
                   for mx in matrices}
    for m in methods:
        if high[m] is not None:
            bold = "**" if high[m] == best_high else ""
            cells = [f"{bold}{high[m]:.2f}{bold}"]
            if len(matrices) > 1:
                for mx in matrices:
                    value = per_matrix[(m, mx)]
                    mark = "**" if value is not None and value == best_matrix[mx] else ""
                    cells.append("" if value is None else f"{mark}{value:.2f}{mark}")
            lines.append(f"| {label(m)} | " + " | ".join(cells) + " |")
    lines.append("")
    verdicts = []
    if high.get("small") is not None and high.get("varnet") is not None:
        diff = high["small"] - high["varnet"]
        verdicts.append(f"CardioMM small {'beats' if diff > 0 else 'does NOT beat'} E2E-VarNet at R >= 8 by "
                        f"{diff:+.2f} dB mean PSNR (same data, steps and time budget).")
    if high.get("small") is not None and high.get("cardiosm") is not None:
        diff = high["small"] - high["cardiosm"]
        verdicts.append(f"The text context is worth {diff:+.2f} dB mean PSNR at R >= 8 (CardioMM small minus its "
                        f"CardioSM ablation, same training).")
    if verdicts:
        lines += [" ".join(verdicts), ""]
    for modality in [*[m for m in MODALITIES if any(r["modality"] == m for r in rows)], "All"]:
        lines += [f"## {modality if modality != 'All' else 'All modalities'}", ""]
        for key, title, fmt in (("psnr", "PSNR (dB), higher is better", "{:.2f}"),
                                ("ssim", "SSIM, higher is better", "{:.4f}"),
                                ("nmse", "NMSE, lower is better", "{:.4f}")):
            header = ["Pattern", "R"] + [label(m) for m in methods] + ["n"]
            lines += [f"{title}:", "", "| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
            for pattern, acceleration in settings:
                cells = {m: table.get((m, modality, pattern, acceleration)) for m in methods}
                present = {m: c for m, c in cells.items() if c is not None}
                if not present:
                    continue
                best = (min if key == "nmse" else max)(c[key] for c in present.values())
                values = [pattern, f"{acceleration:g}"]
                for m in methods:
                    c = cells[m]
                    text = "" if c is None else fmt.format(c[key])
                    values.append(f"**{text}**" if c is not None and c[key] == best and len(present) > 1 else text)
                values.append(str(max(c["n"] for c in present.values())))
                lines.append("| " + " | ".join(values) + " |")
            lines.append("")
    timing = meta.get("seconds_per_slice") or {}
    if timing:
        lines += ["Mean seconds per slice in this run (not a speed benchmark: see benchmarks/speed.py): "
                  + ", ".join(f"{label(m)} {timing[m]:.2f}" for m in methods if m in timing), ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_figures(out: Path, figures: dict[str, dict[str, np.ndarray]], setting: tuple[str, float]) -> list[Path]:
    """``quality_<modality>.png`` per modality: reference and every method, two frames, error maps."""
    from gadgets.io.preview import ERROR_GAIN, save_comparison

    paths = []
    for modality, frames in sorted(figures.items()):
        if "reference" not in frames:
            continue
        methods = ordered_methods([m for m in frames if m != "reference"])
        name = modality.lower().replace(" ", "_")
        path = save_comparison(frames["reference"], [(label(m), frames[m]) for m in methods],
                               out / f"quality_{name}.png", frame_names=["frame 1", "mid frame"],
                               title=f"{modality}, {setting[0]} R {setting[1]:g}: held-out subject, noise-free "
                                     f"reference; error maps x{ERROR_GAIN:g}")
        paths.append(path)
    return paths
