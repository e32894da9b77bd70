"""Issue 10's network, fault and configuration cases (items 5, 6, 10-13), measured: outcome, time,
peak memory. Writes a Markdown table (default ``benchmarks/results/reliability_network.md``).

    .venv/bin/python benchmarks/reliability_network.py [--out FILE]

Each case runs what the tests in ``tests/reliability/`` check (worker subprocesses, real loopback
sockets, replay subprocesses under RLIMIT_FSIZE, a 48 kB tmpfs where this process may mount one).
Memory: the worker's peak RSS growth during the case (VmHWM from /proc, baseline = after start-up),
the replay client's tracemalloc peak for in-process cases, the child's peak RSS
(``ru_maxrss``) for replay subprocesses. Times are wall clock on whatever machine runs it: they
describe, they are not limits.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gadgets.tools.client import stream_file  # noqa: E402
from tests.gadgets.harness import CONFIG, HEADER, HarnessResult, config_xml, encode_string  # noqa: E402
from tests.reliability.network_helpers import (  # noqa: E402
    U16,
    U32,
    error_texts,
    handshake,
    images_of,
    make_tiny_scan,
    play_gadgetron,
    proc_memory_kib,
    read_answer,
    recon_data_claim,
    start_worker,
    stop_worker,
    wait_closed_by_peer,
)
from tests.reliability.test_replay_faults import KILLED_WORKER, worker_chain  # noqa: E402
from tests.reliability.test_wire_limits import CLAIMS, SERVER_CLAIMS, HostileServer  # noqa: E402

ROWS: list[tuple[str, str, str, str, str]] = []


def row(item: str, case: str, outcome: str, seconds: float, memory: str) -> None:
    ROWS.append((item, case, outcome, f"{seconds:.2f}", memory))
    print(f"{item:>3} | {case} | {outcome} | {seconds:.2f} s | {memory}", flush=True)


def short(text: str, n: int = 90) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= n else text[: n - 1] + "…"


def worker_cases(scan, cache: Path) -> None:
    path, header, xml, recon_data = scan
    worker, port = start_worker("--checkpoint", "none", env={"CARDIOMM_CACHE_DIR": str(cache)})
    try:
        for name, claim in sorted(CLAIMS.items()):
            before = proc_memory_kib(worker.proc.pid)["VmHWM"]
            started = time.monotonic()
            with handshake(port, xml) as sock:
                sock.sendall(claim)
                errors, closed = read_answer(sock)
            seconds = time.monotonic() - started
            grown = (proc_memory_kib(worker.proc.pid)["VmHWM"] - before) / 1024
            outcome = f"ERROR: {short(errors[0].split('MessageTooLarge: ')[-1], 60)}" if errors else "no ERROR"
            row("5", f"worker: claim {name}", outcome + ("; CLOSE" if closed else ""), seconds, f"+{grown:.0f} MiB RSS")
        for which, data in (("CONFIG length 4 GiB", U16.pack(CONFIG) + U32.pack(0xFFFFFFFF)),
                            ("HEADER length 4 GiB", encode_string(CONFIG, config_xml({})) + U16.pack(HEADER)
                             + U32.pack(0xFFFFFFF0))):
            before = proc_memory_kib(worker.proc.pid)["VmHWM"]
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
                sock.sendall(data)
                errors, _ = read_answer(sock)
            grown = (proc_memory_kib(worker.proc.pid)["VmHWM"] - before) / 1024
            row("5", f"worker: {which}", f"ERROR: {short(errors[0], 60)}" if errors else "closed",
                time.monotonic() - started, f"+{grown:.0f} MiB RSS")
        result = play_gadgetron(port, xml, recon_data, {"checkpoint": "none"})
        row("5", "worker: valid scan after all claims", f"{len(images_of(result))} images, errors {result.errors}",
            0.0, "-")
    finally:
        stop_worker(worker)


def client_cases(scan) -> None:
    for name, claim in sorted(SERVER_CLAIMS.items()):
        server = HostileServer(claim)
        tracemalloc.start()
        started = time.monotonic()
        try:
            result = stream_file("127.0.0.1", server.port, scan[0], config_name="default.xml", io_timeout=120)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            server.close()
        text = result.errors[0] if result.errors else "ok"
        text = text.split("unreadable message after 0 message(s): ")[-1]
        row("5", f"replay client: server sends {name}", short(text, 80),
            time.monotonic() - started, f"{peak / 2**20:.1f} MiB traced")


def connection_cases(scan, cache: Path) -> None:
    path, header, xml, recon_data = scan
    worker, port = start_worker("--checkpoint", "none", "--handshake-timeout", "2", "--connection-timeout", "1",
                                "--max-concurrent", "2", env={"CARDIOMM_CACHE_DIR": str(cache)})
    try:
        message = encode_string(CONFIG, config_xml({"checkpoint": "none"}))
        started, sent = time.monotonic(), 0
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            try:
                while sent < len(message):
                    sock.sendall(message[sent:sent + 1])
                    sent += 1
                    time.sleep(0.25)
            except OSError:
                pass
            wait_closed_by_peer(sock)
        row("6", "handshake trickled 1 byte / 0.25 s (deadline 2 s)", f"closed after {sent} of {len(message)} bytes",
            time.monotonic() - started, "-")
        started = time.monotonic()
        with handshake(port, xml) as sock:
            errors, closed = read_answer(sock)
        row("6", "silent after the handshake (--connection-timeout 1)", short(errors[0] if errors else "no ERROR", 70),
            time.monotonic() - started, "-")
        idle = [handshake(port, xml) for _ in range(2)]
        started = time.monotonic()
        with handshake(port, xml) as sock:
            texts = error_texts(wait_closed_by_peer(sock))
        row("6", "third connection, --max-concurrent 2", short(texts[0] if texts else "no ERROR", 80),
            time.monotonic() - started, "-")
        for sock in idle:
            sock.close()
    finally:
        stop_worker(worker)
    worker, port = start_worker("--checkpoint", "none", env={"CARDIOMM_CACHE_DIR": str(cache)})
    idle = [handshake(port, xml) for _ in range(10)]
    time.sleep(1.0)
    started = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    code = worker.wait_exit(120)
    row("6", "SIGTERM with 10 idle connections", f"exit {code}; "
        f"{'closed 10 idle' if 'closed 10 idle' in worker.log else 'see log'}", time.monotonic() - started, "-")
    for sock in idle:
        sock.close()


def load_case(scan, cache: Path, tmp: Path) -> None:
    import torch

    from cardiomm_core.checkpoint import save_checkpoint
    from cardiomm_core.model import CardioMM, config_by_name
    from gadgets.recon import CardioMMRecon

    path, header, xml, recon_data = scan
    torch.manual_seed(0)
    checkpoint = str(save_checkpoint(tmp / "tiny", CardioMM(config_by_name("tiny", 64)),
                                     text_encoder_name="hashing-64", text_encoder_dim=64))
    worker, port = start_worker("--checkpoint", checkpoint, "--device", "cpu", env={"CARDIOMM_CACHE_DIR": str(cache)})
    try:
        baseline = proc_memory_kib(worker.proc.pid)["VmHWM"]
        started = time.monotonic()
        idle = [handshake(port, xml, {"checkpoint": checkpoint}) for _ in range(50)]
        claims = [handshake(port, xml, {"checkpoint": checkpoint}) for _ in range(6)]
        for sock in claims:
            sock.sendall(recon_data_claim(27))
        results = [HarnessResult() for _ in range(8)]

        def scan_one(slot: int) -> None:
            results[slot] = play_gadgetron(port, xml, recon_data, {"image_series_index": 7})

        threads = [threading.Thread(target=scan_one, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        answers = [read_answer(sock) for sock in claims]
        for thread in threads:
            thread.join(300)
        seconds = time.monotonic() - started
        peak = proc_memory_kib(worker.proc.pid)["VmHWM"]
        for sock in idle + claims:
            sock.close()
    finally:
        stop_worker(worker)
    expected = list(CardioMMRecon(checkpoint=checkpoint, device="cpu", image_series_index=7)(iter(recon_data), header))
    import numpy as np

    correct = sum(len(images_of(r)) == len(expected) and all(np.array_equal(a.data, b.data) for a, b in
                                                             zip(images_of(r), expected)) for r in results)
    refused = sum(1 for errors, _ in answers if errors and "claims 1073741824" in errors[0])
    row("load", "8 scans + 50 idle + 6 claims of 1 GiB", f"{correct}/8 scans bit-identical, {refused}/6 claims "
        "refused", seconds, f"worker peak {peak / 1024:.0f} MiB (+{(peak - baseline) / 1024:.0f} after start-up)")


def replay(args: list[str], fsize: int | None = None) -> tuple[subprocess.CompletedProcess, float, float]:
    """A replay subprocess: (result, seconds, its own peak RSS in MiB from wait4)."""
    def limit() -> None:
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([sys.executable, "-m", "gadgets.tools.replay", *args], stdout=out, stderr=err, text=True,
                                 cwd=REPO, env=env, preexec_fn=limit)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        run = subprocess.CompletedProcess(child.args, child.returncode, out.read(), err.read())
    return run, time.monotonic() - started, usage.ru_maxrss / 1024


TMP_PREFIX = [""]


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("cardiomm-replay") or "error:" in line]
    traceback = " (TRACEBACK)" if "Traceback" in stderr else ""
    text = (lines[-1] if lines else stderr.strip().splitlines()[-1]) + traceback
    if TMP_PREFIX[0]:
        text = text.replace(TMP_PREFIX[0] + "/", "")
    return short(text, 110)


def replay_cases(scan, tmp: Path) -> None:
    import h5py
    import numpy as np

    raw = str(scan[0])
    chain = str(REPO / "chains" / "cardiomm_cine_python.xml")
    base = ["--chain", chain, "--checkpoint", "none", "-q"]
    out = tmp / "new.h5"
    run, seconds, rss = replay([raw, *base, "-o", str(out)], fsize=4096)
    row("10", "full disk (RLIMIT_FSIZE 4 kB), new output", f"exit {run.returncode}: {last_line(run.stderr)}; "
        f"output exists: {out.exists()}", seconds, f"replay peak {rss:.0f} MiB")
    out = tmp / "existing.h5"
    replay([raw, *base, "-o", str(out), "--group", "a"])
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    run, seconds, rss = replay([raw, *base, "-o", str(out), "--group", "b"], fsize=out.stat().st_size + 512)
    same = hashlib.sha256(out.read_bytes()).hexdigest() == digest
    row("10", "full disk (RLIMIT_FSIZE), existing output", f"exit {run.returncode}: {last_line(run.stderr)}; "
        f"unchanged: {same}", seconds, f"replay peak {rss:.0f} MiB")
    disk = tmp / "disk"
    disk.mkdir()
    if os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(disk)],
                                            capture_output=True).returncode == 0:
        try:
            target = disk / "out.h5"
            replay([raw, *base, "-o", str(target), "--group", "a"])
            digest = hashlib.sha256(target.read_bytes()).hexdigest()
            run, seconds, rss = replay([raw, *base, "-o", str(target), "--group", "b"])
            same = hashlib.sha256(target.read_bytes()).hexdigest() == digest
            row("10", "real full disk (48 kB tmpfs), existing output", f"exit {run.returncode}: "
                f"{last_line(run.stderr)}; unchanged: {same}", seconds, f"replay peak {rss:.0f} MiB")
        finally:
            subprocess.run(["umount", str(disk)], capture_output=True)
    else:
        row("10", "real full disk (tmpfs)", "skipped: cannot mount here", 0.0, "-")
    no_data = tmp / "no_data.h5"
    shutil.copy(raw, no_data)
    with h5py.File(no_data, "a") as f:
        del f["dataset/data"]
    flat = tmp / "flat.h5"
    shutil.copy(raw, flat)
    with h5py.File(flat, "a") as f:
        del f["dataset/data"]
        f["dataset/data"] = np.zeros((10, 5), np.float32)
    for name, path in (("no /dataset/data", no_data), ("non-compound /dataset/data", flat)):
        run, seconds, rss = replay([str(path), *base, "-o", str(tmp / "x.h5")])
        row("11", f"input with {name}", f"exit {run.returncode}: {last_line(run.stderr)}", seconds,
            f"replay peak {rss:.0f} MiB")
    broken = tmp / "broken.safetensors"
    broken.write_bytes(b"\x00 not safetensors" * 16)
    (tmp / "broken.json").write_text('{"format": "cardiomm-checkpoint"}')
    run, seconds, rss = replay([raw, "--chain", chain, "--checkpoint", str(broken), "-q", "-o", str(tmp / "y.h5")])
    row("11", "corrupt checkpoint", f"exit {run.returncode}; traceback: {'Traceback' in run.stderr}; "
        f"{last_line(run.stderr)}", seconds, f"replay peak {rss:.0f} MiB")
    run, seconds, rss = replay([raw, "--chain", chain, "--checkpoint", str(broken), "--allow-fallback", "-q",
                                "-o", str(tmp / "y.h5")])
    errors = sum(line.startswith("ERROR") for line in run.stderr.splitlines())
    row("11", "corrupt checkpoint, --allow-fallback", f"exit {run.returncode}; traceback: "
        f"{'Traceback' in run.stderr}; {errors} ERROR line; {last_line(run.stderr)}", seconds,
        f"replay peak {rss:.0f} MiB")
    fake = subprocess.Popen([sys.executable, "-c", KILLED_WORKER], stdout=subprocess.PIPE, text=True)
    port = int(fake.stdout.readline())
    run, seconds, rss = replay([raw, "--chain", str(worker_chain(tmp, port)), "--connect", "socket", "-q",
                                "-o", str(tmp / "z.h5")])
    fake.wait(60)
    row("13", "<connect> worker killed (SIGKILL) mid-scan", f"exit {run.returncode}: {last_line(run.stderr)}",
        seconds, f"replay peak {rss:.0f} MiB")


def policy_cases(scan, cache: Path, tmp: Path) -> None:
    path, header, xml, recon_data = scan
    secret = tmp / "private.safetensors"
    secret.write_bytes(b"\x00" * 64)
    worker, port = start_worker("--checkpoint", "none", env={"CARDIOMM_CACHE_DIR": str(cache)})
    try:
        for name, value in (("existing host file", str(secret)), ("missing file", str(tmp / "absent.safetensors")),
                            ("/etc/passwd", "/etc/passwd")):
            started = time.monotonic()
            result = play_gadgetron(port, xml, recon_data, {"checkpoint": value})
            reasons = {str(im.meta.get("CardioMM.FallbackReason")) for im in images_of(result)}
            row("12", f"CONFIG names {name}", f"{len(images_of(result))} fallback images; reason: "
                f"{short(' / '.join(reasons), 60)}", time.monotonic() - started, "-")
    finally:
        stop_worker(worker)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "reliability_network.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        TMP_PREFIX[0] = str(tmp)
        scan = make_tiny_scan(tmp)
        worker_cases(scan, tmp / "cache")
        client_cases(scan)
        connection_cases(scan, tmp / "cache")
        load_case(scan, tmp / "cache", tmp)
        replay_cases(scan, tmp)
        policy_cases(scan, tmp / "cache", tmp)
    lines = ["# Reliability: network, faults and configuration (issue 10, items 5, 6, 10-13)", "",
             f"Measured by `benchmarks/reliability_network.py` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, "
             "shared machine; times describe, they are not limits). Tiny scan: 1 slice, 4 phases, 2 coils, "
             "recon 16 x 12. The tests in `tests/reliability/` assert the same outcomes.", "",
             "| item | case | outcome | seconds | peak memory |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in ROWS]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
