"""Train the models of the issue-14 quality table, one after the other, and export them.

    python -m benchmarks.bench_train --out runs/bench                # GPU: the three bench configs
    python -m benchmarks.bench_train --out runs/bench --max-seconds 180 --max-steps 1500
    python -m benchmarks.bench_train --out /tmp/twins --tiny         # CPU twins (seconds; tests, bench-quick)

For each of ``small`` (train/configs/bench_small_gpu.yaml), ``cardiosm``
(bench_cardiosm_gpu.yaml) and ``varnet`` (bench_varnet_gpu.yaml, capacity-matched; ``--only
varnet_published`` for fastMRI's published size): train from scratch with the project's trainer,
export ``OUT/<name>.safetensors`` + ``.json`` (float16 on disk) and record what happened in
``OUT/bench_train.json`` (steps, seconds, parameters, device, whether the run finished or the
wall-clock budget stopped it). ``--max-seconds`` / ``--max-steps`` change the budget of every
model alike, so the comparison stays fair.

``--tiny``: the CPU twins of the same configs (tiny phantoms, tiny networks of the same families:
CardioMM ``tiny`` with the proximal unroll, the same with ``context: none``, a 2-cascade VarNet;
hashing text encoders; a few steps), for tests and ``make bench-quick``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

logger = logging.getLogger(__name__)

#: name -> config of the quality table's learned methods.
CONFIGS: dict[str, Path] = {
    "small": ROOT / "train/configs/bench_small_gpu.yaml",
    "cardiosm": ROOT / "train/configs/bench_cardiosm_gpu.yaml",
    "varnet": ROOT / "train/configs/bench_varnet_gpu.yaml",
    "varnet_published": ROOT / "train/configs/bench_varnet_published_gpu.yaml",
}
DEFAULT_MODELS = ("small", "cardiosm", "varnet")

_TINY_SOURCE = ("{kind: synthetic, n_subjects: %d, seed: %d, matrix: [%d, %d], n_frames: 4, n_coils: 5, "
                "modalities: [cine, t1map, t2map], readout_oversampling: 1, noise_level: 0.01, "
                "prewhiten: true, compress_coils: 4, target: noise_free}")
#: the tiny networks of each family
_TINY_MODELS = {
    "small": ["model.name=tiny", "model.overrides={unroll: proximal}", "text_encoder.name=hashing"],
    "cardiosm": ["model.name=tiny", "model.overrides={unroll: proximal, context: none}", "text_encoder.name=hashing"],
    "varnet": ["model.overrides={num_cascades: 2, chans: 4, pools: 2, sens_chans: 4, sens_pools: 2}"],
    "varnet_published": ["model.overrides={num_cascades: 2, chans: 4, pools: 2, sens_chans: 4, sens_pools: 2}"],
}


def twin_overrides(name: str, steps: int = 4) -> list[str]:
    """``--override`` strings that turn a bench config into its tiny CPU twin (same sections)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(CONFIGS)}")
    return [
        f"data.train=[{_TINY_SOURCE % (12, 0, 32, 28)}, {_TINY_SOURCE % (12, 1, 24, 20)}]",
        f"data.val=[{_TINY_SOURCE % (1, 100000, 32, 28)}]",
        "data.num_workers=0", "data.sim_cache=null", "data.undersampling.n_acs=6", "data.undersampling.accelerations=[4, 8]",
        *_TINY_MODELS[name],
        f"train.max_steps={steps}", "train.max_seconds=600", "train.device=cpu", "train.threads=1",
        "schedule.warmup_steps=1", "checkpoint.every_steps=0", "log.every_steps=1", "log.progress=false",
    ]


def train_and_export(name: str, out: Path, overrides: Sequence[str] = (), storage_dtype: str = "float16") -> dict:
    """Train config ``name`` (with ``overrides``; its run folder under ``out/runs``) and export
    ``out/<name>.safetensors``; return its record for bench_train.json."""
    import torch

    from cardiomm_core.model import count_parameters
    from train.config_io import load_config
    from train.export import export_checkpoint
    from train.trainer import Trainer

    cfg = load_config(CONFIGS[name], [f"run_dir={out / 'runs' / name}", *overrides])
    started = time.time()
    trainer = Trainer(cfg)
    n_params = count_parameters(trainer.model)
    device = str(trainer.device)
    gpu = torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else None
    try:
        result = trainer.fit(overwrite=True)
    finally:
        trainer.close()
    seconds = time.time() - started
    path = export_checkpoint(cfg.run_dir, out / f"{name}.safetensors", storage_dtype=storage_dtype)
    record = {
        "name": name, "config": str(CONFIGS[name].relative_to(ROOT)), "overrides": list(overrides),
        "checkpoint": str(path), "parameters": n_params, "device": device, "gpu": gpu,
        "steps": result.step, "planned_steps": trainer.total_steps, "finished": result.finished,
        "max_seconds": cfg.train.max_seconds, "seconds_with_setup": round(seconds, 1),
        "validation": result.val_metrics, "file_bytes": path.stat().st_size,
    }
    del trainer
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for <name>.safetensors/.json, runs/ and bench_train.json")
    parser.add_argument("--only", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated models among {sorted(CONFIGS)} (default: {','.join(DEFAULT_MODELS)})")
    parser.add_argument("--max-seconds", type=float, default=None, help="wall-clock budget of every model alike")
    parser.add_argument("--max-steps", type=int, default=None, help="optimiser steps of every model alike")
    parser.add_argument("--tiny", action="store_true", help="the tiny CPU twins (tests, make bench-quick)")
    parser.add_argument("--tiny-steps", type=int, default=4, help="steps of the tiny twins (default 4)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every model (repeatable)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.tiny:  # tiny grids: the mask generators say each time that R is approximate there
        logging.getLogger("cardiomm_core.masks").setLevel(logging.ERROR)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown or not names:
        sys.stderr.write(f"bench_train: error: unknown model(s) {unknown}; known: {sorted(CONFIGS)}\n")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = list(args.override)
    if args.max_seconds is not None:
        common.append(f"train.max_seconds={args.max_seconds}")
    if args.max_steps is not None:
        common.append(f"train.max_steps={args.max_steps}")
    records = []
    for i, name in enumerate(names):
        overrides = (twin_overrides(name, args.tiny_steps) if args.tiny else []) + common
        sys.stderr.write(f"[bench_train] {i + 1}/{len(names)} {name}: {CONFIGS[name].name}"
                         f"{' (tiny CPU twin)' if args.tiny else ''}\n")
        try:
            records.append(train_and_export(name, out, overrides))
        except (ValueError, FileNotFoundError, ImportError) as error:
            sys.stderr.write(f"bench_train: error: {name}: {error}\n")
            return 2
        rec = records[-1]
        sys.stderr.write(f"[bench_train] {name}: {rec['steps']}/{rec['planned_steps']} steps "
                         f"({'finished' if rec['finished'] else 'stopped by the budget'}), "
                         f"{rec['seconds_with_setup']} s, {rec['parameters'] / 1e6:.2f} M parameters -> "
                         f"{rec['checkpoint']} ({rec['file_bytes'] / 2**20:.1f} MiB)\n")
        (out / "bench_train.json").write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
