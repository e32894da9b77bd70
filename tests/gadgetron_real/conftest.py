"""A real Gadgetron 4.x server (and its MRD storage server) for the tests of this folder.

These tests run only when asked: ``make test-gadgetron`` (or ``CARDIOMM_TEST_GADGETRON=1 pytest
tests/gadgetron_real``). They are skipped, with a message, in a plain ``make test`` and wherever no
Gadgetron can be found. Gadgetron is looked for in ``$GADGETRON_HOME/bin``, on ``PATH``, then in
``/opt/gadgetron-4.7.2`` (the prefix of ``../shared/gadgetron/build.sh``, which ``make
test-gadgetron`` runs when none is found). The storage server ``mrd-storage-server`` is looked for
beside ``gadgetron`` and on PATH.

The server runs on 127.0.0.1 with this interpreter's environment first on PATH, so the
``python -m gadgetron`` children that Gadgetron starts for ``<execute>`` nodes use the venv that
holds gadgetron-python and this project (and its ``cardiomm_guard.pth``). Gadgetron and the storage
server are started once per session on free ports, in scratch folders, and stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ENABLE_VARIABLE = "CARDIOMM_TEST_GADGETRON"
#: Where the results table goes (markdown) when set; it is printed at the end of the run too.
TABLE_VARIABLE = "CARDIOMM_GADGETRON_TABLE"

#: Results for the summary table, filled by the tests: (chain, scan, client) -> outcome.
TABLE: dict[tuple[str, str, str], str] = {}
DEFAULT_PREFIX = Path("/opt/gadgetron-4.7.2")
#: Hang guard for a server to start listening (seconds).
START_DEADLINE_S = 120.0


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_gadgetron() -> Path | None:
    """``gadgetron`` from GADGETRON_HOME, PATH or the default prefix (None when there is none)."""
    home = os.environ.get("GADGETRON_HOME")
    candidates: list[Path] = []
    if home:
        candidates.append(Path(home) / "bin" / "gadgetron")
    on_path = shutil.which("gadgetron")
    if on_path:
        candidates.append(Path(on_path))
    candidates.append(DEFAULT_PREFIX / "bin" / "gadgetron")
    for candidate in candidates:
        if _executable(candidate) and _executable(candidate.parent / "gadgetron_ismrmrd_client"):
            return candidate.resolve()
    return None


def find_storage_server(gadgetron: Path) -> Path | None:
    beside = gadgetron.parent / "mrd-storage-server"
    if _executable(beside):
        return beside
    on_path = shutil.which("mrd-storage-server")
    return Path(on_path) if on_path else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    ours = [item for item in items if here in Path(str(item.fspath)).parents]
    if not ours:
        return
    if os.environ.get(ENABLE_VARIABLE) != "1":
        reason = f"real-Gadgetron tests run with `make test-gadgetron` ({ENABLE_VARIABLE}=1)"
    elif find_gadgetron() is None:
        reason = ("no Gadgetron found (GADGETRON_HOME, PATH, /opt/gadgetron-4.7.2); `make test-gadgetron` builds one "
                  "from ../shared/gadgetron when its build.sh is there")
    else:
        return
    for item in ours:
        item.add_marker(pytest.mark.skip(reason=reason))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on {port} within {START_DEADLINE_S:.0f} s") from None
            time.sleep(0.2)


def stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            children.append(int(entry.name))
    return children


#: Environment variable that marks every process Gadgetron starts (its children inherit it, and keep
#: it after they are orphaned), so that a left-over or spinning child is found wherever it went.
MARK_VARIABLE = "CARDIOMM_REAL_GADGETRON_MARK"


def marked_pids(token: str, exclude: tuple[int, ...] = ()) -> list[int]:
    """Live processes whose environment holds ``MARK_VARIABLE=token`` (from /proc)."""
    needle = f"{MARK_VARIABLE}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append(int(entry.name))
    return found


#: Checkpoints that chains sent by the tests may name (the gadgets accept CONFIG-named checkpoints
#: only inside $CARDIOMM_CHECKPOINT_DIR or the packaged models folder).
CHECKPOINT_DIR = Path(tempfile.gettempdir()) / f"cardiomm-real-gadgetron-{os.getpid()}-checkpoints"


def runtime_env(gadgetron: Path) -> dict[str, str]:
    """Environment for Gadgetron, its clients and the local reference replays: this venv first on
    PATH, Gadgetron's libraries found, one BLAS/torch thread (same arithmetic everywhere)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CARDIOMM_SPIN_GUARD")}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, str(gadgetron.parent), env.get("PATH", "")])
    prefix_lib = gadgetron.parent.parent / "lib"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(prefix_lib), env.get("LD_LIBRARY_PATH", "")]))
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                "OMP_WAIT_POLICY": "PASSIVE", "GADGETRON_EXTERNAL_LOG_LEVEL": "INFO",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CARDIOMM_CHECKPOINT_DIR": str(CHECKPOINT_DIR)})
    return env


@dataclass
class RealGadgetron:
    """A running Gadgetron (and storage server): ports, binaries, environment, logs."""

    gadgetron: Path
    client: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen
    log: Path
    storage_port: int | None
    workdir: Path
    mark: str = ""
    extra: list[subprocess.Popen] = field(default_factory=list)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def children(self) -> list[int]:
        """Every process Gadgetron started that is still running: its children, and any descendant
        or orphan that carries its environment mark."""
        return sorted(set(child_pids(self.proc.pid)) | set(marked_pids(self.mark, exclude=(self.proc.pid,))))

    def wait_no_children(self, deadline_s: float = 90.0) -> list[int]:
        """Wait (hang guard) until no process Gadgetron started is left; return those still there."""
        stop_at = time.monotonic() + deadline_s
        while True:
            left = self.children()
            if not left or time.monotonic() > stop_at:
                return left
            time.sleep(0.2)

    def assert_alive(self) -> None:
        assert self.proc.poll() is None, f"Gadgetron exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}"


@pytest.fixture(scope="session")
def real_gadgetron(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealGadgetron]:
    gadgetron = find_gadgetron()
    if gadgetron is None:  # pragma: no cover - collection already skips
        pytest.skip("no Gadgetron found")
    storage = find_storage_server(gadgetron)
    if storage is None:
        pytest.skip("no mrd-storage-server beside gadgetron or on PATH (../shared/gadgetron/build_storage_server.sh "
                    "builds one; make test-gadgetron runs it)")
    root = tmp_path_factory.mktemp("real_gadgetron")
    env = runtime_env(gadgetron)
    for name in ("work", "db", "storage", "mrd"):
        (root / name).mkdir()
    storage_port = free_port()
    storage_log = root / "storage.log"
    storage_env = {**env, "MRD_STORAGE_SERVER_PORT": str(storage_port),
                   "MRD_STORAGE_SERVER_HOST": "127.0.0.1",
                   "MRD_STORAGE_SERVER_DATABASE_CONNECTION_STRING": str(root / "mrd" / "metadata.db"),
                   "MRD_STORAGE_SERVER_STORAGE_CONNECTION_STRING": str(root / "mrd" / "blobs")}
    with open(storage_log, "wb") as out:
        storage_proc = subprocess.Popen([str(storage)], env=storage_env, cwd=root, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_listening(storage_port, storage_proc, storage_log, "mrd-storage-server")
        port = free_port()
        log = root / "gadgetron.log"
        mark = uuid.uuid4().hex
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(gadgetron), "-p", str(port), "-E", f"http://127.0.0.1:{storage_port}",
                 "-W", str(root / "work"), "-D", str(root / "db"), "-S", str(root / "storage")],
                env={**env, MARK_VARIABLE: mark}, cwd=root, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT)
        server = RealGadgetron(gadgetron=gadgetron, client=gadgetron.parent / "gadgetron_ismrmrd_client",
                               port=port, env=env, proc=proc, log=log, storage_port=storage_port, workdir=root,
                               mark=mark, extra=[storage_proc])
        try:
            wait_listening(port, proc, log, "gadgetron")
            yield server
        finally:
            left_over = server.children()
            stop(proc)
            left = sorted(set(left_over) | set(server.wait_no_children(10)))
            for pid in left:  # never leave a child behind, even after a failure
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
    finally:
        stop(storage_proc)


def results_table() -> str:
    """TABLE as markdown: one row per chain and scan, one column per client."""
    clients = sorted({client for _, _, client in TABLE})
    rows = sorted({(chain, scan) for chain, scan, _ in TABLE})
    lines = ["| chain | scan | " + " | ".join(clients) + " |", "|---|---|" + "---|" * len(clients)]
    for chain, scan in rows:
        cells = [TABLE.get((chain, scan, client), "") for client in clients]
        lines.append(f"| {chain} | {scan} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TABLE:
        return
    text = results_table()
    terminalreporter.write_sep("-", "real Gadgetron: chains x scans x clients")
    terminalreporter.write(text)
    target = os.environ.get(TABLE_VARIABLE)
    if target:
        Path(target).write_text(text)
