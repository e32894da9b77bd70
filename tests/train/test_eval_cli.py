"""cardiomm-eval as a user meets it: outputs checked before the work, clear one-line data errors,
progress with an ETA, rows written as they come, and prospectively undersampled ISMRMRD files
scored against the ground truth stored beside them (or refused without one)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from gadgets.io.simulated_scan import TRUTH_GROUP, write_simulated_scan
from train.cli import eval_main

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_SPEC = "synthetic:n_subjects=2,seed=900,matrix=24x20,n_frames=3,n_coils=3,readout_oversampling=1"
SCAN = dict(n_slices=1, n_phases=4, n_coils=4, matrix=(48, 40), n_acs=8, seed=5, noise_level=0.01, noise_scan=True)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _refs_only(*args: str) -> list[str]:
    return ["--checkpoint", "none", "--methods", "cg_sense", "zero_filled", "--patterns", "Uniform",
            "--accelerations", "4", "--n-acs", "6", "--no-crop", *args]


@pytest.fixture(scope="module")
def undersampled_scan(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("eval_raw") / "cine_r4.h5"
    write_simulated_scan(path, acceleration=4, pattern="Uniform", modality="cine", **SCAN)
    return path


@pytest.mark.slow
def test_missing_ismrmrd_file_is_one_clear_line(tmp_path):
    run = subprocess.run([sys.executable, "-c", "import sys; from train.cli import eval_main; "
                          "sys.exit(eval_main(sys.argv[1:]))", "--checkpoint", "none",
                          "--data", f"ismrmrd:{tmp_path / 'missing.h5'}", "-o", str(tmp_path / "eval")],
                         capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.h5" in lines[0] and "does not exist" in lines[0], run.stderr
    assert "min()" not in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("where", ["existing_file", "below_a_file"])
def test_outputs_are_checked_before_the_work(tmp_path, capsys, monkeypatch, where):
    blocker = tmp_path / "results.h5"
    blocker.write_bytes(b"not a folder")
    out = blocker if where == "existing_file" else blocker / "eval"

    def no_work(*args, **kwargs):
        raise AssertionError("the evaluation must not start")

    monkeypatch.setattr("train.evaluate.load_eval_data", no_work)
    monkeypatch.setattr("train.evaluate.evaluate_checkpoint", no_work)
    assert eval_main(_refs_only("--data", TINY_SPEC, "-o", str(out))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cardiomm-eval: error:") and "results.h5" in err[0], err
    assert blocker.read_bytes() == b"not a folder"


def test_progress_has_an_eta_and_rows_are_written_as_they_come(tmp_path, capsys, monkeypatch):
    import train.evaluate as evaluate_module

    out = tmp_path / "eval"
    seen: list[int] = []
    real_evaluate = evaluate_module.evaluate

    def checking_evaluate(*args, **kwargs):
        if (out / "per_slice.csv").exists():
            seen.append(len(_rows(out / "per_slice.csv")))  # rows on disk before this one is scored
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "evaluate", checking_evaluate)
    assert eval_main(_refs_only("--data", TINY_SPEC, "-o", str(out))) == 0
    assert seen == [0, 1, 2, 3]  # each row was on disk before the next one was scored
    err = capsys.readouterr().err
    progress = [line for line in err.splitlines() if line.startswith("[cardiomm-eval] slice")]
    assert len(progress) == 2 and all("ETA" in line and "s/slice" in line for line in progress), err
    assert len(_rows(out / "per_slice.csv")) == 4


def test_a_stopped_evaluation_leaves_its_rows(tmp_path, capsys, monkeypatch):
    import train.evaluate as evaluate_module

    out = tmp_path / "eval"
    calls = []
    real_recon = evaluate_module.conventional_recon

    def stopping_recon(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third reconstruction
        return real_recon(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "conventional_recon", stopping_recon)
    assert eval_main(_refs_only("--data", TINY_SPEC, "-o", str(out))) == 130
    assert len(_rows(out / "per_slice.csv")) == 2
    assert "partial" in (out / "metrics.md").read_text()
    assert "stopped" in capsys.readouterr().err


def test_undersampled_ismrmrd_file_is_scored_against_its_ground_truth(undersampled_scan, tmp_path, capsys):
    out = tmp_path / "eval"
    code = eval_main(["--checkpoint", "none", "--data", f"ismrmrd:{undersampled_scan}", "-o", str(out),
                      "--no-crop", "--patterns", "ktGaussian", "--accelerations", "8", "12"])
    assert code == 0, capsys.readouterr().err
    rows = _rows(out / "per_slice.csv")
    # scored once, at the file's own sampling (not the --patterns/--accelerations, which need full data)
    assert {r["method"] for r in rows} == {"cg_sense", "zero_filled"} and len(rows) == 2
    assert {r["pattern"] for r in rows} == {"Uniform"}
    assert {float(r["acceleration"]) for r in rows} == {4.0}  # the nominal R, as the model is told it
    psnr = {r["method"]: float(r["psnr"]) for r in rows}
    assert psnr["cg_sense"] > psnr["zero_filled"] + 1.0  # zero-filling does not "win" against its own data


def test_undersampled_ismrmrd_file_without_ground_truth_is_refused(undersampled_scan, tmp_path, capsys):
    bare = tmp_path / "bare.h5"
    bare.write_bytes(undersampled_scan.read_bytes())
    with h5py.File(bare, "a") as handle:
        del handle[TRUTH_GROUP]
    assert eval_main(["--checkpoint", "none", "--data", f"ismrmrd:{bare}", "-o", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bare.h5" in err[0] and "undersampled" in err[0] and "ground truth" in err[0], err
    assert not (tmp_path / "eval" / "per_slice.csv").exists()


def test_a_refused_evaluation_leaves_no_output_folder(tmp_path, capsys):
    out = tmp_path / "new" / "eval"
    assert eval_main(["--checkpoint", "none", "--data", f"ismrmrd:{tmp_path / 'missing.h5'}", "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
