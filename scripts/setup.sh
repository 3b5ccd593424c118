#!/usr/bin/env bash
# Installs everything musiclm needs on a fresh Debian machine: system packages (FluidSynth, General MIDI
# soundfonts, ffmpeg for the Opus baseline, Chromium and its driver for the web page's browser test), then
# a virtual environment at .venv with the package.
# Safe to rerun: it does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(fluidsynth fluid-soundfont-gm musescore-general-soundfont-small timgm6mb-soundfont ffmpeg
              libsndfile1 chromium chromium-driver)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
pip_install() {
    if ! .venv/bin/pip install -q "$@" >.venv/pip.log 2>&1; then
        cat .venv/pip.log >&2
        echo "pip install $* failed (above)" >&2
        exit 1
    fi
}
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    echo "installing Python packages into .venv (log: .venv/pip.log)"
    # torch first and pinned: the CPU build comes from the machine's wheel folder, not a CUDA download.
    pip_install "torch==2.13.0"
    pip_install -e ".[dev,notes]"
    pip_install --no-deps "basic-pitch==0.4.0"  # only for its ONNX model; see pyproject.toml's `notes`
    .venv/bin/python -c "import musiclm, torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
    touch "$stamp"
fi
