"""``python -m gadgets.tools.demo --out DIR`` (what ``make demo`` runs): the main job, end to end.

1. Simulate an accelerated multi-coil cine as ISMRMRD raw data, as a scanner's converter would
   write it (``gadgets.io.simulated_scan``: 2 slices, 12 phases, 10 coils, 128 x 112, ktGaussian R = 8, a
   noise scan first, the ground truth stored beside the raw data) -> ``DIR/demo_scan.h5``.
2. Replay it through the default chain, ``chains/cardiomm_cine_python.yaml`` (NoiseAdjust ->
   RemoveOversampling -> AcquisitionBuffer -> CoilCompression -> CardioMMRecon), with the local
   runner (``gadgets.tools.chain_runner.run_chain``: no Gadgetron server needed; the same chain runs inline on
   a Gadgetron 4.x server as ``chains/cardiomm_cine_python.xml``). CardioMMRecon uses the
   packaged model (``checkpoint=packaged``); when none is installed it falls back to its
   conventional reconstruction (CG-SENSE), and the demo says so.
3. Write ``DIR/demo_images.h5`` (as ``gadgetron_ismrmrd_client`` stores images, group ``demo``)
   and ``DIR/demo_preview.png`` (rows: reference | zero-filled | [CG-SENSE |] reconstruction, for a few
   phases of the first slice).
4. Print PSNR / SSIM / NMSE (``cardiomm_core.metrics.evaluate``, CMRxRecon 2024 convention:
   magnitude, central crop, per-image normalisation) of the reconstruction and of zero-filling
   against the reference (:func:`reference_images`: the fully sampled, noise-free RSS of the
   prewhitened coil images, computed from the ground truth stored in the file), and which method
   produced the images. When the model made them, the scan is replayed once more with
   ``checkpoint=none`` and the conventional fallback (CG-SENSE) is scored too, so the model is
   compared with what a site gets without it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import ismrmrd
import numpy as np
import torch

from cardiomm_core.metrics import evaluate
from cardiomm_core.noise import prewhitening_matrix
from cardiomm_core.phantom import noise_free_rss
from cardiomm_core.readout import crop_image_readout
from cardiomm_core.sense import rss_complex

from ..buffer import frames_dimension, series_extents
from ..io.image_io import write_images
from ..io.ismrmrd_io import RawFile, iter_acquisitions, read_header
from ..io.preview import save_comparison
from ..io.simulated_scan import GroundTruth, read_ground_truth, write_simulated_scan
from ..protocol.chain_format import Chain, load_chain
from .chain_runner import run_chain
from .simulate import parse_matrix

logger = logging.getLogger(__name__)

#: The default chains of the demo (the YAML twins of the Gadgetron configs), per modality.
CHAINS_DIR = Path(__file__).resolve().parents[2] / "chains"
DEFAULT_CHAIN = CHAINS_DIR / "cardiomm_cine_python.yaml"
MAPPING_CHAIN = CHAINS_DIR / "cardiomm_mapping_python.yaml"
#: Frames per modality when --phases is not given: cine phases, MOLLI's 9 T1 weightings, 3 T2 preparations
#: (CMRxRecon's T1/T2 mapping protocols).
DEFAULT_FRAMES = {"cine": 12, "mapping": 9, "t1map": 9, "t2map": 3}
#: Words for a frame in the preview per modality.
FRAME_WORDS = {"cine": "phase", "mapping": "TI", "t1map": "TI", "t2map": "T2prep"}
#: Output group of the demo's images.
IMAGE_GROUP = "demo"
#: Phases shown in the preview montage.
PREVIEW_PHASES = 4


def zero_filled_rss(path: Path) -> np.ndarray:
    """Zero-filled RSS images ``(slices, frames, y, x)`` float32 of a simulated cine file.

    The sampled lines are placed at their ``kspace_encode_step_1`` in ``(slices, coils, frames, ky,
    kx_enc)`` k-space (frames from the counter that holds the scan's series: ``idx.phase`` for cine,
    ``idx.contrast`` for mapping), Fourier transformed, combined by RSS and cropped to the recon
    matrix in x. Noise acquisitions are skipped.
    """
    header, _ = read_header(path)
    enc = header.encoding[0]
    limits = enc.encodingLimits
    frame_dim = frames_dimension(header)
    n_slices = limits.slice.maximum + 1
    n_frames = series_extents(header)[frame_dim]
    n_ky = enc.encodedSpace.matrixSize.y
    nx_enc = enc.encodedSpace.matrixSize.x
    nx = enc.reconSpace.matrixSize.x
    n_coils = header.acquisitionSystemInformation.receiverChannels
    kspace = np.zeros((n_slices, n_coils, n_frames, n_ky, nx_enc), dtype=np.complex64)
    for acq in iter_acquisitions(path):
        if acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            continue
        kspace[acq.idx.slice, :, getattr(acq.idx, frame_dim), acq.idx.kspace_encode_step_1, :] = acq.data
    images = rss_complex(torch.from_numpy(kspace)).numpy()
    return np.ascontiguousarray(crop_image_readout(images, nx))


def reference_images(truth: GroundTruth) -> np.ndarray:
    """Magnitude ``(slices, frames, y, x)`` float32 of a perfect reconstruction of the chain's data.

    The fully sampled, noise-free root-sum-of-squares of the prewhitened coil images (CMRxRecon's
    reference is the fully sampled RSS): ``|x| * sqrt(s^H C^-1 s)`` per pixel, from the stored
    object ``x``, sensitivities ``s`` and noise covariance ``C`` (the same for any whitening
    ``W`` with ``W^H W = C^-1``). Every RSS or SENSE image carries this coil shading, which the
    coil-free object does not, so scoring against the object would mostly measure the shading.
    """
    whitening = prewhitening_matrix(np.asarray(truth.noise_covariance, dtype=np.complex128))
    return noise_free_rss(truth.images, truth.sensitivities, whitening)


def images_to_array(images: Sequence[ismrmrd.Image], n_slices: int, n_frames: int,
                    frame_dim: str = "phase") -> np.ndarray:
    """Magnitude ``(slices, frames, y, x)`` float32 from one image per (slice, frame), the frame
    being the images' ``frame_dim`` counter (phase for cine, contrast for mapping).

    Raises ValueError when an image is missing or a (slice, frame) comes twice.
    """
    if not images:
        raise ValueError("images must not be empty")
    y, x = images[0].data.shape[-2:]
    out = np.zeros((n_slices, n_frames, y, x), dtype=np.float32)
    seen = np.zeros((n_slices, n_frames), dtype=bool)
    for image in images:
        s, t = int(image.slice), int(getattr(image, frame_dim))
        if not (0 <= s < n_slices and 0 <= t < n_frames) or seen[s, t]:
            raise ValueError(f"unexpected image for slice {s}, {frame_dim} {t} "
                             f"({n_slices} slices x {n_frames} frames)")
        out[s, t] = np.abs(np.asarray(image.data))[0, 0]
        seen[s, t] = True
    if not seen.all():
        missing = [tuple(int(v) for v in pair) for pair in np.argwhere(~seen)]
        raise ValueError(f"no image for (slice, {frame_dim}) {missing[:5]}")
    return out


def _method_sentence(images: Sequence[ismrmrd.Image]) -> tuple[str, str]:
    """(short method name, a plain sentence saying which method made the images and why)."""
    meta = images[0].meta
    method = str(meta.get("CardioMM.Method", "unknown"))
    fallback = meta.get("CardioMM.Fallback") == "true"
    if method == "direct":
        return "direct FFT + RSS", (f"NOTE: no CardioMM model was used: {meta.get('CardioMM.DirectReason', '')}. "
                                    "The reconstruction numbers below are those of the direct reconstruction.")
    if not fallback:
        return "CardioMM", f"The images come from the CardioMM model ({meta.get('CardioMM.Model', '?')})."
    names = {"cg_sense": "CG-SENSE", "zero_filled": "zero-filled SENSE"}
    name = names.get(method, method)
    reason = meta.get("CardioMM.FallbackReason", "unknown reason")
    return name, (f"NOTE: no CardioMM model was used ({reason}), so CardioMMRecon fell back to its conventional "
                  f"reconstruction, {name}. The reconstruction numbers below are {name}'s, not CardioMM's.")


def _replay(chain: Chain, scan_path: Path, *, n_slices: int | None = None, n_frames: int | None = None,
            indent: str = "   ") -> list[ismrmrd.Image]:
    """The images of ``scan_path`` replayed through ``chain`` with the local runner.

    With ``n_slices`` and ``n_frames`` it says what it is doing on stdout, a line per slice done
    (acquisitions read so far and their rate): a user sees the progress of a replay that takes
    minutes, without a flood of lines.
    """
    report = n_slices is not None and n_frames is not None
    read = 0
    started = time.perf_counter()

    def counted(acquisitions: Iterable[ismrmrd.Acquisition]) -> Iterator[ismrmrd.Acquisition]:
        nonlocal read
        for acquisition in acquisitions:
            read += 1
            yield acquisition

    images: list[ismrmrd.Image] = []
    per_slice: Counter[int] = Counter()
    with RawFile(scan_path) as raw:
        for item in run_chain(chain, raw.xml, counted(raw.acquisitions())):
            if not isinstance(item, ismrmrd.Image):
                continue
            images.append(item)
            per_slice[int(item.slice)] += 1
            if report and per_slice[int(item.slice)] == n_frames:
                seconds = time.perf_counter() - started
                print(f"{indent}slice {len(per_slice)}/{n_slices} done: {read} acquisitions read in {seconds:.1f} s "
                      f"({read / max(seconds, 1e-9):.0f} acquisitions/s)", flush=True)
    return images


def _metrics_line(label: str, scores: dict[str, float]) -> str:
    return f"  {label:<26} PSNR {scores['psnr']:6.2f} dB   SSIM {scores['ssim']:.4f}   NMSE {scores['nmse']:.4f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m gadgets.tools.demo",
                                     description="Simulate an accelerated cine (or T1/T2 mapping) scan, replay it "
                                                 "through the CardioMM chain, write images and a preview, and score "
                                                 "them.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="examples (what `make demo` runs; a larger cine; a T1 mapping scan):\n"
                                            "  python -m gadgets.tools.demo --out out\n"
                                            "  python -m gadgets.tools.demo --slices 3 --coils 10 --matrix 192x156 --seed 7\n"
                                            "  python -m gadgets.tools.demo --modality t1map --out out/mapping")
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder (default ./out)")
    parser.add_argument("--slices", type=int, default=2)
    parser.add_argument("--modality", choices=tuple(DEFAULT_FRAMES), default="cine",
                        help="cine (default) or T1/T2 mapping (t1map, t2map; mapping = t1map): the mapping chain "
                             "reconstructs every weighting of a slice together")
    parser.add_argument("--phases", type=int, default=None,
                        help="frames: cine phases or mapping weightings (default 12 cine, 9 T1, 3 T2)")
    parser.add_argument("--coils", type=int, default=10)
    parser.add_argument("--matrix", type=parse_matrix, default=(128, 112), metavar="RxP")
    parser.add_argument("--accel", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chain", type=Path, default=None,
                        help="chain file (default cardiomm_cine_python, or cardiomm_mapping_python for mapping)")
    parser.add_argument("--checkpoint", default="packaged", help="CardioMMRecon checkpoint: packaged, none or a path")
    parser.add_argument("--device", default="auto", help="CardioMMRecon device (auto, cpu, cuda)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.phases is None:
        args.phases = DEFAULT_FRAMES[args.modality]
    if args.chain is None:
        args.chain = DEFAULT_CHAIN if args.modality == "cine" else MAPPING_CHAIN
    try:
        chain = load_chain(args.chain).with_properties("CardioMMRecon", checkpoint=args.checkpoint,
                                                       device=args.device)
    except (ValueError, OSError) as error:
        parser.error(str(error))

    if args.checkpoint.strip().lower() != "none":
        # the model asked for is loaded now (a checkpoint or device that cannot be used is one line and
        # exit status 2, as in cardiomm-replay), so the replay's rate below is the reconstruction's
        from ..recon import check_model_setting

        load_started = time.perf_counter()
        try:
            loaded = check_model_setting(args.checkpoint, args.device)
        except ValueError as error:
            parser.error(str(error))
        print(f"0. loaded the model {loaded.name if loaded else ''} in {time.perf_counter() - load_started:.1f} s",
              flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    scan_path = args.out / "demo_scan.h5"
    started = time.perf_counter()
    try:
        summary = write_simulated_scan(scan_path, n_slices=args.slices, n_phases=args.phases, n_coils=args.coils,
                                       matrix=args.matrix, acceleration=args.accel, pattern="ktGaussian",
                                       modality=args.modality, seed=args.seed)
    except ValueError as error:
        parser.error(str(error))
    frame_word = FRAME_WORDS[args.modality]
    frame_dim = "phase" if args.modality == "cine" else "contrast"
    print(f"1. simulated {scan_path} ({args.modality}): {summary.n_slices} slices x {summary.n_frames} "
          f"{'phases' if args.modality == 'cine' else 'weightings'}, {summary.n_coils} coils, "
          f"matrix {summary.matrix[0]} x {summary.matrix[1]} (readout {summary.encoded_matrix[0]} oversampled), "
          f"{summary.pattern} nominal R = {summary.nominal_acceleration:g} (realised {summary.realised_acceleration:.2f} "
          f"outside {summary.n_acs} ACS lines), {summary.n_acquisitions} acquisitions, {summary.elapsed_s:.1f} s")

    recon_started = time.perf_counter()
    print(f"2. replaying through {chain.name} ({' -> '.join(s.label for s in chain.stages)}) locally: "
          f"{summary.n_acquisitions} acquisitions, {summary.n_slices} slices", flush=True)
    images = _replay(chain, scan_path, n_slices=summary.n_slices, n_frames=summary.n_frames)
    recon_seconds = time.perf_counter() - recon_started
    if not images:
        print(f"the chain {chain.name} produced no images", file=sys.stderr)
        return 1
    method, sentence = _method_sentence(images)
    print(f"   {len(images)} images in {recon_seconds:.1f} s. {sentence}")
    conventional: list[ismrmrd.Image] = []
    conventional_method = ""
    if method == "CardioMM":
        # the reference a model must beat: the same chain with CardioMMRecon's conventional
        # reconstruction (checkpoint=none), on the same data
        conventional_started = time.perf_counter()
        print("   for comparison, the same chain with checkpoint=none (the conventional fallback):", flush=True)
        conventional = _replay(chain.with_properties("CardioMMRecon", checkpoint="none"), scan_path,
                               n_slices=summary.n_slices, n_frames=summary.n_frames, indent="     ")
        conventional_method, _ = _method_sentence(conventional)
        print(f"     {len(conventional)} images ({conventional_method}) in "
              f"{time.perf_counter() - conventional_started:.1f} s")

    images_path = args.out / "demo_images.h5"
    images_path.unlink(missing_ok=True)
    write_images(images_path, images, IMAGE_GROUP)

    truth = reference_images(read_ground_truth(scan_path))
    recon = images_to_array(images, summary.n_slices, summary.n_frames, frame_dim)
    zero_filled = zero_filled_rss(scan_path)
    shown = np.unique(np.linspace(0, summary.n_frames - 1, min(PREVIEW_PHASES, summary.n_frames)).round().astype(int))
    scored = [("zero-filled RSS", zero_filled)]
    conventional_array = None
    if conventional:
        conventional_array = images_to_array(conventional, summary.n_slices, summary.n_frames, frame_dim)
        scored.append((f"{conventional_method} (fallback)", conventional_array))
    scored.append((method, recon))
    sampling = f"{summary.pattern} R={summary.nominal_acceleration:g}"
    rows = []
    for label, values in scored:
        scores = evaluate(values[:1], truth[:1])
        rows.append((f"{label}\n{sampling}\nslice 1: {scores['psnr']:.2f} dB\nSSIM {scores['ssim']:.3f}", values[0, shown]))
    preview = save_comparison(truth[0, shown], rows, args.out / "demo_preview.png",
                              frame_names=[f"{frame_word} {p + 1}" for p in shown],
                              title=f"{args.modality}, slice 1: rows are methods (reference = noise-free fully sampled "
                                    f"RSS; each row scaled to it, as the scores are), columns frames, then their error maps")
    print(f"3. wrote {images_path} (group /{IMAGE_GROUP}) and {preview} (rows: reference, "
          f"{', '.join(label for label, _ in scored)}; right: |error| maps at a fixed scale)")

    print("4. quality against the reference, the fully sampled noise-free RSS of the prewhitened coil images made from "
          "the ground truth stored in the file (magnitude, CMRxRecon 2024 convention):")
    print(_metrics_line(method, evaluate(recon, truth)))
    if conventional_array is not None:
        print(_metrics_line(conventional_method + " (fallback)", evaluate(conventional_array, truth)))
    print(_metrics_line("zero-filled RSS", evaluate(zero_filled, truth)))
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
