"""Every shipped chain on a real Gadgetron 4.x server, against the project's local replay.

For each chain of ``chains/*.xml`` and each scan (a simulated cine with and without a noise
measurement; a Shepp-Logan file from Debian's ``ismrmrd_generate_cartesian_shepp_logan``, as
written with header version 8 and rewritten to the current version 14), the scan is streamed
through the real server with Gadgetron's own ``gadgetron_ismrmrd_client`` and with
``cardiomm-replay --server``; the images must equal the local replay's (``cardiomm-replay
--chain``): bit-identical for the Python chain, within 1e-6 relative where Gadgetron's native
gadgets do the arithmetic. After every scan no child process of Gadgetron may be left (a spinning
child would stay). Failure cases: a bad property, a header the server rejects, a killed worker, a
noise scan without the IDs the native NoiseAdjustGadget needs.

Run with ``make test-gadgetron`` (see conftest.py). Deadlines here are hang guards only.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from gadgets.io.image_io import read_images
from gadgets.io.ismrmrd_io import CURRENT_HEADER_VERSION, header_version, set_header_version
from gadgets.io.simulated_scan import write_simulated_scan
from gadgets.protocol.chain_format import load_chain
from tests.gadgetron_real.conftest import CHECKPOINT_DIR, TABLE, RealGadgetron, free_port, stop

pytestmark = pytest.mark.gadgetron

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAINS = sorted((REPO_ROOT / "chains").glob("*.xml"))
CHAIN_NAMES = [path.stem for path in CHAINS]
#: Hang guard for one scan (a fresh Python per external node imports torch on a loaded machine).
SCAN_DEADLINE_S = 600.0
#: Relative tolerance where Gadgetron's native gadgets (C++ arithmetic) replace the Python ones.
NATIVE_RTOL = 1e-6
WORKER_READY = re.compile(r"cardiomm-worker ready on [^\s:]+:(\d+)")



# --------------------------------------------------------------------------- scans


def _shepp_logan(folder: Path, *, noise: bool) -> Path:
    tool = shutil.which("ismrmrd_generate_cartesian_shepp_logan")
    if tool is None:
        pytest.skip("ismrmrd_generate_cartesian_shepp_logan (Debian ismrmrd-tools) is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "shepp_logan.h5"
    args = [tool, "-m", "64", "-c", "8", "-r", "1", "-O", "2", "-n", "0.05", "-o", str(path)]
    if noise:
        args.append("-C")
    done = subprocess.run(args, cwd=folder, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return path


def _rewrite_version(source: Path, target: Path, version: int) -> Path:
    shutil.copy(source, target)
    with h5py.File(target, "r+") as handle:  # in place: the dataset keeps the type the C++ library wrote
        text = handle["dataset/xml"][0]
        text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
        handle["dataset/xml"][0] = set_header_version(text, version).encode("utf-8")
    return target


@pytest.fixture(scope="session")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("real_scans")
    common = dict(n_slices=2, n_phases=4, n_coils=8, matrix=(64, 48), acceleration=4.0, pattern="ktGaussian",
                  modality="cine", noise_level=0.01)
    # different seeds, so different measurement IDs: the scan without a noise measurement can never
    # pick up the covariance the other one stored
    paths = {
        "cine + noise scan": write_simulated_scan(root / "cine_noise.h5", noise_scan=True, seed=3, **common).path,
        "cine, no noise scan": write_simulated_scan(root / "cine.h5", noise_scan=False, seed=5, **common).path,
    }
    mapping = {**common, "modality": "mapping"}
    paths["mapping + noise scan"] = write_simulated_scan(root / "map_noise.h5", noise_scan=True, seed=7, **mapping).path
    paths["mapping, no noise scan"] = write_simulated_scan(root / "map.h5", noise_scan=False, seed=9, **mapping).path
    sl8 = _shepp_logan(root / "sl", noise=False)
    with h5py.File(sl8, "r") as handle:
        text = handle["dataset/xml"][0]
    if header_version(text.decode() if isinstance(text, bytes) else text) != 8:
        # not Debian's ismrmrd-tools 1.8 first on PATH (e.g. ISMRMRD 1.14's beside Gadgetron): as Debian's writes it
        sl8 = _rewrite_version(sl8, root / "sl8.h5", 8)
    paths["Shepp-Logan v8"] = sl8
    paths[f"Shepp-Logan v{CURRENT_HEADER_VERSION}"] = _rewrite_version(sl8, root / "sl14.h5", CURRENT_HEADER_VERSION)
    paths["Shepp-Logan + noise, no IDs"] = _shepp_logan(root / "sl_noise", noise=True)
    return paths


# --------------------------------------------------------------------------- worker and chains


class Worker:
    def __init__(self, server: RealGadgetron, *args: str) -> None:
        self.port = free_port()
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.connected = threading.Event()
        self.proc = subprocess.Popen(["cardiomm-worker", "--port", str(self.port), "--device", "cpu", *args],
                                     env=server.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self.ready.wait(SCAN_DEADLINE_S):
            self.stop()
            raise RuntimeError("cardiomm-worker did not get ready:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if WORKER_READY.search(line):
                self.ready.set()
            if re.search(r"connection \d+ from", line):
                self.connected.set()

    def stop(self) -> None:
        stop(self.proc)
        self._reader.join(5)
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()  # else a ResourceWarning, an error under the suite's filterwarnings


@pytest.fixture(scope="module")
def worker(real_gadgetron: RealGadgetron) -> Any:
    running = Worker(real_gadgetron, "--checkpoint", "packaged")
    yield running
    running.stop()


def chain_file(name: str, folder: Path, *, worker_port: int | None = None, **properties: str) -> Path:
    """The chain's XML as this test sends it: the worker's port, and CardioMMRecon properties."""
    chain = load_chain(REPO_ROOT / "chains" / f"{name}.xml")
    if properties:
        chain = chain.with_properties("CardioMMRecon", **properties)
    text = chain.to_xml()
    if worker_port is not None:
        text, count = re.subn(r'(<connect\b[^>]*\bport=")\d+(")', rf"\g<1>{worker_port}\2", text)
        assert count >= 1, "the worker chain must have a <connect port=...>"  # (its comments mention it too)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.xml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- running scans


def run(args: list[str], env: dict[str, str], deadline: float = SCAN_DEADLINE_S) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=deadline,
                          stdin=subprocess.DEVNULL)


def gadgetron_client(server: RealGadgetron, scan: Path, chain: Path, out: Path) -> subprocess.CompletedProcess:
    return run([server.client, "-a", "127.0.0.1", "-p", server.port, "-f", scan, "-C", chain, "-o", out,
                "-G", "g"], server.env)


def replay_client(server: RealGadgetron, scan: Path, chain: Path, out: Path, *extra: str,
                  option: str = "--chain") -> subprocess.CompletedProcess:
    return run(["cardiomm-replay", scan, "--server", f"127.0.0.1:{server.port}", option, chain, "-o", out,
                "--group", "g", "-q", *extra], server.env)


_REFERENCES: dict[tuple[str, str], list[Any]] = {}


def local_reference(server: RealGadgetron, chain_name: str, scan_name: str, scan: Path, folder: Path) -> list[Any]:
    """Images of the local replay (``cardiomm-replay --chain``, the same environment), cached."""
    key = (chain_name, scan_name.replace("v8", f"v{CURRENT_HEADER_VERSION}"))
    if key not in _REFERENCES:
        out = folder / "local.h5"
        chain = REPO_ROOT / "chains" / f"{chain_name}.xml"
        done = run(["cardiomm-replay", scan, "--chain", chain, "-o", out, "--group", "g", "-q"], server.env)
        assert done.returncode == 0, done.stderr
        _REFERENCES[key] = sorted_images(out)
    return _REFERENCES[key]


def sorted_images(path: Path) -> list[Any]:
    images = [image for series in read_images(path, "g").values() for image in series]
    return sorted(images, key=lambda im: (int(im.image_series_index), int(im.slice), int(im.contrast),
                                          int(im.phase), int(im.set), int(im.repetition), int(im.image_index)))


def assert_same_images(got: list[Any], expected: list[Any], *, rtol: float) -> float:
    """Same count, geometry and indices; data bit-identical (rtol 0) or within rtol of the largest
    magnitude. Returns the largest relative difference."""
    assert len(got) == len(expected) > 0, f"{len(got)} images, expected {len(expected)}"
    worst = 0.0
    for number, (a, e) in enumerate(zip(got, expected)):
        for name in ("image_series_index", "slice", "phase", "contrast", "set", "repetition"):
            assert int(getattr(a, name)) == int(getattr(e, name)), f"image {number}: {name} differs"
        assert a.data.shape == e.data.shape and a.data.dtype == e.data.dtype, f"image {number}"
        scale = float(np.max(np.abs(e.data))) or 1.0
        difference = float(np.max(np.abs(a.data.astype(np.float64) - e.data.astype(np.float64)))) / scale
        worst = max(worst, difference)
        if rtol == 0:
            np.testing.assert_array_equal(a.data, e.data, err_msg=f"image {number}")
        else:
            assert difference <= rtol, f"image {number}: relative difference {difference:.3g} > {rtol}"
    return worst


def assert_clean(server: RealGadgetron) -> None:
    left = server.wait_no_children()
    assert not left, f"Gadgetron children still running after the scan: {left}"
    server.assert_alive()


def tolerance(chain_name: str) -> float:
    return 0.0 if chain_name.endswith("_python") else NATIVE_RTOL


# --------------------------------------------------------------------------- failure cases


def test_bad_property_fails_the_scan_with_its_name(real_gadgetron: RealGadgetron, scans: dict[str, Path],
                                                  tmp_path: Path) -> None:
    chain = chain_file("cardiomm_cine_python", tmp_path, fallback="bogus")
    done = replay_client(real_gadgetron, scans["cine + noise scan"], chain, tmp_path / "out.h5")
    assert done.returncode == 1, done.stderr
    assert "fallback" in done.stderr and "bogus" in done.stderr, done.stderr
    assert_clean(real_gadgetron)
    TABLE[("cardiomm_cine_python", "bad property", "cardiomm-replay")] = "error naming the property"


@pytest.mark.parametrize("client", ["gadgetron_ismrmrd_client", "cardiomm-replay"])
def test_rejected_header_ends_with_an_error_and_no_process_left(real_gadgetron: RealGadgetron,
                                                               scans: dict[str, Path], tmp_path: Path,
                                                               client: str) -> None:
    """Version 8 through the python chain: Gadgetron cannot send the header to its external nodes;
    the scan ends (no hang, no spinning child) with an error at the client."""
    chain = chain_file("cardiomm_cine_python", tmp_path)
    started = time.monotonic()
    if client == "gadgetron_ismrmrd_client":
        done = gadgetron_client(real_gadgetron, scans["Shepp-Logan v8"], chain, tmp_path / "out.h5")
        text = done.stdout + done.stderr
        assert "does not match library schema version" in text or "rror" in text, text
    else:
        done = replay_client(real_gadgetron, scans["Shepp-Logan v8"], chain, tmp_path / "out.h5")
        assert done.returncode != 0, done.stderr
        assert "has ISMRMRD header version 8" in done.stderr and "--header-version 14" in done.stderr
        assert "server error" in done.stderr or "without CLOSE" in done.stderr, done.stderr
    seconds = time.monotonic() - started
    assert_clean(real_gadgetron)
    TABLE[("cardiomm_cine_python", "Shepp-Logan v8 as written (server rejects it)", client)] = (
        f"error at the client after {seconds:.1f} s, no process left")


def test_killed_worker_fails_the_scan_and_the_server_goes_on(real_gadgetron: RealGadgetron,
                                                             scans: dict[str, Path], tmp_path: Path) -> None:
    doomed = Worker(real_gadgetron, "--checkpoint", "packaged")
    chain = chain_file("cardiomm_cine_worker", tmp_path, worker_port=doomed.port)
    result: dict[str, subprocess.CompletedProcess] = {}
    client = threading.Thread(target=lambda: result.setdefault(
        "done", replay_client(real_gadgetron, scans["cine, no noise scan"], chain, tmp_path / "out.h5")))
    client.start()
    try:
        assert doomed.connected.wait(SCAN_DEADLINE_S), "Gadgetron never reached the worker"
        doomed.proc.send_signal(signal.SIGKILL)
        client.join(SCAN_DEADLINE_S)
        assert not client.is_alive(), "the client hangs after the worker was killed"
    finally:
        doomed.stop()
    done = result["done"]
    assert done.returncode != 0, done.stderr
    assert "server error" in done.stderr or "without CLOSE" in done.stderr, done.stderr
    assert_clean(real_gadgetron)
    TABLE[("cardiomm_cine_worker", "worker killed mid-scan", "cardiomm-replay")] = "error, server goes on"


def test_native_noise_adjust_without_ids_fails_with_an_error(real_gadgetron: RealGadgetron,
                                                             scans: dict[str, Path], tmp_path: Path) -> None:
    """Documented (chains/README.md): Gadgetron's NoiseAdjustGadget needs patientID + measurementID
    (or a four-part measurementID) for a scan with a noise measurement; without them the scan fails
    with an error at the client, and nothing is left running."""
    scan = _rewrite_version(scans["Shepp-Logan + noise, no IDs"], tmp_path / "sl_noise14.h5", CURRENT_HEADER_VERSION)
    chain = chain_file("cardiomm_cine_native", tmp_path)
    done = replay_client(real_gadgetron, scan, chain, tmp_path / "out.h5")
    assert done.returncode != 0, done.stderr
    assert "server error" in done.stderr, done.stderr
    assert_clean(real_gadgetron)
    TABLE[("cardiomm_cine_native", "Shepp-Logan + noise, no IDs", "cardiomm-replay")] = "error (documented)"


# --------------------------------------------------------------------------- the table

_SHEPP_LOGAN = ["Shepp-Logan v8", f"Shepp-Logan v{CURRENT_HEADER_VERSION}"]


def _scans_of(chain_name: str) -> list[str]:
    """The simulated scans of the chain's kind (cine or mapping) with and without a noise
    measurement, and the Shepp-Logan file as written and rewritten."""
    kind = "mapping" if "mapping" in chain_name else "cine"
    return [f"{kind} + noise scan", f"{kind}, no noise scan", *_SHEPP_LOGAN]


_CELLS = [(chain, scan) for chain in CHAIN_NAMES for scan in _scans_of(chain)]


@pytest.mark.parametrize("client", ["gadgetron_ismrmrd_client", "cardiomm-replay"])
@pytest.mark.parametrize("chain_name, scan_name", _CELLS, ids=[f"{c}-{s}" for c, s in _CELLS])
def test_chain_on_the_real_server_equals_the_local_replay(real_gadgetron: RealGadgetron, worker: Worker,
                                                          scans: dict[str, Path], tmp_path: Path, chain_name: str,
                                                          scan_name: str, client: str) -> None:
    if scan_name == "Shepp-Logan v8" and client == "gadgetron_ismrmrd_client":
        pytest.skip("gadgetron_ismrmrd_client sends version 8 as written: the server rejects it "
                    "(test_rejected_header_ends_with_an_error_and_no_process_left)")
    scan = scans[scan_name]
    is_worker = "<connect" in (REPO_ROOT / "chains" / f"{chain_name}.xml").read_text()
    chain = chain_file(chain_name, tmp_path, worker_port=worker.port if is_worker else None)
    out = tmp_path / "out.h5"
    if client == "gadgetron_ismrmrd_client":
        done = gadgetron_client(real_gadgetron, scan, chain, out)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    else:
        extra = ["--header-version", str(CURRENT_HEADER_VERSION)] if scan_name == "Shepp-Logan v8" else []
        option = "--config" if chain_name.endswith("_python") else "--chain"  # a local file given to --config
        done = replay_client(real_gadgetron, scan, chain, out, *extra, option=option)
        assert done.returncode == 0, done.stderr[-3000:]
        if option == "--config":
            assert "is a local file: sending its XML" in done.stderr
    got = sorted_images(out)
    expected = local_reference(real_gadgetron, chain_name, scan_name, scan, tmp_path)
    worst = assert_same_images(got, expected, rtol=tolerance(chain_name))
    assert_clean(real_gadgetron)
    how = "bit-identical" if worst == 0 else f"max rel. diff {worst:.1e}"
    label = scan_name + (" (replay --header-version 14)" if scan_name == "Shepp-Logan v8" else "")
    TABLE[(chain_name, label, client)] = f"{len(got)} image{'s' if len(got) != 1 else ''}, {how}"


# --------------------------------------------------------------------------- the authors' architecture


@pytest.fixture(scope="module")
def official_checkpoint() -> Path:
    """The official-architecture test network (tests/fixtures/official: a seeded Lightning .ckpt in
    the authors' layout) imported as the project's checkpoint, for a 512-d hashing encoder (no CLIP
    weights here), inside the folder the server's gadgets accept checkpoints from."""
    from cardiomm_core.official_import import import_official

    CHECKPOINT_DIR.mkdir(parents=True, exist_ok=True)
    source = REPO_ROOT / "tests" / "fixtures" / "official" / "tiny_official.ckpt"
    return import_official(source, CHECKPOINT_DIR / "official_tiny.safetensors", text_encoder_name="hashing-512")[0]


@pytest.mark.parametrize("chain_name", CHAIN_NAMES)
def test_official_architecture_runs_through_every_chain(real_gadgetron: RealGadgetron, worker: Worker,
                                                        scans: dict[str, Path], official_checkpoint: Path,
                                                        tmp_path: Path, chain_name: str) -> None:
    """An official-architecture checkpoint named in the chain: the server's images come from it
    (CardioMM, its provenance in CardioMM.Model, not a fallback) and equal the local replay's."""
    scan = scans["mapping + noise scan" if "mapping" in chain_name else "cine + noise scan"]
    is_worker = "<connect" in (REPO_ROOT / "chains" / f"{chain_name}.xml").read_text()
    chain = chain_file(chain_name, tmp_path / "sent", worker_port=worker.port if is_worker else None,
                       checkpoint=str(official_checkpoint))
    out = tmp_path / "out.h5"
    done = replay_client(real_gadgetron, scan, chain, out)
    assert done.returncode == 0, done.stderr[-3000:]
    got = sorted_images(out)
    for image in got:
        assert image.meta["CardioMM.Method"] == "cardiomm" and image.meta["CardioMM.Fallback"] == "false"
        assert "official_tiny.safetensors" in image.meta["CardioMM.Model"]
    local_chain = chain_file(chain_name, tmp_path / "local", checkpoint=str(official_checkpoint))
    local = tmp_path / "local.h5"
    ran = run(["cardiomm-replay", scan, "--chain", local_chain, "-o", local, "--group", "g", "-q"], real_gadgetron.env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    worst = assert_same_images(got, sorted_images(local), rtol=tolerance(chain_name))
    assert_clean(real_gadgetron)
    how = "bit-identical" if worst == 0 else f"max rel. diff {worst:.1e}"
    TABLE[(chain_name, "official architecture (tiny, imported)", "cardiomm-replay")] = f"{len(got)} images, {how}"
