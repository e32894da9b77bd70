"""The text encoder of imported official checkpoints: ``clip-vit-base-patch16``, raw CLIP text features
from a local folder (``CARDIOMM_CLIP_DIR``), and an embedding cache that keeps them unnormalised."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cardiomm_core.embedding_cache import CachedEncoder, EmbeddingCache
from cardiomm_core.text import CLIP_DIR_ENV, OFFICIAL_CLIP_NAME, canonical_encoder_name, get_encoder
from tests.core.test_text import tiny_clip_folder  # noqa: F401 - a fixture (tiny random CLIP, saved offline)

#: short: the tiny CLIP's byte-level vocabulary spends a token per character (48 positions)
SENTENCES = ["Modality: cine, short-axis.", "Undersampling: 16x random."]


def test_official_name_needs_a_folder(monkeypatch):
    monkeypatch.delenv(CLIP_DIR_ENV, raising=False)
    with pytest.raises(ValueError, match=CLIP_DIR_ENV):
        get_encoder(OFFICIAL_CLIP_NAME)
    assert canonical_encoder_name(OFFICIAL_CLIP_NAME) == OFFICIAL_CLIP_NAME == "clip-vit-base-patch16"


def test_official_name_gives_raw_clip_text_features(tiny_clip_folder, monkeypatch):  # noqa: F811
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv(CLIP_DIR_ENV, str(tiny_clip_folder))
    enc = get_encoder(OFFICIAL_CLIP_NAME)
    assert enc is get_encoder(OFFICIAL_CLIP_NAME)
    assert enc.name == OFFICIAL_CLIP_NAME and enc.dim == 24 and enc.unit_norm is False
    raw = enc.encode(SENTENCES)
    # what the official code computes: get_text_features, each sentence tokenised on its own
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny_clip_folder), local_files_only=True)
    model = transformers.CLIPTextModelWithProjection.from_pretrained(str(tiny_clip_folder), local_files_only=True)
    with torch.no_grad():
        for row, sentence in zip(raw, SENTENCES):
            expected = model(**tokenizer([sentence], return_tensors="pt")).text_embeds[0]
            torch.testing.assert_close(row, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(2), atol=1e-3)
    # the project's clip:<folder> encoder of the same folder is the normalised version
    normalised = get_encoder(f"clip:{tiny_clip_folder}").encode(SENTENCES)
    torch.testing.assert_close(normalised, torch.nn.functional.normalize(raw, dim=1), rtol=1e-4, atol=1e-5)
    assert enc.cache_id != get_encoder(f"clip:{tiny_clip_folder}").cache_id
    # the folder may also be given directly
    assert get_encoder(OFFICIAL_CLIP_NAME, path=str(tiny_clip_folder)).name == OFFICIAL_CLIP_NAME


@pytest.fixture(scope="module")
def tiny_full_clip_folder(tiny_clip_folder, tmp_path_factory) -> Path:  # noqa: F811
    """A tiny *full* CLIP (text + vision towers, model_type "clip"), laid out like the
    openai/clip-vit-base-patch16 folder the authors' code loads, with the tiny tokenizer."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("clipfull") / "clip-vit-base-patch16"
    shutil.copytree(tiny_clip_folder, folder, ignore=shutil.ignore_patterns("config.json", "*.safetensors"))
    text = json.loads((tiny_clip_folder / "config.json").read_text())
    text_config = transformers.CLIPTextConfig(**{k: text[k] for k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "max_position_embeddings", "bos_token_id", "eos_token_id", "pad_token_id")})
    vision_config = transformers.CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                  num_attention_heads=2, image_size=32, patch_size=16)
    torch.manual_seed(1)
    config = transformers.CLIPConfig(text_config=text_config.to_dict(), vision_config=vision_config.to_dict(),
                                     projection_dim=20)
    transformers.CLIPModel(config).save_pretrained(folder)
    return folder


def test_official_name_reads_a_full_clip_folder_like_the_official_code(tiny_full_clip_folder):
    transformers = pytest.importorskip("transformers")
    enc = get_encoder(OFFICIAL_CLIP_NAME, path=str(tiny_full_clip_folder))
    assert enc.dim == 20
    raw = enc.encode(SENTENCES)
    # the official code: AutoModel (a CLIPModel) + AutoTokenizer, get_text_features per sentence
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny_full_clip_folder), local_files_only=True)
    model = transformers.AutoModel.from_pretrained(str(tiny_full_clip_folder), local_files_only=True).eval()
    with torch.no_grad():
        for row, sentence in zip(raw, SENTENCES):
            out = model.get_text_features(**tokenizer([sentence], padding=True, return_tensors="pt"))
            expected = out if isinstance(out, torch.Tensor) else out.pooler_output
            torch.testing.assert_close(row, expected[0], rtol=1e-4, atol=1e-5)
    normalised = get_encoder(f"clip:{tiny_full_clip_folder}").encode(SENTENCES)
    torch.testing.assert_close(normalised, torch.nn.functional.normalize(raw, dim=1), rtol=1e-4, atol=1e-5)


class _RawEncoder:
    name = "raw-test"
    dim = 4
    unit_norm = False

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, sentences):
        self.calls += 1
        return torch.arange(len(sentences) * 4, dtype=torch.float32).reshape(-1, 4) + 3.0


def test_cache_keeps_unnormalised_embeddings(tmp_path):
    first = _RawEncoder()
    out = CachedEncoder(first, EmbeddingCache(tmp_path)).encode(SENTENCES)
    assert first.calls == 1 and float(out[0].norm()) > 1.5
    second = _RawEncoder()
    again = CachedEncoder(second, EmbeddingCache(tmp_path)).encode(SENTENCES)   # a fresh process: from disk
    assert second.calls == 0 and torch.equal(again, out)
    # a unit-norm encoder with the same id would not accept those entries
    assert EmbeddingCache(tmp_path).get("raw-test", SENTENCES[0], 4) is None
