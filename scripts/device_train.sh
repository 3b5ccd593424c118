#!/usr/bin/env bash
# A GPU run in one call: on a lent GPU machine (a bare copy of the repository with Python 3.12 and PyTorch,
# no package registry), check the GPU, then train a token stage for MINUTES with bf16 and the largest batch
# that pays, and put what comes back into one folder. The package runs from src/; the tokens and any wheels
# come from .device/, which scripts/device_prep.sh fills here (docs/training.md: "Training on a GPU").
#
#   scripts/device_train.sh STAGE MINUTES [PRESET [train stage options...]]
#
# STAGE: semantic, coarse or fine (fine needs unpacked tokens); PRESET: tiny, small (default) or paper; the
# options go to `musiclm train stage` (e.g. --steps 100000 --set model.layers=12). Environment: OUT (default
# runs/device); TOKENS, a token folder, or a folder or .tar.xz of train/ and (optional) valid/ ones (default
# .device/tokens.tar.xz); PYTHON (default python3); GPU_TEST_SECONDS, the time `pytest -m gpu` may take (180);
# WORKERS, the processes that cut training windows (default: half the cores; a big batch needs them).
# $OUT receives device.log (versions, GPU, the training's output), pytest.log, summary.json (steps, batch,
# tokens/s, model FLOP utilisation, the loss curve) and run/: run.json, metrics.jsonl, the exported model and
# its last checkpoint, each if under the 16 MiB a file the run tool brings back (else device.log says so).
set -euo pipefail
cd "$(dirname "$0")/.."

STAGE=${1:?usage: scripts/device_train.sh STAGE MINUTES [PRESET [train stage options...]]}
MINUTES=${2:?usage: scripts/device_train.sh STAGE MINUTES [PRESET [train stage options...]]}
PRESET=${3:-small}
shift $(($# < 3 ? $# : 3))
OUT=${OUT:-runs/device}
TOKENS=${TOKENS:-.device/tokens.tar.xz}
PYTHON=${PYTHON:-python3}
BACK_LIMIT=$((16 * 1024 * 1024)) # the largest file the run tool brings back

work=$(mktemp -d)
mkdir -p "$OUT/run"
log="$OUT/device.log"
collect() { # what came of the run, also when it failed: the checkpoint resumes it
    for file in "$work/run/summary.json" "$work"/run/{run.json,metrics.jsonl,config.json,model.safetensors} \
        "$(ls "$work"/run/checkpoints/step_*.pt 2>/dev/null | tail -1)"; do
        [ -f "$file" ] || continue
        if [ "$(stat -c %s "$file")" -gt "$BACK_LIMIT" ]; then
            echo "not kept (over 16 MiB): $file" >>"$log"
        elif [ "${file##*/}" = summary.json ]; then
            cp "$file" "$OUT/"
        else
            cp "$file" "$OUT/run/"
        fi
    done
    rm -rf "$work"
}
trap collect EXIT

site=""
if compgen -G ".device/wheels/*.whl" >/dev/null; then # packages the machine lacks, carried as wheels
    site="$work/site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .device/wheels/*.whl
fi
export PYTHONPATH="src${site:+:$site}${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

"$PYTHON" -m musiclm.cli.main info | tee "$log"

if ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "pytest -m gpu: skipped, no CUDA" | tee -a "$log" >"$OUT/pytest.log"
elif ! "$PYTHON" -c "import pytest" 2>/dev/null; then
    echo "pytest -m gpu: skipped, no pytest on this machine" | tee -a "$log" >"$OUT/pytest.log"
else
    # test files that import what the machine lacks fail to collect; the others still run
    timeout "${GPU_TEST_SECONDS:-180}" "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider \
        --continue-on-collection-errors >"$OUT/pytest.log" 2>&1 || true
    echo "pytest -m gpu: $(tail -1 "$OUT/pytest.log") (pytest.log)" | tee -a "$log"
fi

tokens=$TOKENS
if [ -f "$TOKENS" ]; then
    tokens="$work/tokens"
    "$PYTHON" -m tarfile --filter data -e "$TOKENS" "$tokens"
fi
train="$tokens/train"
[ -d "$train" ] || train=$tokens # a token folder itself
val=()
[ -d "$tokens/valid" ] && val=(--val-tokens "$tokens/valid")

"$PYTHON" -m musiclm.cli.main train stage --stage "$STAGE" --preset "$PRESET" --tokens "$train" \
    "${val[@]}" --out "$work/run" --device auto --set train.max_minutes="$MINUTES" \
    --set train.auto_batch=true --set train.keep_checkpoints=1 --set train.progress=false \
    --set train.num_workers="${WORKERS:-$(($(nproc) / 2))}" "$@" 2>&1 |
    tee -a "$log"
