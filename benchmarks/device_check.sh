#!/usr/bin/env bash
# Issue 7's GPU measurements in one prepared script, for a session lent a GPU machine.
#
#   mkdir -p data && cp -r ../shared/data/fashion_mnist data/     # here: data/ is git-ignored, carry it
#   bash benchmarks/device_check.sh                                # there, from the repo root
#
# Writes everything under $OUT (default runs/device): gpu.csv, versions.txt, bench/ (core vs plain JAX,
# the torch backend vs the plain torch loop, float32 beside bfloat16, each against its hardware floor,
# time to result with a cold and a warm compilation cache), precision.jsonl (accuracy and epoch time per --matmul_precision), scaling/ (width and
# depth), log.txt. Each stage has its own time limit and the stages run cheapest-first by value, so
# a run cut short still returns the headline figures. Installs this project offline over the
# image's packages and nothing else.
#
# QUICK=1 shrinks every stage to a smoke size and SKIP_INSTALL=1 skips the pip step: the test suite
# runs the script that way on a CPU, so a GPU session does not spend its minutes on a broken script.
set -uo pipefail

OUT=${OUT:-runs/device}
DATA=${DATA:-data/fashion_mnist}
PY=${PYTHON:-python}
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    BENCH_SIZE=(--quick --epochs=2 --models=mlp_scratch); TRAIN_SIZE=(--max_epochs=2); SCALING_SIZE=(--quick --examples=2560 --epochs=2)
else
    BENCH_SIZE=(--repeats=2 --models=mlp_scratch,mlp); TRAIN_SIZE=(); SCALING_SIZE=(--examples=60000 --epochs=3)
fi
mkdir -p "$OUT"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/log.txt"; }
stage() {  # stage NAME SECONDS CMD...: run with a time limit, log how it ended
    local name=$1 limit=$2; shift 2
    log "start $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.out" 2>&1
    local rc=$?
    log "end $name rc=$rc after $((SECONDS - t0))s"
    tail -n 25 "$OUT/$name.out"
}

if [ ! -f "$DATA/train-images-idx3-ubyte.gz" ] && [ ! -f "$DATA/train-images-idx3-ubyte" ]; then
    log "error: $DATA lacks the Fashion-MNIST IDX files; copy them there and carry the folder"
    exit 3
fi
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    $PY -m pip install --no-deps --no-build-isolation -q -e . -e plugins/torch >"$OUT/pip.txt" 2>&1 \
        || log "pip install -e . failed (see pip.txt); running from the source tree"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >"$OUT/gpu.csv" 2>&1 \
    || echo "no nvidia-smi: not a GPU machine" >"$OUT/gpu.csv"
$PY -c "import jax, flax, optax, sys; print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, jax.devices())" >"$OUT/versions.txt" 2>&1
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() \
else 'without CUDA')" >>"$OUT/versions.txt" 2>&1
cat "$OUT/gpu.csv" "$OUT/versions.txt"

# 1. The headline: steady epoch of the default run against the plain loops and the hardware floor, in
#    float32 and in bfloat16 (the tensor cores' path: the same code as the CPU's AMX path), and 10 epochs
#    from process start to result with a cold and then a warm persistent compilation cache.
stage bench 300 $PY -m benchmarks.epoch_time --data_dir="$DATA" --out="$OUT/bench" "${BENCH_SIZE[@]}" \
    --cases=core,core_bf16,jax_plain,torch_plain,backend_torch,backend_torch_bf16,cli_cold,cli_warm

# 2. The accuracy cost of lower matmul precision (default is TF32 on recent NVIDIA GPUs).
: >"$OUT/precision.jsonl"
for precision in default float32 tensorfloat32 bfloat16; do
    stage "precision_$precision" 40 $PY -m experiments.train --data_dir="$DATA" --progress=false \
        --workdir="$OUT/precision/$precision" --matmul_precision="$precision" \
        --compilation_cache_dir="$OUT/compilation_cache" "${TRAIN_SIZE[@]}"
    $PY -c "import json,sys; s=json.load(open(sys.argv[1])); print(json.dumps({'precision': sys.argv[2], \
'val_acc': s['final']['val_acc'], 'train_loss': s['final']['train_loss'], 'steady_epoch_seconds': \
s['steady_epoch_seconds'], 'device': s['device']['kind']}))" "$OUT/precision/$precision/summary.json" "$precision" \
        >>"$OUT/precision.jsonl" 2>>"$OUT/log.txt"
done
cat "$OUT/precision.jsonl"

# 3. Scaling with width and depth, whole epochs of 60,000 examples.
stage scaling 120 $PY -m benchmarks.scaling --out="$OUT/scaling" "${SCALING_SIZE[@]}"
log "done"
