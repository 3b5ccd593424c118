"""Audio basics shared by every part: load, save, resample, log-mel, loudness, crop and pad.

Waveforms are float32 torch tensors, mono ``[T]`` or batched ``[B, T]``. soundfile does the I/O
(wav, flac, ogg, mp3), soxr the resampling, and librosa only supplies the mel filterbank.
"""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import soxr
import torch
import torch.nn.functional as F
from torch import nn

from musiclm.files import atomic_write, unwritable


class AudioError(ValueError):
    """Audio that cannot be read or used: names the file or the problem, and what to do."""


def audio_info(path: str | Path) -> sf._SoundFileInfo:
    try:
        return sf.info(str(path))
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError or TypeError by format
        raise AudioError(f"cannot read audio file {path}: {_reason(err)}") from err


def load_audio(
    path: str | Path,
    sample_rate: int | None = None,
    offset: float = 0.0,
    duration: float | None = None,
) -> torch.Tensor:
    """Read ``path`` as mono float32 ``[T]``, resampled to ``sample_rate`` (the file's own if None).

    ``offset``/``duration`` (seconds) read only part of the file, which keeps random crops of long
    recordings cheap.
    """
    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path} is a folder, not an audio file; pass one of the files in it")
    if not path.is_file():
        raise AudioError(f"cannot read audio file {path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file {path} is empty (0 bytes); it was probably not written completely")
    try:
        with sf.SoundFile(str(path)) as f:
            file_rate = f.samplerate
            start = int(round(offset * file_rate))
            frames = -1 if duration is None else int(round(duration * file_rate))
            if start:
                f.seek(min(start, f.frames))
            data = f.read(frames, dtype="float32", always_2d=True)
    except Exception as err:
        raise AudioError(
            f"cannot read audio file {path}: {_reason(err)}; check that it is a complete "
            "WAV, FLAC, OGG or MP3 file (re-export or convert it)"
        ) from err
    wav = data.mean(axis=1)
    if not np.isfinite(wav).all():
        raise AudioError(f"audio file {path} contains NaN or infinite samples")
    if sample_rate is not None and sample_rate != file_rate:
        wav = soxr.resample(wav, file_rate, sample_rate)
    return torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))


def read_clip(
    clip, sample_rate: int | None = None, start: float = 0.0, seconds: float | None = None
) -> torch.Tensor:
    """The audio of a manifest clip (anything with ``path``, ``offset`` and ``duration``) as mono ``[T]``.

    A clip may start ``clip.offset`` s into a longer recording and last ``clip.duration`` s; reading
    ``seconds`` from ``start`` (both relative to the clip) never strays outside it, so every reader of
    a manifest trains and evaluates on the clip's audio, not the file's.
    """
    if start < 0 or (seconds is not None and not seconds >= 0):
        raise AudioError(f"cannot read {seconds} s from {start} s of clip {clip.path}: give times >= 0")
    duration = clip.duration
    if duration is not None:
        left = max(0.0, duration - start)
        seconds = left if seconds is None else min(seconds, left)
    return load_audio(clip.path, sample_rate, offset=(clip.offset or 0.0) + start, duration=seconds)


# what save_audio writes, by extension: the container and its samples (Ogg holds Vorbis, not PCM)
AUDIO_OUT_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}
_WRITABLE = "choose a writable path ending in .wav, .flac or .ogg"


def check_audio_out(path: str | Path) -> Path:
    """Refuse an output path :func:`save_audio` could not write, so a command can refuse it before any
    work (loading a model, generating) is spent on audio that would then be lost."""
    path = Path(path)
    reason = unwritable(path)
    if reason is None and path.suffix.lower() not in AUDIO_OUT_FORMATS:
        reason = f"unknown extension {path.suffix}" if path.suffix else "no extension"
    if reason is not None:
        raise AudioError(f"cannot write audio file {path}: {reason}; {_WRITABLE}")
    return path


def save_audio(path: str | Path, wav: torch.Tensor | np.ndarray, sample_rate: int) -> Path:
    """Write mono ``[T]`` (or ``[1, T]``) audio as 16-bit PCM (.ogg: Vorbis); the folder is created if
    missing."""
    path = check_audio_out(path)
    data = torch.as_tensor(wav).detach().float().cpu().squeeze()
    if data.ndim != 1:
        raise AudioError(f"save_audio expects mono audio [T], got shape {tuple(data.shape)}")
    bad = int((~torch.isfinite(data)).sum())
    if bad:
        raise AudioError(
            f"refusing to write {path}: {bad} of {data.numel()} samples are NaN or infinite; "
            "the model or input that made them is broken"
        )
    peak = float(data.abs().max()) if data.numel() else 0.0
    if peak > 1.0:
        warnings.warn(f"audio for {path} peaks at {peak:.2f}; clipping to [-1, 1]", stacklevel=2)
    container, subtype = AUDIO_OUT_FORMATS[path.suffix.lower()]
    try:
        with atomic_write(path) as tmp:
            sf.write(str(tmp), data.clamp(-1, 1).numpy(), sample_rate, subtype=subtype, format=container)
    except Exception as err:
        raise AudioError(f"cannot write audio file {path}: {_reason(err)}; {_WRITABLE}") from err
    return path


def resample(wav: torch.Tensor, orig_rate: int, target_rate: int) -> torch.Tensor:
    """Resample ``[T]`` or ``[B, T]`` along the last axis (high-quality soxr, on the CPU)."""
    if orig_rate == target_rate:
        return wav
    data = wav.detach().float().cpu().numpy()
    out = (
        soxr.resample(data.T, orig_rate, target_rate).T
        if data.ndim == 2
        else soxr.resample(data, orig_rate, target_rate)
    )
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(wav.device)


def check_finite(wav: torch.Tensor, what: str = "audio") -> None:
    if not torch.isfinite(wav).all():
        raise AudioError(f"{what} contains NaN or infinite samples; clean the input before using it")


# The loudness clips are normalised to by default before a model sees them (training crops, tokenization).
REFERENCE_LUFS = -20.0


def loudness_normalize(
    wav: torch.Tensor, sample_rate: int, target_lufs: float = REFERENCE_LUFS, peak: float = 0.99
) -> torch.Tensor:
    """Scale mono ``[T]`` to ``target_lufs`` (ITU-R BS.1770), never past ``peak``; silence is left as is."""
    data = wav.detach().cpu().double().numpy()
    if data.size < int(0.4 * sample_rate):  # BS.1770 needs one 400 ms block; use RMS below that
        rms = float(np.sqrt(np.mean(data**2))) if data.size else 0.0
        loudness = 20 * math.log10(rms) - 0.691 if rms > 0 else -math.inf
    else:
        import pyloudnorm  # imports scipy.signal: 0.6 s of start-up that a text prompt never needs

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyloudnorm warns on silence; handled below
            loudness = pyloudnorm.Meter(sample_rate).integrated_loudness(data)
    if not math.isfinite(loudness) or loudness < -70:
        return wav
    gain = 10 ** ((target_lufs - loudness) / 20)
    current_peak = float(np.abs(data).max())
    if current_peak * gain > peak:
        gain = peak / current_peak
    return wav * gain


def crop_or_pad(wav: torch.Tensor, length: int, offset: int = 0) -> torch.Tensor:
    """Take ``length`` samples from ``offset`` on the last axis, zero-padding past the end."""
    piece = wav[..., offset : offset + length]
    missing = length - piece.shape[-1]
    return nn.functional.pad(piece, (0, missing)) if missing > 0 else piece


def sliding_windows(wav: torch.Tensor, length: int, hop: int) -> torch.Tensor:
    """``[B, T]`` -> ``[B, W, length]``: windows every ``hop`` samples. Audio shorter than one window is
    zero-padded to it, and a last partial hop is covered by a window ending at the audio's end, so every
    sample is in a window (MuLan's and CLAP's embeddings average over these; FAD takes them as frames)."""
    wav = crop_or_pad(wav, max(length, wav.shape[-1]))
    return torch.stack([wav[:, s : s + length] for s in window_starts(wav.shape[-1], length, hop)], 1)


def window_starts(total: int, length: int, hop: int) -> list[int]:
    """Where :func:`sliding_windows` starts its windows over ``total`` samples."""
    total = max(length, total)
    starts = list(range(0, total - length + 1, hop))
    if starts[-1] + length < total:
        starts.append(total - length)
    return starts


def random_crop(wav: torch.Tensor, length: int, rng: np.random.Generator) -> torch.Tensor:
    """A uniformly placed crop of ``length`` samples (padded if the clip is shorter)."""
    slack = wav.shape[-1] - length
    offset = int(rng.integers(0, slack + 1)) if slack > 0 else 0
    return crop_or_pad(wav, length, offset)


def centre_crop(wav: torch.Tensor, length: int) -> torch.Tensor:
    """The middle ``length`` samples (padded if the clip is shorter)."""
    return crop_or_pad(wav, length, offset=max(0, (wav.shape[-1] - length) // 2))


class MelSpectrogram(nn.Module):
    """Log-mel spectrogram ``[B, T] -> [B, n_mels, F]`` (torch.stft with librosa's filterbank)."""

    def __init__(
        self,
        sample_rate: int,
        n_fft: int = 1024,
        hop_length: int = 256,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = None,
        center: bool = True,
        log: bool = True,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.sample_rate, self.n_fft, self.hop_length = sample_rate, n_fft, hop_length
        self.n_mels, self.f_min, self.f_max = n_mels, f_min, f_max
        self.center, self.log, self.eps = center, log, eps
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        squeeze = wav.ndim == 1
        wav = wav[None] if squeeze else wav
        spec = (
            torch.stft(
                wav.float(),
                self.n_fft,
                self.hop_length,
                window=self.window,
                center=self.center,
                return_complex=True,
            )
            .abs()
            .pow(2)
        )
        filterbank = _mel_filterbank(
            self.sample_rate, self.n_fft, self.n_mels, self.f_min, self.f_max, spec.device
        )
        mel = filterbank @ spec
        out = torch.log(mel.clamp_min(self.eps)) if self.log else mel
        return out[0] if squeeze else out


# Krumhansl & Kessler (1982) probe-tone profiles (major, minor), tonic first.
KEY_PROFILES = torch.tensor(
    [
        [6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88],
        [6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17],
    ]
)


CHROMAS = ("stft", "semitone")


class RhythmAndKey(nn.Module):
    """Tempo and key evidence that a CNN pooling log-mel over time misses: its receptive field is shorter
    than a slow beat, and mel bands cannot tell a minor third from a major one below 1 kHz.

    ``forward(wav [B, T], mel [B, M, F])`` -> ``[B, dim]``: the autocorrelation of the spectral-flux onset
    envelope of ``mel`` (at ``frame_rate``) over lags of 0.1-2 s, then the correlations of the mean chroma
    with the major and minor profiles at every tonic and the chroma itself, both rotated so that the best
    key's tonic comes first (so a transposition changes nothing). All of it is level-invariant.

    ``chroma``: ``"stft"`` folds the power spectrum with librosa's chroma filters (the features the first
    MuLan and classifier were trained on); ``"semitone"`` folds the magnitude of a longer STFT into
    semitone bins from 55 Hz to 2 kHz with every octave weighed alike, as a constant-Q chroma does. The
    power spectrum lets a few loud upper partials outvote the notes; on the 386 held-out renders of the
    20 h build, the best key profile gets the mode of 5 s crops right in 0.731 of clips with
    ``"semitone"`` against 0.624 with ``"stft"`` (``python -m benchmarks key_chroma``).
    """

    LAG_SECONDS = (0.1, 2.0)
    N_FFT = {"stft": 4096, "semitone": 16384}  # 5.9 / 1.5 Hz bins at 24 kHz
    SEMITONE_HZ = (55.0, 2000.0)  # A1 to about B6: the notes; above them, mostly their partials

    def __init__(self, sample_rate: int, frame_rate: float, chroma: str = "stft"):
        super().__init__()
        if chroma not in CHROMAS:
            raise ValueError(f"chroma must be one of {CHROMAS}, got {chroma!r}")
        self.lags = tuple(round(s * frame_rate) for s in self.LAG_SECONDS)
        self.sample_rate, self.chroma = sample_rate, chroma
        self.n_fft, self.power = self.N_FFT[chroma], 2 if chroma == "stft" else 1
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.dim = self.lags[1] - self.lags[0] + 2 * 12 + 12

    def rhythm(self, mel: torch.Tensor) -> torch.Tensor:
        flux = (mel[..., 1:] - mel[..., :-1]).clamp(min=0).mean(1)
        return onset_autocorrelation(flux, self.lags)

    def key(self, wav: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wav.float(), self.n_fft, self.n_fft // 4, window=self.window, return_complex=True)
        filters = _chroma_filters(self.sample_rate, self.n_fft, self.chroma, spec.device)
        chroma = filters @ spec.abs().pow(self.power)  # [B, 12, F]
        return key_profile_features((chroma / chroma.amax(1, keepdim=True).clamp(min=1e-10)).mean(-1))

    def forward(self, wav: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.rhythm(mel), self.key(wav)], dim=1)


def onset_autocorrelation(envelope: torch.Tensor, lags: tuple[int, int]) -> torch.Tensor:
    """``[B, F]`` onset envelope -> ``[B, lags[1] - lags[0]]``: its autocorrelation at those lags (frames),
    relative to lag 0, so a steady beat shows as peaks at its period whatever the level."""
    envelope = envelope - envelope.mean(-1, keepdim=True)
    n = envelope.shape[-1]
    acf = torch.fft.irfft(torch.fft.rfft(envelope, 2 * n).abs().pow(2), 2 * n)[..., :n]
    acf = acf / acf[..., :1].clamp(min=1e-8)
    picked = acf[..., lags[0] : lags[1]]
    return F.pad(picked, (0, lags[1] - lags[0] - picked.shape[-1]))  # an envelope shorter than the lags


def key_profile_features(chroma: torch.Tensor) -> torch.Tensor:
    """``[B, 12]`` pitch-class profile -> ``[B, 36]``: its correlations with the major and minor key profiles
    at every tonic, then the profile itself, both rotated so that the best key's tonic comes first (a
    transposition changes nothing; the major-minor contrast at that tonic is the mode)."""
    profiles = KEY_PROFILES.to(chroma)
    rotations = torch.stack([profiles.roll(t, dims=-1) for t in range(12)], dim=1)  # [2, 12 tonics, 12]
    x = chroma - chroma.mean(-1, keepdim=True)
    r = rotations - rotations.mean(-1, keepdim=True)
    corr = torch.einsum("bp,ktp->bkt", x, r) / (x.norm(dim=-1)[:, None, None] * r.norm(dim=-1) + 1e-8)
    best = corr.amax(1).argmax(-1)  # tonic of the best key, major or minor
    order = (torch.arange(12, device=chroma.device)[None] + best[:, None]) % 12
    corr = torch.gather(corr, 2, order[:, None].expand(-1, 2, -1))
    return torch.cat([corr.flatten(1), torch.gather(chroma, 1, order)], dim=1)


# Filter tables are made at a module's first forward, not when it is built, and kept outside nn.Module's
# registry (as buffers made later they would misalign the model's buffers with an EMA copy's): librosa's
# filters import and compile numba, 1.4 s of start-up for a model loaded to generate from text, which never
# computes a spectrogram. Cached per device, as a buffer would have been moved once.
@functools.cache
def _mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float | None, device: torch.device
) -> torch.Tensor:
    fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max)
    return torch.from_numpy(fb).float().to(device)


@functools.cache
def _chroma_filters(sample_rate: int, n_fft: int, chroma: str, device: torch.device) -> torch.Tensor:
    if chroma == "stft":
        filters = librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, n_chroma=12)
    else:
        filters = semitone_chroma_filters(sample_rate, n_fft, *RhythmAndKey.SEMITONE_HZ)
    return torch.from_numpy(filters).float().to(device)


def semitone_chroma_filters(sample_rate: int, n_fft: int, low_hz: float, high_hz: float) -> np.ndarray:
    """``[12, n_fft // 2 + 1]``: each STFT bin between ``low_hz`` and ``high_hz`` goes to the pitch class of
    its nearest semitone, weighed by a triangle over that semitone and by 1/f (an octave up holds twice
    the bins, so each octave weighs the same)."""
    freqs = librosa.fft_frequencies(sr=sample_rate, n_fft=n_fft)
    inside = (freqs >= low_hz) & (freqs <= high_hz)
    midi = librosa.hz_to_midi(freqs[inside])
    nearest = np.round(midi)
    weights = np.clip(1 - 2 * np.abs(midi - nearest), 0, 1) / freqs[inside]
    filters = np.zeros((12, len(freqs)))
    np.add.at(filters, (nearest.astype(int) % 12, np.flatnonzero(inside)), weights)
    return filters


def _reason(err: Exception) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
