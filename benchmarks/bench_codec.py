"""SoundStream `small`: training-step time (batch 4 x 1 s at 16 kHz, discriminators on) and
encode+decode speed as a multiple of real time, on this machine's CPU threads."""

from __future__ import annotations

import torch

from benchmarks.common import median_time, record


def main() -> None:
    from musiclm.codec.soundstream import SoundStream, SoundStreamConfig

    torch.manual_seed(0)
    model = SoundStream(SoundStreamConfig.preset("small"))
    sr = model.sample_rate
    batch = {"audio": 0.3 * torch.randn(4, sr)}
    optimizers = {
        name: torch.optim.AdamW(spec["params"], lr=1e-4) for name, spec in model.optimizer_groups().items()
    }
    model.train()

    def update(group, losses) -> None:  # what the engine does for a group, without DDP or accumulation
        model.zero_grad(set_to_none=True)
        losses(0, batch)["loss"].backward()
        optimizers[group].step()

    step_s = median_time(lambda: model.train_batch(model.config.disc_start_step, update), repeats=5, warmup=2)

    model.eval()
    wav = 0.3 * torch.randn(1, 10 * sr)
    with torch.inference_mode():
        codes = model.encode(wav)
        enc_s = median_time(lambda: model.encode(wav), repeats=3)
        dec_s = median_time(lambda: model.decode(codes), repeats=3)
    record(
        "codec",
        {
            "preset": "small",
            "generator_params": sum(p.numel() for p in model.generator_parameters()),
            "discriminator_params": sum(p.numel() for p in model.discriminators.parameters()),
            "train_step_s_batch4x1s_16k": round(step_s, 3),
            "train_step_target_s": 1.5,
            "encode_s_per_10s": round(enc_s, 3),
            "decode_s_per_10s": round(dec_s, 3),
            "encode_decode_x_realtime": round(10 / (enc_s + dec_s), 1),
            "realtime_target_x": 50,
        },
    )


if __name__ == "__main__":
    main()
