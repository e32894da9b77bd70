"""benchmarks/chain.py end to end on a tiny scan: structure and finiteness, never timings.

It runs the real paths: loopback sockets on 127.0.0.1, gadgetron-python's readers, a fresh
``python -m gadgetron`` child and a ``python -m gadgets.tools.worker`` child (each loads the packaged model)."""

from __future__ import annotations

import json
import math

import pytest

from tests.benchmarks.test_speed_script import load_script


def _finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow  # two child processes and a whole chain
def test_chain_runs_end_to_end_on_a_tiny_scan(tmp_path, one_thread):
    chain = load_script("chain")
    out = tmp_path / "chain.md"
    # --checkpoint none: the conventional reconstruction, so the two child processes load no model
    status = chain.main(["--tiny", "--checkpoint", "none", "--threads", "1", "--out", str(out)])
    report = json.loads(out.with_suffix(".json").read_text())
    assert status == 0, report["errors"]
    assert report["errors"] == []
    assert report["geometry"]["name"] == "tiny" and report["scan"]["noise_acquisitions"] == 1
    # every step of the chain was timed, and the model's stage produced the images
    assert set(report["stages_s"]) == {"NoiseAdjust", "RemoveOversampling", "AcquisitionBuffer", "CoilCompression",
                                       "CardioMMRecon"}
    assert all(_finite_positive(v) for v in report["stages_s"].values())
    assert report["images"] == report["geometry"]["frames"]  # one image per frame of the one slice
    assert report["images_finite"] is True
    for key in ("protocol_acquisitions", "protocol_recondata", "protocol_images"):
        assert _finite_positive(report[key]["seconds"]) and report[key]["bytes"] > 0
    assert report["protocol_acquisitions"]["items"] == report["scan"]["acquisitions"]
    assert _finite_positive(report["chain_share_of_model"])
    assert report["buffering"]["passes"] >= 2 and _finite_positive(report["buffering"]["acquisitions_per_s"])
    for key in ("gc_paused", "floor", "reader"):  # the same run's bounds beside the buffer's rate
        assert _finite_positive(report["buffering"][key]["per_cpu_s"])
    ttfi = report["time_to_first_image"]["tiny"]
    assert len(ttfi["execute"]) == len(ttfi["worker"]) == 1
    assert ttfi["execute"][0]["images"] == ttfi["worker"][0]["images"] == report["images"]
    assert _finite_positive(ttfi["speedup"])
    assert report["scans"]["slices_per_scan"] == 1 and _finite_positive(report["scans"]["scans_per_hour"])
    table = out.read_text()
    for heading in ("Where the time goes", "Buffering throughput", "Time to first image", "Scans per hour"):
        assert heading in table
    assert "command: `python benchmarks/chain.py --tiny" in table


@pytest.mark.slow  # a child process that imports torch
def test_buffer_rate_measures_a_tree_in_its_own_process(tmp_path):
    buffer_rate = load_script("buffer_rate")
    out = tmp_path / "rate.md"
    assert buffer_rate.main(["--geometry", "tiny", "--rounds", "1", "--passes", "1", "--min-s", "0",
                             "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    (runs,) = report["trees"].values()
    assert len(runs) == 1 and runs[0]["outputs"] == 1  # one slice: one ReconData
    for key in (None, "gc_paused", "floor", "reader"):
        assert _finite_positive((runs[0] if key is None else runs[0][key])["per_cpu_s"])
    assert "| buffer /CPU s |" in out.read_text()
