"""Audio basics: reading every format soundfile knows, resampling, log-mel, loudness, crop/pad, bad files."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
import torch

from musiclm.audio import (
    AudioError,
    MelSpectrogram,
    check_audio_out,
    crop_or_pad,
    load_audio,
    loudness_normalize,
    random_crop,
    resample,
    save_audio,
)


def tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("suffix,fmt", [(".wav", "WAV"), (".flac", "FLAC"), (".ogg", "OGG"), (".mp3", "MP3")])
def test_load_any_format_to_mono_at_requested_rate(tmp_path, suffix, fmt):
    stereo = np.stack([tone(440, 1.0, 44100), tone(660, 1.0, 44100)], axis=1)
    path = tmp_path / f"clip{suffix}"
    sf.write(path, stereo, 44100, format=fmt)
    wav = load_audio(path, sample_rate=24000)
    assert wav.dtype == torch.float32 and wav.ndim == 1
    assert abs(wav.shape[0] - 24000) < 1200  # lossy codecs add a little padding
    spectrum = np.abs(np.fft.rfft(wav.numpy()))
    peaks = np.argsort(spectrum)[-2:] * 24000 / len(wav)
    assert sorted(np.round(peaks, -1)) == [440, 660]  # both channels survive the downmix


def test_partial_read_and_roundtrip(tmp_path):
    path = save_audio(tmp_path / "deep" / "dir" / "a.wav", torch.from_numpy(tone(220, 2.0, 16000)), 16000)
    part = load_audio(path, offset=0.5, duration=1.0)
    assert part.shape == (16000,)
    full = load_audio(path)
    torch.testing.assert_close(part, full[8000:24000])


def test_unreadable_audio_names_the_file(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00not really a wave file")
    with pytest.raises(AudioError, match="broken.wav"):
        load_audio(bad)
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "missing.flac")
    with pytest.raises(AudioError, match="NaN"):
        save_audio(tmp_path / "nan.wav", torch.tensor([0.0, float("nan")]), 16000)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".WAV"])
def test_save_audio_writes_every_extension_it_names(tmp_path, suffix):
    path = save_audio(tmp_path / f"a{suffix}", torch.from_numpy(tone(440, 0.5, 16000)), 16000)
    assert load_audio(path, 16000).shape[0] == pytest.approx(8000, abs=1)


@pytest.mark.parametrize(
    "name, words",
    [
        ("a.mp3", "unknown extension .mp3"),
        ("a", "no extension"),
        ("dir", "it is a folder"),
        ("f/a.wav", "f is a file"),
    ],
)
def test_outputs_save_audio_cannot_write_are_refused_before_any_work(tmp_path, name, words):
    (tmp_path / "dir").mkdir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(AudioError, match=f"{words}.*choose a writable path ending in .wav, .flac or .ogg"):
        check_audio_out(tmp_path / name)
    with pytest.raises(AudioError, match=words):
        save_audio(tmp_path / name, torch.zeros(100), 16000)


def test_resample_keeps_pitch_and_length():
    wav = torch.from_numpy(tone(1000, 1.0, 48000))
    out = resample(wav, 48000, 16000)
    assert out.shape == (16000,)
    peak = np.argmax(np.abs(np.fft.rfft(out.numpy())))
    assert peak == 1000
    batch = resample(torch.stack([wav, wav]), 48000, 24000)
    assert batch.shape == (2, 24000)


def test_log_mel_shape_and_peak_band():
    mel = MelSpectrogram(16000, n_fft=512, hop_length=160, n_mels=40)
    spec = mel(torch.from_numpy(tone(1000, 1.0, 16000))[None])
    assert spec.shape == (1, 40, 101)
    low = mel(torch.from_numpy(tone(200, 1.0, 16000)))
    assert spec[0].mean(-1).argmax() > low.mean(-1).argmax()


def test_loudness_normalisation_hits_target_and_leaves_silence():
    quiet = torch.from_numpy(tone(440, 2.0, 24000) * 0.05)
    out = loudness_normalize(quiet, 24000, target_lufs=-20.0)
    measured = pyloudnorm.Meter(24000).integrated_loudness(out.double().numpy())
    assert measured == pytest.approx(-20.0, abs=0.1)
    silence = torch.zeros(24000)
    assert torch.equal(loudness_normalize(silence, 24000), silence)
    loud = torch.from_numpy(tone(440, 1.0, 24000) * 3)
    assert loudness_normalize(loud, 24000, target_lufs=0.0).abs().max() <= 0.99 + 1e-6


def test_crop_and_pad():
    wav = torch.arange(10.0)
    assert crop_or_pad(wav, 4, offset=3).tolist() == [3, 4, 5, 6]
    assert crop_or_pad(wav, 4, offset=8).tolist() == [8, 9, 0, 0]
    crops = {tuple(random_crop(wav, 3, np.random.default_rng(s)).tolist()) for s in range(20)}
    assert len(crops) > 3 and all(len(c) == 3 for c in crops)
