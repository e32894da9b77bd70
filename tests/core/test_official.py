"""cardiomm_core.official + official_import: the authors' CardioMM, its checkpoints and its numbers.

The equivalence fixture (tests/fixtures/official/, see its README) was produced by running the
official model code outside this repository; these tests check that importing its checkpoint and
running ``OfficialCardioMM`` gives the official outputs, directly and through the engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from cardiomm_core.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from cardiomm_core.context import ScanContext
from cardiomm_core.engine import InferenceEngine
from cardiomm_core.model import CardioMM, CardioMMConfig, config_by_name
from cardiomm_core.official import OfficialCardioMM, OfficialConfig, official_config_by_name
from cardiomm_core.official_import import (
    OFFICIAL_PROMPT,
    OfficialCheckpointError,
    config_from_state_dict,
    import_official,
    main,
    read_official_state_dict,
)
from cardiomm_core.prompting import PromptSpec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "official"
CKPT = FIXTURES / "tiny_official.ckpt"
IO = FIXTURES / "tiny_official_io.npz"

#: Measured on the official code (commit c4938c6, CardioMM_SEM with 10 cascades and num_adj_slices=1,
#: plus the fc1 layers of LMHead / LMHead2): number of state-dict keys and the sha256 of the sorted
#: "key shape" lines; total / trainable parameters of CardioMM_SEM; keys aliasing the shared PReLU.
OFFICIAL_KEYS = 1917
OFFICIAL_KEY_SHA256 = "e33c0971e8f6cb6ad33705ac109846b24bb86e541495d51dd480d642a33d0625"
OFFICIAL_PARAMS = 68_401_990
OFFICIAL_TRAINABLE = 63_176_518
OFFICIAL_SHARED_PRELU_KEYS = 253
OFFICIAL_DISTINCT_PRELUS = 45

pytestmark = pytest.mark.usefixtures("one_thread", "embedding_cache")


def _params(module: torch.nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


@pytest.fixture(scope="module")
def fixture_io() -> dict[str, np.ndarray]:
    with np.load(IO, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    return import_official(CKPT, tmp_path_factory.mktemp("imported") / "tiny_official.safetensors")[0]


class FixtureEncoder:
    """Text encoder stand-in: the fixture's two CLIP feature vectors, whatever the sentences."""

    name = "clip-vit-base-patch16"
    dim = 512
    unit_norm = False

    def __init__(self, meta: np.ndarray, us: np.ndarray) -> None:
        self.rows = torch.from_numpy(np.concatenate([meta, us], axis=0))

    def encode(self, sentences):
        assert len(sentences) == 2
        return self.rows.clone()


# --------------------------------------------------------------------------------------------
# Architecture facts
# --------------------------------------------------------------------------------------------


def test_default_config_has_the_official_parameter_count_and_keys():
    with torch.device("meta"):
        model = OfficialCardioMM(official_config_by_name("official"))
    assert _params(model.metausunetlight) == OFFICIAL_PARAMS                  # 68.4 M
    assert _params(model.metausunetlight, trainable=True) == OFFICIAL_TRAINABLE  # 63.2 M
    assert _params(model) == OFFICIAL_PARAMS + 2 * (512 * 256 + 256)          # plus the two fc1 heads
    state = model.state_dict()
    assert len(state) == OFFICIAL_KEYS
    lines = "\n".join(f"{k} {tuple(v.shape)}" for k, v in sorted(state.items()))
    assert hashlib.sha256(lines.encode()).hexdigest() == OFFICIAL_KEY_SHA256  # every key, every shape
    sharing = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    prelus = {id(p) for n, p in model.named_parameters(remove_duplicate=False) if n.endswith("body.1.weight")}
    assert max(sharing.values()) == OFFICIAL_SHARED_PRELU_KEYS and len(prelus) == OFFICIAL_DISTINCT_PRELUS


def test_config_round_trip_and_validation():
    cfg = official_config_by_name("tiny")
    assert OfficialConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.to_dict()["kind"] == "official" and cfg.n_pools == 3 and cfg.n_adjacent == 1
    with pytest.raises(ValueError, match="feature_dims"):
        OfficialConfig(feature_dims=(8, 8))
    with pytest.raises(ValueError, match="unknown key"):
        OfficialConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="kind"):
        OfficialConfig(kind="project")


def test_heads_give_the_sign_of_fc1():
    torch.manual_seed(0)
    model = OfficialCardioMM(official_config_by_name("tiny"))
    emb = torch.randn(3, 512)
    out = model.lm_head_meta(emb)
    assert torch.equal(out, torch.sign(model.lm_head_meta.fc1(emb)))
    assert set(out.unique().tolist()) <= {-1.0, 1.0}


# --------------------------------------------------------------------------------------------
# Equivalence with the official code
# --------------------------------------------------------------------------------------------


def test_import_reproduces_the_official_outputs(fixture_io):
    state, info = read_official_state_dict(CKPT)
    assert info["dropped"] == {"language_model_no": 2, "lm_head_meta.fc2": 2, "lm_head_us.fc2": 2, "loss": 1}
    config = config_from_state_dict(state)
    assert config == official_config_by_name("tiny")
    model = OfficialCardioMM(config)
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(fixture_io["kspace"]), torch.from_numpy(fixture_io["mask"]),
                    torch.from_numpy(fixture_io["meta_features"]), torch.from_numpy(fixture_io["us_features"]))
    expected = fixture_io["expected"]                       # (1, T=2, ky=34, kx=27), official RSS, max ~4.4
    assert out.shape == expected.shape and out.dtype == torch.complex64
    assert torch.all(out.imag == 0)
    np.testing.assert_allclose(out.real.numpy(), expected, rtol=0, atol=1e-5)


def test_engine_reproduces_the_official_outputs(imported, fixture_io):
    encoder = FixtureEncoder(fixture_io["meta_features"], fixture_io["us_features"])
    engine = InferenceEngine.from_checkpoint(imported, device="cpu", text_encoder=encoder)
    assert engine.normalisation == {"kind": "none"}
    context = ScanContext(acceleration=4.0, pattern="ktGaussian")
    images = engine.reconstruct(fixture_io["kspace"], fixture_io["mask"], context)
    np.testing.assert_allclose(np.abs(images), fixture_io["expected"], rtol=0, atol=1e-5)
    # several slices, one network call or one slice per call: the same images
    kspace = np.concatenate([fixture_io["kspace"], 0.5 * fixture_io["kspace"]])
    together = engine.reconstruct(kspace, fixture_io["mask"], context)
    engine.max_batch_elems = 1
    apart = engine.reconstruct(kspace, fixture_io["mask"], context)
    np.testing.assert_allclose(together, apart, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.abs(together[1]), 0.5 * fixture_io["expected"][0], rtol=0, atol=1e-5)


def test_engine_speaks_the_official_sentences(imported, fixture_io):
    """The importer's prompt section makes the engine render the official sentence style."""
    encoder = FixtureEncoder(fixture_io["meta_features"], fixture_io["us_features"])
    engine = InferenceEngine.from_checkpoint(imported, device="cpu", text_encoder=encoder)
    assert engine.prompt.style == "official" and engine.prompt.mask_convention == "official"
    assert engine.sentences(ScanContext(acceleration=16, pattern="ktGaussian")) == (
        "Adult cardiac MRI reconstruction.Vendor: 3.0T, Siemens, Vida. Modality: cine, short-axis.",
        "Undersampling: 16x random.",
    )


def test_engine_percentile_normalisation_changes_only_rounding(imported, fixture_io):
    """The network is scale-equivariant: the engine's default ACS-percentile scaling gives the same images."""
    model, _ = load_checkpoint(imported)
    encoder = FixtureEncoder(fixture_io["meta_features"], fixture_io["us_features"])
    engine = InferenceEngine(model, encoder, device="cpu", normalisation={"kind": "acs_percentile",
                                                                        "percentile": 99.0, "target": 1.0})
    images = engine.reconstruct(fixture_io["kspace"], fixture_io["mask"], ScanContext())
    np.testing.assert_allclose(np.abs(images), fixture_io["expected"], rtol=1e-5, atol=1e-5)


def test_bf16_autocast_runs_and_stays_close(fixture_io):
    state, _ = read_official_state_dict(CKPT)
    model = OfficialCardioMM(config_from_state_dict(state))
    model.load_state_dict(state)
    model.eval()
    args = (torch.from_numpy(fixture_io["kspace"]), torch.from_numpy(fixture_io["mask"]),
            torch.from_numpy(fixture_io["meta_features"]), torch.from_numpy(fixture_io["us_features"]))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*args)
    assert out.dtype == torch.complex64 and torch.isfinite(out.real).all()
    expected = fixture_io["expected"]
    rel = np.linalg.norm(out.real.numpy() - expected) / np.linalg.norm(expected)
    assert rel < 0.05


def test_channels_last_gives_the_same_images(fixture_io):
    state, _ = read_official_state_dict(CKPT)
    model = OfficialCardioMM(config_from_state_dict(state))
    model.load_state_dict(state)
    model.eval()
    args = (torch.from_numpy(fixture_io["kspace"]), torch.from_numpy(fixture_io["mask"]),
            torch.from_numpy(fixture_io["meta_features"]), torch.from_numpy(fixture_io["us_features"]))
    assert model.to_channels_last() is model
    conv = model.metausunetlight.cascades[0].model.unet.feat_extract.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = model(*args)
    np.testing.assert_allclose(out.real.numpy(), fixture_io["expected"], rtol=0, atol=1e-5)


@pytest.mark.cuda
def test_cuda_engine_fp32_and_bf16_match_the_official_outputs(imported, fixture_io, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    encoder = FixtureEncoder(fixture_io["meta_features"], fixture_io["us_features"])
    expected = fixture_io["expected"]
    for amp, tol in ((False, 1e-4), (True, 5e-2)):
        engine = InferenceEngine.from_checkpoint(imported, device="cuda", text_encoder=encoder, amp=amp)
        out = np.abs(engine.reconstruct(fixture_io["kspace"], fixture_io["mask"], ScanContext()))
        assert np.linalg.norm(out - expected) / np.linalg.norm(expected) < tol, amp


def test_input_checks():
    model = OfficialCardioMM(official_config_by_name("tiny"))
    k = torch.zeros(1, 2, 1, 24, 16, dtype=torch.complex64)
    m = torch.ones(1, 1, 1, 24, 1)
    with pytest.raises(ValueError, match="text_dim=512"):
        model(k, m, torch.zeros(1, 64), torch.zeros(1, 64))
    with pytest.raises(ValueError, match="mask shape"):
        model(k, torch.ones(1, 1, 1, 23, 1), torch.zeros(1, 512), torch.zeros(1, 512))
    with pytest.raises(ValueError, match="complex64"):
        model(k.to(torch.complex128), m, torch.zeros(1, 512), torch.zeros(1, 512))


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def test_imported_sidecar_records_encoder_prompt_and_provenance(imported):
    meta = read_checkpoint_meta(imported)
    assert isinstance(meta.architecture, OfficialConfig)
    assert meta.text_encoder_name == "clip-vit-base-patch16" and meta.text_encoder_dim == 512
    assert meta.normalisation == {"kind": "none"}
    assert OFFICIAL_PROMPT == {"style": "official", "mask_convention": "official"}
    spec = PromptSpec.from_dict(meta.prompt)
    assert spec.style == "official" and spec.mask_convention == "official"
    training = meta.training
    assert training["source_file"] == CKPT.name
    assert training["source_sha256"] == hashlib.sha256(CKPT.read_bytes()).hexdigest()
    assert training["official_commit"].startswith("c4938c6")
    assert "academic use only" in training["licence"]
    assert training["epoch"] == 3 and training["global_step"] == 120


def test_shared_prelu_is_stored_once_and_shared_again(tmp_path):
    torch.manual_seed(3)
    model = OfficialCardioMM(official_config_by_name("tiny"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_checkpoint(tmp_path / "tiny", model, text_encoder_name="hashing-512", text_encoder_dim=512)
    from safetensors.torch import load_file
    stored = load_file(str(path))
    all_keys = model.state_dict()
    shared = [k for k, v in all_keys.items() if v.data_ptr() == model.metausunetlight.cascades[0].model.unet
              .bottleneck[0].body[1].weight.data_ptr()]
    assert len(shared) > 1 and sum(k in stored for k in shared) == 1
    assert len(stored) == len(all_keys) - len(shared) + 1
    loaded, meta = load_checkpoint(path)
    assert isinstance(loaded, OfficialCardioMM) and PromptSpec.from_dict(meta.prompt).style == "project"  # none given
    first = loaded.metausunetlight.sens_net.norm_unet.unet.bottleneck[0].body[1]
    assert first is loaded.metausunetlight.cascades[1].model.unet.dec_level2.ca.body[1]  # one module again
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, all_keys[key]), key


def test_project_checkpoints_without_kind_still_load(tmp_path):
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "p", CardioMM(config_by_name("tiny", 64)), text_encoder_name="hashing-64",
                           text_encoder_dim=64)
    raw = json.loads(path.with_suffix(".json").read_text())
    assert "kind" not in raw["architecture"]
    model, meta = load_checkpoint(path)
    assert type(model) is CardioMM and isinstance(meta.architecture, CardioMMConfig)


def test_unknown_architecture_kind_is_refused(imported, tmp_path):
    raw = json.loads(imported.with_suffix(".json").read_text())
    raw["architecture"]["kind"] = "mystery"
    (tmp_path / "x.json").write_text(json.dumps(raw))
    (tmp_path / "x.safetensors").write_bytes(imported.read_bytes())
    with pytest.raises(ValueError, match="unknown architecture kind 'mystery'"):
        read_checkpoint_meta(tmp_path / "x.safetensors")


# --------------------------------------------------------------------------------------------
# The importer refuses what is not plain data
# --------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this would run a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# torch's weights-only unpickler warns about protocol 4 (not torch.save's default) before refusing the payload
@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4 in the checkpoint:UserWarning")
@pytest.mark.parametrize("how", ["torch_save", "plain_pickle", "pickle_protocol_4", "inside_state_dict"])
def test_importer_refuses_a_malicious_pickle(tmp_path, capsys, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    if how == "torch_save":
        torch.save({"state_dict": {"metausunetlight.x": torch.zeros(1)}, "hyper_parameters": _Payload(marker)}, path)
    elif how == "plain_pickle":
        path.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}, protocol=2))
    elif how == "pickle_protocol_4":
        path.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}, protocol=4))
    else:
        torch.save({"state_dict": {"metausunetlight.x": torch.zeros(1), "lm_head_us.fc1.weight": _Payload(marker)}},
                   path)
    assert not marker.exists()
    expected = r"refusing evil\.ckpt: .*(system|Unsupported operand)"
    with pytest.raises(OfficialCheckpointError, match=expected) as info:
        read_official_state_dict(path)
    assert "\n" not in str(info.value)
    assert main([str(path), "-o", str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cardiomm-import-official: error: refusing evil.ckpt") and "\n" not in err
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_importer_refuses_non_checkpoints(tmp_path):
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"model.weight": torch.zeros(2)}}, plain)
    with pytest.raises(OfficialCheckpointError, match="no 'metausunetlight.' weights"):
        read_official_state_dict(plain)
    text = tmp_path / "text.ckpt"
    text.write_text("hello")
    with pytest.raises(OfficialCheckpointError, match="refusing text.ckpt"):
        read_official_state_dict(text)
    with pytest.raises(FileNotFoundError):
        read_official_state_dict(tmp_path / "absent.ckpt")


def test_cli_writes_the_pair(tmp_path, capsys):
    assert main([str(CKPT), "-o", str(tmp_path / "m.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "2 cascades" in out and "academic use only" in out
    assert (tmp_path / "m.safetensors").is_file() and (tmp_path / "m.json").is_file()
