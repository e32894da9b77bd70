"""An imported official CardioMM checkpoint (cardiomm-import-official) in the gadgets: CardioMMRecon
and the whole Python cine chain, locally, with images that name the model they came from."""

from __future__ import annotations

from pathlib import Path

import ismrmrd
import numpy as np
import pytest

from cardiomm_core.engine import InferenceEngine
from cardiomm_core.official_import import import_official
from gadgets.buffer import AcquisitionBuffer
from gadgets.io import ismrmrd_io
from gadgets.io.ismrmrd_io import RawFile
from gadgets.protocol.chain_format import load_chain
from gadgets.recon import CardioMMRecon
from gadgets.tools.chain_runner import run_chain
from tests.gadgets.conftest import SIMULATED_SCAN

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL_CKPT = ROOT / "tests" / "fixtures" / "official" / "tiny_official.ckpt"
N_IMAGES = SIMULATED_SCAN["n_slices"] * SIMULATED_SCAN["n_phases"]
RECON_X, RECON_Y = SIMULATED_SCAN["matrix"]

pytestmark = pytest.mark.usefixtures("one_thread", "embedding_cache")


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory) -> Path:
    """The official fixture checkpoint imported for a 512-d hashing encoder (no CLIP weights here)."""
    out = tmp_path_factory.mktemp("official") / "tiny_official.safetensors"
    return import_official(OFFICIAL_CKPT, out, text_encoder_name="hashing-512")[0]


def _meta(image: ismrmrd.Image) -> ismrmrd.Meta:
    return ismrmrd.Meta.deserialize(image.attribute_string)


def _check_marked(images: list[ismrmrd.Image]) -> None:
    assert len(images) == N_IMAGES
    for image in images:
        meta = _meta(image)
        assert meta["CardioMM.Method"] == "cardiomm" and meta["CardioMM.Fallback"] == "false"
        model = meta["CardioMM.Model"]
        assert "tiny_official.safetensors" in model and "cascades=2" in model and "adjacent=1" in model
        assert "encoder=hashing-512" in model
        assert image.data.shape == (1, 1, RECON_Y, RECON_X) and np.isfinite(image.data).all()
        assert np.abs(image.data).max() > 0


def test_recon_gadget_runs_the_imported_official_model(simulated_scan_file, official_checkpoint):
    with RawFile(simulated_scan_file) as raw:
        header, acquisitions = raw.header, list(raw.acquisitions())
    recon_data = list(AcquisitionBuffer()(iter(acquisitions), header))
    images = list(CardioMMRecon(checkpoint=str(official_checkpoint), device="cpu")(iter(recon_data), header))
    _check_marked(images)
    complex_images = list(CardioMMRecon(checkpoint=str(official_checkpoint), device="cpu", magnitude=False)(
        iter(recon_data[:1]), header))
    # the official network outputs a magnitude: the complex images have no imaginary part
    assert all(np.all(im.data.imag == 0) for im in complex_images)
    np.testing.assert_allclose(complex_images[0].data.real, images[0].data, rtol=1e-6, atol=1e-7)


def test_python_chain_runs_the_imported_official_model_locally(simulated_scan_file, official_checkpoint):
    chain = load_chain(ROOT / "chains" / "cardiomm_cine_python.yaml").with_properties(
        "CardioMMRecon", checkpoint=str(official_checkpoint), device="cpu")
    with RawFile(simulated_scan_file) as raw:
        outputs = list(run_chain(chain, raw.xml, ismrmrd_io.iter_items_in_time_order(raw)))
    images = [item for item in outputs if isinstance(item, ismrmrd.Image)]
    _check_marked(images)


def test_engine_reads_the_official_sentences_encoder_from_the_checkpoint(official_checkpoint):
    engine = InferenceEngine.from_checkpoint(official_checkpoint, device="cpu")
    assert engine.text_encoder.name == "hashing-512" and engine.normalisation == {"kind": "none"}
    assert type(engine.model).__name__ == "OfficialCardioMM"
