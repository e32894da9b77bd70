"""Issue 10, items 10, 11 and 13: cardiomm-replay under faults.

* 10: a full disk (RLIMIT_FSIZE in the replay subprocess, so any machine can run it; and a real
  1 MiB tmpfs where this process may mount one): one line, exit 4, no partial output, an existing
  output file byte-for-byte unchanged, no temporary file left behind;
* 11: unreadable inputs (no ``/dataset/data``, a non-compound ``data``) and a checkpoint that
  cannot be loaded: one line for the user, no traceback (the fallback images still come);
* 13: the exit codes are what ``--help`` and the docstring say: a killed ``<connect>`` worker and
  an unreachable one give 3, a worker that reports an error gives 1.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from gadgets.io.image_io import read_images, write_images_atomic
from gadgets.tools.replay import EXIT_CONNECTION, EXIT_FAILED, EXIT_OK, EXIT_OUTPUT, EXIT_USAGE
from tests.gadgets.harness import REPO_ROOT
from tests.reliability.network_helpers import GUARD, start_worker, stop_worker

CHAINS = REPO_ROOT / "chains"
PYTHON_CHAIN = CHAINS / "cardiomm_cine_python.xml"


def replay(*args: object, fsize: int | None = None, cwd: Path | None = None, env: dict | None = None
           ) -> subprocess.CompletedProcess:
    """``python -m gadgets.tools.replay ARGS`` in a subprocess, optionally with RLIMIT_FSIZE = ``fsize`` bytes."""

    def limit() -> None:
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    child_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1",
                 "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "gadgets.tools.replay", *map(str, args)], capture_output=True, text=True,
                          timeout=GUARD, cwd=cwd or REPO_ROOT, env=child_env, preexec_fn=limit)


def replay_here(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    """``cardiomm-replay ARGS`` in this process: (exit status, stderr)."""
    from gadgets.tools.replay import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def user_lines(stderr: str) -> list[str]:
    """The lines meant for the user (log warnings of the fallback aside)."""
    return [line for line in stderr.splitlines() if line.startswith("cardiomm-replay")]


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".partial") or p.name.startswith(".")]


# --------------------------------------------------------------------------- item 10: a full disk


@pytest.mark.slow
def test_full_disk_for_a_new_output(tiny_scan, tmp_path):
    out = tmp_path / "out.h5"
    run = replay(tiny_scan[0], "--chain", PYTHON_CHAIN, "-o", out, "--checkpoint", "none", "-q", fsize=4096)
    assert run.returncode == EXIT_OUTPUT, run.stderr
    assert "Traceback" not in run.stderr
    lines = user_lines(run.stderr)
    assert len(lines) == 1 and "cannot write the images" in lines[0] and "was not created" in lines[0], run.stderr
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.slow
def test_full_disk_leaves_an_existing_output_unchanged(tiny_scan, tmp_path, capsys):
    out = tmp_path / "out.h5"
    code, err = replay_here(capsys, tiny_scan[0], "--chain", PYTHON_CHAIN, "-o", out, "--group", "first",
                            "--checkpoint", "none", "-q")
    assert code == EXIT_OK, err
    before = digest(out)
    run = replay(tiny_scan[0], "--chain", PYTHON_CHAIN, "-o", out, "--group", "second", "--checkpoint", "none",
                 "-q", fsize=out.stat().st_size + 512)  # room for the copy, not for the new images
    assert run.returncode == EXIT_OUTPUT, run.stderr
    lines = user_lines(run.stderr)
    assert len(lines) == 1 and "is unchanged" in lines[0] and "Traceback" not in run.stderr, run.stderr
    assert digest(out) == before and leftovers(tmp_path) == []
    assert list(read_images(out, "first")) == [1]
    code, err = replay_here(capsys, tiny_scan[0], "--chain", PYTHON_CHAIN, "-o", out, "--group", "second",
                            "--checkpoint", "none", "-q")
    assert code == EXIT_OK, err  # with room, the second group is appended
    assert len(read_images(out, "first")[1]) == len(read_images(out, "second")[1]) == 4


def _mount_tmpfs(folder: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    folder.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                         timeout=30)
    return run.returncode == 0


@pytest.mark.slow
def test_real_full_disk_on_a_tiny_tmpfs(tiny_scan, tmp_path, capsys):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "48k"):
        pytest.skip("cannot mount a tmpfs here (needs root); the RLIMIT_FSIZE cases cover the same path")
    try:
        out = disk / "out.h5"
        code, err = replay_here(capsys, tiny_scan[0], "--chain", PYTHON_CHAIN, "-o", out, "--group", "g",
                                "--checkpoint", "none", "-q")
        assert code == EXIT_OK, err  # 25 kB: fits once, not twice
        before = digest(out)
        run = replay(tiny_scan[0], "--chain", PYTHON_CHAIN, "-o", out, "--group", "h", "--checkpoint", "none", "-q")
        assert run.returncode == EXIT_OUTPUT and "No space left on device" in run.stderr, run.stderr
        assert len(user_lines(run.stderr)) == 1 and "Traceback" not in run.stderr
        assert digest(out) == before and leftovers(disk) == []
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True, timeout=30)


def test_atomic_write_keeps_permissions_and_rejects_mismatched_images(tmp_path):
    import ismrmrd

    out = tmp_path / "images.h5"
    images = [ismrmrd.Image.from_array(np.full((1, 1, 6, 8), i, np.float32)) for i in range(3)]
    assert write_images_atomic(out, images, "a") == {0: 3}
    out.chmod(0o640)
    before = digest(out)
    wrong = [ismrmrd.Image.from_array(np.zeros((1, 1, 4, 4), np.float32))]
    with pytest.raises(ValueError, match="already holds"):
        write_images_atomic(out, wrong, "a")
    assert digest(out) == before and leftovers(tmp_path) == []
    write_images_atomic(out, images, "b")
    assert out.stat().st_mode & 0o777 == 0o640
    assert [im.data[0, 0, 0, 0] for im in read_images(out, "b")[0]] == [0, 1, 2]


# --------------------------------------------------------------------------- item 11: one line, no traceback


@pytest.fixture()
def broken_inputs(tiny_scan, tmp_path):
    no_data = tmp_path / "no_data.h5"
    shutil.copy(tiny_scan[0], no_data)
    with h5py.File(no_data, "a") as f:
        del f["dataset/data"]
    flat = tmp_path / "flat_data.h5"
    shutil.copy(tiny_scan[0], flat)
    with h5py.File(flat, "a") as f:
        del f["dataset/data"]
        f["dataset/data"] = np.zeros((10, 5), np.float32)
    return {"no /dataset/data": no_data, "non-compound data": flat}


@pytest.mark.parametrize("case", ["no /dataset/data", "non-compound data"])
@pytest.mark.parametrize("mode", ["local", "server"])
def test_unreadable_raw_file_is_one_line(broken_inputs, tmp_path, capsys, case, mode):
    where = ["--chain", PYTHON_CHAIN] if mode == "local" else ["--server", "127.0.0.1:9", "--config", "x.xml"]
    code, err = replay_here(capsys, broken_inputs[case], *where, "-o", tmp_path / "out.h5", "-q")
    assert code == EXIT_USAGE, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "/dataset/data" in errors[0], err


@pytest.mark.slow
def test_unloadable_checkpoint_falls_back_without_a_traceback(tiny_scan, tmp_path):
    """Asked for explicitly, an unloadable checkpoint is refused before the scan (one line, exit 2,
    nothing written); with --allow-fallback the scan gives marked fallback images, and the load
    failure is one ERROR line, no traceback."""
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00 not safetensors" * 16)
    (tmp_path / "broken.json").write_text('{"format": "cardiomm-checkpoint"}')
    out = tmp_path / "out.h5"
    run = replay(tiny_scan[0], "--chain", PYTHON_CHAIN, "-o", out, "--group", "g", "--checkpoint", broken, "-q")
    assert run.returncode == EXIT_USAGE and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "cannot load checkpoint" in run.stderr and "Traceback" not in run.stderr and not out.exists()
    run = replay(tiny_scan[0], "--chain", PYTHON_CHAIN, "-o", out, "--group", "g", "--checkpoint", broken, "-q",
                 "--allow-fallback")
    assert run.returncode == EXIT_OK, run.stderr
    assert "Traceback" not in run.stderr
    # the failure is one ERROR line (the fallback's WARNING follows), no traceback
    assert sum(line.startswith("ERROR") and "could not load checkpoint" in line
               for line in run.stderr.splitlines()) == 1, run.stderr
    images = read_images(out, "g")[1]
    assert len(images) == 4 and {im.meta["CardioMM.Fallback"] for im in images} == {"true"}
    assert all(np.isfinite(im.data).all() for im in images)


@pytest.mark.slow
def test_worker_with_an_unloadable_checkpoint_logs_one_line(tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00 not safetensors" * 16)
    (tmp_path / "broken.json").write_text('{"format": "cardiomm-checkpoint"}')
    # without --allow-fallback the worker refuses to start (tests/gadgets/test_worker.py); with it, it
    # serves the fallback and says why in one line
    worker, _port = start_worker("--checkpoint", str(broken), "--allow-fallback",
                                 env={"CARDIOMM_CACHE_DIR": str(tmp_path / "c")})
    assert stop_worker(worker) == 0
    assert "could not load" in worker.log and "Traceback" not in worker.log, worker.log


# --------------------------------------------------------------------------- item 13: exit codes


def worker_chain(tmp_path: Path, port: int, **properties: str) -> Path:
    text = (CHAINS / "cardiomm_cine_worker.xml").read_text()
    text = text.replace('<connect port="18000" address="localhost"', f'<connect port="{port}" address="127.0.0.1"')
    assert f'port="{port}"' in text
    if properties:
        from gadgets.protocol.chain_format import chain_from_xml

        text = chain_from_xml(text).with_properties("CardioMMRecon", **properties).to_xml()
    path = tmp_path / "chain.xml"
    path.write_text(text)
    return path


#: A stand-in worker that dies by SIGKILL once a scan's CONFIG has arrived (a killed worker, for real).
KILLED_WORKER = textwrap.dedent("""
    import os, signal, socket, sys
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    listener.settimeout(120)
    conn, _ = listener.accept()
    conn.settimeout(120)
    conn.recv(64)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_killed_worker_gives_exit_3(tiny_scan, tmp_path, capsys):
    with subprocess.Popen([sys.executable, "-c", KILLED_WORKER], stdout=subprocess.PIPE, text=True) as fake:
        try:
            port = int(fake.stdout.readline())
            code, err = replay_here(capsys, tiny_scan[0], "--chain", worker_chain(tmp_path, port), "--connect",
                                    "socket", "-o", tmp_path / "out.h5", "-q")
            assert fake.wait(GUARD) == -signal.SIGKILL
        finally:
            if fake.poll() is None:
                fake.kill()
    assert code == EXIT_CONNECTION, err
    assert "Traceback" not in err and len(user_lines(err)) == 1, err
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.slow
def test_unreachable_and_reporting_workers(tiny_scan, tmp_path, capsys):
    with __import__("socket").socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    code, err = replay_here(capsys, tiny_scan[0], "--chain", worker_chain(tmp_path, free), "--connect", "socket",
                            "-o", tmp_path / "out.h5", "-q")
    assert code == EXIT_CONNECTION and "cannot connect" in err, err
    worker, port = start_worker("--checkpoint", "none", env={"CARDIOMM_CACHE_DIR": str(tmp_path / "c")})
    try:
        code, err = replay_here(capsys, tiny_scan[0], "--chain", worker_chain(tmp_path, port, fallback="grappa"),
                                "--connect", "socket", "-o", tmp_path / "out.h5", "-q")
    finally:
        assert stop_worker(worker) == 0
    assert code == EXIT_FAILED and "fallback" in err and "Traceback" not in err, err


def test_help_lists_the_exit_codes(capsys):
    from gadgets.tools.replay import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for code in ("0 images written", "1 the chain or the server reported an error", "2 usage error",
                 "3 server or <connect> worker unreachable", "4 the images could not be written"):
        assert code in text, text
    import gadgets.tools.replay

    for code in range(5):
        assert f"\n    {code}  " in gadgets.tools.replay.__doc__
