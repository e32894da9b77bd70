"""Every sentence a training config can tell the model, and their embeddings written ahead of time.

A machine without the text encoder (a rented GPU without ``sentence-transformers`` / MiniLM) can
train when every sentence its configs produce is already in the on-disk embedding cache
(``cardiomm_core.embedding_cache.EmbeddingCache``, ``$CARDIOMM_CACHE_DIR``): the trainer then answers from
the cache and never imports or loads the encoder. This module enumerates those sentences and
writes them with the real encoder on a machine that has it::

    python -m train.embeddings --config train/configs/generalist_finetune_gpu.yaml \\
        [--config OTHER.yaml ...] --cache-dir .gpu_carry/embeddings [--walk-items 400]

The sentences (:func:`config_sentences`), in the config's ``prompt.style``:

* metadata: every scanner x modality of every synthetic source (training and validation), as
  ``SyntheticCardiacDataset`` writes its contexts;
* undersampling: every (pattern, acceleration) of ``data.undersampling`` and
  ``data.val_undersampling``, said with each of the four family words (``describe_sampling`` may
  read a sparse mask of one family as another, e.g. a 3-frame ktUniform as ktGaussian), with the
  nominal R (what ``describe_sampling`` gives a generator's own mask with its R declared);
* with ``walk_items`` > 0 (the command's ``--walk-items``): also what
  ``cardiomm_core.prompting.describe_sampling`` actually says of the masks drawn for the first
  ``walk_items`` items of the first two training epochs and of the validation set, at their real
  shapes, through the trainer's own path (``UndersampledDataset.mask_for``, no simulation needed).
  On the generalist configs the walk found no sentence outside the nominal set.

The trainer checks the cheap set (no walk) at start-up (:func:`prefill`): a missing sentence is
encoded there and then, or, where the encoder cannot be loaded, the run stops before its first
step with one line naming the command above. CMRxRecon and ISMRMRD sources take their metadata
from their files; they are not enumerated (a warning says so).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cardiomm_core.context import ScanContext
from cardiomm_core.prompting import context_sentences

logger = logging.getLogger(__name__)

#: Pattern words ``describe_sampling`` can give a line or radial mask.
SAMPLING_FAMILIES: tuple[str, ...] = ("Uniform", "ktUniform", "ktGaussian", "ktRadial")


def _specs(cfg: Any) -> list[Any]:
    from .config import undersampling_spec

    specs = [undersampling_spec(cfg.data.undersampling)]
    if cfg.data.val_undersampling is not None:
        specs.append(undersampling_spec(cfg.data.val_undersampling))
    return specs


def metadata_sentences(cfg: Any) -> set[str]:
    """Metadata sentences of every scanner x modality of the config's synthetic sources."""
    from .config import SyntheticSource
    from .data.sources import build_source

    out: set[str] = set()
    for split in ("train", "val"):
        for i, source in enumerate(getattr(cfg.data, split)):
            if not isinstance(source, SyntheticSource):
                logger.warning("data.%s[%d] (%s): its metadata sentences come from its files and are not "
                               "enumerated", split, i, getattr(source, "kind", "?"))
                continue
            dataset = build_source(source)
            from .data.synthetic import SubjectParams

            for scanner in dataset.scanners:
                for modality in dataset.modalities:
                    context = SubjectParams((8, 8), 1, 1, 0.0, modality, scanner).context()
                    out.add(context_sentences(context, cfg.prompt.style)[0])
    return out


def nominal_undersampling_sentences(cfg: Any) -> set[str]:
    """Every (pattern, R) of the config's undersampling specs, said with each family word."""
    out: set[str] = set()
    for spec in _specs(cfg):
        for (_, acceleration) in spec.probabilities():
            for family in SAMPLING_FAMILIES:
                context = ScanContext().with_sampling(acceleration, family)
                out.add(context_sentences(context, cfg.prompt.style)[1])
    return out


def _item_shapes(dataset: Any) -> Iterable[tuple[int, tuple[int, int, int, int]]]:
    """(global index, (coils, frames, ky, kx)) of a (Concat)Dataset of synthetic sources, without simulating."""
    from torch.utils.data import ConcatDataset

    parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
    offset = 0
    for part in parts:
        if not hasattr(part, "item_shape"):
            logger.warning("%s: masks not walked (the shapes come from its files)", type(part).__name__)
        else:
            for index in range(len(part)):
                yield offset + index, part.item_shape(index)
        offset += len(part)


def walked_undersampling_sentences(cfg: Any, walk_items: int, epochs: int = 2) -> set[str]:
    """What ``describe_sampling`` says of the masks the trainer draws for the first ``walk_items``
    items of the first ``epochs`` training epochs (at most ``train.epochs``) and of the validation set."""
    from cardiomm_core.prompting import describe_sampling

    from .config import undersampling_spec
    from .data.sources import concat_sources
    from .data.undersample import UndersampledDataset

    out: set[str] = set()
    if walk_items <= 0:
        return out
    spec = undersampling_spec(cfg.data.undersampling)
    val_spec = undersampling_spec(cfg.data.val_undersampling) if cfg.data.val_undersampling else spec
    plans = [(UndersampledDataset(concat_sources(cfg.data.train), spec, seed=cfg.seed),
              range(min(epochs, cfg.train.epochs)))]
    if cfg.data.val:
        plans.append((UndersampledDataset(concat_sources(cfg.data.val), val_spec, seed=cfg.seed + 1, fixed=True),
                      range(1)))
    for dataset, epoch_range in plans:
        shapes = []
        for index, shape in _item_shapes(dataset.base):
            if len(shapes) >= walk_items:
                break
            shapes.append((index, shape))
        for epoch in epoch_range:
            dataset.set_epoch(epoch)
            for index, (_, n_frames, n_ky, n_kx) in shapes:
                mask = dataset.mask_for(index, n_frames, n_ky, n_kx)
                acceleration, pattern = describe_sampling(mask.mask, declared_acceleration=mask.acceleration,
                                                          convention=dataset.spec.convention)
                context = ScanContext().with_sampling(acceleration, pattern)
                out.add(context_sentences(context, cfg.prompt.style)[1])
    return out


def config_sentences(cfg: Any, walk_items: int = 0, epochs: int = 2) -> list[str]:
    """Sorted sentences a config can produce (see the module docstring)."""
    sentences = metadata_sentences(cfg) | nominal_undersampling_sentences(cfg)
    sentences |= walked_undersampling_sentences(cfg, walk_items, epochs)
    return sorted(sentences)


def missing_sentences(encoder: Any, sentences: Sequence[str]) -> list[str]:
    """The sentences a ``CachedEncoder`` has no cached embedding for ([] for other encoders)."""
    cache = getattr(encoder, "cache", None)
    if cache is None:
        return []
    return [s for s in sentences
            if cache.get(encoder.cache_id, s, encoder.dim, unit_norm=encoder.unit_norm) is None]


def prefill(encoder: Any, sentences: Sequence[str], config_hint: str = "CONFIG") -> int:
    """Make sure every sentence is in ``encoder``'s cache: encode the missing ones now.

    Returns how many were encoded. Raises ValueError (one line) when some are missing and the
    encoder cannot be loaded here (not installed, or its files absent).
    """
    missing = missing_sentences(encoder, sentences)
    if not missing:
        return 0
    try:
        encoder.encode(missing)
    except (ImportError, OSError) as error:
        cache = getattr(encoder, "cache", None)
        where = getattr(cache, "directory", "the embedding cache")
        raise ValueError(
            f"{len(missing)} of the {len(sentences)} sentences this config can produce are not in the embedding "
            f"cache {where} (e.g. {missing[0]!r}) and the text encoder {encoder.name!r} cannot be loaded here "
            f"({str(error).splitlines()[0] if str(error) else type(error).__name__}); write them where it can: "
            f"python -m train.embeddings --config {config_hint} --cache-dir DIR, then set CARDIOMM_CACHE_DIR=DIR"
        ) from error
    return len(missing)


def cache_sentences(encoder: Any, sentences: Sequence[str], cache_dir: str | Path | None) -> int:
    """Write the embeddings of ``sentences`` that the on-disk cache at ``cache_dir`` lacks (None:
    the default, ``$CARDIOMM_CACHE_DIR``), encoded by ``encoder`` (a ``TextEncoder`` or its name);
    return how many were written. Hashing encoders need no cache: 0."""
    from cardiomm_core.embedding_cache import CachedEncoder, EmbeddingCache
    from cardiomm_core.text import get_encoder

    base = get_encoder(encoder) if isinstance(encoder, str) else encoder
    if base.name.startswith("hashing"):
        return 0
    cached = CachedEncoder(base, EmbeddingCache(cache_dir) if cache_dir is not None else None)
    missing = missing_sentences(cached, sentences)
    if missing:
        cached.encode(missing)
    return len(missing)


def write_embeddings(configs: Sequence[Any], cache_dir: str | Path | None, *, walk_items: int = 0,
                     encoder: Any = None) -> dict[str, int]:
    """Encode every sentence of ``configs`` into the on-disk cache at ``cache_dir`` (None: the
    default, ``$CARDIOMM_CACHE_DIR``). ``encoder``: the encoder to write with (default: each
    config's ``text_encoder.name``). Returns ``{"sentences": n, "written": new, "encoder": name}``
    summed over the configs (hashing encoders need no cache and are skipped)."""
    from cardiomm_core.text import get_encoder

    total = written = 0
    names = []
    for cfg in configs:
        base = encoder if encoder is not None else get_encoder(cfg.text_encoder.name)
        if base.name.startswith("hashing"):
            logger.info("text encoder %s needs no cache; skipped", base.name)
            continue
        sentences = config_sentences(cfg, walk_items)
        written += cache_sentences(base, sentences, cache_dir)
        total += len(sentences)
        names.append(base.name)
    return {"sentences": total, "written": written, "encoder": ",".join(sorted(set(names)))}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m train.embeddings``."""
    parser = argparse.ArgumentParser(
        prog="python -m train.embeddings",
        description="Write every sentence embedding the configs' data and undersampling can produce into the "
                    "on-disk embedding cache (for machines without the text encoder).")
    parser.add_argument("--config", action="append", required=True, help="training YAML (repeatable)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every config (as cardiomm-train's)")
    parser.add_argument("--cache-dir", default=None,
                        help="embedding cache folder (default: $CARDIOMM_CACHE_DIR or ~/.cache/cardiomm/embeddings)")
    parser.add_argument("--walk-items", type=int, default=200,
                        help="also describe the masks drawn for the first N items of every epoch (default 200; 0: "
                             "the nominal set only)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a sentence is missing from the cache")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from cardiomm_core.embedding_cache import CachedEncoder, EmbeddingCache
    from cardiomm_core.text import get_encoder

    from .config_io import load_config

    try:
        configs = [load_config(path, args.override) for path in args.config]
        if args.check:
            missing_total = 0
            for path, cfg in zip(args.config, configs):
                base = get_encoder(cfg.text_encoder.name)
                if base.name.startswith("hashing"):
                    continue
                cached = CachedEncoder(base, EmbeddingCache(args.cache_dir) if args.cache_dir else None)
                sentences = config_sentences(cfg, args.walk_items)
                missing = missing_sentences(cached, sentences)
                missing_total += len(missing)
                sys.stdout.write(f"{path}: {len(sentences)} sentences, {len(missing)} missing\n")
            return 1 if missing_total else 0
        summary = write_embeddings(configs, args.cache_dir, walk_items=args.walk_items)
    except (ValueError, FileNotFoundError, ImportError) as error:
        sys.stderr.write(f"train.embeddings: error: {error}\n")
        return 2
    where = args.cache_dir or "the default cache"
    sys.stdout.write(f"train.embeddings: {summary['sentences']} sentences ({summary['written']} new) of "
                     f"{summary['encoder'] or 'no cached encoder'} in {where}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
