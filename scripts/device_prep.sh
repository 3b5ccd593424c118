#!/usr/bin/env bash
# Prepares here what a GPU run (scripts/device_train.sh) carries, so that a lent GPU is never spent on setup:
# .device/tokens.tar.xz, the token folders packed by `musiclm pack-tokens` (int16, the coarse stage's acoustic
# levels) as train/ and valid/, and .device/wheels, wheels for Python 3.12 of the packages named in WHEELS
# (none by default: stage training needs only what the GPU machines have). Checks that the tree and .device
# stay within the 64 MiB a run carries.
#
#   scripts/device_prep.sh TRAIN_TOKENS [VALID_TOKENS]    (LEVELS=N keeps N acoustic levels; WHEELS="a b")
set -euo pipefail
cd "$(dirname "$0")/.."

TRAIN=${1:?usage: scripts/device_prep.sh TRAIN_TOKENS [VALID_TOKENS]}
VALID=${2:-}
PYTHON=${PYTHON:-$PWD/.venv/bin/python}
LIMIT=$((64 * 1024 * 1024)) # what a run carries: tracked and untracked files that git does not ignore, and .device

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf .device
mkdir -p .device
levels=(${LEVELS:+--levels "$LEVELS"})
"$PYTHON" -m musiclm.cli.main pack-tokens "$TRAIN" --out "$work/train" "${levels[@]}"
[ -z "$VALID" ] || "$PYTHON" -m musiclm.cli.main pack-tokens "$VALID" --out "$work/valid" "${levels[@]}"
archive="$PWD/.device/tokens.tar.xz"
(cd "$work" && "$PYTHON" -m tarfile -c "$archive" train ${VALID:+valid})

if [ -n "${WHEELS:-}" ]; then
    platforms=()
    for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
        platforms+=(--platform "$p")
    done
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -d .device/wheels $WHEELS
fi

tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
carried=$(du -sb .device | cut -f1)
mib() { echo "$(($1 / 1024 / 1024)) MiB"; }
echo "a run carries $(mib $((tree + carried))) of $(mib $LIMIT): the tree $(mib "$tree"), .device $(mib "$carried")"
if [ $((tree + carried)) -gt $LIMIT ]; then
    echo "error: over the $(mib $LIMIT) a run carries: pack fewer clips or levels" >&2
    exit 1
fi
