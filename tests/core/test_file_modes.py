"""Files written through temporary names (checkpoints, training checkpoints, the embedding cache)
get the modes the umask allows, not mkstemp's 0600 / mkdtemp's 0700 (a read-only mount for
another user, e.g. the docker image's UID 1000, must be able to read them)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from cardiomm_core.checkpoint import checkpoint_paths, save_checkpoint
from cardiomm_core.files import current_umask
from cardiomm_core.model import CardioMM, config_by_name


@pytest.fixture(params=[0o022, 0o077])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_without_changing(umask):
    assert current_umask() == umask
    assert current_umask() == umask


def test_exported_checkpoint_files_follow_the_umask(tmp_path, umask):
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "tiny", CardioMM(config_by_name("tiny", 16)),
                              text_encoder_name="hashing-16", text_encoder_dim=16)
    for path in checkpoint_paths(weights):
        assert _mode(path) == 0o666 & ~umask, (path, oct(_mode(path)))


def test_training_checkpoint_folder_and_files_follow_the_umask(tmp_path, umask):
    from train.checkpointing import LATEST_FILE, checkpoint_dir, write_training_checkpoint

    folder = write_training_checkpoint(tmp_path / "run", 3, {"w": torch.zeros(2)}, {"note": "x"})
    assert _mode(folder) == 0o777 & ~umask
    for path in [*folder.iterdir(), checkpoint_dir(tmp_path / "run") / LATEST_FILE]:
        assert _mode(path) == 0o666 & ~umask, (path, oct(_mode(path)))


def test_embedding_cache_files_follow_the_umask(tmp_path, umask):
    from cardiomm_core.embedding_cache import EmbeddingCache

    EmbeddingCache(tmp_path / "cache").put("hashing-16", "Undersampling: 8x Uniform.", torch.ones(16))
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert _mode(path) == 0o666 & ~umask, (path, oct(_mode(path)))


def test_simulation_cache_files_follow_the_umask(tmp_path, umask):
    """The training simulation cache (data.sim_cache) is shared by concurrent runs and users."""
    from train.data.synthetic import SyntheticCardiacDataset

    SyntheticCardiacDataset(1, seed=4, matrix=(16, 12), n_frames=2, n_coils=2, cache_dir=tmp_path)[0]
    files = list(tmp_path.rglob("*.npz"))
    assert len(files) == 1 and not list(tmp_path.rglob("*.tmp"))
    assert _mode(files[0]) == 0o666 & ~umask, oct(_mode(files[0]))
