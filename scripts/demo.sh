#!/usr/bin/env bash
# `make demo`: text in, music out. Uses the shipped model when the repository has one; until then it
# renders a small dataset and trains the `tiny` pipeline end to end first (a few minutes on 2 cores),
# which shows the whole system working but does not sound like music yet.
set -euo pipefail
cd "$(dirname "$0")/.."

PROMPT=${PROMPT:-"a slow, melancholic string quartet in D minor"}
OUT=${OUT:-demo.wav}
SHIPPED=checkpoints/musiclm_small
WORK=${WORK:-demo_work}

if [ -f "$SHIPPED/pipeline.json" ]; then
    CHECKPOINT=$SHIPPED
else
    echo "No shipped model in $SHIPPED yet: rendering a small dataset and training the tiny pipeline in $WORK."
    .venv/bin/musiclm data build --out "$WORK/data" --hours 0.1 --min-seconds 6 --max-seconds 10 --seed 0
    .venv/bin/musiclm train all --preset tiny --data "$WORK/data/manifest.jsonl" --out "$WORK/run"
    CHECKPOINT=$WORK/run/pipeline
fi

start=$(date +%s.%N)
.venv/bin/musiclm generate "$PROMPT" --duration 10 --checkpoint "$CHECKPOINT" --out "$OUT" --seed 0
end=$(date +%s.%N)
echo "prompt:  $PROMPT"
echo "model:   $CHECKPOINT"
echo "wrote:   $OUT"
.venv/bin/python -c "t = $end - $start; print(f'time:    {t:.1f} s to generate 10 s of audio (real-time factor {t / 10:.2f})')"
