#!/usr/bin/env bash
# Train one or more configs CONCURRENTLY on one GPU for the same wall-clock budget, export each
# run's weights, and print a summary table last. Prepared for one run on a rented H200; installs
# nothing, needs no network and no MiniLM (the embeddings come from a carried cache).
#
#   GPU_TRAIN_CONFIGS="train/configs/generalist_finetune_gpu.yaml other.yaml" GPU_TRAIN_SECONDS=300 \
#   OUT=/some/folder bash benchmarks/gpu_train.sh
#
# Environment:
#   GPU_TRAIN_CONFIGS    space-separated training YAMLs (default: the generalist GPU config); any
#                        cardiomm-train config works (run_dir, device and budget are overridden)
#   GPU_TRAIN_SECONDS    train.max_seconds of every run (default 300); the script ends within
#                        GPU_TRAIN_SECONDS + 90 s: a run still going at +60 s gets SIGTERM (it
#                        stops after its current step and checkpoints), at +72 s SIGKILL; each is
#                        exported from its newest checkpoint. With N runs on one GPU each may use
#                        0.97/N of its memory (train.cuda_memory_fraction; a slice that does not
#                        fit is skipped and counted in the log)
#   OUT                  where the results go (default ./gpu_train_out); flat, at most 8 files:
#                        NAME.safetensors + NAME.json per run (float16 storage, < 16 MiB each;
#                        with 4 or more runs one NAME.tar per run holding both), train_log.txt
#                        (every run's log, GPU samples, the summary) and summary.md
#   GPU_TRAIN_DEVICE     cuda (default) or cpu (a dry run on a machine without a GPU)
#   GPU_TRAIN_WORK       run folders and the shared simulation cache (default: a fresh folder
#                        under ${TMPDIR:-/tmp})
#   GPU_TRAIN_OVERRIDES  extra "key=value" overrides for every run (space-separated)
#   CARDIOMM_CACHE_DIR   the embedding cache (default: .gpu_carry/embeddings under the repository;
#                        fill it with python -m train.embeddings --config CFG --cache-dir DIR)
#   PYTHON               the interpreter (default python3)
#
# NAME is the config's file name without .yaml (made unique). One run failing does not stop the
# others; each run's exit code, steps, samples/s and validation are in the table.
set -uo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-python3}"
CONFIGS="${GPU_TRAIN_CONFIGS:-train/configs/generalist_finetune_gpu.yaml}"
SECONDS_BUDGET="${GPU_TRAIN_SECONDS:-300}"
DEVICE="${GPU_TRAIN_DEVICE:-cuda}"
OUT="${OUT:-$REPO/gpu_train_out}"
WORK="${GPU_TRAIN_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_train.XXXXXX")}"
export CARDIOMM_CACHE_DIR="${CARDIOMM_CACHE_DIR:-$REPO/.gpu_carry/embeddings}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT" "$WORK"
LOG="$OUT/train_log.txt"
START=$(date +%s)
SOFT_LIMIT=$((SECONDS_BUDGET + 60))   # start-up (imports, weights, data, a first validation) + the last validation and checkpoint
HARD_LIMIT=$((SECONDS_BUDGET + 72))

{
  echo "# gpu_train.sh $(date -u '+%Y-%m-%d %H:%M:%S UTC'): device $DEVICE, ${SECONDS_BUDGET} s per run"
  echo "# configs: $CONFIGS"
  echo "# embedding cache: $CARDIOMM_CACHE_DIR ($(find "$CARDIOMM_CACHE_DIR" -name '*.npy' 2>/dev/null | wc -l) entries)"
  echo "# work: $WORK; git: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
} >"$LOG"

# GPU utilisation and memory every 10 s while the runs train (starved GPU = data-bound runs)
SAMPLER=""
if [ "$DEVICE" = "cuda" ] && command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 10 \
    >"$WORK/gpu_samples.csv" 2>/dev/null &
  SAMPLER=$!
fi

declare -a NAMES PIDS STARTS WATCHDOGS
N_RUNS=$(echo $CONFIGS | wc -w)
# runs sharing the GPU each get an equal share of its memory (a slice that does not fit is skipped)
FRACTION=$("$PY" -c "print(round(min(1.0, 0.97 / max($N_RUNS, 1)), 3))")
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
for cfg in $CONFIGS; do
  base="$(basename "$cfg")"; base="${base%.yaml}"; base="${base%.yml}"
  base="$(printf '%s' "$base" | tr -c 'A-Za-z0-9._-' '_')"
  name="$base"; i=2
  while printf '%s\n' "${NAMES[@]:-}" | grep -qx -- "$name"; do name="${base}_$i"; i=$((i + 1)); done
  overrides=(--override "run_dir=$WORK/$name" --override "train.max_seconds=$SECONDS_BUDGET"
             --override "train.device=$DEVICE" --override "data.sim_cache=$WORK/sim_cache")
  [ "$DEVICE" = "cuda" ] && overrides+=(--override "train.cuda_memory_fraction=$FRACTION")
  for extra in ${GPU_TRAIN_OVERRIDES:-}; do overrides+=(--override "$extra"); done
  echo "== starting $name: $cfg" | tee -a "$LOG"
  "$PY" -m train.cli --config "$cfg" --overwrite "${overrides[@]}" >"$WORK/$name.log" 2>&1 &
  pid=$!
  # watchdog: SIGTERM to the trainer alone at +60 s (it stops after its step and checkpoints; its
  # loader workers are left to it), SIGKILL to it and its children at +72 s
  # (the .ended mark, written as soon as the run is reaped, keeps it off a reused process id)
  ( sleep "$SOFT_LIMIT"; [ -e "$WORK/$name.ended" ] && exit 0; kill -TERM "$pid" 2>/dev/null
    sleep $((HARD_LIMIT - SOFT_LIMIT)); [ -e "$WORK/$name.ended" ] && exit 0
    pkill -KILL -P "$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null
  ) >/dev/null 2>&1 &
  PIDS+=("$pid"); WATCHDOGS+=($!); NAMES+=("$name"); STARTS+=("$(date +%s)")
done

declare -a RUNS
for k in "${!PIDS[@]}"; do
  wait "${PIDS[$k]}"; rc=$?
  touch "$WORK/${NAMES[$k]}.ended"
  took=$(( $(date +%s) - ${STARTS[$k]} ))
  pkill -P "${WATCHDOGS[$k]}" 2>/dev/null  # its sleep; the watchdog then sees the mark and exits
  RUNS+=(--run "${NAMES[$k]}:$rc:$took")
  echo "== ${NAMES[$k]} ended: exit code $rc after ${took} s" | tee -a "$LOG"
done
[ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null

for name in "${NAMES[@]:-}"; do
  [ -z "$name" ] && continue
  {
    echo; echo "==================== $name (last 400 lines of its output)"
    tail -n 400 "$WORK/$name.log" 2>/dev/null
  } >>"$LOG"
done
if [ -s "$WORK/gpu_samples.csv" ]; then
  { echo; echo "==================== GPU samples (timestamp, utilisation, memory used)"; cat "$WORK/gpu_samples.csv"; } >>"$LOG"
fi

LEFT=$(( SECONDS_BUDGET + 87 - ($(date +%s) - START) ))
[ "$LEFT" -lt 10 ] && LEFT=10
timeout --kill-after=5 "$LEFT" "$PY" benchmarks/gpu_train_report.py --work "$WORK" --out "$OUT" \
  --budget "$SECONDS_BUDGET" --device "$DEVICE" "${RUNS[@]}" 2>>"$LOG"
rc=$?
[ "$rc" -ne 0 ] && echo "gpu_train_report.py exit code $rc (see $LOG)" | tee -a "$LOG"
echo "gpu_train.sh: $(( $(date +%s) - START )) s in all; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit 0
