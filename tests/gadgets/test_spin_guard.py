"""cardiomm_guard: the interpreter-level guard against gadgetron-python 1.4.1's spinning read.

The guard is installed by ``cardiomm_guard.pth`` in site-packages, so it must be active in every
``python -m gadgetron`` child of this environment, including children that run gadgetron-python's
own example gadgets (no code of this project imported) and children whose Gadgetron closes the
socket before CONFIG or HEADER. The child tests start the real ``python -m gadgetron`` from a
scratch directory with no PYTHONPATH, exactly as Gadgetron would, and play Gadgetron's side with
:func:`tests.gadgets.harness.run_gadget` (``close_after``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import cardiomm_guard
from tests.gadgets.harness import EchoGadget, assert_items_equal, run_gadget, synthetic_scan

REPO_ROOT = Path(__file__).resolve().parents[2]
#: A hang guard only: a healthy child exits in well under a second.
EXIT_DEADLINE_S = 60.0


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", cardiomm_guard.DISABLE_VARIABLE)}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _python(code: str, tmp_path: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env or _clean_env(),
                          capture_output=True, text=True, timeout=EXIT_DEADLINE_S)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_pth_file_is_installed_in_site_packages() -> None:
    purelib = Path(sysconfig.get_paths()["purelib"])
    pth = purelib / "cardiomm_guard.pth"
    assert pth.is_file(), f"{pth} is missing: reinstall the project (make install)"
    assert pth.read_text() == (REPO_ROOT / "cardiomm_guard.pth").read_text()


def test_guard_is_loaded_at_start_without_heavy_imports(tmp_path: Path) -> None:
    """A fresh interpreter (no PYTHONPATH, outside the repository) has the finder registered and
    has imported neither numpy nor gadgetron nor typing nor anything of the project besides the guard."""
    out = _python(
        "import sys; print(sorted(m for m in ('cardiomm_guard', 'numpy', 'gadgetron', 'ismrmrd', 'gadgets',"
        " 'torch', 'typing') if m in sys.modules))", tmp_path)
    assert out == "['cardiomm_guard']"


@pytest.mark.slow
def test_importing_gadgetron_external_patches_the_socket_wrapper(tmp_path: Path) -> None:
    out = _python("import gadgetron.external, cardiomm_guard, sys;"
                  "from gadgetron.external.connection import Connection;"
                  "print(cardiomm_guard.is_patched(), Connection.SocketWrapper.read.__module__)", tmp_path)
    assert out == "True cardiomm_guard"
    env = {**_clean_env(), cardiomm_guard.DISABLE_VARIABLE: "0"}
    out = _python("import gadgetron.external, cardiomm_guard; print(cardiomm_guard.is_patched())", tmp_path, env)
    assert out == "False"


def test_patched_read_raises_instead_of_spinning() -> None:
    import socket

    from gadgetron.external.connection import Connection

    assert cardiomm_guard.is_patched()
    left, right = socket.socketpair()
    wrapper = Connection.SocketWrapper(left)
    right.sendall(b"abc")
    right.close()
    with pytest.raises(cardiomm_guard.PeerVanished, match="3 of 5 bytes") as info:
        wrapper.read(5)
    assert info.value.received == 3 and isinstance(info.value, ConnectionError)
    wrapper.close()  # the peer has gone: no exception
    from gadgets.protocol.stream import PeerVanished

    assert PeerVanished is cardiomm_guard.PeerVanished  # one class for the guard and the gadgets


@pytest.fixture(scope="module")
def scan() -> object:
    return synthetic_scan(np.random.default_rng(11), n_slices=1, n_phases=1)


_CHILDREN = [
    pytest.param(("gadgetron.examples", "pass_through"), id="gadgetron-python-example"),
    pytest.param(("gadgets.noise_adjust", "NoiseAdjust"), id="cardiomm-gadget"),
]


@pytest.mark.slow
@pytest.mark.parametrize("target", _CHILDREN)
@pytest.mark.parametrize("close_after", ["accept", "config", "header"])
def test_child_exits_by_itself_when_gadgetron_closes_early(scan: object, target: tuple[str, str],
                                                           close_after: str) -> None:
    """Gadgetron closes before CONFIG, after CONFIG or after HEADER (a header it rejects, a node
    that failed): the real child exits by itself instead of spinning forever."""
    result = run_gadget(*target, header_xml=scan.header_xml, close_after=close_after,
                        exit_timeout=EXIT_DEADLINE_S, pythonpath=False)
    assert result.exited_by_itself, f"the child had to be killed (spin?):\n{result.stderr[-2000:]}"
    assert "spin guard is not active" not in result.stderr
    if close_after != "header":  # ended inside Connection.__init__, before any gadget code ran
        assert result.returncode != 0
        assert "peer closed the connection" in result.stderr, result.stderr[-2000:]


@pytest.mark.slow
def test_older_header_version_is_accepted_with_a_warning(scan: object) -> None:
    """A version-8 header (Debian's ismrmrd-tools) is read and served; the child warns."""
    header = scan.header_xml.replace('<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">',
                                     '<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">\n  <version>8</version>')
    assert "<version>8</version>" in header
    result = run_gadget("tests.gadgets.harness", "EchoGadget", header_xml=header, items=scan.acquisitions)
    assert result.protocol_error is None and result.errors == [], result.stderr
    assert result.closed and result.exited_by_itself and result.returncode == 0
    assert "ISMRMRD header version 8 differs from the schema version 14; accepted" in result.stderr
    assert_items_equal(result.items, list(EchoGadget()(iter(scan.acquisitions), scan.header)))
