"""The CardioMM trainer: plain PyTorch, DistributedDataParallel under ``torchrun``, exact resume.

Why plain torch and not Lightning: the trainer must resume a killed run at the same optimiser
step with the same data order, masks, optimiser/scheduler/RNG state and so the same weights, and
its checkpoints must never be pickles. Owning the loop (a few hundred lines) makes both exact and
inspectable: the data order is a pure function of (seed, epoch, rank, world size), the position
within the epoch is a counter in the checkpoint, and the state is flattened into safetensors +
JSON (``train.checkpointing``). Nothing heavy is added to the install; ``torchrun`` ships with torch.

One optimiser step = ``grad_accum`` micro-batches of ``data.batch_size`` examples per process.
Per epoch (``train.schedule.epoch_order``): a permutation of the training items seeded by (seed, epoch),
padded by wrapping to a multiple of the world size and dealt round-robin to the ranks
(``DistributedSampler``'s scheme), then cut into micro-batches. Masks come from
``UndersampledDataset.set_epoch(epoch)`` (seeded by (seed, epoch, item)). Validation uses fixed
masks.

Inputs are scaled exactly as ``cardiomm_core.engine.InferenceEngine`` scales them
(``normalisation_scale`` with the checkpoint's normalisation, ``DEFAULT_NORMALISATION``), and the
target by the same factor, so a model exported from here sees at inference what it saw in
training. Loss: ``train.losses.ReconLoss`` (SSIM + L1 on the magnitude, recon FOV).

Multi-GPU / multi-node: launch with ``torchrun`` (``env://``: ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); NCCL on CUDA, gloo on the CPU. Rank 0 alone
logs and writes checkpoints, with a barrier around each write. Each rank keeps its own RNG
streams; rank 0's are saved (nothing in the training step draws random numbers: masks and data
order are seeded functions).
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from cardiomm_core.engine import DEFAULT_NORMALISATION
from cardiomm_core.metrics import evaluate
from cardiomm_core.model import count_parameters
from cardiomm_core.prompting import PromptSpec, model_forward, prepare_model_input

from .checkpointing import (
    find_latest,
    flatten_optimizer_state,
    prune_checkpoints,
    read_training_checkpoint,
    unflatten_optimizer_state,
    write_training_checkpoint,
)
from .config import TrainConfig, undersampling_spec
from .config_io import config_to_dict
from .data.sample import TrainingBatch, collate_examples
from .data.sources import concat_sources, describe_sources, sim_cache_dir
from .data.undersample import UndersampledDataset
from .losses import ReconLoss, crop_to_target
from .model_setup import EmbeddingTable, build_model, load_initial_weights, make_encoder, same_architecture
from .run_dir import RunLog, check_run_dir, clear_run_dir, format_seconds, previous_run
from .schedule import DistInfo, epoch_order, lr_factor

logger = logging.getLogger(__name__)

__all__ = ["FitResult", "Trainer", "scaled_forward"]

#: What a CUDA allocation failure raises (RuntimeError on old torch versions without the class).
_CUDA_OOM: type = getattr(torch.cuda, "OutOfMemoryError", RuntimeError)


def _timed(iterable: Any, waited: list[float]) -> Any:
    """Yield from ``iterable``, adding the seconds spent waiting for each item to ``waited[0]``."""
    iterator = iter(iterable)
    while True:
        began = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            return
        waited[0] += time.perf_counter() - began
        yield item


def scaled_forward(model: torch.nn.Module, batch: TrainingBatch, embeddings: EmbeddingTable, device: torch.device,
                   normalisation: dict[str, Any], amp: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the network on a batch through the InferenceEngine's own path
    (``cardiomm_core.prompting.prepare_model_input`` + ``model_forward``).

    Returns (magnitude ``(B, T, y, x)`` on the recon FOV, scaled target ``(B, T, y, x)``, scale ``(B,)``):
    k-space and target are multiplied by the same per-slice ``normalisation_scale``.
    """
    meta, us = embeddings.batch(batch.contexts)
    inputs = prepare_model_input(batch.masked_kspace.to(device, non_blocking=True),
                                 batch.mask.to(device, non_blocking=True), meta, us, normalisation)
    target = batch.target.to(device, non_blocking=True) * inputs.scale.view(-1, 1, 1, 1)
    image = model_forward(model, inputs, amp=amp)
    magnitude = crop_to_target(image.abs(), int(target.shape[-1]))
    return magnitude, target, inputs.scale


# --------------------------------------------------------------------------- the trainer


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` did: final ``step`` and ``epoch``, whether it ``finished`` the
    planned length, the last checkpoint folder and the last validation metrics."""

    step: int
    epoch: int
    finished: bool
    checkpoint: Path | None
    val_metrics: dict[str, float]


class Trainer:
    """Train CardioMM from a :class:`~train.config.TrainConfig` (see the module docstring).

    ``Trainer(cfg).fit(resume=...)``. Under torchrun the process group is initialised here
    (``env://``) unless it already is; ``close()`` destroys a group this trainer created.
    """

    def __init__(self, cfg: TrainConfig, *, dist_info: DistInfo | None = None) -> None:
        if not isinstance(cfg, TrainConfig):
            raise ValueError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.dist = dist_info or DistInfo.from_env()
        self._owns_group = False
        if cfg.train.threads is not None:
            torch.set_num_threads(cfg.train.threads)
        if cfg.train.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        self.device = self._device()
        if self.dist.distributed and not (dist.is_available() and dist.is_initialized()):
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, init_method="env://", rank=self.dist.rank,
                                    world_size=self.dist.world_size)
            self._owns_group = True
        self.run_dir = Path(cfg.run_dir)
        self.amp = bool(cfg.train.amp) and self.device.type == "cuda"
        self.normalisation = dict(DEFAULT_NORMALISATION)

        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        self.encoder = make_encoder(cfg.text_encoder.name, cfg.text_encoder.cache_dir)
        self.prompt = PromptSpec(style=cfg.prompt.style, mask_convention=cfg.data.undersampling.convention)
        self.embeddings = EmbeddingTable(self.encoder, self.device, self.prompt.style)
        self.model = build_model(cfg, int(self.encoder.dim))
        if cfg.model.init_from:
            found = load_initial_weights(self.model, cfg.model.init_from, cfg.text_encoder.name, int(self.encoder.dim))
            if self.dist.is_main:
                logger.info("initial weights from %s", found)
        self.model.to(self.device)
        if self.device.type == "cuda":
            self.model.to_channels_last()

        spec = undersampling_spec(cfg.data.undersampling)
        val_spec = undersampling_spec(cfg.data.val_undersampling) if cfg.data.val_undersampling else spec
        cache = sim_cache_dir(cfg)
        self.train_set = UndersampledDataset(concat_sources(cfg.data.train, cache), spec, seed=cfg.seed)
        self.val_set = (UndersampledDataset(concat_sources(cfg.data.val, cache), val_spec, seed=cfg.seed + 1, fixed=True)
                        if cfg.data.val else None)
        n_items = len(self.train_set)
        if n_items == 0:
            raise ValueError("data.train has no items")
        # every sentence this config can produce is embedded now (or the run stops here, in one line,
        # where the encoder cannot be loaded): a run never loads the encoder mid-way, and never at all
        # when the cache holds them all
        from .embeddings import config_sentences, prefill

        encoded = prefill(self.encoder, config_sentences(cfg))
        if encoded and self.dist.is_main:
            logger.info("encoded %d sentences missing from the embedding cache", encoded)
        per_rank = math.ceil(n_items / self.dist.world_size)
        self.batches_per_epoch = math.ceil(per_rank / cfg.data.batch_size)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.train.grad_accum)
        planned = cfg.train.epochs * self.steps_per_epoch
        self.total_steps = min(planned, cfg.train.max_steps) if cfg.train.max_steps else planned

        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            (no_decay if param.ndim <= 1 or name.endswith(".prompts") else decay).append(param)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)
        schedule = cfg.schedule
        total = self.total_steps
        #: fraction of the wall-clock budget spent (schedule.by_time with train.max_seconds), set by fit
        self.time_progress = 0.0

        def factor(step: int) -> float:
            if schedule.by_time and cfg.train.max_seconds:
                # the schedule ends when either budget does: steps or seconds, whichever is further along
                step = max(step, int(self.time_progress * total))
            return lr_factor(step, total, schedule.warmup_steps, schedule.kind, schedule.min_lr_ratio)

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.loss_fn = ReconLoss(cfg.loss.ssim_weight, cfg.loss.l1_weight, cfg.loss.ssim_window)

        self.ddp: torch.nn.Module = self.model
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        self.step = 0
        self.epoch = 0
        self.position = 0
        self.val_metrics: dict[str, float] = {}
        #: set (e.g. by a SIGTERM handler, ``request_stop``) to stop after the current optimiser step
        self.stop_requested = False
        #: training slices skipped because they did not fit in GPU memory
        self.skipped_oom = 0
        if self.dist.is_main:
            logger.info("CardioMM %s: %d parameters, %d training items, %d steps per epoch, %d steps planned, "
                        "device %s, world size %d", cfg.model.name, count_parameters(self.model), n_items,
                        self.steps_per_epoch, self.total_steps, self.device, self.dist.world_size)

    # -- setup helpers ----------------------------------------------------------------------------

    def _device(self) -> torch.device:
        wanted = self.cfg.train.device
        if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()):
            if not torch.cuda.is_available():
                raise ValueError("train.device is 'cuda' but CUDA is not available")
            device = torch.device("cuda", self.dist.local_rank % max(torch.cuda.device_count(), 1))
            torch.cuda.set_device(device)
            if self.cfg.train.cuda_memory_fraction is not None:
                torch.cuda.set_per_process_memory_fraction(float(self.cfg.train.cuda_memory_fraction), device)
            return device
        return torch.device("cpu")

    def _barrier(self) -> None:
        if self.dist.distributed:
            dist.barrier()

    # -- state ------------------------------------------------------------------------------------

    def state_tensors_and_meta(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything needed to resume, as (tensors, JSON-serialisable metadata)."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optim_tensors, optim_meta = flatten_optimizer_state(self.optimizer.state_dict())
        tensors.update(optim_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and self.device.type == "cuda":
            for i, state in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = state
        np_state = np.random.get_state()
        tensors["rng.numpy.keys"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
        py_state = random.getstate()
        meta = {
            "epoch": self.epoch,
            "position": self.position,
            "total_steps": self.total_steps,
            "config": config_to_dict(self.cfg),
            "architecture": self.model.config.to_dict(),
            "text_encoder": {"name": self.encoder.name, "dim": int(self.encoder.dim)},
            "normalisation": self.normalisation,
            "prompt": self.prompt.to_dict(),
            "data_description": describe_sources(self.cfg.data.train),
            "optimizer": optim_meta,
            "scheduler": self.scheduler.state_dict(),
            "rng": {"python": [py_state[0], list(py_state[1]), py_state[2]],
                    "numpy": {"pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                              "cached_gaussian": float(np_state[4])}},
            "sampler": {"seed": self.cfg.seed, "epoch": self.epoch, "position": self.position,
                        "world_size": self.dist.world_size, "batch_size": self.cfg.data.batch_size,
                        "grad_accum": self.cfg.train.grad_accum, "batches_per_epoch": self.batches_per_epoch},
            "metrics": self.val_metrics,
        }
        return tensors, meta

    def save(self) -> Path | None:
        """Write a checkpoint of the current state (rank 0; every rank waits at barriers)."""
        self._barrier()
        path = None
        if self.dist.is_main:
            tensors, meta = self.state_tensors_and_meta()
            path = write_training_checkpoint(self.run_dir, self.step, tensors, meta)
            prune_checkpoints(self.run_dir, self.cfg.checkpoint.keep_last)
        self._barrier()
        return path if path is not None else find_latest(self.run_dir)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Restore model, optimiser, scheduler, counters and RNG states from a checkpoint."""
        ckpt = read_training_checkpoint(path)
        meta = ckpt.meta
        if meta["text_encoder"]["name"] != self.encoder.name:
            raise ValueError(f"checkpoint {ckpt.path} was trained with text encoder {meta['text_encoder']['name']!r}, "
                             f"this run uses {self.encoder.name!r}")
        if same_architecture(meta["architecture"]) != self.model.config.to_dict():
            raise ValueError(f"checkpoint {ckpt.path} holds another architecture than this config builds "
                             f"(model.name / model.overrides changed?)")
        self.model.load_state_dict(ckpt.model_state(), strict=True)
        self.optimizer.load_state_dict(unflatten_optimizer_state(ckpt.tensors, meta["optimizer"]))
        self.scheduler.load_state_dict(meta["scheduler"])
        self.step = int(meta["step"])
        self.epoch = int(meta["epoch"])
        self.position = int(meta["position"])
        self.val_metrics = dict(meta.get("metrics") or {})
        sampler = meta.get("sampler", {})
        if int(meta.get("total_steps", self.total_steps)) != self.total_steps:
            logger.warning("the planned length changed (%s -> %d steps): the learning-rate schedule differs from "
                           "the interrupted run's", meta.get("total_steps"), self.total_steps)
        old = (sampler.get("world_size"), sampler.get("batch_size"), sampler.get("grad_accum"))
        new = (self.dist.world_size, self.cfg.data.batch_size, self.cfg.train.grad_accum)
        if old != new and self.position > 0:
            consumed = self.position * int(old[0] or 1) * int(old[1] or 1)
            self.position = min(self.batches_per_epoch, math.ceil(consumed / (new[0] * new[1])))
            self.position -= self.position % self.cfg.train.grad_accum
            logger.warning("world size / batch size / accumulation changed from %s to %s: resuming epoch %d at "
                           "micro-batch %d (the order within this epoch differs from the interrupted run's)",
                           old, new, self.epoch, self.position)
        torch.set_rng_state(ckpt.tensors["rng.torch"])
        cuda_states = [ckpt.tensors[k] for k in sorted(ckpt.tensors) if k.startswith("rng.cuda.")]
        if cuda_states and self.device.type == "cuda" and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        np_meta = meta["rng"]["numpy"]
        keys = ckpt.tensors["rng.numpy.keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, np_meta["pos"], np_meta["has_gauss"], np_meta["cached_gaussian"]))
        version, internal, gauss = meta["rng"]["python"]
        random.setstate((version, tuple(internal), gauss))
        logger.info("resumed from %s: step %d, epoch %d, micro-batch %d", ckpt.path, self.step, self.epoch,
                    self.position)

    # -- loops ------------------------------------------------------------------------------------

    def _loader(self, dataset: Dataset, batches: list[list[int]]) -> DataLoader:
        return DataLoader(dataset, batch_sampler=batches, collate_fn=collate_examples,
                          num_workers=self.cfg.data.num_workers,
                          pin_memory=self.device.type == "cuda")

    def _grad_norm_and_clip(self) -> float:
        clip = self.cfg.train.grad_clip
        params = [p for p in self.model.parameters() if p.grad is not None]
        if clip:
            return float(torch.nn.utils.clip_grad_norm_(params, clip))
        if not params:
            return 0.0
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.detach()) for p in params])))

    def validate(self) -> dict[str, float]:
        """Validation metrics over the (sharded) validation set: loss, PSNR, SSIM, NMSE (means)."""
        if self.val_set is None:
            return {}
        cfg = self.cfg.validation
        n_items = len(self.val_set) if cfg.max_items is None else min(cfg.max_items, len(self.val_set))
        indices = list(range(n_items))[self.dist.rank::self.dist.world_size]
        sums = torch.zeros(5, dtype=torch.float64)
        self.model.eval()
        with torch.no_grad():
            for batch in self._loader(self.val_set, [[i] for i in indices]):
                magnitude, target, scale = scaled_forward(self.model, batch, self.embeddings, self.device,
                                                          self.normalisation, self.amp)
                terms = self.loss_fn(magnitude, target)
                recon = (magnitude / scale.view(-1, 1, 1, 1)).float().cpu().numpy()
                truth = batch.target.numpy()
                scores = evaluate(recon, truth, convention=cfg.convention, crop=cfg.crop)
                sums += torch.tensor([float(terms.loss), scores["psnr"], scores["ssim"], scores["nmse"], 1.0],
                                     dtype=torch.float64)
        self.model.train()
        if self.dist.distributed:
            dist.all_reduce(sums)
        count = max(float(sums[4]), 1.0)
        return {"loss": float(sums[0]) / count, "psnr": float(sums[1]) / count, "ssim": float(sums[2]) / count,
                "nmse": float(sums[3]) / count, "n_items": int(sums[4])}

    def _validate_and_log(self, log: RunLog) -> None:
        self.val_metrics = self.validate()
        log.row(kind="val", step=self.step, epoch=self.epoch, loss=self.val_metrics["loss"],
                psnr=self.val_metrics["psnr"], ssim=self.val_metrics["ssim"], nmse=self.val_metrics["nmse"])
        log.line(f"[cardiomm-train] validation at step {self.step} (epoch {self.epoch + 1}): PSNR "
                 f"{self.val_metrics['psnr']:.2f} dB SSIM {self.val_metrics['ssim']:.4f} NMSE "
                 f"{self.val_metrics['nmse']:.4f} ({self.val_metrics['n_items']} items)")

    def fit(self, resume: bool | str | os.PathLike[str] = False, stop_after_steps: int | None = None,
            on_step: Callable[[Trainer], None] | None = None, overwrite: bool = False) -> FitResult:
        """Train until the planned length (``epochs`` / ``max_steps``).

        ``resume``: True -> the run folder's latest checkpoint when there is one; a path -> that
        checkpoint (folder or run folder); False -> start fresh, which a run folder holding an
        earlier run refuses (ValueError, :func:`train.run_dir.check_run_dir`) unless ``overwrite``, which deletes
        that run's log and checkpoints first. ``stop_after_steps``: checkpoint and return once
        that many optimiser steps are done in total (a planned interruption; the schedule still
        spans the full length). ``on_step`` is called after every optimiser step.
        ``train.max_seconds``: once this process has trained that long (counted from here), the run
        stops after the current optimiser step as at the planned end: validation (when there is
        validation data), a checkpoint, ``finished`` False.
        """
        cfg = self.cfg
        check_run_dir(self.run_dir, resume, overwrite)
        if overwrite and self.dist.is_main and previous_run(self.run_dir):
            logger.info("--overwrite: deleting the earlier run's %s in %s", ", ".join(previous_run(self.run_dir)),
                        self.run_dir)
            clear_run_dir(self.run_dir)
        if self.dist.distributed:
            dist.barrier()  # every rank has checked (and rank 0 cleared) the folder before rank 0 writes to it
        resumed_from: int | None = None
        if resume:
            path = find_latest(self.run_dir) if resume is True else Path(resume)
            if path is not None:
                self.load(path)
                resumed_from = self.step
            elif self.dist.is_main:
                logger.info("no checkpoint in %s; starting fresh", self.run_dir)
        log = RunLog(self.run_dir, self.dist.is_main, cfg.log.tensorboard, cfg.log.progress, resumed_from)
        if cfg.validation.at_start and self.val_set is not None and resumed_from is None and self.step == 0:
            self._validate_and_log(log)
        self.ddp.train()
        last_checkpoint: Path | None = None
        accum = cfg.train.grad_accum
        started = time.time()
        deadline = None if cfg.train.max_seconds is None else started + float(cfg.train.max_seconds)
        out_of_time = False
        start_step = self.step
        budget = cfg.train.max_seconds

        def time_progress() -> float:
            """Fraction of the wall-clock budget spent, rank 0's on every rank (one learning rate)."""
            value = torch.tensor([min(1.0, (time.time() - started) / budget)], device=self.device)
            if self.dist.distributed:
                dist.broadcast(value, src=0)
            return float(value.item())

        window_start, window_steps = time.time(), 0
        waited = [0.0]  # seconds this window spent waiting for the data loader (data-bound runs)
        try:
            while self.step < self.total_steps and self.epoch < cfg.train.epochs:
                self.train_set.set_epoch(self.epoch)
                order = epoch_order(len(self.train_set), cfg.seed, self.epoch, self.dist.rank, self.dist.world_size)
                batches = [order[i:i + cfg.data.batch_size] for i in range(0, len(order), cfg.data.batch_size)]
                sums = {"loss": 0.0, "l1": 0.0, "ssim": 0.0, "n": 0}
                for batch in _timed(self._loader(self.train_set, batches[self.position:]), waited):
                    group_start = (self.position // accum) * accum
                    group_size = min(accum, len(batches) - group_start)
                    last_in_group = self.position + 1 == group_start + group_size
                    sync = self.ddp.no_sync() if (self.dist.distributed and not last_in_group) else nullcontext()
                    try:
                        with sync:
                            magnitude, target, _ = scaled_forward(self.ddp, batch, self.embeddings, self.device,
                                                                  self.normalisation, self.amp)
                            terms = self.loss_fn(magnitude, target)
                            (terms.loss / group_size).backward()
                    except _CUDA_OOM:
                        if self.dist.distributed or self.device.type != "cuda":
                            raise
                        # one slice too large for the memory this process may use: skip it (its
                        # accumulation group's gradients too) rather than lose the run
                        magnitude = target = terms = None  # type: ignore[assignment]
                        self.optimizer.zero_grad(set_to_none=True)
                        torch.cuda.empty_cache()
                        self.skipped_oom += 1
                        logger.warning("CUDA out of memory on %s (k-space %s): skipped (%d so far)",
                                       ", ".join(batch.identifiers), tuple(batch.masked_kspace.shape),
                                       self.skipped_oom)
                        self.position += 1
                        continue
                    sums["loss"] += float(terms.loss.detach())
                    sums["l1"] += float(terms.l1)
                    sums["ssim"] += float(terms.ssim)
                    sums["n"] += 1
                    self.position += 1
                    if not last_in_group:
                        continue
                    grad_norm = self._grad_norm_and_clip()
                    lr = self.optimizer.param_groups[0]["lr"]
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    if budget is not None and cfg.schedule.by_time:
                        self.time_progress = time_progress()
                    self.scheduler.step()
                    self.step += 1
                    window_steps += 1
                    if on_step is not None:
                        on_step(self)
                    if self.step % cfg.log.every_steps == 0 or self.step == self.total_steps:
                        now = time.time()
                        per_step = (now - window_start) / max(window_steps, 1)
                        n = max(sums["n"], 1)
                        data_wait = waited[0] / max(window_steps, 1)
                        log.row(kind="train", step=self.step, epoch=self.epoch, loss=sums["loss"] / n,
                                l1=sums["l1"] / n, ssim=sums["ssim"] / n, lr=lr, grad_norm=grad_norm,
                                sec_per_step=per_step, data_wait=data_wait)
                        eta = per_step * (self.total_steps - self.step)
                        if deadline is not None:  # a wall-clock budget ends the run first
                            eta = min(eta, max(0.0, deadline - now))
                        log.line(f"[cardiomm-train] epoch {self.epoch + 1}/{cfg.train.epochs} step {self.step}/"
                                 f"{self.total_steps} ({100.0 * self.step / self.total_steps:.0f}%) loss "
                                 f"{sums['loss'] / n:.4f} ssim {sums['ssim'] / n:.4f} lr {lr:.2e} "
                                 f"{per_step:.2f} s/step (data {data_wait:.2f} s) ETA {format_seconds(eta)}")
                        sums = {"loss": 0.0, "l1": 0.0, "ssim": 0.0, "n": 0}
                        window_start, window_steps = now, 0
                        waited[0] = 0.0
                    epoch_done = self.position >= len(batches)
                    every = cfg.checkpoint.every_steps
                    out_of_time = self._should_stop(deadline)
                    stop = self.step >= self.total_steps or out_of_time or (stop_after_steps is not None
                                                                            and self.step >= stop_after_steps)
                    if every and self.step % every == 0 and not epoch_done and not stop:
                        last_checkpoint = self.save()
                    if stop:
                        break
                epoch_end = self.position >= len(batches)
                at_end = self.step >= self.total_steps or out_of_time
                every_val = cfg.validation.every_epochs
                if self.val_set is not None and every_val and not self.stop_requested and (
                        (epoch_end and (self.epoch + 1) % every_val == 0) or (at_end and not epoch_end)
                        or (out_of_time and epoch_end)):
                    paused = time.time()
                    self._validate_and_log(log)
                    window_start += time.time() - paused  # seconds per step count training only
                stop = at_end or (stop_after_steps is not None and self.step >= stop_after_steps)
                if epoch_end:
                    self.epoch += 1
                    self.position = 0
                if epoch_end or stop:
                    last_checkpoint = self.save()
                if stop:
                    break
        finally:
            log.close()
        finished = self.step >= self.total_steps or self.epoch >= cfg.train.epochs
        if self.dist.is_main:
            if self.stop_requested and not finished:
                log.line("[cardiomm-train] stop requested (SIGTERM): stopped after the current step, checkpoint "
                         "written, no final validation")
            elif out_of_time and not finished:
                log.line(f"[cardiomm-train] the time budget (train.max_seconds = {cfg.train.max_seconds:g} s) "
                         f"is spent")
            if self.skipped_oom:
                log.line(f"[cardiomm-train] {self.skipped_oom} slices skipped for lack of GPU memory")
            log.line(f"[cardiomm-train] {'finished' if finished else 'stopped'} at step {self.step} "
                     f"(epoch {self.epoch}) after {format_seconds(time.time() - started)}; "
                     f"{self.step - start_step} steps this run; checkpoint {last_checkpoint}")
        return FitResult(self.step, self.epoch, finished, last_checkpoint, dict(self.val_metrics))

    def request_stop(self) -> None:
        """Stop after the current optimiser step, write a checkpoint and return from ``fit`` (no
        final validation); safe to call from a signal handler."""
        self.stop_requested = True

    def _should_stop(self, deadline: float | None) -> bool:
        """Whether the time budget is spent or a stop was requested (under DDP every rank stops when
        any rank would: one all-reduce of a flag per step)."""
        spent = deadline is not None and time.time() >= deadline
        if self.dist.distributed:
            flags = torch.tensor([1.0 if spent else 0.0, 1.0 if self.stop_requested else 0.0],
                                 device=self.device if self.device.type == "cuda" else "cpu")
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            spent, self.stop_requested = bool(flags[0].item() > 0), bool(flags[1].item() > 0)
        return spent or self.stop_requested

    def close(self) -> None:
        """Destroy the process group when this trainer created it."""
        if self._owns_group and dist.is_initialized():
            try:
                # every rank leaves together: a rank that tears the group down while a peer is still
                # in its last collective or checkpoint barrier aborts (gloo: "terminate called
                # without an active exception", SIGABRT at exit)
                dist.barrier()
            except RuntimeError as error:  # a peer already gone: nothing left to wait for
                logger.debug("final barrier: %s", error)
            dist.destroy_process_group()
            self._owns_group = False
