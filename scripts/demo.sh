#!/usr/bin/env bash
# `make demo`: text in, music out with the shipped model (checkpoints/musiclm_small).
# PROMPT="..." OUT=file.wav SEED=N make demo  changes the prompt, the output file (replaced on each run)
# and the seed.
set -euo pipefail
cd "$(dirname "$0")/.."

PROMPT=${PROMPT:-"a slow, melancholic string quartet in D minor"}
OUT=${OUT:-demo.wav}
SEED=${SEED:-0}
CHECKPOINT=checkpoints/musiclm_small

start=$(date +%s.%N)
.venv/bin/musiclm generate "$PROMPT" --duration 10 --checkpoint "$CHECKPOINT" --out "$OUT" --seed "$SEED" --overwrite
end=$(date +%s.%N)
echo "prompt:  $PROMPT"
echo "model:   $CHECKPOINT"
echo "wrote:   $OUT"
.venv/bin/python -c "t = $end - $start; print(f'time:    {t:.1f} s to generate 10 s of audio (real-time factor {t / 10:.2f})')"
