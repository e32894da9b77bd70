#!/usr/bin/env bash
# One-shot GPU check of the CardioMM model (prepared for a single H100/H200 run; installs nothing).
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh
#
# 1. the CUDA-marked unit tests (engine on CUDA against the CPU);
# 2. correctness: tiny and small (random weights, seeded) through InferenceEngine on CUDA, in fp32
#    and bf16 autocast, against the CPU result (relative L2 error), on a reduced slice;
#    (GPU_CHECK_CONFIGS=small,base,official adds the authors' architecture to step 3)
# 3. speed: small and base on one CMRxRecon cine slice (10 coils, 12 frames, 246 x 256) in fp32
#    and bf16, eager and (time permitting) torch.compile'd, with peak GPU memory, plus the whole
#    engine path for base bf16 (host -> device, normalisation, network, device -> host);
# 4. writes $OUT/gpu_check.{json,md,log}, $OUT/pytest_cuda.txt, $OUT/nvidia_smi.txt and prints a
#    short table last.
#
# Uses the hashing text encoder only (no MiniLM on the GPU machine), the machine's own python3
# (PYTHON=... to override), and stays within GPU_CHECK_BUDGET_S seconds (default 330) for step 3.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export CARDIOMM_CACHE_DIR="${TMPDIR:-/tmp}/cardiomm_gpu_check_embeddings"

nvidia-smi >"$OUT/nvidia_smi.txt" 2>&1 || echo "nvidia-smi failed" >>"$OUT/nvidia_smi.txt"

echo "== CUDA unit tests"
timeout 180 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/core/test_engine.py tests/core/test_model.py \
    tests/core/test_official.py \
    >"$OUT/pytest_cuda.txt" 2>&1
echo "pytest -m cuda exit code: $?" | tee -a "$OUT/pytest_cuda.txt"
tail -n 3 "$OUT/pytest_cuda.txt"

echo "== model check"
timeout "${GPU_CHECK_TIMEOUT:-480}" "$PY" - "$OUT" <<'PYCODE' 2>&1 | tee "$OUT/gpu_check.log"
import copy
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, "benchmarks")
import model_speed as ms  # noqa: E402
from cardiomm_core.context import ScanContext  # noqa: E402
from cardiomm_core.engine import InferenceEngine  # noqa: E402
from cardiomm_core.model import count_parameters  # noqa: E402
from cardiomm_core.text import HashingEncoder  # noqa: E402

out = Path(sys.argv[1])
budget = float(os.environ.get("GPU_CHECK_BUDGET_S", "330"))
began = time.perf_counter()
# GPU_CHECK_DEVICE=cpu GPU_CHECK_CONFIGS=tiny GPU_CHECK_COMPILE=0 dry-runs this script's logic on a CPU machine
dev = torch.device(os.environ.get("GPU_CHECK_DEVICE", "cuda"))
configs = os.environ.get("GPU_CHECK_CONFIGS", "small,base").split(",")
assert dev.type != "cuda" or torch.cuda.is_available(), "no CUDA device"
is_cuda = dev.type == "cuda"
torch.backends.cudnn.benchmark = True
results = {"device": torch.cuda.get_device_name(dev) if is_cuda else "cpu (dry run)", "torch": torch.__version__, "cuda": torch.version.cuda,
           "tf32_conv": torch.backends.cudnn.allow_tf32, "correctness": [], "timing": [], "errors": []}
encoder = HashingEncoder(dim=ms.TEXT_DIM)
context = ScanContext(acceleration=8, pattern="ktUniform")


def save():
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")


def elapsed():
    return time.perf_counter() - began


# -- 2. correctness -------------------------------------------------------------------------------
# fp32 means fp32 here: TF32 convolutions (cuDNN's default) are re-enabled for the timings
tf32_default = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
k_small, m_small = ms.make_slice(seed=1, n_coils=4, n_frames=6, n_ky=118, n_kx_enc=252, n_kx=126)
k_np, m_np = k_small.numpy(), m_small.numpy()
for name in ("tiny", "small"):
    try:
        cpu_model = ms.build_model(name, torch.device("cpu"))
        ref = InferenceEngine(copy.deepcopy(cpu_model), encoder, device="cpu").reconstruct(k_np, m_np, context)
        for amp in (False, True):
            engine = InferenceEngine(copy.deepcopy(cpu_model), encoder, device=dev, amp=amp)
            got = engine.reconstruct(k_np, m_np, context)
            rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
            limit = 5e-2 if amp else 5e-3
            row = {"config": name, "dtype": "bf16" if amp else "fp32", "rel_err": rel, "limit": limit,
                   "ok": bool(rel < limit and got.dtype == np.complex64 and got.shape == ref.shape)}
            results["correctness"].append(row)
            print(f"correctness {name:5s} {row['dtype']}: rel err {rel:.2e} (limit {limit:.0e}) "
                  f"{'OK' if row['ok'] else 'FAIL'}")
        del engine
    except Exception as exc:
        traceback.print_exc()
        results["errors"].append(f"correctness {name}: {type(exc).__name__}: {exc}")
    save()

torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32_default

# -- 3. speed ---------------------------------------------------------------------------------------
kspace_cpu, mask_cpu = ms.make_slice()
kspace, mask = kspace_cpu.to(dev), mask_cpu.to(dev)
compile_cost = {}


def reset_peak():
    if is_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def peak_gib():
    return torch.cuda.max_memory_allocated(dev) / 2**30 if is_cuda else float("nan")


def timed(name, model, dtype, compiled, warmup=3, repeats=10):
    reset_peak()
    run = ms.model_runner(model, kspace, mask, dtype, dev, compiled)
    start = time.perf_counter()
    run()
    if is_cuda:
        torch.cuda.synchronize(dev)
    first = time.perf_counter() - start
    if not is_cuda:
        warmup, repeats = 0, 1
    times = ms.time_call(run, dev, warmup, repeats)
    row = {"config": name, "dtype": dtype, "compiled": compiled, "median_ms": 1e3 * statistics.median(times),
           "min_ms": 1e3 * min(times), "first_call_s": first, "runs": len(times),
           "peak_mem_gib": peak_gib(),
           "params_m": count_parameters(model) / 1e6}
    results["timing"].append(row)
    save()
    print(f"timing {name:5s} {dtype} {'compiled' if compiled else 'eager   '}: {row['median_ms']:.1f} ms/slice, "
          f"peak {row['peak_mem_gib']:.2f} GiB (first call {first:.1f} s)")
    return row


for name in configs:
    try:
        flops = ms.count_flops(name)
        results.setdefault("gflop", {})[name] = flops / 1e9
        model = ms.build_model(name, dev)
        for dtype in ("bf16", "fp32"):
            if elapsed() > budget:
                results["errors"].append(f"skipped {name} {dtype}: time budget")
                continue
            timed(name, model, dtype, False)
        # torch.compile: small first; base only if small compiled quickly enough for the budget left
        if os.environ.get("GPU_CHECK_COMPILE", "1") == "0":
            pass
        elif elapsed() < budget and (name == configs[0] or
                                   budget - elapsed() > 3 * compile_cost.get(configs[0], 1e9) + 30):
            row = timed(name, model, "bf16", True)
            compile_cost[name] = row["first_call_s"]
        else:
            results["errors"].append(f"skipped {name} bf16 compiled: time budget")
        del model
    except Exception as exc:
        traceback.print_exc()
        results["errors"].append(f"timing {name}: {type(exc).__name__}: {exc}")
    save()

# whole engine path for the largest config in bf16 (numpy in, numpy out)
try:
    if elapsed() < budget + 60:
        name = configs[-1]
        big = ms.build_model(name, torch.device("cpu"))  # "official" reads 512-d text features
        engine = InferenceEngine(big, HashingEncoder(dim=big.config.text_dim), device=dev, amp=True)
        k_np, m_np = kspace_cpu.numpy(), mask_cpu.numpy()
        reset_peak()
        times = ms.time_call(lambda: engine.reconstruct(k_np, m_np, context), dev, 2 if is_cuda else 0,
                             5 if is_cuda else 1)
        row = {"config": name, "dtype": "bf16", "compiled": False, "engine": True,
               "median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times), "runs": len(times),
               "peak_mem_gib": peak_gib()}
        results["timing"].append(row)
        print(f"timing {name:5s} bf16 engine  : {row['median_ms']:.1f} ms/slice, peak {row['peak_mem_gib']:.2f} GiB")
except Exception as exc:
    traceback.print_exc()
    results["errors"].append(f"engine base: {type(exc).__name__}: {exc}")
results["elapsed_s"] = elapsed()
save()

# -- 4. short table, last -------------------------------------------------------------------------
lines = [f"# CardioMM GPU check: {results['device']}, torch {results['torch']}, CUDA {results['cuda']}", "",
         "| check | config | dtype | compiled | result | peak GiB |", "|---|---|---|---|---:|---:|"]
for r in results["correctness"]:
    lines.append(f"| CUDA vs CPU | {r['config']} | {r['dtype']} | - | rel err {r['rel_err']:.1e} "
                 f"{'OK' if r['ok'] else 'FAIL'} | - |")
for r in results["timing"]:
    what = "engine ms/slice" if r.get("engine") else "ms/slice"
    lines.append(f"| {what} | {r['config']} | {r['dtype']} | {'yes' if r['compiled'] else 'no'} | "
                 f"{r['median_ms']:.1f} | {r['peak_mem_gib']:.2f} |")
for name, g in results.get("gflop", {}).items():
    lines.append(f"| GFLOP/slice | {name} | - | - | {g:.0f} | - |")
if results["errors"]:
    lines += ["", "errors / skipped: " + "; ".join(results["errors"])]
lines += ["", f"(slice: 10 coils, 12 frames, 246 x 256; random weights; {results['elapsed_s']:.0f} s)"]
table = "\n".join(lines) + "\n"
(out / "gpu_check.md").write_text(table)
print()
print(table)
failed = [r for r in results["correctness"] if not r["ok"]]
sys.exit(1 if failed or any(e.startswith(("correctness", "timing")) for e in results["errors"]) else 0)
PYCODE
status=${PIPESTATUS[0]}
echo "gpu_check exit code: $status"
exit "$status"
