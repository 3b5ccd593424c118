"""SoundStream codec: interface, streaming equivalence, bad input, training, persistence, adapters, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from musiclm.codec import evaluate as ev
from musiclm.codec.encodec import HFCodec
from musiclm.codec.soundstream import (
    TRAIN_DEFAULTS,
    CodecError,
    SoundStream,
    SoundStreamConfig,
    StoredCodebooks,
)
from musiclm.interfaces import AcousticCodec, load_component
from musiclm.training import TrainConfig

SR = 16000


def tones(n: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """Sums of two random harmonic tones with decays: cheap music-like test audio."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    out = []
    for _ in range(n):
        f = rng.uniform(110, 880, size=2)
        wav = sum(np.sin(2 * np.pi * fk * k * t) / k for fk in f for k in (1, 2, 3))
        out.append(0.2 * wav * np.exp(-t * rng.uniform(0.5, 3)))
    return torch.tensor(np.stack(out), dtype=torch.float32)


class Tones(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, key: int) -> dict:
        return {"audio": tones(1, 0.5, seed=key % len(self))[0]}


@pytest.fixture(scope="module")
def codec() -> SoundStream:
    torch.manual_seed(0)
    model = SoundStream(SoundStreamConfig.preset("tiny"))
    model.train()
    model(tones(4, 0.5))  # k-means initialises the codebooks from real latents
    return model.eval()


def test_interface_shapes_and_bitrates(codec):
    assert isinstance(codec, AcousticCodec)
    assert codec.sample_rate == SR and codec.frame_rate == 50 and codec.num_quantizers == 4
    wav = tones(2, 0.3)
    codes = codec.encode(wav)
    assert codes.shape == (2, 4, 15) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < codec.codebook_size
    assert codec.decode(codes).shape == (2, 15 * 320)
    assert torch.equal(codec.encode(wav, num_quantizers=2), codes[:, :2])  # residual: levels are a prefix
    coarse, full = codec.decode(codes[:, :1]), codec.decode(codes)
    assert not torch.allclose(coarse, full)
    assert codec.bitrate(2) == 50 * 2 * 6


def test_streaming_equals_whole_file(codec):
    wav = tones(2, 0.7, seed=3)
    whole_codes = codec.encode(wav)
    chunks = wav.split(333, dim=-1)  # not multiples of the hop: the streamer buffers the remainder
    stream_codes = torch.cat(list(codec.encode_stream(chunks)), dim=-1)
    assert torch.equal(stream_codes, whole_codes)
    whole = codec.decode(whole_codes)
    streamed = torch.cat(list(codec.decode_stream(whole_codes.split([1, 4, 2, 28], dim=-1))), dim=-1)
    assert streamed.shape == whole.shape
    torch.testing.assert_close(streamed, whole, atol=1e-5, rtol=1e-4)


def test_bad_input(codec):
    with pytest.raises(ValueError, match="NaN"):
        codec.encode(torch.tensor([[0.0, float("nan")] * 400]))
    with pytest.raises(CodecError, match="mono"):
        codec.encode(torch.zeros(1, 2, 800))
    with pytest.raises(CodecError, match="empty"):
        codec.encode(torch.zeros(1, 0))
    with pytest.raises(CodecError, match="num_quantizers"):
        codec.encode(torch.zeros(1, 800), num_quantizers=9)
    with pytest.raises(CodecError, match="quantizer levels"):
        codec.decode(torch.zeros(1, 5, 3, dtype=torch.long))
    with pytest.raises(CodecError, match="0..63"):
        codec.decode(torch.full((1, 2, 3), 64))
    with pytest.raises(CodecError, match="integer"):
        codec.decode(torch.zeros(1, 2, 3))
    assert codec.encode(torch.zeros(1, 10)).shape == (1, 4, 1)  # shorter than a frame: padded
    for wav in (torch.zeros(1, 1600), torch.full((1, 1600), 0.5), tones(1, 0.1).mul(50).clamp(-1, 1)):
        assert torch.isfinite(codec.decode(codec.encode(wav))).all()  # silence, DC offset, clipping


def test_presets_paper_sizes():
    config = SoundStreamConfig.preset("paper")
    assert config.sample_rate / config.hop_length == 50 and config.num_quantizers == 12
    assert config.codebook_size == 1024
    with torch.device("meta"):
        paper = SoundStream(config)
    assert 5e6 < sum(p.numel() for p in paper.generator_parameters()) < 50e6
    small = SoundStream(SoundStreamConfig.preset("small"))
    assert 2.2e6 < sum(p.numel() for p in small.generator_parameters()) < 2.8e6
    assert small.bitrate() == 6000


def test_training_lowers_loss_and_round_trips(tmp_path):
    from musiclm.training import Trainer

    torch.manual_seed(0)
    model = SoundStream(SoundStreamConfig.preset("tiny", disc_start_step=0))
    disc_before = [p.detach().clone() for p in model.discriminators.parameters()]
    config = TrainConfig.from_dict(TRAIN_DEFAULTS["tiny"]).replace(
        steps=24, lr=3e-3, log_every=1, progress=False, ckpt_every=12
    )
    trainer = Trainer(model, Tones(), config, tmp_path)
    trainer.fit()
    mels = [h["generator/mel"] for h in trainer.history if "generator/mel" in h]
    assert np.mean(mels[-4:]) < 0.9 * np.mean(mels[:4])
    assert all("discriminator/loss" in h and "generator/adv" in h for h in trainer.history if "step" in h)
    # every discriminator weight is trained (output biases may cancel under the hinge loss's symmetry)
    moved = [
        not torch.equal(a, b) for a, b in zip(disc_before, model.discriminators.parameters()) if a.ndim > 1
    ]
    assert moved and all(moved)
    loaded = load_component(tmp_path)
    assert isinstance(loaded, SoundStream)
    wav = tones(1, 0.4, seed=9)
    assert torch.equal(loaded.encode(wav), model.eval().encode(wav))
    usage = ev.perplexity(loaded.encode(tones(8, 0.5, seed=1))[0], loaded.codebook_size)
    assert len(usage) == 4 and all(1 <= p <= 64 for p in usage)


def test_a_loaded_codec_decodes_as_the_library_does_and_encodes_with_it(codec, tmp_path):
    """Loaded for inference, a codec keeps its codebooks without vector-quantize-pytorch (what keeps
    `musiclm generate` quick to start): its decoding sums them as the library does, bit for bit, and its first
    encode builds the library's quantizer from them."""
    loaded = load_component(codec.save_pretrained(tmp_path))
    assert isinstance(loaded.quantizer, StoredCodebooks)
    codes = torch.randint(0, codec.codebook_size, (2, codec.num_quantizers, 40))
    for levels in (1, 2, codec.num_quantizers):
        library = codec.quantizer.get_output_from_indices(codes[:, :levels].transpose(1, 2))
        assert torch.equal(loaded._dequantize(codes[:, :levels]), library.transpose(1, 2))
    wav = tones(1, 0.4, seed=3)
    assert torch.equal(loaded.encode(wav), codec.encode(wav))
    assert not isinstance(loaded.quantizer, StoredCodebooks)


def test_gan_step_runs_the_generator_once_per_micro_batch(tmp_path):
    """With gradient accumulation 2, one optimiser step runs the generator once per micro-batch (so the
    EMA codebooks update once per micro-batch) and the discriminators learn from each micro-batch's own
    output."""
    from musiclm.training import TrainConfig, Trainer

    torch.manual_seed(0)
    model = SoundStream(SoundStreamConfig.preset("tiny", disc_start_step=0))
    generated, judged = [], []
    model.decoder.register_forward_hook(lambda module, args, out: generated.append(out.detach().clone()))
    model.discriminators.register_forward_hook(lambda module, args, out: judged.append(args[0].clone()))
    config = TrainConfig(steps=1, batch_size=4, grad_accum=2, warmup_steps=1, progress=False)
    trainer = Trainer(model, Tones(), config, tmp_path)
    trainer.fit()

    assert len(generated) == 2 and not torch.equal(generated[0], generated[1])
    # generator phase: D(fake), D(real) per micro-batch; discriminator phase: D(real), D(fake) per micro-batch
    assert len(judged) == 8
    assert torch.equal(judged[5], generated[0]) and torch.equal(judged[7], generated[1])
    assert torch.equal(judged[0], generated[0]) and torch.equal(judged[2], generated[1])
    assert {"generator/adv", "discriminator/loss"} <= set(trainer.history[-1])


def test_metrics_and_opus():
    wav = tones(1, 1.0, seed=5)[0]
    assert ev.mel_distance(wav, wav, SR) == 0 and ev.spectral_convergence(wav, wav) == 0
    assert ev.si_snr(wav, wav) > 60
    opus = ev.opus_roundtrip(wav, SR, 12.0)
    assert opus.shape == wav.shape
    noisy = wav + 0.05 * torch.randn_like(wav)
    assert 0 < ev.mel_distance(opus, wav, SR) and ev.si_snr(noisy, wav) < ev.si_snr(wav * 0.5, wav)
    assert ev.perplexity(torch.tensor([[0, 1, 2, 3]]), 4) == pytest.approx([4.0])


def test_evaluate_table_and_plot(codec, tmp_path):
    rows, ppl = ev.evaluate(codec, [tones(1, 0.5, seed=2)[0]], opus=True)
    systems = {(r.system, r.quantizers) for r in rows}
    assert ("codec", 4) in systems and ("opus x2", 1) in systems and len(rows) == 12
    assert "| codec | 4 |" in ev.table(rows) and len(ppl) == 4
    assert ev.plot(rows, tmp_path / "p.png", "t").stat().st_size > 1000


@pytest.mark.parametrize("kind", ["encodec", "dac"])
def test_hf_adapters(kind, tmp_path):
    torch.manual_seed(0)
    if kind == "encodec":
        from transformers import EncodecConfig, EncodecModel

        hf = EncodecModel(
            EncodecConfig(
                num_filters=4,
                hidden_size=16,
                codebook_size=32,
                codebook_dim=16,
                upsampling_ratios=[8, 5, 4],
                target_bandwidths=[2.0, 4.0],
                sampling_rate=SR,
                num_lstm_layers=1,
            )
        )
    else:
        from transformers import DacConfig, DacModel

        hf = DacModel(
            DacConfig(
                encoder_hidden_size=8,
                downsampling_ratios=[2, 4],
                decoder_hidden_size=16,
                n_codebooks=3,
                codebook_size=32,
                codebook_dim=4,
                hidden_size=16,
                sampling_rate=SR,
            )
        )
    HFCodec(hf).save_pretrained(tmp_path)
    codec = load_component(tmp_path)  # offline round trip through HF's own config.json
    assert isinstance(codec, HFCodec) and isinstance(codec, AcousticCodec)
    wav = tones(2, 0.2)
    codes = codec.encode(wav)
    frames = -(-wav.shape[-1] // codec.hop_length)
    assert codes.shape == (2, codec.num_quantizers, frames) and codes.dtype == torch.long
    assert codec.decode(codes).shape == (2, frames * codec.hop_length)
    assert codec.decode(codes[:, :1]).shape == (2, frames * codec.hop_length)
    with pytest.raises(CodecError):
        codec.decode(torch.full((1, 1, 4), codec.codebook_size))


def test_cli_encode_decode_info(codec, tmp_path):
    from musiclm.audio import save_audio
    from musiclm.cli.main import app

    codec.save_pretrained(tmp_path / "codec")
    save_audio(tmp_path / "in.wav", tones(1, 0.5)[0], 22050)  # another rate: resampled with a notice
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "codec",
            "encode",
            str(tmp_path / "in.wav"),
            str(tmp_path / "c.npz"),
            "--quantizers",
            "2",
            "--checkpoint",
            str(tmp_path / "codec"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "resampling" in res.output
    assert np.load(tmp_path / "c.npz")["codes"].shape == (2, 19)  # 8000 samples at 22.05 kHz = 5805 at 16 kHz
    res = runner.invoke(
        app,
        [
            "codec",
            "decode",
            str(tmp_path / "c.npz"),
            str(tmp_path / "out.wav"),
            "--checkpoint",
            str(tmp_path / "codec"),
        ],
    )
    assert res.exit_code == 0, res.output
    import soundfile as sf

    assert sf.info(tmp_path / "out.wav").frames == 5805
    res = runner.invoke(app, ["codec", "info", "--checkpoint", str(tmp_path / "codec")])
    assert res.exit_code == 0 and "bitrate: 1.2 kbps" in res.output and "frame rate: 50 Hz" in res.output


def test_cli_train_codec_data_weights(tiny_dataset, tmp_path):
    from musiclm.cli.main import app

    manifest = str(tiny_dataset)
    args = [
        "train",
        "codec",
        "--preset",
        "tiny",
        "--data",
        manifest,
        "--data",
        manifest,
        "--out",
        str(tmp_path / "run"),
    ]
    res = CliRunner().invoke(app, [*args, "--data-weight", "1"])
    assert res.exit_code != 0 and "weights must be 2" in res.output
    res = CliRunner().invoke(app, [*args, "--data-weight", "3", "--data-weight", "1", "--steps", "2"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "model.safetensors").is_file()


@pytest.mark.slow
def test_codebooks_stay_identical_across_ranks_under_torchrun(tiny_dataset, tmp_path):
    """Two gloo ranks train the tiny codec with `musiclm train codec`: k-means init, EMA updates and dead-code
    restarts see both ranks' latents, so the ranks end with the same codebooks. Reconstruction only: each
    step then ends with the generator's forward, whose EMA update DDP's buffer broadcast does not redo."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    helper = Path(__file__).with_name("codec_ddp.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    run = tmp_path / "run"
    run.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(helper),
            str(run),
            "train",
            "codec",
            "--preset",
            "tiny",
            "--data",
            str(tiny_dataset),
            "--out",
            str(run),
            "--steps",
            "4",
            "--batch-size",
            "4",
            "--set",
            "model.disc_start_step=1000",
            "--set",
            "progress=false",
        ],
        env=env,
        check=True,
        timeout=120,
    )
    ranks = [load_file(str(run / f"quantizer_rank{r}.safetensors")) for r in (0, 1)]
    codebooks = [k for k in ranks[0] if k.endswith("embed")]
    assert len(codebooks) == 4 and bool(ranks[0]["layers.0._codebook.initted"])
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
