"""MuLan / melody embedder speed and size: embedding a clip, a training step, quantizing; paper param
counts."""

from __future__ import annotations

import torch

from benchmarks.common import median_time, record


def _params(module: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 3)


def main() -> None:
    from musiclm.mulan.melody import MelodyConfig, MelodyEmbedder
    from musiclm.mulan.model import MuLan, MuLanConfig

    torch.manual_seed(0)
    results: dict = {"params_millions": {}}
    for preset in ("small", "paper"):
        with torch.device("meta"):
            mulan, melody = MuLan(MuLanConfig.preset(preset)), MelodyEmbedder(MelodyConfig.preset(preset))
        results["params_millions"][preset] = {
            "mulan_audio_tower": _params(mulan.audio_tower),
            "mulan_text_encoder": _params(mulan.text_encoder),
            "mulan_total": _params(mulan),
            "melody": _params(melody),
        }
    mulan = MuLan(MuLanConfig.preset("small")).eval()
    melody = MelodyEmbedder(MelodyConfig.preset("small")).eval()
    sr = mulan.sample_rate
    with torch.no_grad():
        results["small_embed_audio_10s_s"] = median_time(lambda: mulan.embed_audio(torch.randn(1, 10 * sr)))
        results["small_embed_audio_30s_s"] = median_time(
            lambda: mulan.embed_audio(torch.randn(1, 30 * sr)), repeats=3
        )
        texts = ["A lively folk dance played on fiddle and accordion at about 130 BPM in G major."] * 16
        results["small_embed_text_batch16_s"] = median_time(lambda: mulan.embed_text(texts))
        results["small_melody_embed_10s_s"] = median_time(lambda: melody.embed(torch.randn(1, 10 * sr)))
        emb = torch.nn.functional.normalize(torch.randn(4096, 128), dim=-1)
        mulan.fit_quantizer(emb)
        results["small_rvq_quantize_1000_s"] = median_time(lambda: mulan.quantize(emb[:1000]))
    mulan.train()
    batch = {"audio": torch.randn(16, 10 * sr), "text": texts}

    def step() -> None:
        mulan.zero_grad()
        mulan.training_step(batch, step=0, group="model")["loss"].backward()

    results["small_mulan_train_step_batch16_s"] = median_time(step, repeats=3)
    melody.train()
    pairs = {
        "anchor": torch.randn(32, 4 * sr),
        "positive": torch.randn(32, 4 * sr),
        "group": torch.arange(32),
    }

    def melody_step() -> None:
        melody.zero_grad()
        melody.training_step(pairs, step=0, group="model")["loss"].backward()

    results["small_melody_train_step_batch32_s"] = median_time(melody_step, repeats=3)
    record("mulan", results)


if __name__ == "__main__":
    main()
