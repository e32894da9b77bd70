"""gadgets.recon.CardioMMRecon: ReconData -> ismrmrd.Image, with the model or the marked fallback."""

from __future__ import annotations

from pathlib import Path

import ismrmrd
import numpy as np
import pytest
import torch
from gadgetron.types.recon_data import ReconBit, ReconBuffer, ReconData

from cardiomm_core.checkpoint import save_checkpoint
from cardiomm_core.conventional import conventional_recon
from cardiomm_core.model import CardioMM, config_by_name
from cardiomm_core.readout import crop_image_readout
from gadgets.buffer import AcquisitionBuffer
from gadgets.io.ismrmrd_io import RawFile
from gadgets.io.simulated_header import TICK_MS
from gadgets.io.simulated_scan import read_ground_truth
from gadgets.layout import buffer_to_kspace, line_sampled, sampling_mask
from gadgets.recon import CardioMMRecon, engine_loads, merge_reference
from tests.gadgets.conftest import SIMULATED_SCAN
from tests.gadgets.harness import assert_items_equal, run_gadget, synthetic_scan

N_SLICES, N_PHASES = SIMULATED_SCAN["n_slices"], SIMULATED_SCAN["n_phases"]
RECON_X, RECON_Y = SIMULATED_SCAN["matrix"]


#: Child processes run torch on one thread, like this process in these tests: tiny tensors gain
#: nothing from intra-op threads (on a busy 2-core machine two threads made a tiny model 80x slower),
#: and equal thread counts keep the in-process and the child's floating-point results identical.
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("one_thread", "embedding_cache")


def save_tiny(path) -> str:
    torch.manual_seed(0)
    model = CardioMM(config_by_name("tiny", 64))
    return str(save_checkpoint(path, model, text_encoder_name="hashing-64", text_encoder_dim=64))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> str:
    return save_tiny(tmp_path_factory.mktemp("tiny") / "tiny_random")


@pytest.fixture(scope="module")
def scan(simulated_scan_file):
    with RawFile(simulated_scan_file) as raw:
        return raw.header, raw.xml, list(raw.acquisitions())


@pytest.fixture(scope="module")
def recon_data(scan) -> list[ReconData]:
    header, _, acquisitions = scan
    return list(AcquisitionBuffer()(iter(acquisitions), header))


@pytest.fixture(scope="module")
def fallback_images(scan, recon_data) -> list[ismrmrd.Image]:
    return list(CardioMMRecon(checkpoint="none")(iter(recon_data), scan[0]))


def meta_of(image: ismrmrd.Image) -> ismrmrd.Meta:
    return ismrmrd.Meta.deserialize(image.attribute_string)


def expected_cg_sense(recon_data: list[ReconData]) -> list[np.ndarray]:
    """|CG-SENSE| of each slice buffer, cropped to the recon readout: per ReconData (frames, y, x)."""
    result = []
    for item in recon_data:
        buffer = item.bits[0].data
        kspace, layout = buffer_to_kspace(np.asarray(buffer.data))
        mask = sampling_mask(np.asarray(buffer.data), buffer.headers, layout).astype(np.float32)
        images = conventional_recon(torch.from_numpy(kspace), torch.from_numpy(mask), method="cg_sense").images
        result.append(np.abs(crop_image_readout(images.numpy(), RECON_X))[0])
    return result


def test_fallback_images_equal_cg_sense_and_are_marked(recon_data, fallback_images, simulated_scan_summary):
    assert len(recon_data) == N_SLICES  # one ReconData per slice (trigger on slice)
    assert len(fallback_images) == N_SLICES * N_PHASES
    expected = expected_cg_sense(recon_data)
    for image in fallback_images:
        head = image.getHead()
        assert image.data.shape == (1, 1, RECON_Y, RECON_X) and image.data.dtype == np.float32
        np.testing.assert_allclose(image.data[0, 0], expected[head.slice][head.phase], rtol=1e-5, atol=1e-7)
        meta = meta_of(image)
        assert meta["ImageComment"] == "CardioMM_fallback_CG-SENSE"
        assert meta["CardioMM.Fallback"] == "true" and meta["CardioMM.Model"] == "none"
        assert "'none'" in meta["CardioMM.FallbackReason"]
        assert meta["CardioMM.Method"] == "cg_sense" and meta["DataRole"] == "Image"
        assert meta["CardioMM.Pattern"] == "ktGaussian"
        # the nominal R the header declares and the mask fits, as training tells it (not the realised rate)
        nominal = simulated_scan_summary.nominal_acceleration
        assert float(meta["CardioMM.Acceleration"]) == nominal
        assert meta["CardioMM.Undersampling"] == f"Undersampling: {nominal:g}x Random."
        assert meta["GADGETRON_ImageNumber"] == str(head.image_index)


def test_image_headers_are_what_a_scanner_expects(scan, fallback_images):
    header, _, acquisitions = scan
    imaging = [a for a in acquisitions if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    recon = header.encoding[0].reconSpace
    seen = set()
    positions = {}
    for number, image in enumerate(fallback_images, start=1):
        head = image.getHead()
        seen.add((head.slice, head.phase))
        assert head.image_index == number and head.image_series_index == 1
        assert head.image_type == ismrmrd.IMTYPE_MAGNITUDE and head.data_type == ismrmrd.DATATYPE_FLOAT
        assert tuple(head.matrix_size) == (RECON_X, RECON_Y, 1) and head.channels == 1
        np.testing.assert_allclose(list(head.field_of_view),
                                   [recon.fieldOfView_mm.x, recon.fieldOfView_mm.y, recon.fieldOfView_mm.z],
                                   rtol=1e-6)
        assert (head.contrast, head.set, head.repetition, head.average) == (0, 0, 0, 0)
        lines = [a for a in imaging if a.idx.slice == head.slice and a.idx.phase == head.phase]
        centre = [a for a in lines if a.idx.kspace_encode_step_1 == RECON_Y // 2]
        assert centre, "the centre line is sampled (calibration region)"
        np.testing.assert_array_equal(list(head.position), list(centre[0].position))
        for name in ("read_dir", "phase_dir", "slice_dir", "patient_table_position"):
            np.testing.assert_array_equal(list(getattr(head, name)), list(getattr(centre[0], name)))
        assert head.acquisition_time_stamp == centre[0].acquisition_time_stamp
        assert head.physiology_time_stamp[0] == centre[0].physiology_time_stamp[0]
        assert head.measurement_uid == centre[0].measurement_uid
        positions.setdefault(head.slice, set()).add(tuple(head.position))
    assert seen == {(s, p) for s in range(N_SLICES) for p in range(N_PHASES)}
    assert all(len(p) == 1 for p in positions.values())  # one position per slice...
    assert len({next(iter(p)) for p in positions.values()}) == N_SLICES  # ...different between slices
    stamps = [image.getHead().physiology_time_stamp[0] for image in fallback_images[:N_PHASES]]
    assert stamps == sorted(stamps) and len(set(stamps)) == N_PHASES  # trigger delay per cine phase
    assert stamps[1] * TICK_MS > 0


def test_readout_crop_keeps_the_anatomy_in_place(simulated_scan_file, fallback_images):
    truth = np.abs(read_ground_truth(simulated_scan_file).images)
    for image in fallback_images:
        head = image.getHead()
        recon, target = image.data[0, 0], truth[head.slice, head.phase]

        def error(candidate: np.ndarray, target: np.ndarray = target) -> float:
            scale = float((candidate * target).sum() / (candidate * candidate).sum())
            return float(np.linalg.norm(scale * candidate - target) / np.linalg.norm(target))

        assert error(recon) < 0.7 * min(error(np.roll(recon, 2, axis=1)), error(np.roll(recon, -2, axis=1)))


def test_one_buffer_with_all_slices_gives_the_same_images(scan, fallback_images):
    header, _, acquisitions = scan
    together = list(AcquisitionBuffer(trigger_dimension="none")(iter(acquisitions), header))
    assert len(together) == 1 and together[0].bits[0].data.data.shape[-1] == N_SLICES  # LOC = 2
    images = list(CardioMMRecon(checkpoint="none")(iter(together), header))
    by_index = {(i.getHead().slice, i.getHead().phase): i for i in fallback_images}
    assert len(images) == len(by_index)
    for image in images:
        head = image.getHead()
        reference = by_index[(head.slice, head.phase)]
        np.testing.assert_allclose(image.data, reference.data, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(list(head.position), list(reference.getHead().position))


def test_tiny_model_runs_once_loaded_and_is_marked(scan, recon_data, fallback_images, tmp_path):
    checkpoint = save_tiny(tmp_path / "fresh_tiny")
    before = engine_loads()
    images = list(CardioMMRecon(checkpoint=checkpoint, device="cpu")(iter(recon_data), scan[0]))
    assert engine_loads() == before + 1
    again = list(CardioMMRecon(checkpoint=checkpoint, device="cpu", magnitude=False)(iter(recon_data[:1]), scan[0]))
    assert engine_loads() == before + 1  # the second gadget finds the engine in the process cache
    assert len(images) == N_SLICES * N_PHASES
    for image, fallback in zip(images, fallback_images):
        meta = meta_of(image)
        assert meta["ImageComment"] == "CardioMM" and meta["CardioMM.Fallback"] == "false"
        assert meta["CardioMM.Method"] == "cardiomm" and "CardioMM.FallbackReason" not in meta
        assert "fresh_tiny.safetensors" in meta["CardioMM.Model"] and "encoder=hashing-64" in meta["CardioMM.Model"]
        assert image.data.shape == (1, 1, RECON_Y, RECON_X) and np.isfinite(image.data).all()
        assert not np.allclose(image.data, fallback.data)  # a random model is not CG-SENSE
    assert again[0].data.dtype == np.complex64 and again[0].getHead().image_type == ismrmrd.IMTYPE_COMPLEX
    assert again[0].getHead().data_type == ismrmrd.DATATYPE_CXFLOAT
    np.testing.assert_allclose(np.abs(again[0].data), images[0].data, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("problem", ["missing", "corrupt"])
def test_unloadable_checkpoint_falls_back_with_the_reason(scan, recon_data, fallback_images, tmp_path, problem):
    if problem == "missing":
        checkpoint = str(tmp_path / "nowhere" / "model.safetensors")
    else:
        checkpoint = str(tmp_path / "broken.safetensors")
        (tmp_path / "broken.safetensors").write_bytes(b"\x00\x01 this is not a safetensors file" * 8)
        (tmp_path / "broken.json").write_text('{"format": "cardiomm-checkpoint"}')
    images = list(CardioMMRecon(checkpoint=checkpoint)(iter(recon_data), scan[0]))
    assert len(images) == len(fallback_images)
    for image, reference in zip(images, fallback_images):
        meta = meta_of(image)
        assert meta["CardioMM.Fallback"] == "true" and meta["ImageComment"] == "CardioMM_fallback_CG-SENSE"
        reason = meta["CardioMM.FallbackReason"]
        if problem == "missing":
            assert "does not exist" in reason and "model.safetensors" in reason
            assert str(tmp_path) not in reason  # no host path in what goes to the peer (issue 10, item 12)
        else:
            assert reason.startswith("could not load checkpoint") and "broken.safetensors" in reason
        np.testing.assert_array_equal(image.data, reference.data)


def test_zero_filled_fallback_and_series_index(scan, recon_data):
    images = list(CardioMMRecon(checkpoint="none", fallback="zero_filled", image_series_index=7)(
        iter(recon_data[:1]), scan[0]))
    assert len(images) == N_PHASES
    assert {i.getHead().image_series_index for i in images} == {7}
    assert meta_of(images[0])["ImageComment"] == "CardioMM_fallback_zero-filled"
    assert meta_of(images[0])["CardioMM.Method"] == "zero_filled"


def test_other_items_pass_through_in_order(scan, recon_data):
    header, _, acquisitions = scan
    noise = acquisitions[0]
    out = list(CardioMMRecon(checkpoint="none")(iter([noise, recon_data[0], noise]), header))
    assert out[0] is noise and out[-1] is noise
    assert all(isinstance(i, ismrmrd.Image) for i in out[1:-1]) and len(out) == N_PHASES + 2


def test_calibration_only_lines_of_an_embedded_reference_are_used(rng):
    scan = synthetic_scan(rng, n_coils=3, n_ro=8, n_e1=16, n_phases=2, n_slices=1, acceleration=4, n_acs=6,
                          noise_samples=0)
    (item,) = AcquisitionBuffer()(iter(scan.acquisitions), scan.header)
    bit = item.bits[0]
    data, headers = merge_reference(np.asarray(bit.data.data), bit.data.headers, bit.ref)
    lines = line_sampled(data, headers)[:, 0, :, 0, 0]  # (E1, N)
    expected = np.zeros(16, dtype=bool)
    expected[sorted(set(scan.sampled_lines) | set(scan.acs_lines))] = True
    assert (lines == expected[:, None]).all()
    assert not line_sampled(np.asarray(bit.data.data), bit.data.headers)[scan.acs_lines[0], 0, 0, 0, 0] or \
        scan.acs_lines[0] in scan.sampled_lines
    images = list(CardioMMRecon(checkpoint="none")(iter([item]), scan.header))
    assert len(images) == 2 and images[0].data.shape == (1, 1, 16, 8)


def test_inconsistent_recon_data_is_a_value_error(scan, recon_data):
    buffer = recon_data[0].bits[0].data
    bad = ReconData([ReconBit(ReconBuffer(buffer.data, None, None, buffer.headers[:-1], buffer.sampling))])
    with pytest.raises(ValueError, match="headers have shape"):
        list(CardioMMRecon(checkpoint="none")(iter([bad]), scan[0]))
    with pytest.raises(ValueError, match="'device' has invalid value 'gpu0'"):
        CardioMMRecon(device="gpu0")
    with pytest.raises(ValueError, match="fallback"):
        CardioMMRecon(fallback="grappa")


@pytest.mark.slow
def test_through_gadgetron_protocol_byte_identical(scan, recon_data, tiny_checkpoint, tmp_path):
    header, xml, _ = scan
    properties = {"checkpoint": tiny_checkpoint, "device": "cpu", "image_series_index": 3}
    expected = list(CardioMMRecon(**properties)(iter(recon_data), header))
    result = run_gadget("gadgets.recon", "CardioMMRecon", header_xml=xml, items=recon_data, properties=properties,
                        env={"CARDIOMM_CACHE_DIR": str(tmp_path / "child-cache"), **CHILD_ENV,
                             # a CONFIG may name checkpoints only from allowed directories (issue 10, item 12)
                             "CARDIOMM_CHECKPOINT_DIR": str(Path(tiny_checkpoint).parent)})
    assert result.errors == [] and result.protocol_error is None, result.stderr[-3000:]
    assert result.closed and result.exited_by_itself
    assert_items_equal(result.items, expected)
    assert meta_of(result.items[0])["CardioMM.Fallback"] == "false"


@pytest.mark.slow
def test_failing_input_sends_an_error_to_gadgetron(scan, recon_data, tmp_path):
    header, xml, _ = scan
    buffer = recon_data[0].bits[0].data
    bad = ReconData([ReconBit(ReconBuffer(buffer.data, None, None, buffer.headers[:-1], buffer.sampling))])
    result = run_gadget("gadgets.recon", "CardioMMRecon", header_xml=xml, items=[bad],
                        properties={"checkpoint": "none"}, env={"CARDIOMM_CACHE_DIR": str(tmp_path / "c"), **CHILD_ENV})
    assert len(result.errors) == 1 and "headers have shape" in result.errors[0], result.stderr[-3000:]
    assert result.items == [] and result.closed and result.exited_by_itself


def test_resolve_checkpoint_settings(tiny_checkpoint, tmp_path, monkeypatch):
    from cardiomm_core import packaged

    stem = tiny_checkpoint[: -len(".safetensors")]
    assert packaged.resolve_checkpoint("none") is None and packaged.resolve_checkpoint(" None ") is None
    for value in (tiny_checkpoint, stem, stem + ".json"):
        assert str(packaged.resolve_checkpoint(value)) == tiny_checkpoint
    with pytest.raises(ValueError, match="does not exist.*absent"):
        packaged.resolve_checkpoint(str(tmp_path / "absent"))
    # the packaged model: both files of the pair in cardiomm_core/models, else None
    monkeypatch.setattr(packaged, "MODELS_DIR", tmp_path / "models")
    assert packaged.packaged_model_path() is None and packaged.resolve_checkpoint("packaged") is None
    installed = save_tiny(tmp_path / "models" / packaged.PACKAGED_MODEL_STEM)
    assert str(packaged.packaged_model_path()) == installed
    assert str(packaged.resolve_checkpoint("")) == installed == str(packaged.resolve_checkpoint("Packaged"))
    (tmp_path / "models" / (packaged.PACKAGED_MODEL_STEM + ".json")).unlink()
    assert packaged.packaged_model_path() is None  # half a pair is not a model


def test_default_checkpoint_is_the_packaged_model(scan, recon_data, tmp_path, monkeypatch):
    from cardiomm_core import packaged

    monkeypatch.setattr(packaged, "MODELS_DIR", tmp_path / "empty")
    images = list(CardioMMRecon()(iter(recon_data[:1]), scan[0]))
    assert "no packaged CardioMM model" in meta_of(images[0])["CardioMM.FallbackReason"]
    monkeypatch.setattr(packaged, "MODELS_DIR", tmp_path / "models")
    save_tiny(tmp_path / "models" / packaged.PACKAGED_MODEL_STEM)
    images = list(CardioMMRecon(device="cpu")(iter(recon_data[:1]), scan[0]))
    meta = meta_of(images[0])
    assert meta["CardioMM.Fallback"] == "false" and packaged.PACKAGED_MODEL_STEM in meta["CardioMM.Model"]


@pytest.mark.parametrize("n_dimension, warned", [("auto", False), ("contrast", False), ("phase", True)])
def test_a_series_split_by_the_chain_is_named(tmp_path, caplog, n_dimension, warned) -> None:
    """A mapping scan buffered on the wrong counter reaches the model one weighting at a time: the
    gadget says so, once, naming the counter and the series length; buffered right, it is silent
    and gets every weighting of a slice in one call."""
    from gadgets.io.ismrmrd_io import read_acquisitions, read_header
    from gadgets.io.simulated_scan import write_simulated_scan
    from gadgets.noise_adjust import NoiseAdjust
    from gadgets.remove_oversampling import RemoveOversampling

    path = write_simulated_scan(tmp_path / "t1.h5", n_slices=1, n_phases=9, n_coils=3, matrix=(16, 12),
                                acceleration=4.0, pattern="ktGaussian", n_acs=4, modality="t1map", seed=2,
                                noise_scan=False).path
    header = read_header(path)[0]
    stream = iter(read_acquisitions(path))
    for gadget in (NoiseAdjust(), RemoveOversampling(), AcquisitionBuffer(N_dimension=n_dimension, split_slices=True),
                   CardioMMRecon(checkpoint="none")):
        stream = gadget(stream, header)
    with caplog.at_level("WARNING", logger="gadgets.recon"):
        images = [item for item in stream if isinstance(item, ismrmrd.Image)]
    assert sorted(int(im.contrast) for im in images) == list(range(9))
    messages = [r.getMessage() for r in caplog.records if "series runs over" in r.getMessage()]
    if warned:
        assert len(messages) == 1 and "contrast counter (9 frames" in messages[0] and "1 frame(s)" in messages[0]
    else:
        assert messages == []
