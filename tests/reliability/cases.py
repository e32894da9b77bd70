"""Reliability cases of issue 10: broken inputs through the real replay, each with its expected outcome.

A :class:`Case` builds its input in a scratch folder (a real ISMRMRD file written by
``gadgets.tools.simulate`` or Debian's ``ismrmrd_generate_cartesian_shepp_logan``, then damaged with
h5py the way a faulty converter or a hostile peer would), runs ``python -m gadgets.tools.replay`` in a
child process (under ``RLIMIT_AS`` when the case is about memory) and checks the outcome:
finite images of the right count and geometry, or a one-line error and a non-zero exit.
:func:`run_case` returns a :class:`CaseResult` with the outcome, the seconds and the child's peak
memory (``ru_maxrss`` from ``wait4``); ``tests/reliability/test_data_path.py`` runs each case as
one test and ``benchmarks/reliability.py`` writes the table.

To add a case: append a ``Case`` to :data:`CASES` (or build your own list and pass it to
``benchmarks/reliability.py``'s ``main``). A case's ``run`` may also do something other than a
replay (e.g. a network case): it gets the scratch folder and returns a :class:`CaseResult`.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The chain every replay case runs (all Python gadgets, local runner).
CHAIN = REPO_ROOT / "chains" / "cardiomm_cine_python.xml"
#: The small simulated scan the cases start from: 2 slices x 4 phases = 8 images of 32 x 24.
SIM = dict(slices=2, phases=4, coils=4, matrix="32x24", accel=4, acs=4, seed=7)
N_IMAGES = 8
IMAGE_SHAPE = (24, 32)  # (y, x)
#: Hang guard for one child (never a timing assertion).
CHILD_TIMEOUT_S = 300


@dataclass
class ReplayRun:
    """What one replay child did."""

    returncode: int
    stderr: str
    seconds: float
    peak_rss_mb: float
    images: list[Any] = field(default_factory=list)


@dataclass
class CaseResult:
    """Outcome of one case: ``ok`` when the expectation held; ``outcome`` one line for the table."""

    name: str
    item: str
    ok: bool
    outcome: str
    seconds: float
    peak_rss_mb: float


@dataclass
class Case:
    """One reliability case: ``run(folder) -> CaseResult``."""

    name: str
    item: str
    description: str
    run: Callable[[Path], CaseResult]


# --------------------------------------------------------------------------- running


def run_replay(input_path: Path, out: Path, extra: Sequence[str] = (), *, memory_limit_mb: int | None = None,
               env: dict[str, str] | None = None, timeout: float = CHILD_TIMEOUT_S) -> ReplayRun:
    """``python -m gadgets.tools.replay INPUT --chain CHAIN -o OUT --checkpoint none -q EXTRA`` in a child.

    ``memory_limit_mb`` sets ``RLIMIT_AS`` in the child (address space, so it must cover the
    interpreter, torch and the scan). Images are read back from ``out`` when it exists.
    """
    args = [sys.executable, "-m", "gadgets.tools.replay", str(input_path), "--chain", str(CHAIN), "-o", str(out), "-q",
            "--group", "out"]
    if "--checkpoint" not in extra:
        args += ["--checkpoint", "none"]
    args += list(extra)
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH", "")]))
    child_env.setdefault("OMP_NUM_THREADS", "1")
    child_env.update(env or {})

    def limit() -> None:
        if memory_limit_mb is not None:
            size = memory_limit_mb * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (size, size))

    started = time.monotonic()
    stderr_path = out.with_suffix(".stderr")
    with open(stderr_path, "wb") as stderr_file:
        proc = subprocess.Popen(args, cwd=REPO_ROOT, env=child_env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=stderr_file, preexec_fn=limit)
        deadline = started + timeout
        status, usage = 0, None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    images: list[Any] = []
    if out.exists():
        from gadgets.io.image_io import read_images

        try:
            for series in read_images(out, "out").values():
                images.extend(series)
        except ValueError:
            pass
    return ReplayRun(proc.returncode, stderr_path.read_text(errors="replace"), seconds,
                     (usage.ru_maxrss / 1024.0) if usage is not None else float("nan"), images)


# --------------------------------------------------------------------------- inputs


def simulate(path: Path, **overrides: Any) -> Path:
    """``cardiomm-simulate`` (in process) with :data:`SIM` and ``overrides``."""
    from gadgets.tools.simulate import main

    options = {**SIM, **overrides}
    argv = [str(path), "-q"]
    for key, value in options.items():
        argv += [f"--{key}", str(value)]
    if main(argv) != 0:
        raise RuntimeError(f"cardiomm-simulate {argv} failed")
    return path


def mutate(path: Path, change: Callable[[np.ndarray], None]) -> Path:
    """Apply ``change`` to the compound ``/dataset/data`` array of ``path`` (read, change, write back)."""
    with h5py.File(path, "r+") as handle:
        rows = handle["dataset/data"][()]
        change(rows)
        handle["dataset/data"][...] = rows
    return path


def set_xml(path: Path, change: Callable[[str], str]) -> Path:
    """Replace ``/dataset/xml`` of ``path`` by ``change(text)``."""
    with h5py.File(path, "r+") as handle:
        text = handle["dataset/xml"][0]
        text = text.decode() if isinstance(text, bytes) else str(text)
        new = change(text)
        del handle["dataset/xml"]
        handle.create_dataset("dataset/xml", data=np.array([new.encode()], dtype=h5py.string_dtype()))
    return path


def imaging_rows(rows: np.ndarray) -> np.ndarray:
    """Indices of the imaging (not noise) acquisitions of a compound data array."""
    noise_bit = np.uint64(1 << (19 - 1))  # ACQ_IS_NOISE_MEASUREMENT
    return np.flatnonzero((rows["head"]["flags"] & noise_bit) == 0)


def noise_rows(rows: np.ndarray) -> np.ndarray:
    noise_bit = np.uint64(1 << (19 - 1))
    return np.flatnonzero((rows["head"]["flags"] & noise_bit) != 0)


def set_sample(rows: np.ndarray, row: int, value: float, position: int = 0) -> None:
    data = np.array(rows[row]["data"], dtype=np.float32, copy=True)
    data[position] = value
    rows[row]["data"] = data


def set_counter(rows: np.ndarray, row: int, name: str, value: int) -> None:
    idx = rows["head"]["idx"]
    idx[name][row] = value
    head = rows["head"]
    head["idx"] = idx
    rows["head"] = head


def shepp_logan(folder: Path) -> Path:
    """A fully sampled file from Debian's C++ ``ismrmrd_generate_cartesian_shepp_logan`` (32 x 32, 4 coils)."""
    tool = shutil.which("ismrmrd_generate_cartesian_shepp_logan")
    if tool is None:
        raise FileNotFoundError("ismrmrd_generate_cartesian_shepp_logan (Debian ismrmrd-tools) is not installed")
    path = folder / "shepp_logan.h5"
    subprocess.run([tool, "-m", "32", "-c", "4", "-r", "1", "-O", "2", "-n", "0.05", "-C", "-o", str(path)],
                   cwd=folder, check=True, capture_output=True, timeout=60)
    return path


# --------------------------------------------------------------------------- expectations


def _meta(image: Any, key: str) -> str | None:
    try:
        value = image.meta.get(key)
    except Exception:  # noqa: BLE001
        return None
    return None if value is None else str(value)


def images_problem(run: ReplayRun, n_images: int = N_IMAGES, shape: tuple[int, int] = IMAGE_SHAPE) -> str | None:
    """None when the run exited 0 with ``n_images`` finite images of ``shape`` (y, x), else why not."""
    if run.returncode != 0:
        return f"exit {run.returncode}: {last_line(run.stderr)}"
    if len(run.images) != n_images:
        return f"{len(run.images)} images, expected {n_images}"
    for image in run.images:
        data = np.asarray(image.data)
        if data.shape[-2:] != shape:
            return f"image shape {data.shape[-2:]}, expected {shape}"
        if not np.isfinite(data).all():
            return "an image holds NaN or Inf"
        if not np.abs(data).max() > 0:
            return "an image is all zero"
    return None


def error_problem(run: ReplayRun, *words: str) -> str | None:
    """None when the run exited non-zero with a short error naming ``words``, no traceback."""
    if run.returncode == 0:
        return f"exit 0 with {len(run.images)} images, expected an error"
    if "Traceback" in run.stderr:
        return "a traceback reached the user"
    text = run.stderr.lower()
    missing = [w for w in words if w.lower() not in text]
    if missing:
        return f"error does not name {missing}: {last_line(run.stderr)}"
    return None


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def dropped(run: ReplayRun) -> dict[str, int]:
    """Drop counts of the run's images (largest of each kind)."""
    keys = {"total": "CardioMM.DroppedAcquisitions", "non_finite": "CardioMM.Dropped.NonFinite",
            "magnitude": "CardioMM.Dropped.Magnitude", "outside_limits": "CardioMM.Dropped.OutsideLimits"}
    return {name: max((int(_meta(im, key) or 0) for im in run.images), default=0) for name, key in keys.items()}


def _result(case_name: str, item: str, run: ReplayRun, problem: str | None, ok_text: str) -> CaseResult:
    return CaseResult(case_name, item, problem is None, ok_text if problem is None else f"FAILED: {problem}",
                      run.seconds, run.peak_rss_mb)


# --------------------------------------------------------------------------- the cases


def _dropped_case(name: str, item: str, description: str, damage: Callable[[np.ndarray], None], kind: str,
                  n_dropped: int, n_images: int = N_IMAGES, sim: dict[str, Any] | None = None) -> Case:
    def run(folder: Path) -> CaseResult:
        path = mutate(simulate(folder / "in.h5", **(sim or {})), damage)
        replay = run_replay(path, folder / "out.h5")
        problem = images_problem(replay, n_images)
        counts = dropped(replay) if problem is None else {}
        if problem is None and counts.get(kind) != n_dropped:
            problem = f"images report {counts}, expected {kind} = {n_dropped}"
        if problem is None and "dropped acquisitions" not in replay.stderr:
            problem = "the replay summary does not count the dropped acquisitions"
        return _result(name, item, replay, problem,
                       f"{n_images} finite images; {n_dropped} dropped ({kind}) in meta and summary")
    return Case(name, item, description, run)


def _first_imaging(rows: np.ndarray) -> int:
    return int(imaging_rows(rows)[0])


def _nan_one(rows: np.ndarray) -> None:
    set_sample(rows, int(imaging_rows(rows)[50]), np.nan, 7)


def _inf_lines(rows: np.ndarray) -> None:
    for row in imaging_rows(rows)[10:14]:
        set_sample(rows, int(row), np.inf, 3)


def _huge(rows: np.ndarray) -> None:
    set_sample(rows, int(imaging_rows(rows)[30]), 3e38, 0)


def _counter(name: str, value: int) -> Callable[[np.ndarray], None]:
    def change(rows: np.ndarray) -> None:
        set_counter(rows, int(imaging_rows(rows)[20]), name, value)
    return change


def _nan_noise(folder: Path) -> CaseResult:
    path = mutate(simulate(folder / "in.h5"), lambda rows: set_sample(rows, int(noise_rows(rows)[0]), np.nan, 5))
    replay = run_replay(path, folder / "out.h5")
    problem = images_problem(replay)
    if problem is None and "noise scan" not in replay.stderr:
        problem = "no warning about the noise scan"
    return _result("nan_in_noise_scan", "1", replay, problem, "8 finite images; noise acquisition left out, warned")


def _all_invalid(folder: Path) -> CaseResult:
    def damage(rows: np.ndarray) -> None:
        for row in imaging_rows(rows):
            set_sample(rows, int(row), np.nan, 0)
    path = mutate(simulate(folder / "in.h5"), damage)
    replay = run_replay(path, folder / "out.h5")
    problem = error_problem(replay, "no valid imaging acquisition")
    return _result("all_acquisitions_nan", "1/2", replay, problem, "exit 1, one-line error 'no valid imaging acquisition'")


def _nan_checkpoint(folder: Path) -> CaseResult:
    import torch

    from cardiomm_core.checkpoint import save_checkpoint
    from cardiomm_core.model import CardioMM, config_by_name

    model = CardioMM(config_by_name("tiny", 64))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    weights = save_checkpoint(folder / "nan_tiny", model, text_encoder_name="hashing-64", text_encoder_dim=64)
    path = simulate(folder / "in.h5")
    replay = run_replay(path, folder / "out.h5", ["--checkpoint", str(weights), "--device", "cpu"],
                        env={"CARDIOMM_CHECKPOINT_DIR": str(folder), "CARDIOMM_EMBEDDING_CACHE": str(folder / "cache")})
    problem = images_problem(replay)
    if problem is None and any(_meta(im, "CardioMM.Fallback") != "true" for im in replay.images):
        problem = "images not marked as fallback"
    if problem is None and not all("not finite" in (_meta(im, "CardioMM.FallbackReason") or "")
                                   for im in replay.images):
        problem = f"fallback reason {_meta(replay.images[0], 'CardioMM.FallbackReason')!r}"
    return _result("checkpoint_nan_weights", "1", replay, problem, "8 finite images, marked fallback (model output not finite)")


def _fov_ratio(folder: Path) -> CaseResult:
    from gadgets.io.ismrmrd_io import read_header

    path = simulate(folder / "in.h5", matrix="64x48", seed=1, slices=1, phases=2)
    header, _ = read_header(path)
    enc = header.encoding[0]
    ratio = float(enc.encodedSpace.fieldOfView_mm.x) / float(enc.reconSpace.fieldOfView_mm.x)
    replay = run_replay(path, folder / "out.h5")
    problem = images_problem(replay, 2, (48, 64))
    if problem is None and ratio != 2.0:
        problem = f"header FOV ratio {ratio!r}, expected exactly 2"
    return _result("simulate_fov_ratio_64x48_seed1", "3", replay, problem,
                   "FOV ratio exactly 2; 2 images of 64 x 48 (all columns kept)")


def _shepp_logan_direct(folder: Path) -> CaseResult:
    from gadgets.io.ismrmrd_io import read_acquisitions, read_header
    from gadgets.protocol.chain_format import load_chain

    path = shepp_logan(folder)
    replay = run_replay(path, folder / "out.h5", ["--checkpoint", "packaged"])
    problem = images_problem(replay, 1, (32, 32))
    if problem is None:
        methods = {_meta(im, "CardioMM.Method") for im in replay.images}
        if methods != {"direct"}:
            problem = f"methods {methods}, expected direct"
    if problem is None:
        # reference: the chain's own input to the recon (prewhitened, cropped, 4 coils so not
        # compressed), reconstructed by a plain centred inverse FFT and root-sum-of-squares
        _, xml = read_header(path)
        reference = _direct_reference(load_chain(CHAIN), xml, read_acquisitions(path))
        image = np.asarray(replay.images[0].data)[0, 0]
        error = float(np.linalg.norm(image - reference) / np.linalg.norm(reference))
        if error > 1e-5:
            problem = f"relative error {error:.2e} against FFT + RSS, expected <= 1e-5"
        error_text = f"{error:.1e}"
    else:
        error_text = "?"
    return _result("shepp_logan_fully_sampled_direct", "4", replay, problem,
                   f"1 image, CardioMM.Method direct, relative error {error_text} against FFT + RSS (limit 1e-5)")


def _direct_reference(chain: Any, xml: str, acquisitions: list[Any]) -> np.ndarray:
    """FFT + RSS of the buffer the chain's recon receives (chain without the recon stage)."""
    from dataclasses import replace

    from gadgetron.types.recon_data import ReconData

    from gadgets.layout import buffer_to_kspace
    from gadgets.tools.chain_runner import run_chain

    stages = tuple(stage for stage in chain.stages if stage.target != "CardioMMRecon")
    partial = replace(chain, stages=stages)
    (recon_data,) = [item for item in run_chain(partial, xml, iter(acquisitions)) if isinstance(item, ReconData)]
    kspace, _ = buffer_to_kspace(np.asarray(recon_data.bits[0].data.data), "N")
    coil_images = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    rss = np.sqrt((np.abs(coil_images) ** 2).sum(axis=1))[0, 0]
    x = rss.shape[-1]
    recon_x = 32
    start = x // 2 - recon_x // 2
    return rss[:, start:start + recon_x]


def _header_size(name: str, field_text: str, change: Callable[[str], str], words: Sequence[str]) -> Case:
    def run(folder: Path) -> CaseResult:
        path = set_xml(simulate(folder / "in.h5"), change)
        replay = run_replay(path, folder / "out.h5", memory_limit_mb=MEMORY_LIMIT_MB)
        problem = error_problem(replay, *words)
        return _result(name, "7", replay, problem, f"exit 1 before allocating, error names {field_text}")
    return Case(name, "7", f"header {field_text}", run)


def _replace_limit(tag: str, inner: str) -> Callable[[str], str]:
    import re

    def change(text: str) -> str:
        new, n = re.subn(rf"<{tag}>.*?</{tag}>", f"<{tag}>{inner}</{tag}>", text, count=1, flags=re.S)
        if n != 1:
            raise ValueError(f"no <{tag}> in the header")
        return new
    return change


def _matrix_y(value: int) -> Callable[[str], str]:
    import re

    def change(text: str) -> str:
        start = text.index("<encodedSpace>")
        stop = text.index("</encodedSpace>")
        block = re.sub(r"<y>\d+</y>", f"<y>{value}</y>", text[start:stop], count=1)
        return text[:start] + block + text[stop:]
    return change


def _phase_60000_one_acquisition(folder: Path) -> CaseResult:
    path = mutate(simulate(folder / "in.h5"), _counter("phase", 60000))
    replay = run_replay(path, folder / "out.h5", memory_limit_mb=MEMORY_LIMIT_MB)
    problem = images_problem(replay)
    counts = dropped(replay) if problem is None else {}
    if problem is None and counts.get("outside_limits") != 1:
        problem = f"images report {counts}"
    return _result("phase_60000_in_one_acquisition", "7/2", replay, problem,
                   "8 finite images under the memory limit; the acquisition dropped (phase outside limits)")


def _phase_60000_without_header_limit(folder: Path) -> CaseResult:
    path = mutate(simulate(folder / "in.h5"), _counter("phase", 60000))
    set_xml(path, _drop_limit("phase"))
    replay = run_replay(path, folder / "out.h5", memory_limit_mb=MEMORY_LIMIT_MB)
    problem = error_problem(replay, "N = 60001", "phase counters", "max_counter")
    return _result("phase_60000_no_header_limit", "7", replay, problem,
                   "exit 1 before allocating: error names N = 60001 from the phase counters, max_counter")


def _drop_limit(tag: str) -> Callable[[str], str]:
    import re

    def change(text: str) -> str:
        new, n = re.subn(rf"\s*<{tag}>.*?</{tag}>", "", text, count=1, flags=re.S)
        if n != 1:
            raise ValueError(f"no <{tag}> in the header")
        return new
    return change


def _encoding_space_ref(folder: Path) -> CaseResult:
    def change(rows: np.ndarray) -> None:
        head = rows["head"]
        head["encoding_space_ref"][int(imaging_rows(rows)[20])] = 3
        rows["head"] = head
    path = mutate(simulate(folder / "in.h5"), change)
    replay = run_replay(path, folder / "out.h5")
    problem = images_problem(replay)
    counts = dropped(replay) if problem is None else {}
    if problem is None and counts.get("outside_limits") != 1:
        problem = f"images report {counts}"
    return _result("encoding_space_ref_3", "2", replay, problem,
                   "8 finite images; the acquisition dropped (encoding_space_ref outside the header's encodings)")


def _channel_mismatch(folder: Path) -> CaseResult:
    def change(rows: np.ndarray) -> None:
        row = int(imaging_rows(rows)[20])
        head = rows["head"]
        n_samples = int(head["number_of_samples"][row])
        n_channels = int(head["active_channels"][row])
        head["active_channels"][row] = n_channels - 1
        rows["head"] = head
        rows[row]["data"] = np.array(rows[row]["data"], dtype=np.float32)[:2 * n_samples * (n_channels - 1)].copy()
    path = mutate(simulate(folder / "in.h5"), change)
    replay = run_replay(path, folder / "out.h5")
    problem = error_problem(replay, "3 channels", "its buffer 4")
    return _result("active_channels_mismatch", "2", replay, problem,
                   "exit 1, one-line error naming the channel counts (a clear failure, not a drop)")


def _interleaved(folder: Path) -> CaseResult:
    def interleave(rows: np.ndarray) -> None:
        imaging = imaging_rows(rows)
        slices = rows["head"]["idx"]["slice"][imaging]
        order = []
        per_slice = [list(imaging[slices == s]) for s in sorted(set(slices.tolist()))]
        while any(per_slice):
            for group in per_slice:
                if group:
                    order.append(group.pop(0))
        rows[imaging] = rows[np.array(order)].copy()
        # scanners flag the last line of each slice; interleaving moves them, so set them again
        last_bit = np.uint64(1 << (9 - 1))  # ACQ_LAST_IN_SLICE
        head = rows["head"]
        head["flags"][imaging] &= ~last_bit
        new_slices = head["idx"]["slice"][imaging]
        for s in set(new_slices.tolist()):
            head["flags"][imaging[np.flatnonzero(new_slices == s)[-1]]] |= last_bit
        rows["head"] = head
    path = mutate(simulate(folder / "in.h5"), interleave)
    replay = run_replay(path, folder / "out.h5", ["-v"])
    problem = images_problem(replay)
    warnings = sum(1 for line in replay.stderr.splitlines()
                   if line.startswith("WARNING") and ("gadgets.buffer" in line or "gadgets.data_checks" in line))
    reconstructions = replay.stderr.count("CardioMMRecon: k-space")
    if problem is None and (warnings or reconstructions != 2):
        problem = f"{reconstructions} reconstructions (expected 2, one per slice), {warnings} buffer warnings"
    return _result("interleaved_slices", "8", replay, problem,
                   f"8 finite images from {reconstructions} reconstructions (one per slice), no buffer warning")


def _interleaved_reference_equal(folder: Path) -> CaseResult:
    """Interleaved without LAST_IN_SLICE flags gives the same images as the sequential file."""
    sequential = simulate(folder / "seq.h5")
    reference = run_replay(sequential, folder / "seq_out.h5")

    def interleave(rows: np.ndarray) -> None:
        imaging = imaging_rows(rows)
        slices = rows["head"]["idx"]["slice"][imaging]
        per_slice = [list(imaging[slices == s]) for s in sorted(set(slices.tolist()))]
        order = []
        while any(per_slice):
            for group in per_slice:
                if group:
                    order.append(group.pop(0))
        rows[imaging] = rows[np.array(order)].copy()
        head = rows["head"]
        head["flags"][imaging] &= ~np.uint64(1 << (9 - 1))
        rows["head"] = head
    path = mutate(simulate(folder / "in.h5"), interleave)
    replay = run_replay(path, folder / "out.h5")
    problem = images_problem(replay) or images_problem(reference)
    if problem is None:
        def key(im: Any) -> tuple[int, int]:
            return int(im.slice), int(im.phase)
        got = {key(im): np.asarray(im.data) for im in replay.images}
        want = {key(im): np.asarray(im.data) for im in reference.images}
        if got.keys() != want.keys():
            problem = f"image indices {sorted(got)} vs {sorted(want)}"
        else:
            worst = max(float(np.abs(got[k] - want[k]).max() / np.abs(want[k]).max()) for k in want)
            if worst > 1e-5:
                problem = f"differs from the sequential scan by {worst:.2e}"
    return _result("interleaved_slices_no_flags_equal_sequential", "8", replay, problem,
                   "8 images identical to the sequential scan's")


#: Address-space limit for the memory cases (interpreter + torch + a small scan fit easily).
MEMORY_LIMIT_MB = 3072

CASES: list[Case] = [
    _dropped_case("nan_one_sample", "1", "one NaN float in one of 72 imaging acquisitions", _nan_one,
                  "non_finite", 1),
    _dropped_case("inf_in_four_lines", "1", "+Inf in four acquisitions", _inf_lines, "non_finite", 4),
    _dropped_case("finite_3e38_sample", "1", "one finite sample of 3e38 (overflows coil compression)", _huge,
                  "magnitude", 1),
    Case("nan_in_noise_scan", "1", "NaN in the noise scan", _nan_noise),
    Case("checkpoint_nan_weights", "1", "a checkpoint whose weights are all NaN", _nan_checkpoint),
    Case("all_acquisitions_nan", "1/2", "every imaging acquisition has a NaN", _all_invalid),
    _dropped_case("slice_5_limit_1", "2", "slice = 5 with encoding limit slice [0, 1]", _counter("slice", 5),
                  "outside_limits", 1),
    _dropped_case("phase_9_limit_3", "2", "phase = 9 with encoding limit phase [0, 3]", _counter("phase", 9),
                  "outside_limits", 1),
] + [
    _dropped_case(f"{name}_outside_limits", "2", f"{name} = {value} outside its encoding limit", _counter(name, value),
                  "outside_limits", 1)
    for name, value in (("set", 2), ("contrast", 3), ("repetition", 1), ("average", 4), ("segment", 1),
                        ("kspace_encode_step_1", 24), ("kspace_encode_step_2", 1))
] + [
    Case("simulate_fov_ratio_64x48_seed1", "3", "cardiomm-simulate --matrix 64x48 --seed 1", _fov_ratio),
    Case("shepp_logan_fully_sampled_direct", "4", "fully sampled Shepp-Logan (Debian C++ writer), packaged model",
         _shepp_logan_direct),
    _header_size("matrix_y_60000", "encodedSpace.matrixSize.y = 60000", _matrix_y(60000),
                 ("encodedSpace.matrixSize.y", "60000")),
    _header_size("matrix_y_4096", "encodedSpace.matrixSize.y = 4096", _matrix_y(4096),
                 ("encodedSpace.matrixSize.y", "4096")),
    _header_size("phase_limit_60000", "encodingLimits.phase maximum 60000",
                 _replace_limit("phase", "<minimum>0</minimum><maximum>60000</maximum><center>0</center>"),
                 ("encodingLimits.phase", "60000")),
    Case("phase_60000_in_one_acquisition", "7", "phase = 60000 in one acquisition", _phase_60000_one_acquisition),
    Case("phase_60000_no_header_limit", "7", "phase = 60000 in one acquisition, header without a phase limit",
         _phase_60000_without_header_limit),
    Case("encoding_space_ref_3", "2", "encoding_space_ref = 3 with one encoding in the header", _encoding_space_ref),
    Case("active_channels_mismatch", "2", "one acquisition with 3 of the scan's 4 channels", _channel_mismatch),
    Case("interleaved_slices", "8", "slices interleaved 0,1,0,1,... (LAST_IN_SLICE flags as a scanner sets them)",
         _interleaved),
    Case("interleaved_slices_no_flags_equal_sequential", "8", "interleaved slices without LAST_IN_SLICE flags",
         _interleaved_reference_equal),
]


def run_case(case: Case, folder: Path) -> CaseResult:
    """Run ``case`` in ``folder`` (created); exceptions of the case itself become a failed result."""
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        return case.run(folder)
    except Exception as exc:  # noqa: BLE001 - a broken case is a failed row, not a crashed table
        return CaseResult(case.name, case.item, False, f"FAILED: case raised {type(exc).__name__}: {exc}",
                          time.monotonic() - started, float("nan"))
