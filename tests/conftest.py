"""Shared fixtures: a tiny embedded dataset made by the real builder, for every part's tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def numba_cache_written_once():
    """Compile librosa's cached numba functions here, before any test starts worker processes: workers that
    compile a guvectorize function at the same time can leave a mismatched pair of cache files, and every
    later process that loads them segfaults (numba/numba#10128)."""
    try:
        import librosa
    except ImportError:  # a GPU machine without the audio stack runs the tests that need none
        return
    import numpy as np

    sr = 16000
    clicks = librosa.clicks(times=np.arange(0.0, 3.0, 0.5), sr=sr, length=3 * sr)
    librosa.onset.onset_detect(y=clicks, sr=sr)
    librosa.beat.beat_track(y=clicks, sr=sr)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Manifest of ~15 clips of ~4 s at 24 kHz (8 works: folk tunes and chorales) with melody pairs and
    train/valid/test splits, rendered by the real builder (fluidsynth) in a few seconds."""
    from musiclm.data.build import BuildOptions, build

    out = tmp_path_factory.mktemp("tiny_dataset")
    return build(
        BuildOptions(
            out=out,
            hours=None,
            max_works=8,
            sample_rate=24000,
            workers=2,
            seed=2,
            clip_seconds=(4.0, 4.0),
            melody_fraction=0.5,
            collections=["essen", "oneills1850", "ryans_mammoth", "bach"],
            soundfonts=["TimGM6mb", "FluidR3_GM"],
        )
    )


@pytest.fixture
def dying_text_writes(monkeypatch):
    """Every ``Path.write_text`` after this writes half its text and fails, as a full disk or a kill in the
    middle of a write would: a writer that replaced its file in place leaves half of it."""

    def half_then_fail(self, text, *args, **kwargs):
        with open(self, "w", encoding="utf-8") as f:
            f.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
