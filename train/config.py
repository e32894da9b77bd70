"""Typed training configuration: the dataclasses a YAML config fills, and the checks of their values.

Reading and writing them (YAML files, ``key=value`` overrides, plain mappings): ``train.config_io``.

A config file is a YAML mapping whose sections mirror :class:`TrainConfig`::

    run_dir: runs/synthetic_small
    seed: 0
    data:
      train: [{kind: synthetic, n_subjects: 64, seed: 0, matrix: [128, 112]}]
      val:   [{kind: synthetic, n_subjects: 4, seed: 1000}]
      undersampling: {patterns: [ktGaussian, ktUniform, Uniform], accelerations: [4, 8, 12, 16, 20, 24]}
    model: {name: small, overrides: {n_cascades: 4}}
    text_encoder: {name: minilm}
    optim: {lr: 3.0e-4, weight_decay: 1.0e-4, betas: [0.9, 0.999]}
    schedule: {warmup_steps: 100, min_lr_ratio: 0.05}
    loss: {ssim_weight: 0.84, l1_weight: 0.16}
    train: {epochs: 10, max_steps: null, grad_clip: 1.0, grad_accum: 1}
    checkpoint: {every_steps: 200}

Every section is a dataclass; a key that no dataclass field names is a ValueError naming the key
and its section (``data.train[0]: unknown key(s) ['n_subject']; known: [...]``), and so is a
value of the wrong type. ``--override a.b.c=VALUE`` sets one field after the file is read (VALUE
is parsed as YAML: ``3``, ``1e-4``, ``[4, 8]``, ``null``); list items are addressed by index
(``data.train.0.n_subjects=8``).

Data sources (``data.train`` / ``data.val`` lists, ``kind`` picks the dataclass):
``synthetic`` (:class:`SyntheticSource`, phantoms on the fly), ``cmrxrecon``
(:class:`CMRxReconSource`, challenge folders) and ``ismrmrd`` (:class:`IsmrmrdSource`, raw files).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SOURCE_KINDS",
    "CheckpointConfig",
    "CMRxReconSource",
    "DataConfig",
    "IsmrmrdSource",
    "LogConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "SyntheticSource",
    "TextEncoderConfig",
    "TrainConfig",
    "TrainLoopConfig",
    "UndersamplingConfig",
    "ValidationConfig",
    "undersampling_spec",
]


# --------------------------------------------------------------------------- data sources


@dataclass
class SyntheticSource:
    """Synthetic phantoms (``train.data.synthetic.SyntheticCardiacDataset``); new seeds = new subjects.

    ``prewhiten`` / ``compress_coils``: the coil mixing of the Gadgetron chain (NoiseAdjust,
    CoilCompression) applied to the k-space; ``target``: "rss" (the noisy fully sampled RSS, the
    CMRxRecon convention) or "noise_free" (the RSS of the noise-free coil images).

    Varied acquisitions, per subject from (seed, subject) (all null by default: the fixed
    ``matrix`` / ``n_frames`` / ``n_coils`` / ``noise_level``): ``nx_range`` / ``ny_range``
    (inclusive ``[low, high]`` of the recon readout / phase matrix), ``coils_range`` (receive coils
    before ``compress_coils``, which then keeps ``min(compress_coils, coils)``),
    ``frames_by_modality`` (``{cine: [8, 30], t1map: [9, 9], t2map: [3, 3]}``), ``noise_range``
    (log-uniform noise level), ``scanners`` (``[[field T, vendor, model], ...]``; null: 3 T Siemens
    Vida, or ``scanner_set: varied`` for twelve 1.5 T / 3 T systems of four vendors) and
    ``scanner_choice`` ("cycle": in turn over subjects; "random": drawn per subject)."""

    kind: str = "synthetic"
    n_subjects: int = 16
    seed: int = 0
    n_frames: int = 12
    n_coils: int = 8
    matrix: tuple[int, int] = (128, 112)
    modalities: tuple[str, ...] = ("cine", "t1map", "t2map")
    n_slices: int = 1
    noise_level: float = 0.01
    readout_oversampling: int = 2
    prewhiten: bool = False
    compress_coils: int | None = None
    target: str = "rss"
    nx_range: tuple[int, int] | None = None
    ny_range: tuple[int, int] | None = None
    coils_range: tuple[int, int] | None = None
    frames_by_modality: dict[str, tuple[int, int]] | None = None
    noise_range: tuple[float, float] | None = None
    scanners: tuple[tuple[float, str, str], ...] | None = None
    scanner_set: str = "default"
    scanner_choice: str = "cycle"


@dataclass
class CMRxReconSource:
    """CMRxRecon challenge data (``train.data.cmrxrecon.CMRxReconDataset``)."""

    kind: str = "cmrxrecon"
    root: str = ""
    year: int | None = None
    modalities: tuple[str, ...] | None = None
    split: str | None = "train"
    lax_view: str = "long-axis"
    readout_oversampling: int = 1
    on_read_error: str = "next"


@dataclass
class IsmrmrdSource:
    """Fully sampled ISMRMRD raw files (``train.data.ismrmrd_raw.IsmrmrdRawDataset``)."""

    kind: str = "ismrmrd"
    paths: tuple[str, ...] = ()
    group: str = "dataset"
    prewhiten: bool = True
    remove_oversampling: bool = False
    on_read_error: str = "next"


SourceConfig = SyntheticSource | CMRxReconSource | IsmrmrdSource
#: ``kind`` -> source dataclass.
SOURCE_KINDS: dict[str, type] = {"synthetic": SyntheticSource, "cmrxrecon": CMRxReconSource,
                                 "ismrmrd": IsmrmrdSource}


@dataclass
class UndersamplingConfig:
    """Mirror of ``train.data.undersample.UndersamplingSpec`` (see there).

    ``pattern_accelerations`` None keeps the spec's default (Uniform at the challenge's 4, 8, 10);
    ``{}`` gives every pattern the general ``accelerations``. ``convention``: "project" mask
    generators or the "official" CardioMM recipes (20 ACS lines; the paper's protocol is
    Uniform / ktGaussian / ktRadial at R 8, 16, 24); the training undersampling's convention is
    recorded in the exported checkpoint's ``prompt.mask_convention``.
    """

    patterns: tuple[str, ...] = ("ktUniform", "ktGaussian", "ktRadial", "Uniform")
    accelerations: tuple[float, ...] = (4.0, 8.0, 12.0, 16.0, 20.0, 24.0)
    n_acs: int | None = None
    pattern_weights: tuple[float, ...] | None = None
    acceleration_weights: tuple[float, ...] | None = None
    pattern_accelerations: dict[str, tuple[float, ...]] | None = None
    convention: str = "project"


@dataclass
class DataConfig:
    """Training and validation sources, the undersampling draws and the loader.

    ``batch_size`` is per process (GPU); examples of one batch must have equal shapes (1 is the
    usual setting for mixed cardiac data; varied synthetic sources need 1). ``val_undersampling``
    None uses ``undersampling``; validation masks are fixed (the same for an item in every epoch).
    ``sim_cache``: keep simulated synthetic slices on disk and read them back on later visits
    (later epochs, a resumed run, other runs with the same data): null (off), "run" (under
    ``run_dir/sim_cache``) or a folder (shareable by concurrent runs; entries are named by a
    fingerprint of the source's parameters and written atomically).
    """

    train: list[SourceConfig] = field(default_factory=lambda: [SyntheticSource()])
    val: list[SourceConfig] = field(default_factory=list)
    undersampling: UndersamplingConfig = field(default_factory=UndersamplingConfig)
    val_undersampling: UndersamplingConfig | None = None
    batch_size: int = 1
    num_workers: int = 0
    sim_cache: str | None = None


@dataclass
class ModelConfig:
    """``cardiomm_core.model.config_by_name(name, text_dim)`` with field ``overrides``.

    ``name: varnet`` trains fastMRI's E2E-VarNet instead (a benchmark peer,
    ``cardiomm_core.varnet``; needs ``pip install --no-deps fastmri==0.3.0``): its published size
    (12 cascades, 18 channels) with ``VarNetConfig`` fields as overrides (``num_cascades``,
    ``chans``, ``pools``, ``sens_chans``, ``sens_pools``, ``mask_center``). The CardioSM ablation
    is a CardioMM with ``overrides: {context: none}`` (constant, zero text embeddings).

    ``init_from``: start from the weights of another run (fine-tuning): a training checkpoint (a
    ``checkpoints/step_*`` folder, or a run folder: its latest) or an inference checkpoint
    (``.safetensors`` / ``.json``, e.g. an exported or the packaged model). Its architecture and
    text encoder must be this run's. Only the weights are taken (a fresh optimiser, schedule and
    step count); a resumed run continues from its own checkpoint instead.
    """

    name: str = "small"
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None


@dataclass
class TextEncoderConfig:
    """Frozen text encoder (``cardiomm_core.text.get_encoder``); ``cache_dir`` None: the default
    on-disk embedding cache (``$CARDIOMM_CACHE_DIR`` or ``~/.cache/cardiomm/embeddings``)."""

    name: str = "minilm"
    cache_dir: str | None = None


@dataclass
class PromptConfig:
    """How the model is spoken to: ``style`` of the sentences, "project" or "official"
    (``cardiomm_core.context``); recorded in the checkpoint's ``prompt`` section."""

    style: str = "project"


@dataclass
class OptimConfig:
    """AdamW."""

    lr: float = 3e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


@dataclass
class ScheduleConfig:
    """Linear warm-up from 0 over ``warmup_steps``, then cosine decay to ``min_lr_ratio * lr`` at
    the last step (``kind: constant`` keeps ``lr`` after the warm-up). ``by_time`` (with
    ``train.max_seconds``): the schedule's position is the further along of steps / planned steps
    and seconds / max_seconds, so the cosine reaches its end when either budget runs out (runs
    compared at an equal wall-clock budget; the learning rate then depends on the machine's speed)."""

    kind: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    by_time: bool = False


@dataclass
class LossConfig:
    """``ssim_weight * (1 - SSIM) + l1_weight * L1`` on the magnitude, in the engine's scaling."""

    ssim_weight: float = 0.84
    l1_weight: float = 0.16
    ssim_window: int = 7


@dataclass
class TrainLoopConfig:
    """Length, precision, clipping, accumulation, device.

    Training stops after ``epochs`` epochs or ``max_steps`` optimiser steps, whichever comes
    first (``max_steps`` None: epochs only); the learning-rate schedule spans that length.
    ``amp``: bf16 autocast on CUDA (ignored on the CPU). ``grad_clip`` None or 0: no clipping.
    ``deterministic``: ``torch.use_deterministic_algorithms`` (bit-identical resume on the CPU).
    ``device``: "auto", "cpu" or "cuda" (under torchrun each process takes ``cuda:LOCAL_RANK``).
    ``threads``: torch CPU threads (None: torch's default).
    ``max_seconds``: a wall-clock budget for this process's training loop (None: none): once it
    is spent the run stops after the current optimiser step, validates (when it has validation
    data), checkpoints and returns, as at the planned end; the schedule keeps its planned length.
    Several runs given the same budget can be compared.
    ``cuda_memory_fraction``: the share of the GPU's memory this process may take
    (``torch.cuda.set_per_process_memory_fraction``; None: all), for runs that share one GPU; a
    training slice that does not fit is skipped with a warning (single-process runs).
    """

    epochs: int = 1
    max_steps: int | None = None
    max_seconds: float | None = None
    grad_clip: float | None = 1.0
    grad_accum: int = 1
    amp: bool = True
    deterministic: bool = False
    device: str = "auto"
    threads: int | None = None
    cuda_memory_fraction: float | None = None


@dataclass
class ValidationConfig:
    """Validation at every epoch end: PSNR / SSIM / NMSE (``cardiomm_core.metrics.evaluate``).

    ``at_start``: also validate before the first step of a fresh run (the starting weights, e.g.
    those of ``model.init_from``, on the same validation set), logged at step 0."""

    every_epochs: int = 1
    at_start: bool = False
    max_items: int | None = None
    convention: str = "2024"
    crop: bool = True


@dataclass
class CheckpointConfig:
    """Training-state checkpoints every ``every_steps`` optimiser steps (0: only at epoch ends
    and at the end), keeping the newest ``keep_last``."""

    every_steps: int = 500
    keep_last: int = 3


@dataclass
class LogConfig:
    """CSV log every ``every_steps`` steps (always), TensorBoard when installed and enabled,
    a progress line on stderr."""

    every_steps: int = 10
    tensorboard: bool = True
    progress: bool = True


@dataclass
class TrainConfig:
    """The whole run (see the module docstring)."""

    run_dir: str = "runs/cardiomm"
    seed: int = 0
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        _validate(self)


# --------------------------------------------------------------------------- value checks


def _check(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{where}: {message}")


def _validate(cfg: TrainConfig) -> None:
    """Value checks that the types cannot express."""
    from cardiomm_core.metrics import CONVENTIONS
    from cardiomm_core.model import CONFIG_NAMES

    _check(bool(cfg.run_dir), "run_dir", "must not be empty")
    _check(cfg.seed >= 0, "seed", f"must be >= 0, got {cfg.seed}")
    _check(len(cfg.data.train) > 0, "data.train", "needs at least one source")
    for split in ("train", "val"):
        for i, source in enumerate(getattr(cfg.data, split)):
            where = f"data.{split}[{i}]"
            if isinstance(source, CMRxReconSource):
                _check(bool(source.root), f"{where}.root", "must name the challenge data folder")
            if isinstance(source, IsmrmrdSource):
                _check(len(source.paths) > 0, f"{where}.paths", "must list at least one file")
            if isinstance(source, SyntheticSource):
                _check(source.n_subjects >= 1, f"{where}.n_subjects", "must be >= 1")
                _check(source.scanner_set in ("default", "varied"), f"{where}.scanner_set",
                       f"must be 'default' or 'varied', got {source.scanner_set!r}")
                _check(source.scanners is None or source.scanner_set == "default", f"{where}.scanners",
                       "give scanners or scanner_set: varied, not both")
                if split == "train" and cfg.data.batch_size > 1:
                    varied = (source.nx_range, source.ny_range, source.coils_range, source.frames_by_modality)
                    _check(all(v is None for v in varied), "data.batch_size",
                           f"must be 1 with varied synthetic geometry ({where}): examples of one batch must have "
                           "equal shapes")
    _check(cfg.data.batch_size >= 1, "data.batch_size", f"must be >= 1, got {cfg.data.batch_size}")
    _check(cfg.data.num_workers >= 0, "data.num_workers", f"must be >= 0, got {cfg.data.num_workers}")
    _check(cfg.prompt.style in ("project", "official"), "prompt.style",
           f"must be 'project' or 'official', got {cfg.prompt.style!r}")
    names = [*CONFIG_NAMES, "varnet"]
    _check(cfg.model.name in names, "model.name", f"must be one of {names}, got {cfg.model.name!r}")
    _check(cfg.optim.lr > 0, "optim.lr", f"must be > 0, got {cfg.optim.lr}")
    _check(cfg.optim.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {cfg.optim.weight_decay}")
    _check(all(0 <= b < 1 for b in cfg.optim.betas), "optim.betas", f"must lie in [0, 1), got {cfg.optim.betas}")
    _check(cfg.schedule.kind in ("cosine", "constant"), "schedule.kind",
           f"must be 'cosine' or 'constant', got {cfg.schedule.kind!r}")
    _check(cfg.schedule.warmup_steps >= 0, "schedule.warmup_steps", "must be >= 0")
    _check(0 <= cfg.schedule.min_lr_ratio <= 1, "schedule.min_lr_ratio", "must lie in [0, 1]")
    _check(cfg.loss.ssim_weight >= 0 and cfg.loss.l1_weight >= 0, "loss", "weights must be >= 0")
    _check(cfg.loss.ssim_weight + cfg.loss.l1_weight > 0, "loss", "at least one weight must be > 0")
    _check(cfg.loss.ssim_window >= 3 and cfg.loss.ssim_window % 2 == 1, "loss.ssim_window",
           f"must be an odd integer >= 3, got {cfg.loss.ssim_window}")
    _check(cfg.train.epochs >= 1, "train.epochs", f"must be >= 1, got {cfg.train.epochs}")
    _check(cfg.train.max_steps is None or cfg.train.max_steps >= 1, "train.max_steps", "must be >= 1 or null")
    _check(cfg.train.grad_accum >= 1, "train.grad_accum", f"must be >= 1, got {cfg.train.grad_accum}")
    _check(cfg.train.grad_clip is None or cfg.train.grad_clip >= 0, "train.grad_clip", "must be >= 0 or null")
    _check(cfg.train.device in ("auto", "cpu", "cuda"), "train.device",
           f"must be 'auto', 'cpu' or 'cuda', got {cfg.train.device!r}")
    _check(cfg.train.threads is None or cfg.train.threads >= 1, "train.threads", "must be >= 1 or null")
    _check(cfg.train.max_seconds is None or cfg.train.max_seconds > 0, "train.max_seconds", "must be > 0 or null")
    _check(cfg.train.cuda_memory_fraction is None or 0 < cfg.train.cuda_memory_fraction <= 1,
           "train.cuda_memory_fraction", "must lie in (0, 1] or be null")
    _check(cfg.validation.every_epochs >= 0, "validation.every_epochs", "must be >= 0 (0: never)")
    _check(cfg.validation.convention in CONVENTIONS, "validation.convention",
           f"must be one of {list(CONVENTIONS)}, got {cfg.validation.convention!r}")
    _check(cfg.checkpoint.every_steps >= 0, "checkpoint.every_steps", "must be >= 0")
    _check(cfg.checkpoint.keep_last >= 1, "checkpoint.keep_last", "must be >= 1")
    _check(cfg.log.every_steps >= 1, "log.every_steps", "must be >= 1")
    # the undersampling spec checks itself when built; the model overrides when the model is built
    for name in ("undersampling", "val_undersampling"):
        spec = getattr(cfg.data, name)
        if spec is not None:
            try:
                undersampling_spec(spec)
            except ValueError as error:
                raise ValueError(f"data.{name}: {error}") from error


def undersampling_spec(cfg: UndersamplingConfig) -> Any:
    """The ``train.data.undersample.UndersamplingSpec`` of an :class:`UndersamplingConfig`."""
    from train.data.undersample import UndersamplingSpec

    kwargs: dict[str, Any] = dict(patterns=tuple(cfg.patterns), accelerations=tuple(cfg.accelerations),
                                  n_acs=cfg.n_acs, pattern_weights=cfg.pattern_weights,
                                  acceleration_weights=cfg.acceleration_weights, convention=cfg.convention)
    if cfg.pattern_accelerations is not None:
        kwargs["pattern_accelerations"] = {k: tuple(v) for k, v in cfg.pattern_accelerations.items()}
    return UndersamplingSpec(**kwargs)
