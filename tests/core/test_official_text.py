"""The text encoder of imported official checkpoints: ``clip-vit-base-patch16``, raw CLIP text features
from a local folder (``CARDIOMM_CLIP_DIR``), and an embedding cache that keeps them unnormalised."""

from __future__ import annotations

import pytest
import torch

from cardiomm_core.text import (
    CLIP_DIR_ENV,
    OFFICIAL_CLIP_NAME,
    CachedEncoder,
    EmbeddingCache,
    canonical_encoder_name,
    get_encoder,
)
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
