"""cardiomm-worker: the warm-worker route, played as Gadgetron's ``<connect port= address=/>`` node.

On ``<connect>`` Gadgetron 4.x (``nodes/External.cpp`` ``open_connection(Config::Connect)``) opens
the TCP connection itself and its ``ExternalChannel`` constructor sends CONFIG and HEADER at once;
then items and CLOSE, while reading items, ERROR or CLOSE back. ``play_gadgetron`` does that.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from gadgetron.types.recon_data import ReconData

from cardiomm_core.checkpoint import save_checkpoint
from cardiomm_core.model import CardioMM, config_by_name
from gadgets.buffer import AcquisitionBuffer
from gadgets.io.ismrmrd_io import RawFile
from gadgets.recon import CardioMMRecon
from gadgets.tools.worker_process import WorkerProcess
from tests.gadgets.harness import (
    CLOSE,
    CONFIG,
    HEADER,
    REPO_ROOT,
    HarnessResult,
    _receive,
    assert_items_equal,
    config_xml,
    encode_item,
    encode_string,
)
from tests.helpers import one_torch_thread

pytestmark = pytest.mark.slow  # every test here takes seconds (processes, servers): `make test-fast` skips them

TIMEOUT = 300.0  # a hang guard only: a loaded machine may take long to start a worker


class RunningWorker(WorkerProcess):
    """A worker for the tests: one OMP/MKL thread; ``wait_ready``'s timeout is a hang guard only."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        super().__init__(*args, env=env, threads=1)


def play_gadgetron(port: int, header_xml: str, items: list, properties: dict | None = None) -> HarnessResult:
    """Connect to the worker as Gadgetron's <connect> node does; send CONFIG, HEADER, items, CLOSE; read back."""
    result = HarnessResult()
    error_seen = threading.Event()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        receiver = threading.Thread(target=_receive, args=(sock, result, error_seen), daemon=True)
        receiver.start()
        sock.sendall(encode_string(CONFIG, config_xml(properties)))
        sock.sendall(encode_string(HEADER, header_xml))
        for item in items:
            if error_seen.is_set():
                break
            sock.sendall(encode_item(item))
        sock.sendall(encode_string(CLOSE, b"")[:2])
        receiver.join(TIMEOUT)
        if receiver.is_alive():
            result.protocol_error = "no CLOSE from the worker"
    return result


@pytest.fixture(scope="module")
def scan(simulated_scan_file):
    with RawFile(simulated_scan_file) as raw:
        header, xml, acquisitions = raw.header, raw.xml, list(raw.acquisitions())
    recon_data: list[ReconData] = list(AcquisitionBuffer()(iter(acquisitions), header))
    return header, xml, recon_data


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("worker_tiny") / "tiny_random"
    return str(save_checkpoint(path, CardioMM(config_by_name("tiny", 64)), text_encoder_name="hashing-64",
                               text_encoder_dim=64))


def test_worker_serves_in_a_row_and_at_once_with_one_model_load(scan, tiny_checkpoint, tmp_path, monkeypatch):
    header, xml, recon_data = scan
    worker = RunningWorker("--checkpoint", tiny_checkpoint, "--device", "cpu", "--max-connections", "4",
                           "--idle-timeout", "60", env={"CARDIOMM_CACHE_DIR": str(tmp_path / "cache")})
    try:
        port = worker.wait_ready()
        properties = {"image_series_index": 5}
        in_a_row = [play_gadgetron(port, xml, recon_data, properties) for _ in range(2)]
        at_once: list[HarnessResult] = [HarnessResult(), HarnessResult()]

        def play(slot: int) -> None:
            at_once[slot] = play_gadgetron(port, xml, recon_data, properties)

        threads = [threading.Thread(target=play, args=(slot,)) for slot in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        assert worker.wait_exit() == 0, worker.log  # exits by itself after --max-connections
    finally:
        worker.kill()

    monkeypatch.setenv("CARDIOMM_CACHE_DIR", str(tmp_path / "in-process"))
    with one_torch_thread():
        expected = list(CardioMMRecon(checkpoint=tiny_checkpoint, device="cpu", image_series_index=5)(
            iter(recon_data), header))
    for result in in_a_row + at_once:
        assert result.errors == [] and result.protocol_error is None and result.closed, worker.log
        assert_items_equal(result.items, expected)
    log = worker.log
    assert log.count("model loaded:") == 1, log  # loaded once, at start-up, for all four connections
    assert len(re.findall(r"connection \d+ from 127\.0\.0\.1", log)) >= 4
    assert "served its 4 connection(s)" in log


def test_worker_survives_a_probe_and_stops_when_idle(scan, tmp_path):
    header, xml, recon_data = scan
    worker = RunningWorker("--checkpoint", "none", "--idle-timeout", "8", env={"CARDIOMM_CACHE_DIR": str(tmp_path)})
    try:
        port = worker.wait_ready()
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass  # a port probe: connects and closes without CONFIG/HEADER
        result = play_gadgetron(port, xml, recon_data[:1], {"checkpoint": "none"})
        assert result.errors == [] and result.closed, worker.log
        assert len(result.items) == 4 and all(isinstance(i.data, np.ndarray) for i in result.items)
        assert worker.wait_exit(300) == 0, worker.log  # idle timeout (the wait is a hang guard)
    finally:
        worker.kill()
    assert "no valid CONFIG/HEADER" in worker.log and "idle for" in worker.log
    assert "model loaded:" not in worker.log


def test_worker_reports_errors_and_stops_on_sigterm(scan, tmp_path):
    header, xml, recon_data = scan
    worker = RunningWorker("--checkpoint", "none", env={"CARDIOMM_CACHE_DIR": str(tmp_path)})
    try:
        port = worker.wait_ready()
        result = play_gadgetron(port, xml, recon_data[:1], {"fallback": "grappa"})  # an invalid parameter
        assert len(result.errors) == 1 and "fallback" in result.errors[0] and result.closed, worker.log
        assert result.items == []
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.wait_exit(300) == 0, worker.log
    finally:
        worker.kill()
    assert "received SIGTERM" in worker.log


def test_worker_refuses_to_start_on_a_missing_checkpoint_unless_allowed(tmp_path):
    missing = str(tmp_path / "absent.safetensors")
    env = {"CARDIOMM_CACHE_DIR": str(tmp_path)}
    refused = RunningWorker("--checkpoint", missing, "--max-connections", "1", env=env)
    try:
        code = refused.wait_exit(300)
    finally:
        refused.kill()
    assert code == 2, refused.log
    lines = refused.log.strip().splitlines()
    assert len(lines) == 1 and "absent.safetensors" in lines[0] and "does not exist" in lines[0], refused.log
    assert "ready" not in refused.log and "Traceback" not in refused.log
    # --allow-fallback: today's behaviour, the worker serves fallback images and says why
    worker = RunningWorker("--checkpoint", missing, "--max-connections", "1", "--allow-fallback", env=env)
    try:
        worker.wait_ready()
        worker.proc.send_signal(signal.SIGINT)
        assert worker.wait_exit(300) == 0
    finally:
        worker.kill()
    assert "does not exist" in worker.log


def test_worker_refuses_a_corrupt_checkpoint(tmp_path):
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "tiny", CardioMM(config_by_name("tiny", 64)), text_encoder_name="hashing-64",
                              text_encoder_dim=64)
    weights.write_bytes(b"not safetensors at all")
    refused = RunningWorker("--checkpoint", str(weights), "--device", "cpu", env={"CARDIOMM_CACHE_DIR": str(tmp_path)})
    try:
        code = refused.wait_exit(300)
    finally:
        refused.kill()
    assert code == 2 and "cannot load checkpoint" in refused.log and "ready" not in refused.log, refused.log
    errors = [line for line in refused.log.splitlines() if line.startswith("cardiomm-worker:")]
    assert len(errors) == 1 and "Traceback" not in refused.log, refused.log  # one line besides INFO logging


def test_worker_logs_at_info_by_default():
    code = ("import logging; from gadgets.protocol.stream import setup_logging; setup_logging(); "
            "print(logging.getLevelName(logging.getLogger().level))")
    env = {k: v for k, v in os.environ.items() if k != "GADGETRON_EXTERNAL_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    default = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert default.stdout.strip() == "INFO", default.stderr
    asked = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT,
                           env={**env, "GADGETRON_EXTERNAL_LOG_LEVEL": "DEBUG"})
    assert asked.stdout.strip() == "DEBUG", asked.stderr
    # a gadget that Gadgetron starts (python -m gadgetron) finds the root logger at gadgetron-python's DEBUG
    as_gadgetron = ("import logging; logging.basicConfig(level=logging.DEBUG); " + code.replace("import logging; ", ""))
    child = subprocess.run([sys.executable, "-c", as_gadgetron], capture_output=True, text=True, env=env,
                           timeout=TIMEOUT)
    assert child.stdout.strip() == "INFO", child.stderr


def test_worker_rejects_bad_options(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "gadgets.tools.worker", "--device", "gpu0"], capture_output=True, text=True,
                         cwd=Path(REPO_ROOT), timeout=TIMEOUT)
    assert bad.returncode == 2 and "device" in bad.stderr
