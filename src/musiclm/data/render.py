"""Rendering MIDI to audio with the FluidSynth command line and the free GM soundfonts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

INSTALL = (
    "sudo apt-get install -y fluidsynth fluid-soundfont-gm timgm6mb-soundfont "
    "musescore-general-soundfont-small"
)

# name -> (path, license, share of renders). MuseScore's .sf3 takes ~3 s to load per call, so it is drawn
# less.
SOUNDFONTS = {
    "FluidR3_GM": ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "MIT", 0.45),
    "TimGM6mb": ("/usr/share/sounds/sf2/TimGM6mb.sf2", "GPL-2.0", 0.35),
    "MuseScore_General": ("/usr/share/sounds/sf3/MuseScore_General_Lite.sf3", "MIT", 0.2),
}


class RenderError(RuntimeError):
    """FluidSynth or the soundfonts are missing, or a render failed."""


def available_soundfonts(names: list[str] | None = None) -> dict[str, tuple[str, str, float]]:
    """The installed soundfonts (all of ``names`` must be); an error with the install command otherwise."""
    if shutil.which("fluidsynth") is None:
        raise RenderError(f"the fluidsynth program is not installed; install it with: {INSTALL}")
    wanted = names or list(SOUNDFONTS)
    unknown = [n for n in wanted if n not in SOUNDFONTS]
    if unknown:
        raise RenderError(f"unknown soundfont(s) {unknown}; choose from {list(SOUNDFONTS)}")
    found = {n: SOUNDFONTS[n] for n in wanted if Path(SOUNDFONTS[n][0]).is_file()}
    if names and len(found) < len(names) or not found:
        missing = [SOUNDFONTS[n][0] for n in wanted if n not in found]
        raise RenderError(f"soundfont file(s) {missing} not found; install them with: {INSTALL}")
    return found


def render_midi(
    midi: Path,
    soundfont: str,
    sample_rate: int,
    gain: float,
    reverb: bool,
    tmp_wav: Path,
    timeout: float = 120.0,
) -> tuple[np.ndarray, float]:
    """Mono float32 audio and the share of clipped samples (FluidSynth writes stereo 16-bit; gain > ~0.5
    clips)."""
    cmd = [
        "fluidsynth",
        "-ni",
        "-q",
        "-g",
        f"{gain:.3f}",
        "-r",
        str(sample_rate),
        "-R",
        str(int(reverb)),
        "-C",
        "0",
    ]
    if reverb:
        cmd += ["-o", "synth.reverb.room-size=0.7", "-o", "synth.reverb.level=0.7"]
    cmd += ["-F", str(tmp_wav), soundfont, str(midi)]
    # fluidsynth renders until every voice is silent, so a hanging note would never end: cap the time
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        tmp_wav.unlink(missing_ok=True)
        raise RenderError(f"fluidsynth did not finish {midi} within {timeout:.0f} s") from err
    if proc.returncode != 0 or not tmp_wav.is_file():
        raise RenderError(f"fluidsynth failed on {midi}: {proc.stderr.strip()[-300:]}")
    data, rate = sf.read(str(tmp_wav), dtype="float32", always_2d=True)
    tmp_wav.unlink()
    if rate != sample_rate:
        raise RenderError(f"fluidsynth wrote {rate} Hz instead of {sample_rate} Hz")
    clipped = float(np.mean(np.abs(data) >= 32767 / 32768))
    return data.mean(axis=1), clipped
