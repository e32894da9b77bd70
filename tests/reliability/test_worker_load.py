"""Issue 10, load: 8 concurrent scans through the worker while 50 idle connections and 6 oversized
claims (each a ReconData header claiming 1 GiB, then silence) are open at the same time.

All 8 scans must give the images a sequential in-process run gives (bit-identical), the 6 claims
an ERROR naming the limit, and the worker's peak resident memory (VmHWM from /proc) must stay
within :data:`PEAK_GROWTH_BOUND_MIB` of what it had after loading the model: six claims that were
allocated would add 6 GiB.
"""

from __future__ import annotations

import threading

import pytest
import torch

from cardiomm_core.checkpoint import save_checkpoint
from cardiomm_core.model import CardioMM, config_by_name
from gadgets.recon import CardioMMRecon
from tests.gadgets.harness import HarnessResult
from tests.helpers import one_torch_thread
from tests.reliability.network_helpers import (
    GUARD,
    assert_same_images,
    handshake,
    images_of,
    play_gadgetron,
    proc_memory_kib,
    read_answer,
    recon_data_claim,
    start_worker,
    stop_worker,
)

pytestmark = pytest.mark.slow  # every test here takes seconds (processes, servers): `make test-fast` skips them

N_SCANS, N_IDLE, N_CLAIMS = 8, 50, 6
#: Bound on the growth of the worker's peak RSS during the load (MiB).
PEAK_GROWTH_BOUND_MIB = 256


def test_eight_scans_fifty_idle_six_claims(tiny_scan, tmp_path, monkeypatch):
    _path, header, xml, recon_data = tiny_scan
    torch.manual_seed(0)
    checkpoint = str(save_checkpoint(tmp_path / "tiny", CardioMM(config_by_name("tiny", 64)),
                                     text_encoder_name="hashing-64", text_encoder_dim=64))
    worker, port = start_worker("--checkpoint", checkpoint, "--device", "cpu",
                                env={"CARDIOMM_CACHE_DIR": str(tmp_path / "cache")})
    idle = []
    try:
        baseline_kib = proc_memory_kib(worker.proc.pid)["VmHWM"]
        idle = [handshake(port, xml, {"checkpoint": checkpoint}) for _ in range(N_IDLE)]
        claims = [handshake(port, xml, {"checkpoint": checkpoint}) for _ in range(N_CLAIMS)]
        for sock in claims:
            sock.sendall(recon_data_claim(27))
        results = [HarnessResult() for _ in range(N_SCANS)]

        def scan(slot: int) -> None:
            results[slot] = play_gadgetron(port, xml, recon_data, {"image_series_index": 7})

        threads = [threading.Thread(target=scan, args=(slot,)) for slot in range(N_SCANS)]
        for thread in threads:
            thread.start()
        claim_answers = [read_answer(sock) for sock in claims]
        for thread in threads:
            thread.join(GUARD)
        assert not any(thread.is_alive() for thread in threads), worker.log[-5000:]
        memory = proc_memory_kib(worker.proc.pid)
        for sock in claims:
            sock.close()
    finally:
        for sock in idle:
            sock.close()
        assert stop_worker(worker) == 0, worker.log[-5000:]

    monkeypatch.setenv("CARDIOMM_CACHE_DIR", str(tmp_path / "in-process"))
    with one_torch_thread():
        expected = list(CardioMMRecon(checkpoint=checkpoint, device="cpu", image_series_index=7)(
            iter(recon_data), header))
    for result in results:
        assert result.errors == [] and result.closed, result.errors
        assert_same_images(images_of(result), expected)
    for errors, closed in claim_answers:
        assert closed and len(errors) == 1 and "claims 1073741824" in errors[0], errors
    growth_mib = (memory["VmHWM"] - baseline_kib) / 1024
    print(f"worker peak RSS {memory['VmHWM'] / 1024:.0f} MiB (after loading {baseline_kib / 1024:.0f} MiB, "
          f"growth {growth_mib:.0f} MiB) for {N_SCANS} scans + {N_IDLE} idle + {N_CLAIMS} claims")
    assert growth_mib < PEAK_GROWTH_BOUND_MIB
