"""The embedding cache: each (text encoder, sentence) vector once, in memory and on disk.

``EmbeddingCache`` stores vectors under ``default_cache_dir()`` (``$CARDIOMM_CACHE_DIR``, else
``~/.cache/cardiomm/embeddings``); ``CachedEncoder`` wraps any ``cardiomm_core.text.TextEncoder``
and encodes only the sentences the cache does not hold, so a fresh process never loads the
encoder's model when every sentence is cached.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cardiomm_core.files import write_atomically

from .text import TextEncoder, check_sentences, finish_embeddings

logger = logging.getLogger(__name__)

#: Environment variable that moves the on-disk embedding cache.
CACHE_DIR_ENV = "CARDIOMM_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$CARDIOMM_CACHE_DIR`` if set, else ``~/.cache/cardiomm/embeddings``."""
    env = os.environ.get(CACHE_DIR_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cardiomm" / "embeddings"


_SAFE_RE = re.compile(r"[^A-Za-z0-9._-]+")


class EmbeddingCache:
    """In-memory + on-disk store of sentence embeddings keyed by (encoder id, sentence).

    Each entry is one ``.npy`` file (float32, shape ``(dim,)``, no pickle) at
    ``<directory>/<encoder id, sanitised>/<sha256(encoder id NUL sentence)>.npy``, written
    atomically (temporary file + rename), so concurrent processes never read half a file. An
    entry that cannot be read or has the wrong shape, non-finite values or a norm far from 1 is
    ignored with a warning (the caller recomputes and overwrites it); the norm check is skipped for
    encoders whose vectors are not unit-length (``unit_norm=False``, e.g. raw CLIP features). When the directory is not
    writable the cache keeps working in memory and warns once.

    Args:
        directory: where entries live; default ``default_cache_dir()``. ``persist=False`` keeps
            everything in memory only.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, *, persist: bool = True) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()
        self.persist = bool(persist)
        self._memory: dict[tuple[str, str], torch.Tensor] = {}
        self._lock = threading.Lock()
        self._write_failed = False

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.directory)!r}, persist={self.persist}, entries_in_memory={len(self._memory)})"

    @staticmethod
    def key(encoder_id: str, sentence: str) -> str:
        """sha256 hex digest of the encoder id and the sentence."""
        return hashlib.sha256(f"{encoder_id}\0{sentence}".encode()).hexdigest()

    def path_for(self, encoder_id: str, sentence: str) -> Path:
        """The file that holds (or would hold) this entry."""
        folder = _SAFE_RE.sub("_", encoder_id).strip("._") or "encoder"
        return self.directory / folder[:80] / f"{self.key(encoder_id, sentence)}.npy"

    def get(self, encoder_id: str, sentence: str, dim: int, unit_norm: bool = True) -> torch.Tensor | None:
        """The cached ``(dim,)`` float32 embedding, or None when absent or unusable."""
        with self._lock:
            hit = self._memory.get((encoder_id, sentence))
        if hit is not None:
            return hit.clone()
        if not self.persist:
            return None
        path = self.path_for(encoder_id, sentence)
        if not path.is_file():
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            logger.warning("unreadable embedding cache entry %s (%s); recomputing it", path, exc)
            return None
        problem = self._problem(array, dim, unit_norm)
        if problem:
            logger.warning("bad embedding cache entry %s (%s); recomputing it", path, problem)
            return None
        vector = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        with self._lock:
            self._memory[(encoder_id, sentence)] = vector
        return vector.clone()

    @staticmethod
    def _problem(array: np.ndarray, dim: int, unit_norm: bool = True) -> str:
        if array.dtype != np.float32:
            return f"dtype {array.dtype}, expected float32"
        if array.shape != (dim,):
            return f"shape {array.shape}, expected ({dim},)"
        if not np.all(np.isfinite(array)):
            return "non-finite values"
        norm = float(np.linalg.norm(array.astype(np.float64)))
        if unit_norm and not math.isclose(norm, 1.0, abs_tol=1e-3):
            return f"norm {norm:.4g}, expected 1"
        return ""

    def put(self, encoder_id: str, sentence: str, vector: torch.Tensor) -> None:
        """Store a ``(dim,)`` embedding in memory and (atomically) on disk."""
        if not isinstance(vector, torch.Tensor) or vector.ndim != 1:
            raise ValueError(f"vector must be a 1-D torch.Tensor (dim,), got {getattr(vector, 'shape', type(vector))}")
        value = vector.detach().to("cpu", torch.float32).clone()
        with self._lock:
            self._memory[(encoder_id, sentence)] = value
        if self.persist:
            self._write(self.path_for(encoder_id, sentence), value.numpy())

    def _write(self, path: Path, array: np.ndarray) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            write_atomically(path, lambda handle: handle.write(buffer.getvalue()))
        except OSError as exc:
            if not self._write_failed:
                logger.warning("cannot write embedding cache under %s (%s); caching in memory only", self.directory, exc)
                self._write_failed = True


class CachedEncoder:
    """A ``TextEncoder`` that answers from an ``EmbeddingCache`` and encodes only the misses.

    When every requested sentence is cached the wrapped encoder is not called at all, so a lazily
    loaded model (MiniLM, CLIP) is never loaded. The cache key uses the wrapped encoder's
    ``cache_id`` attribute when it has one, else its ``name``.

    Args:
        encoder: the encoder to wrap.
        cache: the cache; default ``EmbeddingCache()`` (``$CARDIOMM_CACHE_DIR`` or
            ``~/.cache/cardiomm/embeddings``).
    """

    def __init__(self, encoder: TextEncoder, cache: EmbeddingCache | None = None) -> None:
        for attr in ("name", "dim", "encode"):
            if not hasattr(encoder, attr):
                raise ValueError(f"encoder must implement TextEncoder (name, dim, encode); it has no {attr!r}")
        self.encoder = encoder
        self.cache = cache if cache is not None else EmbeddingCache()
        self.name: str = encoder.name
        self.dim: int = int(encoder.dim)
        self.cache_id: str = str(getattr(encoder, "cache_id", encoder.name))
        self.unit_norm: bool = bool(getattr(encoder, "unit_norm", True))

    def __repr__(self) -> str:
        return f"CachedEncoder({self.encoder!r}, {self.cache!r})"

    def encode(self, sentences: Sequence[str]) -> torch.Tensor:
        """Embed ``sentences`` -> float32 ``(n, dim)``, unit rows, from the cache where possible."""
        items = check_sentences(sentences)
        out = torch.zeros(len(items), self.dim, dtype=torch.float32)
        missing: dict[str, list[int]] = {}
        for row, sentence in enumerate(items):
            hit = self.cache.get(self.cache_id, sentence, self.dim, unit_norm=self.unit_norm)
            if hit is None:
                missing.setdefault(sentence, []).append(row)
            else:
                out[row] = hit
        if missing:
            todo = list(missing)
            fresh = self.encoder.encode(todo)
            if tuple(fresh.shape) != (len(todo), self.dim):
                raise ValueError(
                    f"encoder {self.name!r} returned shape {tuple(fresh.shape)} for {len(todo)} sentences, "
                    f"expected ({len(todo)}, {self.dim})"
                )
            fresh = finish_embeddings(fresh, normalise=False)  # the encoder normalised; keep its exact values
            for sentence, vector in zip(todo, fresh):
                self.cache.put(self.cache_id, sentence, vector)
                for row in missing[sentence]:
                    out[row] = vector
        return out
