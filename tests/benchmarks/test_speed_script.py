"""benchmarks/speed.py end to end on tiny sizes: structure and finiteness, never timings."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str):
    """A benchmarks/ script as a module (they are scripts, not a package)."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # four reconstructions of a tiny slice
def test_speed_runs_end_to_end_on_tiny_sizes(tmp_path, one_thread, capsys):
    speed = load_script("speed")
    out = tmp_path / "speed.md"
    methods = ["tiny", "varnet-tiny", "cg_sense"]
    status = speed.main(["--tiny", "--methods", ",".join(methods), "--dtypes", "fp32", "--warmup", "0",
                         "--repeats", "1", "--large-warmup", "0", "--large-repeats", "1", "--threads", "1",
                         "--out", str(out)])
    assert status == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["geometry"] == {"coils": 4, "frames": 4, "ky": 32, "kx_encoded": 64, "kx": 32}
    assert report["in_progress"] == ""  # no row left half-measured
    assert report["device"] == "cpu" and report["loadavg_start"] and report["command"].startswith("python benchmarks/speed.py")
    rows = {r["method"]: r for r in report["rows"]}
    fastmri = importlib.util.find_spec("fastmri") is not None
    expected = {"tiny", "cg_sense"} | ({"varnet-tiny"} if fastmri else set())
    assert set(rows) == expected
    if not fastmri:  # skipped with a line that says why and how to install it
        assert any("fastmri is not installed" in s for s in report["skipped"])
    for row in rows.values():
        assert row["finite"] is True, row
        assert row["runs"] == 1 and math.isfinite(row["median_ms"]) and row["median_ms"] > 0
        assert row["peak_mem_gib"] is None  # CPU: no GPU memory column
    if fastmri:
        assert rows["varnet-tiny"]["ratio_varnet"] == pytest.approx(1.0)
        assert rows["varnet-tiny"]["params_m"] > 0 and rows["varnet-tiny"]["gflop"] > 0
        assert rows["tiny"]["ratio_varnet"] == pytest.approx(rows["tiny"]["median_ms"] / rows["varnet-tiny"]["median_ms"])
    table = out.read_text()
    assert "| tiny |" in table and "PromptMR+" in table and "command: `python benchmarks/speed.py --tiny" in table


def test_varnet_inputs_follow_fastmri_layout():
    speed = load_script("speed")
    import model_speed as ms

    kspace, mask = ms.make_slice(seed=3, n_coils=3, n_frames=5, n_ky=40, n_kx_enc=48, n_kx=24)
    masked, vn_mask, n_low = speed.varnet_inputs(kspace, mask)
    assert masked.shape == (5, 3, 24, 40, 2) and vn_mask.shape == (5, 1, 1, 40, 1) and vn_mask.dtype.is_floating_point is False
    # frame 2, coil 1, readout row 7, phase column 11 is our kspace[0, 1, 2, 11, 7]
    value = kspace[0, 1, 2, 11, 7]
    assert masked[2, 1, 7, 11, 0].item() == value.real.item() and masked[2, 1, 7, 11, 1].item() == value.imag.item()
    assert bool(vn_mask[2, 0, 0, 11, 0]) == bool(mask[0, 0, 2, 11, 0] > 0)
    assert 2 <= n_low <= 40


def test_speed_rejects_unknown_methods():
    speed = load_script("speed")
    with pytest.raises(SystemExit):
        speed.parse_args(["--methods", "tiny,promptmr"])


def test_speed_stops_starting_rows_when_its_budget_is_spent(tmp_path):
    speed = load_script("speed")
    out = tmp_path / "speed.md"
    status = speed.main(["--tiny", "--methods", "tiny,cg_sense", "--dtypes", "fp32", "--budget-s", "1e-9",
                         "--out", str(out)])
    report = json.loads(out.with_suffix(".json").read_text())
    assert status == 0 and report["rows"] == []
    assert len(report["skipped"]) == 2 and all("time budget" in s for s in report["skipped"])
    assert "Skipped or failed:" in out.read_text()
