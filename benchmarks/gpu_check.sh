#!/usr/bin/env bash
# One-shot GPU check of the CardioMM model against its peers (prepared for a single H100/H200 run;
# installs nothing; about 150 s, at most about 240 s).
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh
#
# 1. the CUDA-marked unit tests (engine on CUDA against the CPU), at most GPU_CHECK_PYTEST_S (45) s;
# 2. correctness: tiny and small (random weights, seeded) through InferenceEngine on CUDA, in fp32
#    and bf16 autocast, against the CPU result (relative L2 error), on a reduced slice (at most 45 s);
# 3. speed and memory (benchmarks/speed.py): one CMRxRecon cine slice (10 coils, 12 frames,
#    246 x 512 -> 246 x 256) through CardioMM base and small, E2E-VarNet (fastmri, 12 cascades,
#    18 chans) and the authors' architecture, in bf16 and fp32 with peak GPU memory, then
#    torch.compile'd base and VarNet in bf16 while GPU_CHECK_BUDGET_S (110) s last; every row is
#    saved as it is measured and the process is stopped at budget + 40 s (stopped while compiling:
#    not a failure, the eager rows are complete; GPU_CHECK_COMPILE=0 skips compiling);
# 4. writes at most 7 files: $OUT/{nvidia_smi.txt,pytest_cuda.txt,gpu_check.log,gpu_check.json,
#    gpu_check.md,speed_cuda.md,speed_cuda.json} and prints a short table last.
#
# VarNet needs the fastmri wheel only (pure Python, 58 kB; speed.py loads fastmri.data without its
# pandas/requests data-set modules): every *.whl in GPU_CHECK_WHEELS (default dist/wheels) goes on
# PYTHONPATH, e.g. `pip download --no-deps fastmri==0.3.0 -d dist/wheels` beforehand. Without it
# the VarNet rows are skipped with a line saying so. sigpy (the CS row) is not expected there.
# Uses the hashing text encoder only (no MiniLM on the GPU machine) and the machine's own python3
# (PYTHON=... to override).
# Dry run of the whole logic on a CPU, tiny sizes, a minute:
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_CONFIGS=tiny OUT=/tmp/gc bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
DEV="${GPU_CHECK_DEVICE:-cuda}"
BUDGET="${GPU_CHECK_BUDGET_S:-110}"
WHEELS="${GPU_CHECK_WHEELS:-$PWD/dist/wheels}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d "$WHEELS" ]; then
    for whl in "$WHEELS"/*.whl; do
        [ -e "$whl" ] && PYTHONPATH="$PYTHONPATH:$whl"
    done
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export CARDIOMM_CACHE_DIR="${TMPDIR:-/tmp}/cardiomm_gpu_check_embeddings"
: >"$OUT/gpu_check.log"

nvidia-smi >"$OUT/nvidia_smi.txt" 2>&1 || echo "nvidia-smi failed" >>"$OUT/nvidia_smi.txt"

echo "== CUDA unit tests" | tee -a "$OUT/gpu_check.log"
timeout "${GPU_CHECK_PYTEST_S:-45}" "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/core/test_engine.py \
    tests/core/test_model.py tests/core/test_official.py >"$OUT/pytest_cuda.txt" 2>&1
echo "pytest -m cuda exit code: $? (124: stopped at ${GPU_CHECK_PYTEST_S:-45} s)" | tee -a "$OUT/pytest_cuda.txt"
tail -n 3 "$OUT/pytest_cuda.txt" | tee -a "$OUT/gpu_check.log"

echo "== correctness" | tee -a "$OUT/gpu_check.log"
timeout "${GPU_CHECK_CORRECTNESS_S:-45}" "$PY" - "$OUT" <<'PYCODE' 2>&1 | tee -a "$OUT/gpu_check.log"
import copy
import json
import os
import sys
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, "benchmarks")
import model_speed as ms  # noqa: E402
from cardiomm_core.context import ScanContext  # noqa: E402
from cardiomm_core.engine import InferenceEngine  # noqa: E402
from cardiomm_core.text import HashingEncoder  # noqa: E402

out = Path(sys.argv[1])
dev = torch.device(os.environ.get("GPU_CHECK_DEVICE", "cuda"))
configs = [c for c in os.environ.get("GPU_CHECK_CONFIGS", "tiny,small").split(",") if c in ("tiny", "small")]
assert dev.type != "cuda" or torch.cuda.is_available(), "no CUDA device"
is_cuda = dev.type == "cuda"
results = {"device": torch.cuda.get_device_name(dev) if is_cuda else "cpu (dry run)", "torch": torch.__version__,
           "cuda": torch.version.cuda, "tf32_conv": torch.backends.cudnn.allow_tf32, "correctness": [], "errors": []}
encoder = HashingEncoder(dim=ms.TEXT_DIM)
context = ScanContext(acceleration=8, pattern="ktUniform")


def save():
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")


# -- 2. correctness -------------------------------------------------------------------------------
# fp32 means fp32 here: TF32 off (speed.py, a separate process, times with cuDNN's default)
tf32_default = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
k_small, m_small = ms.make_slice(seed=1, n_coils=4, n_frames=6, n_ky=118, n_kx_enc=252, n_kx=126)
k_np, m_np = k_small.numpy(), m_small.numpy()
for name in configs or ["tiny"]:
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

save()
lines = [f"# CardioMM GPU check: {results['device']}, torch {results['torch']}, CUDA {results['cuda']}", ""]
lines += [f"- CUDA vs CPU, {r['config']} {r['dtype']}: rel err {r['rel_err']:.1e} (limit {r['limit']:.0e}) "
          f"{'OK' if r['ok'] else 'FAIL'}" for r in results["correctness"]]
lines += [f"- error: {e}" for e in results["errors"]]
(out / "gpu_check.md").write_text("\n".join(lines) + "\n")
sys.exit(1 if results["errors"] or any(not r["ok"] for r in results["correctness"]) else 0)
PYCODE
correctness=${PIPESTATUS[0]}
echo "correctness exit code: $correctness" | tee -a "$OUT/gpu_check.log"

echo "== speed (benchmarks/speed.py, budget ${BUDGET} s)" | tee -a "$OUT/gpu_check.log"
if [ "$DEV" = "cpu" ]; then
    SPEED_ARGS=(--tiny --device cpu --methods "${GPU_CHECK_METHODS:-tiny,varnet-tiny,cg_sense}" --threads 2)
else
    SPEED_ARGS=(--device "$DEV" --methods "${GPU_CHECK_METHODS:-base,varnet,small,official,cg_sense}"
                --dtypes bf16,fp32)
fi
[ "${GPU_CHECK_COMPILE:-1}" = "1" ] && SPEED_ARGS+=(--compile --compile-methods base,varnet)
timeout -k 10 "$((BUDGET + 40))" "$PY" benchmarks/speed.py "${SPEED_ARGS[@]}" --budget-s "$BUDGET" \
    --out "$OUT/speed_cuda.md" 2>&1 | tee -a "$OUT/gpu_check.log" | grep -v "^|"
speed=${PIPESTATUS[0]}
echo "speed.py exit code: $speed (124: stopped at $((BUDGET + 40)) s; the rows measured before are kept)" \
    | tee -a "$OUT/gpu_check.log"
# stopped while compiling (torch.compile may outlast the budget): every eager row is saved, so that is
# a missing optional row, not a failed check
if { [ "$speed" = "124" ] || [ "$speed" = "137" ]; } && \
        grep -q '"in_progress": "[^"]* compiled"' "$OUT/speed_cuda.json" 2>/dev/null; then
    echo "speed.py was stopped while compiling; the eager rows are complete" | tee -a "$OUT/gpu_check.log"
    speed=0
fi

# -- the short table, last
echo
cat "$OUT/gpu_check.md" 2>/dev/null
echo
grep "^|" "$OUT/speed_cuda.md" 2>/dev/null | cut -d"|" -f2,5,6,7,9,10,11 || echo "(no speed table)"
grep "^Skipped" "$OUT/speed_cuda.md" 2>/dev/null
status=0
[ "$correctness" = "0" ] || status=1
[ "$speed" = "0" ] || status=1
echo "gpu_check exit code: $status"
exit "$status"
