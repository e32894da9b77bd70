"""Checkpoints: safetensors weights + JSON sidecar; exact round trip, checks, and no unpickling."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cardiomm_core.checkpoint import (
    FORMAT_NAME,
    CheckpointMeta,
    checkpoint_paths,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from cardiomm_core.model import CardioMM, config_by_name
from cardiomm_core.prompting import PromptSpec
from cardiomm_core.text import HashingEncoder
from tests.helpers import crandn

TEXT_DIM = 16
ENCODER = f"hashing-{TEXT_DIM}"


@pytest.fixture(autouse=True)
def never_unpickle(monkeypatch):
    """Any call of torch.load or pickle.load(s) during a test fails it."""
    calls: list[str] = []

    def refuse(name):
        def _refuse(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called")
        return _refuse

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch, "load", refuse("torch.load"))
    monkeypatch.setattr(pickle, "load", refuse("pickle.load"))
    monkeypatch.setattr(pickle, "loads", refuse("pickle.loads"))
    yield
    assert calls == [], f"unpickling was attempted: {calls}"


@pytest.fixture(scope="module")
def tiny_model() -> CardioMM:
    """The tiny configuration with every weight nudged off its initial value (seeded)."""
    torch.manual_seed(7)
    model = CardioMM(config_by_name("tiny", text_dim=TEXT_DIM))
    generator = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return model


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, ...]:
    rng = np.random.default_rng(3)
    n_ky, n_kx = 12, 10
    kspace = crandn(rng, 1, 3, 2, n_ky, n_kx)
    mask = torch.from_numpy(rng.random((1, 1, 2, n_ky, 1)) < 0.4)
    mask[..., n_ky // 2 - 2:n_ky // 2 + 2, :] = True  # auto-calibration lines
    kspace = kspace * mask
    meta, us = HashingEncoder(TEXT_DIM).encode(["Adult cardiac MRI. Modality: Cine.", "Undersampling: 4x Random."])
    return kspace, mask, meta[None], us[None]


def _run(model: CardioMM, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with torch.no_grad():
        return model(*inputs)


@pytest.fixture
def saved(tmp_path, tiny_model) -> Path:
    return save_checkpoint(
        tmp_path / "ckpt" / "tiny", tiny_model, text_encoder_name=ENCODER, text_encoder_dim=TEXT_DIM,
        normalisation={"kind": "max_abs", "scale": 1.0},
        training={"description": "unit test", "data": "none", "steps": 0},
    )


def _edit_json(weights: Path, change) -> None:
    meta_path = weights.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    change(meta)
    meta_path.write_text(json.dumps(meta))


# ---- round trip ----------------------------------------------------------------------------


def test_save_load_reproduces_outputs_bit_for_bit(saved, tiny_model, inputs):
    tiny_model.eval()
    expected = _run(tiny_model, inputs)
    loaded, meta = load_checkpoint(saved, text_encoder_name=ENCODER, text_encoder_dim=TEXT_DIM)
    assert not loaded.training
    assert loaded.config == tiny_model.config
    assert torch.equal(_run(loaded, inputs), expected)
    for name, tensor in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    # a fresh model of the same architecture does not give the same output (the test can fail)
    torch.manual_seed(99)
    assert not torch.equal(_run(CardioMM(tiny_model.config).eval(), inputs), expected)
    assert isinstance(meta, CheckpointMeta) and meta.text_encoder_name == ENCODER


@pytest.mark.parametrize("storage_dtype", ["float16", "bfloat16"])
def test_half_precision_storage_halves_the_file_and_loads_as_float32(tmp_path, saved, tiny_model, inputs,
                                                                      storage_dtype):
    half = save_checkpoint(tmp_path / "half" / "tiny", tiny_model, text_encoder_name=ENCODER,
                           text_encoder_dim=TEXT_DIM, storage_dtype=storage_dtype)
    assert half.stat().st_size < 0.6 * saved.stat().st_size
    loaded, meta = load_checkpoint(half)
    assert meta.storage_dtype == storage_dtype
    wanted = {"float16": torch.float16, "bfloat16": torch.bfloat16}[storage_dtype]
    for name, tensor in tiny_model.state_dict().items():
        got = loaded.state_dict()[name]
        assert got.dtype == tensor.dtype, name
        if tensor.is_floating_point():
            # exactly the stored rounding of the original weights
            assert torch.equal(got, tensor.to(wanted).to(tensor.dtype)), name
    tiny_model.eval()
    out, ref = _run(loaded, inputs), _run(tiny_model, inputs)
    assert float((out - ref).abs().norm() / ref.abs().norm()) < 5e-2


def test_unknown_storage_dtype_is_refused(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="storage_dtype"):
        save_checkpoint(tmp_path / "x", tiny_model, text_encoder_name=ENCODER, text_encoder_dim=TEXT_DIM,
                        storage_dtype="int8")


def test_files_and_sidecar_contents(saved, tiny_model):
    assert saved.name == "tiny.safetensors"
    assert sorted(p.name for p in saved.parent.iterdir()) == ["tiny.json", "tiny.safetensors"]  # no temp files
    meta = json.loads(saved.with_suffix(".json").read_text())
    assert meta["format"] == FORMAT_NAME and meta["format_version"] == 1
    assert meta["architecture"] == tiny_model.config.to_dict()
    assert meta["text_encoder"] == {"name": ENCODER, "dim": TEXT_DIM}
    assert meta["normalisation"] == {"kind": "max_abs", "scale": 1.0}
    assert meta["training"]["steps"] == 0 and meta["training"]["description"] == "unit test"
    assert meta["weights_sha256"] == hashlib.sha256(saved.read_bytes()).hexdigest()
    assert meta["cardiomm_version"] and meta["created"].endswith("+00:00")


@pytest.mark.parametrize("given", ["tiny", "tiny.safetensors", "tiny.json"])
def test_path_with_or_without_suffix(tmp_path, tiny_model, given):
    out = save_checkpoint(tmp_path / given, tiny_model, text_encoder_name=ENCODER, text_encoder_dim=TEXT_DIM)
    assert out == tmp_path / "tiny.safetensors"
    assert checkpoint_paths(tmp_path / given) == (tmp_path / "tiny.safetensors", tmp_path / "tiny.json")
    meta = read_checkpoint_meta(tmp_path / given)
    assert meta.architecture == tiny_model.config and meta.text_encoder_dim == TEXT_DIM
    assert meta.training == {} and meta.normalisation == {}


def test_encoder_alias_is_stored_in_canonical_form(tmp_path):
    model = CardioMM(config_by_name("tiny", text_dim=64))
    path = save_checkpoint(tmp_path / "m", model, text_encoder_name="hashing", text_encoder_dim=64)
    assert read_checkpoint_meta(path).text_encoder_name == "hashing-64"
    load_checkpoint(path, text_encoder_name="hashing")  # the alias is accepted on load too


def test_save_rejects_bad_arguments(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="text_encoder_dim=384 does not match the model's text_dim=16"):
        save_checkpoint(tmp_path / "a", tiny_model, text_encoder_name="minilm", text_encoder_dim=384)
    with pytest.raises(ValueError, match="training must be JSON-serialisable"):
        save_checkpoint(tmp_path / "b", tiny_model, text_encoder_name=ENCODER, text_encoder_dim=TEXT_DIM,
                        training={"optimizer": object()})
    with pytest.raises(ValueError, match="model must be a CardioMM"):
        save_checkpoint(tmp_path / "c", torch.nn.Linear(2, 2), text_encoder_name=ENCODER,  # type: ignore[arg-type]
                        text_encoder_dim=TEXT_DIM)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


# ---- checks on load ------------------------------------------------------------------------


def test_text_encoder_mismatch_is_readable(saved):
    with pytest.raises(ValueError) as info:
        load_checkpoint(saved, text_encoder_name="minilm")
    message = str(info.value)
    assert "'hashing-16'" in message and "'minilm-l6-v2'" in message and "16-dim" in message
    with pytest.raises(ValueError, match=r"expects 16-dim embeddings .* gives 384-dim"):
        load_checkpoint(saved, text_encoder_dim=384)


def test_mismatched_architecture_names_the_tensors(saved, tiny_model):
    _edit_json(saved, lambda m: m["architecture"].update(chans=6))
    narrower = CardioMM(dataclasses.replace(tiny_model.config, chans=6)).state_dict()
    changed = sorted(k for k, v in tiny_model.state_dict().items() if narrower[k].shape != v.shape)
    assert changed  # the edit does change tensor shapes
    with pytest.raises(ValueError) as info:
        load_checkpoint(saved)
    message = str(info.value)
    assert f"wrong shape ({len(changed)}): {changed[0]} (file {tuple(tiny_model.state_dict()[changed[0]].shape)}, " \
        f"model {tuple(narrower[changed[0]].shape)})" in message
    assert all(name in message for name in changed[:25])


def test_missing_and_unexpected_tensors_are_listed(saved):
    _edit_json(saved, lambda m: m["architecture"].update(n_cascades=3))
    with pytest.raises(ValueError, match=r"missing from the file \(\d+\): cascades\.2\."):
        load_checkpoint(saved)
    _edit_json(saved, lambda m: m["architecture"].update(n_cascades=1))
    with pytest.raises(ValueError, match=r"unexpected in the file \(\d+\): cascades\.1\."):
        load_checkpoint(saved)


def test_tampered_weights_are_detected_by_the_hash(saved, tiny_model):
    data = bytearray(saved.read_bytes())
    data[-5] ^= 0x01  # one bit of the last tensor's data
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_checkpoint(saved)
    loaded, _ = load_checkpoint(saved, verify_hash=False)  # still a valid file, but not the same weights
    assert any(not torch.equal(loaded.state_dict()[k], v) for k, v in tiny_model.state_dict().items())


def test_sidecar_errors(saved):
    sidecar = saved.with_suffix(".json")
    original = sidecar.read_text()
    _edit_json(saved, lambda m: m.update(format_version=2))
    with pytest.raises(ValueError, match="format_version 2, newer .* upgrade cardiomm"):
        load_checkpoint(saved)
    _edit_json(saved, lambda m: m.update(format="something-else", format_version=1))
    with pytest.raises(ValueError, match="not a CardioMM checkpoint sidecar"):
        read_checkpoint_meta(saved)
    sidecar.write_text(original.replace('"text_dim": 16', '"text_dim": 16, "colour": "blue"'))
    with pytest.raises(ValueError, match="colour"):
        read_checkpoint_meta(saved)
    sidecar.write_text("{ not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_checkpoint(saved)
    sidecar.unlink()
    with pytest.raises(FileNotFoundError, match="sidecar .*tiny.json not found"):
        load_checkpoint(saved)
    with pytest.raises(FileNotFoundError, match="weights .* not found"):
        load_checkpoint(saved.parent / "absent")


# ---- never unpickle ------------------------------------------------------------------------


class _Payload:
    """Unpickling this creates a folder: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_torch_save_files_are_refused(tmp_path, tiny_model):
    state = tiny_model.state_dict()
    for name, legacy in (("model.pt", False), ("model.ckpt", True)):
        path = tmp_path / name
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
        kind = "pickle" if legacy else "zip archive"
        with pytest.raises(ValueError, match=f"refusing to load .*{name}: it is a .*{kind}.*never unpickled"):
            load_checkpoint(path)
        with pytest.raises(ValueError, match="never unpickled"):
            read_checkpoint_meta(path)


def test_a_pickle_renamed_safetensors_is_refused_even_with_a_valid_sidecar(saved, tmp_path):
    marker = tmp_path / "unpickled"
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(pickle.dumps({"weights": _Payload(marker)}, protocol=pickle.HIGHEST_PROTOCOL))
    shutil.copy(saved.with_suffix(".json"), tmp_path / "fake.json")
    with pytest.raises(ValueError, match="is a Python pickle"):
        load_checkpoint(fake)
    with pytest.raises(ValueError, match="is a Python pickle"):
        load_checkpoint(fake, verify_hash=False)
    assert not marker.exists()


def test_a_torch_zip_renamed_safetensors_is_refused(saved, tmp_path, tiny_model):
    fake = tmp_path / "zip.safetensors"
    torch.save(tiny_model.state_dict(), fake)
    shutil.copy(saved.with_suffix(".json"), tmp_path / "zip.json")
    with pytest.raises(ValueError, match="zip archive .*torch.save"):
        load_checkpoint(tmp_path / "zip")


# ---- prompt section (how the model is spoken to) ---------------------------------------------


def test_prompt_section_defaults_to_the_project_and_round_trips(tmp_path, tiny_model, saved):
    meta = read_checkpoint_meta(saved)
    assert meta.prompt == {"style": "project", "mask_convention": "project", "acceleration": "nominal"}
    assert json.loads(saved.with_suffix(".json").read_text())["prompt"] == meta.prompt
    official = save_checkpoint(tmp_path / "official", tiny_model, text_encoder_name=ENCODER, text_encoder_dim=TEXT_DIM,
                               prompt={"style": "official", "mask_convention": "official"})
    meta = read_checkpoint_meta(official)
    assert meta.prompt == {"style": "official", "mask_convention": "official", "acceleration": "nominal"}
    spec = PromptSpec.from_dict(meta.prompt)
    assert spec.style == "official" and spec.mask_convention == "official"


def test_a_sidecar_without_prompt_section_gets_project_defaults(saved):
    _edit_json(saved, lambda meta: meta.pop("prompt"))
    meta = read_checkpoint_meta(saved)
    assert meta.prompt == {"style": "project", "mask_convention": "project", "acceleration": "nominal"}


@pytest.mark.parametrize("prompt,match", [
    ({"style": "shouting"}, "style"),
    ({"mask_convention": "matlab"}, "mask_convention"),
    ({"acceleration": "realised"}, "acceleration"),
    ({"colour": "blue"}, "prompt does not match: unknown key"),
    ("official", "JSON object"),
])
def test_a_bad_prompt_section_is_refused_by_name(saved, tmp_path, tiny_model, prompt, match):
    with pytest.raises(ValueError, match=match):
        save_checkpoint(tmp_path / "bad", tiny_model, text_encoder_name=ENCODER, text_encoder_dim=TEXT_DIM,
                        prompt=prompt)
    _edit_json(saved, lambda meta: meta.__setitem__("prompt", prompt))
    with pytest.raises(ValueError, match="bad prompt section"):
        read_checkpoint_meta(saved)
