"""Every case in tests/integration/cases/ runs as written: input, chain, reference, tolerance.

A chain without such a case is untested (STYLE.md): ``test_every_chain_has_a_case`` checks that.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import ismrmrd
import numpy as np
import pytest

from gadgets.io.image_io import read_images
from gadgets.io.ismrmrd_io import iter_acquisitions, read_header, read_xml, set_header_version
from gadgets.io.simulated_scan import read_ground_truth
from gadgets.protocol.chain_format import Chain, chain_from_xml, load_chain
from gadgets.tools.replay import main as replay
from tests.gadgets.fake_server import FakeGadgetronServer
from tests.gadgets.harness import run_gadget
from tests.integration.conftest import (
    CHAINS_DIR,
    Case,
    all_cases,
    relative_error,
    rss_reference,
    whitened_coil_images,
)

CASES = all_cases()
#: Cases that take seconds each (a worker process, several runs of one scan): `make test-fast` skips them.
SLOW_CASES = frozenset({"shepp_logan_python_cg_sense", "cine_r8_worker", "cine_r8_native"})
GROUP = "case"
REPO_ROOT = Path(__file__).resolve().parents[2]


def configured_chain(case: Case) -> Chain:
    chain = load_chain(case.chain)
    for target, properties in case.overrides.items():
        chain = chain.with_properties(target, **properties)
    return chain


def _sorted(images: list[ismrmrd.Image]) -> list[ismrmrd.Image]:
    return sorted(images, key=lambda im: (int(im.image_series_index), int(im.slice), int(im.repetition),
                                          int(im.contrast), int(im.phase), int(im.image_index)))


def _replay(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = replay(args)
    return code, capsys.readouterr().err


def run_local(case: Case, path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
              extra: tuple[str, ...] = (), chain_file: Path | None = None) -> list[ismrmrd.Image]:
    """cardiomm-replay IN --chain CHAIN -o OUT (the case's overrides written into a chain file)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    if chain_file is None:
        chain_file = tmp_path / f"{case.name}.yaml"
        chain_file.write_text(configured_chain(case).to_yaml())
    out = tmp_path / "local.h5"
    code, err = _replay([str(path), "--chain", str(chain_file), "-o", str(out), "--group", GROUP,
                         "--header-version", "14", "-q", *extra], capsys)
    assert code == 0, err
    assert "cardiomm-replay:" in err and "acquisitions/s" in err  # the closing summary
    return _sorted([im for series in read_images(out, GROUP).values() for im in series])


def run_harness(case: Case, path: Path) -> list[ismrmrd.Image]:
    """Each Python stage as Gadgetron runs it: a `python -m gadgetron PORT MODULE TARGET` child that
    receives CONFIG (the node's configuration), HEADER and the previous node's output over a socket."""
    chain = configured_chain(case)
    assert all(stage.kind == "python" for stage in chain.stages)
    header = set_header_version(read_xml(path), 14)  # as the local run (--header-version 14)
    items: list[Any] = list(iter_acquisitions(path))
    for stage in chain.stages:
        result = run_gadget(stage.module, stage.target, header_xml=header, items=items,
                            properties=dict(stage.properties), timeout=300)
        assert result.closed and not result.errors and result.protocol_error is None, \
            (stage.label, result.errors, result.protocol_error, result.stderr[-2000:])
        assert result.exited_by_itself and result.returncode == 0, (stage.label, result.stderr[-2000:])
        items = result.items
    assert all(isinstance(item, ismrmrd.Image) for item in items)
    return _sorted(items)


def _free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def run_worker(case: Case, path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[ismrmrd.Image]:
    """The connect stage through a real `cardiomm-worker` process on loopback."""
    port = _free_port()
    # Two connections: the readiness probe below (closed before CONFIG, which the worker logs and
    # drops) and the scan.
    worker = subprocess.Popen(
        [sys.executable, "-m", "gadgets.tools.worker", "--port", str(port), "--checkpoint", "none",
         "--max-connections", "2", "--idle-timeout", "60"],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "GADGETRON_EXTERNAL_LOG_LEVEL": "INFO"})
    try:
        deadline = time.monotonic() + 300
        while True:  # wait until it listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("cardiomm-worker did not start") from None
                time.sleep(0.1)
        chain = configured_chain(case)
        stages = tuple(replace(s, address="127.0.0.1", port=port) if s.kind == "connect" else s for s in chain.stages)
        chain_file = tmp_path / "worker_chain.yaml"
        chain_file.write_text(replace(chain, stages=stages).to_yaml())
        images = run_local(case, path, tmp_path / "worker", capsys, extra=("--connect", "socket"),
                           chain_file=chain_file)
        _, err = worker.communicate(timeout=300)  # it exits by itself after its two connections
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, err[-3000:]
    assert "connection 2 from" in err and "done in" in err, err[-3000:]
    return images


def _stack(images: list[ismrmrd.Image]) -> np.ndarray:
    return np.stack([np.abs(np.asarray(im.data, dtype=np.complex128)) for im in images])


def check_geometry(images: list[ismrmrd.Image], path: Path) -> None:
    """Matrix, field of view, slice positions and directions agree with the raw data's."""
    header, _ = read_header(path)
    recon = header.encoding[0].reconSpace
    first_line: dict[int, ismrmrd.Acquisition] = {}
    for acq in iter_acquisitions(path):
        if not acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            first_line.setdefault(int(acq.idx.slice), acq)
    assert {int(im.slice) for im in images} == set(first_line)
    for im in images:
        assert tuple(im.matrix_size) == (recon.matrixSize.x, recon.matrixSize.y, 1)
        np.testing.assert_allclose(im.field_of_view, [recon.fieldOfView_mm.x, recon.fieldOfView_mm.y,
                                                      recon.fieldOfView_mm.z], rtol=1e-5)
        acq = first_line[int(im.slice)]
        for name in ("position", "read_dir", "phase_dir", "slice_dir", "patient_table_position"):
            np.testing.assert_allclose(getattr(im, name), getattr(acq, name), atol=1e-5, err_msg=name)


def check_reference(case: Case, images: list[ismrmrd.Image], path: Path, results: dict[str, Any],
                    run_other: Any) -> float:
    """The case's reference and ``||out - ref|| / ||ref||`` (asserted below the tolerance)."""
    kind = case.reference["kind"]
    out = _stack(images)[:, 0, 0]  # (n, y, x)
    if kind == "rss":  # numpy only: prewhitened, oversampling removed, FFT, root-sum-of-squares
        coil_images = whitened_coil_images(path)
        reference = np.stack([rss_reference(coil_images[repetition]) for repetition in sorted(coil_images)])
        assert {int(im.repetition) for im in images} == set(coil_images)
    elif kind == "ground_truth":
        truth = read_ground_truth(path)
        frames = np.abs(truth.images)  # (slices, frames, y, x); mapping frames are contrasts, cine frames phases
        frame_of = (lambda im: int(im.phase)) if truth.context.modality == "Cine" else (lambda im: int(im.contrast))
        reference = np.stack([frames[int(im.slice), frame_of(im)] for im in images])
        out = out * float((out * reference).sum() / (out * out).sum())  # least-squares intensity scale
    elif kind == "case":
        other = case.reference["case"]
        if other not in results:  # run the referenced case's first run now
            results[other] = run_other(other)
        reference = _stack(results[other])[:, 0, 0]
    elif kind == "server_images":
        reference = _stack(results[f"{case.name}:server"])[:, 0, 0]
    else:
        raise AssertionError(f"{case.name}: unknown reference kind {kind!r}")
    assert out.shape == reference.shape
    error = relative_error(out, reference)
    assert error <= case.tolerance, f"{case.name}: ||out - ref|| / ||ref|| = {error:.3g} > {case.tolerance}"
    print(f"{case.name}: ||out - ref|| / ||ref|| = {error:.3g} (tolerance {case.tolerance:g})")
    return error


def run_server_case(case: Case, path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                    results: dict[str, Any]) -> list[ismrmrd.Image]:
    out = tmp_path / "server.h5"
    options = dict(case.server)
    mode = options.pop("mode")
    with FakeGadgetronServer(mode, timeout=120, **options) as server:
        args = [str(path), "--server", f"127.0.0.1:{server.port}", "-o", str(out), "--group", GROUP, "-q"]
        if "--config" not in case.arguments:
            args += ["--chain", str(case.chain)]
        code, err = _replay(args + list(case.arguments), capsys)
    assert server.exception is None, server.exception
    assert code == case.expect["exit_code"], err
    for text in case.expect.get("stderr_contains", []):
        assert text in err, f"{text!r} not in stderr:\n{err}"
    if "--config" in case.arguments:
        assert server.received.config_name == case.arguments[case.arguments.index("--config") + 1]
    else:  # the chain's XML went as text
        assert chain_from_xml(server.received.config_text).semantic() == load_chain(case.chain).semantic()
    if "--header-version" in case.arguments:
        assert "<version>14</version>" in server.received.header
    results[f"{case.name}:server"] = server.sent_images
    if not out.exists():
        return []
    return _sorted([im for series in read_images(out, GROUP).values() for im in series])


@pytest.mark.parametrize("case", [pytest.param(case, marks=pytest.mark.slow) if case.name in SLOW_CASES else case
                                  for case in CASES], ids=[case.name for case in CASES])
def test_case(case: Case, case_input: Any, case_results: dict[str, Any], tmp_path: Path,
              capsys: pytest.CaptureFixture[str]) -> None:
    path = case_input(case)

    def run_other(name: str) -> list[ismrmrd.Image]:
        (other,) = [c for c in CASES if c.name == name]
        assert other.runs[0] == "local"
        return run_local(other, case_input(other), tmp_path / f"reference_{name}", capsys)

    outputs: dict[str, list[ismrmrd.Image]] = {}
    for run in case.runs:
        if run == "local":
            outputs[run] = run_local(case, path, tmp_path / run, capsys)
        elif run == "harness":
            outputs[run] = run_harness(case, path)
        elif run == "worker":
            outputs[run] = run_worker(case, path, tmp_path, capsys)
        else:
            outputs[run] = run_server_case(case, path, tmp_path, capsys, case_results)
    first = outputs[case.runs[0]]
    case_results[case.name] = first
    expect = case.expect
    for run, images in outputs.items():
        assert len(images) == expect["images"], f"{case.name} ({run}): {len(images)} images"
        if "matrix" in expect:
            assert all(im.data.shape[-2:] == (expect["matrix"][1], expect["matrix"][0]) for im in images)
        if expect.get("geometry"):
            check_geometry(images, path)
        if case.reference["kind"] != "none":
            check_reference(case, images, path, case_results, run_other)
    if case.runs_identical and len(outputs) > 1:
        for run, images in outputs.items():
            for got, want in zip(images, first):
                np.testing.assert_array_equal(got.data, want.data, err_msg=f"{case.name}: {run} != {case.runs[0]}")
                assert (got.slice, got.contrast, got.phase, got.repetition) == \
                    (want.slice, want.contrast, want.phase, want.repetition)
                np.testing.assert_array_equal(got.position, want.position)


def test_every_chain_has_a_case() -> None:
    covered = {case.chain.stem for case in CASES}
    assert {path.stem for path in CHAINS_DIR.glob("*.xml")} <= covered


def test_cases_are_well_formed() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names)) and all(case.path.stem == case.name for case in CASES)
    assert SLOW_CASES <= set(names), f"SLOW_CASES names no case: {sorted(SLOW_CASES - set(names))}"
    for case in CASES:
        assert case.tolerance >= 0
        for target in case.overrides:
            load_chain(case.chain).stage_for(target)  # an override names a real stage
        if case.reference["kind"] == "case":
            assert case.reference["case"] in names and case.reference["case"] != case.name
