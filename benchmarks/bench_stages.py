"""Token-stage generation speed (real-time factor per stage, tokens/s, KV cache, CFG) and training throughput.

``reference`` is the configuration of the issue's target (stages d=128, 2 layers, 4 heads; 12 x 256
codes, 4 coarse + 8 fine, 50 Hz acoustic, 25 Hz semantic): 2 s must take <= 0.75 s, 4 s <= 1.5 s,
guidance at most 2x. ``small`` must generate 10 s in <= 10 s with guidance. The real-time factor is
wall seconds per second of audio (below 1: faster than real time). Peak memory is the process's
maximum resident set, read after each group of runs.
"""

from __future__ import annotations

import resource
import time

import torch

from benchmarks.common import median_time, record
from musiclm.pipeline import StageSet, generate_tokens
from musiclm.stages import STAGES, Sampling, StageConfig, StageLM

REFERENCE = dict(
    dim=128,
    layers=2,
    heads=4,
    ff=512,
    dropout=0.0,
    mulan_quantizers=12,
    mulan_codebook=256,
    semantic_vocab=256,
    codebook_size=256,
    coarse_quantizers=4,
    fine_quantizers=8,
)
PAPER_VOCAB = dict(
    mulan_quantizers=12,
    mulan_codebook=1024,
    semantic_vocab=1024,
    codebook_size=1024,
    coarse_quantizers=4,
    fine_quantizers=8,
)


def stages(preset: str, **fields) -> StageSet:
    torch.manual_seed(0)
    return StageSet(*(StageLM(StageConfig.for_stage(s, preset, **fields)).eval() for s in STAGES))


def peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run(
    st: StageSet, seconds: float, batch: int, guidance: float | None, cache: bool = True, repeats: int = 3
):
    mulan = [(0.0, torch.zeros(batch, st.semantic.config.mulan_quantizers, dtype=torch.long))]
    samplings = [Sampling(t, guidance=guidance) for t in (1.0, 0.95, 0.4)]

    def once():
        return generate_tokens(
            st, mulan, seconds, samplings, generator=torch.Generator().manual_seed(0), use_cache=cache
        )

    total = median_time(once, repeats=repeats, warmup=1)
    tokens = batch * (round(seconds * 25) + round(seconds * 50) * (st.coarse.levels + st.fine.levels))
    share = stage_shares(st, mulan, seconds, samplings, cache)
    per_stage = {k: v * total for k, v in share.items()}
    return {
        "seconds_of_audio": seconds,
        "batch": batch,
        "guidance": guidance,
        "kv_cache": cache,
        "wall_s": round(total, 3),
        "rtf_total": round(total / seconds, 3),
        "rtf_per_stage": {k: round(v / seconds, 3) for k, v in per_stage.items()},
        "tokens_per_s": round(tokens / total),
        "peak_rss_mb": peak_mb(),
    }


def stage_shares(st: StageSet, mulan, seconds: float, samplings, cache: bool) -> dict[str, float]:
    """Each stage's share of a run, from one run with each stage's transformer timed separately."""
    times = dict.fromkeys(STAGES, 0.0)
    wrapped = []
    for name, model in zip(STAGES, (st.semantic, st.coarse, st.fine)):
        forward = model.transformer.forward

        def timed(*args, _f=forward, _n=name, **kw):
            start = time.perf_counter()
            out = _f(*args, **kw)
            times[_n] += time.perf_counter() - start
            return out

        model.transformer.forward = timed
        wrapped.append(model)
    generate_tokens(
        st, mulan, seconds, samplings, generator=torch.Generator().manual_seed(0), use_cache=cache
    )
    for model in wrapped:
        del model.transformer.forward
    # sampling and bookkeeping outside the networks are shared in proportion to the networks' time
    net = sum(times.values())
    return {k: v / net for k, v in times.items()}


def training_throughput(preset: str, fields: dict, batch: int = 8, steps: int = 5) -> dict[str, float]:
    out = {}
    for name in STAGES:
        torch.manual_seed(0)
        model = StageLM(StageConfig.for_stage(name, preset, **fields)).train()
        c = model.config
        frames = round(c.window_seconds * (c.semantic_rate if name == "semantic" else c.acoustic_rate))
        prefix_len = {
            "semantic": c.mulan_quantizers,
            "coarse": c.mulan_quantizers + round(c.window_seconds * c.semantic_rate),
            "fine": frames * c.coarse_quantizers,
        }[name] + 1
        batch_data = {
            "prefix": torch.randint(2, 3, (batch, prefix_len)),
            "codes": torch.randint(0, model.codebook, (batch, model.levels, frames)),
        }
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            opt.zero_grad()
            model.training_step(batch_data, step=0, group="model")["loss"].backward()
            opt.step()

        t = median_time(step, repeats=steps, warmup=2)
        out[name] = round(batch * (prefix_len + frames * model.levels) / t)
    return out


def main() -> None:
    torch.set_num_threads(2)
    ref = stages("small", **REFERENCE)
    results: dict = {"reference_config": REFERENCE, "reference": [], "tiny": [], "small": []}
    for seconds in (2.0, 4.0):
        for guidance in (None, 3.0):
            results["reference"].append(run(ref, seconds, 1, guidance))
    results["reference"].append(run(ref, 2.0, 1, None, cache=False, repeats=1))
    r = {(x["seconds_of_audio"], x["guidance"], x["kv_cache"]): x["wall_s"] for x in results["reference"]}
    results["reference_targets"] = {
        "2s_wall_s (<=0.75)": r[(2.0, None, True)],
        "4s_wall_s (<=1.5)": r[(4.0, None, True)],
        "4s/2s ratio (linear: 2)": round(r[(4.0, None, True)] / r[(2.0, None, True)], 2),
        "cfg_cost_2s (<=2x)": round(r[(2.0, 3.0, True)] / r[(2.0, None, True)], 2),
        "cfg_cost_4s (<=2x)": round(r[(4.0, 3.0, True)] / r[(4.0, None, True)], 2),
        "kv_cache_speedup_2s": round(r[(2.0, None, False)] / r[(2.0, None, True)], 1),
    }
    for preset in ("tiny", "small"):
        st = stages(preset, **PAPER_VOCAB)
        for batch in (1, 8):  # the headline (batch 1) as a median of 3: single runs here vary by 25%
            results[preset].append(run(st, 10.0, batch, 3.0, repeats=3 if batch == 1 else 1))
        results[preset].append(run(st, 10.0, 1, None, repeats=1))
        results[preset].append(run(st, 1.0, 1, 3.0, cache=False, repeats=1))
        results[f"{preset}_params_per_stage"] = {
            n: sum(p.numel() for p in m.parameters())
            for n, m in zip(STAGES, (st.semantic, st.coarse, st.fine))
        }
        results[f"{preset}_training_tokens_per_s_batch8"] = training_throughput(preset, PAPER_VOCAB)
    results["small_10s_with_cfg_wall_s (<=10)"] = results["small"][0]["wall_s"]
    record("stages", results)


if __name__ == "__main__":
    main()
