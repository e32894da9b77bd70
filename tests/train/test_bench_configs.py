"""The issue-14 training configs compare like with like, and their tiny CPU twins train and export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmarks.bench_train import CONFIGS, DEFAULT_MODELS, main, twin_overrides
from train.config_io import config_to_dict, load_config

#: what may differ between the compared runs
OWN = {"run_dir", "description", "model", "text_encoder"}


def test_the_bench_configs_differ_only_in_the_model():
    configs = {name: config_to_dict(load_config(path)) for name, path in CONFIGS.items()}
    reference = configs["small"]
    for name, values in configs.items():
        for key in set(reference) | set(values):
            if key not in OWN:
                assert values[key] == reference[key], f"{name}: section {key!r} differs from bench_small_gpu.yaml"
    assert reference["train"]["device"] == "cuda" and reference["train"]["amp"] is True
    assert reference["train"]["max_steps"] and reference["train"]["max_seconds"]
    assert reference["model"]["init_from"] is None  # from scratch
    from benchmarks.quality import MATRICES

    source = reference["data"]["train"][0]  # varied geometry around the held-out matrices
    for nx, ny in MATRICES:
        assert source["nx_range"][0] <= nx <= source["nx_range"][1]
        assert source["ny_range"][0] <= ny <= source["ny_range"][1]
    assert source["prewhiten"] and source["compress_coils"] == 8 and source["target"] == "noise_free"
    assert configs["cardiosm"]["model"] == {"name": "small", "overrides": {"unroll": "proximal", "context": "none"},
                                            "init_from": None}
    assert configs["varnet"]["model"]["name"] == "varnet"


def test_the_quality_varnet_is_capacity_matched_and_fits_the_file_limit():
    pytest.importorskip("fastmri")
    from cardiomm_core.model import count_parameters
    from train.model_setup import build_model

    counts = {}
    for name in ("small", "cardiosm", "varnet"):
        cfg = load_config(CONFIGS[name])
        counts[name] = count_parameters(build_model(cfg, 384 if name != "varnet" else 64))
    assert counts["cardiosm"] == counts["small"]
    assert abs(counts["varnet"] - counts["small"]) < 0.1 * counts["small"]
    assert counts["varnet"] * 2 < 16 * 2**20  # fp16 weights under 16 MiB


@pytest.mark.slow
def test_the_twins_train_and_export_every_model(tmp_path):
    pytest.importorskip("fastmri")
    assert main(["--out", str(tmp_path), "--tiny", "--tiny-steps", "2", "--log-level", "WARNING"]) == 0
    records = json.loads((tmp_path / "bench_train.json").read_text())
    assert [r["name"] for r in records] == list(DEFAULT_MODELS)
    for record in records:
        assert record["steps"] == 2 and record["finished"] and Path(record["checkpoint"]).is_file()
        sidecar = json.loads(Path(record["checkpoint"]).with_suffix(".json").read_text())
        assert sidecar["storage_dtype"] == "float16"
    kinds = {r["name"]: json.loads(Path(r["checkpoint"]).with_suffix(".json").read_text())["architecture"]
             for r in records}
    assert kinds["varnet"]["kind"] == "varnet" and kinds["cardiosm"]["context"] == "none"
    assert kinds["small"]["context"] == "text"


def test_twin_overrides_keep_the_config_valid():
    for name in CONFIGS:
        cfg = load_config(CONFIGS[name], twin_overrides(name))
        assert cfg.train.device == "cpu" and cfg.train.max_steps == 4
    with pytest.raises(ValueError):
        twin_overrides("bogus")
    assert yaml.safe_load(CONFIGS["varnet"].read_text())["model"]["overrides"]["chans"] == 8
