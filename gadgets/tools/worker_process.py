"""A ``cardiomm-worker`` started as a child process, for the code that needs one running (the chain
benchmark, the worker's tests): it listens on a free port (``--port 0``) and announces it on stderr,
which is collected here line by line.

    worker = WorkerProcess("--checkpoint", "packaged", threads=1)
    try:
        port = worker.wait_ready()
        ...  # reach it as Gadgetron's <connect> does (gadgets.protocol.external_peer.ExternalPeer)
    finally:
        worker.stop()
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

#: The line the worker logs once it listens (:mod:`gadgets.tools.worker`).
READY = re.compile(r"cardiomm-worker ready on [^\s:]+:(\d+)")
#: Where the ``gadgets`` package lives: put on the child's PYTHONPATH, so a source checkout works uninstalled.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """``python -m gadgets.tools.worker --port 0 *args`` with its stderr collected in :attr:`lines`.

    ``env``: variables set for the child on top of this process's (after INFO logging, which the
    ready line needs); ``threads``: OMP/MKL threads of the child (None: their defaults). stdout is
    discarded. :attr:`port` and :attr:`ready_s` (seconds from the start to the ready line) are set
    once the worker announces its port.
    """

    def __init__(self, *args: str, env: Mapping[str, str] | None = None, threads: int | None = None) -> None:
        child_env = dict(os.environ)
        child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_ROOT), child_env.get("PYTHONPATH", "")]))
        child_env["GADGETRON_EXTERNAL_LOG_LEVEL"] = "INFO"
        if threads:
            child_env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
        child_env.update(env or {})
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "gadgets.tools.worker", "--port", "0", *args],
                                     env=child_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.port: int | None = None
        self.ready_s: float | None = None
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, name="worker-stderr", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            match = READY.search(line)
            if match and not self.ready.is_set():
                self.port = int(match.group(1))
                self.ready_s = time.perf_counter() - self.started
                self.ready.set()

    @property
    def log(self) -> str:
        """Everything the worker has written to stderr so far."""
        return "".join(self.lines)

    def wait_ready(self, timeout: float = 300.0) -> int:
        """The port, once the worker listens; RuntimeError with its log when it exits or ``timeout`` s pass
        first (a hang guard: a loaded machine may take long to start a worker)."""
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready (rc {self.proc.poll()}):\n{self.log[-4000:]}")
        assert self.port is not None
        return self.port

    def wait_exit(self, timeout: float = 300.0) -> int:
        """The exit status once the worker ends by itself (``subprocess.TimeoutExpired`` after ``timeout`` s)."""
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(5)

    def stop(self, grace: float = 60.0) -> None:
        """SIGTERM, up to ``grace`` s for the worker to finish its scans, then SIGKILL; close the pipe."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """Kill the worker if it still runs; close its stderr once the reader has seen its end."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()
