"""The stage Transformer, layouts, sampling, guidance and windowed decoding, on token tensors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from musiclm.config import ConfigError
from musiclm.pipeline import StageSet, generate_tokens
from musiclm.stages import STAGES, Sampling, StageConfig, StageLM, count_parameters, generate_stage, sample
from musiclm.stages.data import StageDataset, TokenShards, load_shards
from musiclm.stages.shards import pack_tokens, read_meta
from musiclm.stages.stages import NULL, SEP
from musiclm.training import TrainConfig, Trainer


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # token-by-token decoding of tiny models is latency-bound; on a shared, loaded machine a second
    # intra-op thread only adds barrier waits (this file: 6 s on one thread, minutes on two under load)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


VOCAB = dict(
    mulan_quantizers=3,
    mulan_codebook=16,
    semantic_vocab=20,
    codebook_size=24,
    coarse_quantizers=2,
    fine_quantizers=3,
)


def stage(name: str, seed: int = 0, **overrides) -> StageLM:
    torch.manual_seed(seed)
    return StageLM(StageConfig.for_stage(name, "tiny", **{**VOCAB, **overrides})).eval()


def conditioner(model: StageLM, batch: int = 2, seed: int = 0):
    """``condition(start, new, end)`` and ``aligned(start, end)`` for generate_stage, and the list of windows
    asked."""
    g = torch.Generator().manual_seed(seed)
    mulan = torch.randint(0, 16, (batch, 3), generator=g)
    semantic = torch.randint(0, 20, (batch, 400), generator=g)
    coarse = torch.randint(0, 24, (batch, 2, 800), generator=g)
    calls = []

    def condition(start, new, end):
        calls.append((start, new, end))
        if model.config.stage == "semantic":
            return model.condition(mulan=mulan)
        if model.config.stage == "coarse":
            return model.condition(mulan=mulan, semantic=semantic[:, start // 2 : (end + 1) // 2])
        return model.condition(coarse=coarse[..., start:end])

    def aligned(start, end):
        return model.aligned(start, end, semantic=semantic, coarse=coarse)

    return condition, aligned, calls


def test_paper_preset_has_the_papers_size():
    for name in STAGES:
        count = count_parameters(StageConfig.for_stage(name, "paper"))
        assert 400e6 < count < 460e6, (name, count)  # the paper: ~430M per stage
    paper = StageConfig.for_stage("semantic", "paper")
    assert (paper.layers, paper.heads, paper.dim, paper.ff) == (24, 16, 1024, 4096)
    assert (paper.window_seconds, paper.prefix_seconds) == (30.0, 15.0)
    assert StageConfig.for_stage("coarse", "paper").window_seconds == pytest.approx(10.0)
    assert StageConfig.for_stage("fine", "paper").window_seconds == pytest.approx(3.0)


def test_bad_configs_are_refused():
    with pytest.raises(ConfigError, match="unknown stage"):
        StageConfig.for_stage("medium", "tiny")
    with pytest.raises(ConfigError, match="divisible"):
        StageConfig.preset("tiny", dim=30, heads=4)
    with pytest.raises(ConfigError, match="prefix_seconds"):
        StageConfig.preset("tiny", window_seconds=2.0, prefix_seconds=2.0)


@pytest.mark.parametrize("name", STAGES)
def test_layout_offsets_and_conditioning_dropout(name):
    model = stage(name)
    condition, _, _ = conditioner(model)
    prefix = condition(0, 0, 10)
    assert prefix[:, -1].eq(SEP).all() and prefix.min() >= 0
    # every segment lives in its own slice of the vocabulary: ids of different segments never collide
    ends = sorted(model.offsets.values()) + [model.transformer.spec.vocab_size]
    assert ends[0] == 2 and all(a < b for a, b in zip(ends, ends[1:]))
    codes = torch.full((2, model.levels, 5), model.codebook - 1)
    ids = model.target.ids(codes)
    assert ids.shape == (2, 5 * model.levels) and ids.max() == model.transformer.spec.vocab_size - 1
    levels = ids[0, : model.levels] - model.target.offset
    assert levels.tolist() == [(lv + 1) * model.codebook - 1 for lv in range(model.levels)]
    dropped = model.drop_condition(prefix, torch.tensor([True, False]))
    assert dropped[0, : model.droppable].eq(NULL).all() and dropped[1].equal(prefix[1])
    assert dropped[0, model.droppable :].equal(prefix[0, model.droppable :])  # S / coarse codes stay
    assert model.droppable == (3 if name != "fine" else 0)


def test_layouts_place_the_semantic_stream_in_the_prefix_or_before_each_frame():
    """The coarse stage's ids, written out: vocabulary [SEP, NULL], MuLan 2..49 (3 levels of 16), semantic
    50..69, coarse 70..117 (2 levels of 24); a "codebook" MuLan moves past the learned rows."""
    mulan, semantic = torch.tensor([[1, 2, 3]]), torch.tensor([[4, 5]])
    codes = torch.tensor([[[0, 1, 2, 3], [10, 11, 12, 13]]])  # [B, levels, frames]
    mulan_ids = [3, 20, 37]
    prefix = stage("coarse", layout="prefix")
    assert prefix.condition(mulan=mulan, semantic=semantic).tolist() == [[*mulan_ids, 54, 55, SEP]]
    assert prefix.aligned(0, 4, semantic=semantic) is None
    assert prefix.frame_inputs(codes)[0].tolist() == [[70, 104, 71, 105, 72, 106, 73, 107]]
    interleaved = stage("coarse", layout="interleaved")
    assert interleaved.condition(mulan=mulan, semantic=semantic).tolist() == [[*mulan_ids, SEP]]
    given = interleaved.aligned(0, 4, semantic=semantic)
    assert given.tolist() == [[[54], [54], [55], [55]]]  # acoustic frame f reads semantic token f // 2
    assert interleaved.frame_inputs(codes, given)[0].tolist() == [
        [54, 70, 104, 54, 71, 105, 55, 72, 106, 55, 73, 107]
    ]
    by_codes = stage("coarse", mulan_embedding="codebook", mulan_dim=4)
    assert by_codes.offsets == {"semantic": 2, "coarse": 22, "mulan": 70}
    assert by_codes.transformer.spec.vocab_size == 70  # the learned rows end where MuLan's ids begin


@pytest.mark.parametrize("name", ["coarse", "fine"])
def test_interleaved_frames_see_their_own_aligned_tokens(name):
    """Each target frame is preceded by the aligned tokens of its own time, and only frames from then on see
    them."""
    model = stage(name)
    assert model.config.layout == "interleaved" and model.given == {"coarse": 1, "fine": 2}[name]
    condition, aligned, _ = conditioner(model, batch=1)
    frames = 40
    prefix, given = condition(0, 0, frames), aligned(0, frames)
    assert given.shape == (1, frames, model.given)
    if name == "coarse":  # acoustic frame f (50 Hz) gets semantic token f // 2 (25 Hz)
        assert given[0, 7, 0] == given[0, 6, 0] and given[0, 8, 0] != -1
    codes = torch.randint(0, 24, (1, model.levels, frames))
    ids, _ = model.frame_inputs(codes, given)
    assert ids.shape == (1, frames * (model.given + model.levels))
    assert ids.view(frames, -1)[:, : model.given].equal(given[0])
    base = model(prefix, codes, given)
    changed = given.clone()
    changed[0, 20] = changed[0, 20] + 1  # another (valid) id at frame 20 alone
    moved = model(prefix, codes, changed)
    diff = (moved - base).abs().amax(dim=(0, 2, 3))
    assert diff[:20].max() == 0 and diff[20] > 1e-4  # causal, and frame 20 hears its own token
    with pytest.raises(ValueError, match="aligned"):
        model(prefix, codes)


def test_semantic_lookahead_shows_each_frame_the_next_semantic_tokens():
    model = stage("coarse", semantic_lookahead=3, guide_semantic=True)
    assert model.given == 1  # the lookahead adds vectors to the frame's own semantic position, not positions
    condition, aligned, _ = conditioner(model, batch=1)
    given = aligned(10, 30) - model.offsets["semantic"]
    semantic = aligned(0, 800)[0, ::2, 0] - model.offsets["semantic"]  # token f // 2 of every even frame
    for f in range(10, 30):  # frame f sees s[f // 2], then s[f // 2 + 1 .. f // 2 + 3]
        assert given[0, f - 10].tolist() == semantic[f // 2 : f // 2 + 4].tolist()
    assert (aligned(798, 800)[0, -1] == aligned(798, 800)[0, -1, 0]).all()  # past the end: the last token
    # a changed semantic token moves the logits of the frames that see it, and of no frame before them
    frames, codes = 60, torch.randint(0, 24, (1, 2, 60))
    ids = aligned(0, frames)
    changed = ids.clone()
    changed[ids == ids[0, 40, 0]] = (
        model.offsets["semantic"] + (ids[0, 40, 0] - model.offsets["semantic"] + 1) % 20
    )
    moved = (
        model(condition(0, 0, frames), codes, changed) - model(condition(0, 0, frames), codes, ids)
    ).abs()
    touched = (changed != ids).any(-1)[0]
    assert moved[0, touched].amax() > 1e-4
    assert moved[0, : int(touched.nonzero()[0])].amax() == 0  # causal: earlier frames never see it
    out = generate_stage(model, condition, 60, 1, Sampling(1.0), aligned=aligned)
    assert out.shape == (1, model.levels, 60)
    # a window given stand-in semantic tokens (the diagnostics' shifted or foreign S) sees those ahead too
    clip = {"semantic": torch.arange(100) % 20, "acoustic": torch.zeros(5, 200, dtype=torch.long)}
    data = StageDataset([{**clip, "mulan": torch.tensor([1, 0, 0])}], model)
    item = data.window(clip, 0, torch.tensor([[1, 0, 0]]), semantic=torch.full((data.sem_frames,), 7))
    assert item["aligned"].eq(model.offsets["semantic"] + 7).all()
    # decoding with the KV cache feeds the lookahead as training does
    outs = [
        generate_stage(model, condition, 60, 1, Sampling(0.0, guidance=2.0), aligned=aligned, use_cache=cache)
        for cache in (True, False)
    ]
    assert outs[0].equal(outs[1])
    for bad in ({"semantic_lookahead": 2, "layout": "prefix"}, {"semantic_lookahead": -1}):
        with pytest.raises(ConfigError, match="semantic_lookahead"):
            stage("coarse", **bad)
    with pytest.raises(ConfigError, match="semantic_lookahead"):
        stage("fine", semantic_lookahead=1)


def test_history_noise_corrupts_the_past_the_stage_reads_not_its_targets():
    model = stage("coarse", history_noise=0.5, dropout=0.0, cond_dropout=0.0)
    condition, aligned, _ = conditioner(model, batch=4)
    frames = 40
    codes = torch.randint(0, 24, (4, model.levels, frames))
    batch = {"prefix": condition(0, 0, frames), "codes": codes, "aligned": aligned(0, frames)}
    read = []
    original = model.forward
    model.forward = lambda prefix, history, given: read.append(history) or original(prefix, history, given)
    clean = model.training_step(batch, step=0, group="all")["loss"]  # eval mode: no noise
    model.train()
    noisy = model.training_step(batch, step=0, group="all")["loss"]
    assert read[0].equal(codes) and 0.35 < (read[1] != codes).float().mean() < 0.55  # 1/24 redrawn alike
    expected = model.window_nll(original(batch["prefix"], read[1], batch["aligned"]), codes).mean()
    assert torch.allclose(noisy, expected) and not torch.allclose(noisy, clean)


@pytest.mark.parametrize("layout", ["interleaved", "prefix"])
def test_guide_semantic_drops_the_semantic_tokens_with_the_text(layout):
    model = stage("coarse", layout=layout, guide_semantic=True, cond_dropout=1.0, dropout=0.0)
    condition, aligned, _ = conditioner(model, batch=2)
    frames = model.window_frames
    prefix, given = condition(0, 0, frames), aligned(0, frames) if model.given else None
    read = []
    original = model.forward
    model.forward = lambda prefix, history, given: (
        read.append((prefix, given)) or original(prefix, history, given)
    )
    model.train()
    model.training_step(
        {"prefix": prefix, "codes": torch.randint(0, 24, (2, 2, frames)), "aligned": given},
        step=0,
        group="all",
    )
    dropped, dropped_given = read[0]
    assert dropped[:, -1].eq(SEP).all() and dropped[:, :-1].eq(NULL).all()  # text and (prefix) semantic
    assert dropped_given is None if given is None else dropped_given.eq(NULL).all()
    model.forward = original
    model.eval()

    def unconditional(start, new, end):
        return model.drop_condition(condition(start, new, end))

    def null_aligned(start, end):
        return model.drop_aligned(aligned(start, end))

    def run(cond, guidance):
        return generate_stage(
            model,
            cond,
            60,
            2,
            Sampling(1.0, guidance=guidance),
            aligned=null_aligned if cond is unconditional else aligned,
            generator=torch.Generator().manual_seed(3),
        )

    # scale 0 samples from the stage with neither text nor semantic tokens: its history alone
    assert run(condition, 0.0).equal(run(unconditional, None))
    assert run(condition, 1.0).equal(run(condition, None))
    with pytest.raises(ConfigError, match="guide_semantic"):
        stage("semantic", guide_semantic=True)


def test_melody_is_optional_and_dropped_on_its_own_in_training():
    model = stage("semantic", melody_quantizers=2, melody_codebook=8, melody_windows=3, melody_dropout=0.5)
    mulan, melody = torch.randint(0, 16, (64, 3)), torch.randint(0, 8, (64, 3, 2))
    with_melody = model.condition(mulan=mulan, melody=melody)
    without = model.condition(mulan=mulan)  # no melody given: its 6 positions are NULL, the text stays
    assert without.shape == with_melody.shape and model.droppable == 3 + 6
    assert without[:, 3:9].eq(NULL).all() and without[:, :3].equal(with_melody[:, :3])
    seen = []
    model.transformer.forward = lambda ids, added=None: (
        seen.append(ids) or torch.zeros(*ids.shape, model.config.dim)
    )
    model.train()
    torch.manual_seed(0)
    model.training_step(
        {"prefix": with_melody, "codes": torch.randint(0, 20, (64, 1, 4))}, step=0, group="model"
    )
    melody_null = seen[0][:, 3:9].eq(NULL).all(-1)
    text_null = seen[0][:, :3].eq(NULL).all(-1)
    assert 16 <= int(melody_null.sum()) <= 48  # about half the rows lose the melody alone
    assert int((melody_null & ~text_null).sum()) > 0 and int(text_null.sum()) < 20


def test_cached_and_uncached_decoding_give_the_same_logits():
    model = stage("coarse")
    ids = torch.randint(2, model.transformer.spec.vocab_size, (3, 40))
    full = model.transformer(ids)
    cache = model.transformer.new_cache(3, 40)
    steps = [model.transformer(ids[:, :25], cache)]
    steps += [model.transformer(ids[:, t : t + 1], cache) for t in range(25, 40)]
    cached = torch.cat(steps, dim=1)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        model.level_logits(cached, 1), model.level_logits(full, 1), atol=1e-5, rtol=1e-5
    )
    with pytest.raises(ValueError, match="KV cache"):
        model.transformer(ids[:, :1], cache)


@pytest.mark.parametrize("layout", ["prefix", "interleaved"])
@pytest.mark.parametrize("name", STAGES)
def test_windowed_generation_with_and_without_cache_agrees(name, layout):
    model = stage(name, layout=layout)
    condition, aligned, calls = conditioner(model)
    frames = int(model.window_frames * 2.2)
    outs = [
        generate_stage(model, condition, frames, 2, Sampling(0.0), use_cache=cache, aligned=aligned)
        for cache in (True, False)
    ]
    assert outs[0].shape == (2, model.levels, frames)
    assert outs[0].equal(outs[1])
    assert 0 <= outs[0].min() and outs[0].max() < model.codebook
    window, keep = model.window_frames, model.prefix_frames
    # paper's rule: first window, then windows advanced by window - prefix that re-use a prefix of `keep`
    assert calls[0] == (0, 0, window)
    assert calls[1] == (window - keep, window, 2 * window - keep)
    assert calls[-1][2] == frames


def test_prompt_is_kept_and_continued():
    model = stage("fine")
    condition, aligned, _ = conditioner(model, batch=1)
    prompt = torch.randint(0, 24, (1, 3, 30))
    out = generate_stage(
        model,
        condition,
        70,
        1,
        Sampling(1.0),
        prompt=prompt,
        generator=torch.Generator().manual_seed(0),
        aligned=aligned,
    )
    assert out[..., :30].equal(prompt) and out.shape == (1, 3, 70)


def test_sampling_filters_and_distribution():
    logits = torch.tensor([[0.0, 1.0, 3.0, 2.0]]).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    assert sample(logits[:5], Sampling(0.0)).eq(2).all()
    assert sample(logits, Sampling(1.0, top_k=1), g).eq(2).all()
    assert set(sample(logits, Sampling(1.0, top_k=2), g).tolist()) == {2, 3}
    # top_p=0.7 keeps the two most likely tokens (0.64 + 0.24 reaches 0.7)
    assert set(sample(logits, Sampling(1.0, top_p=0.7), g).tolist()) == {2, 3}
    counts = torch.bincount(sample(logits, Sampling(1.0), g), minlength=4).float() / len(logits)
    torch.testing.assert_close(counts, logits[0].softmax(-1), atol=0.03, rtol=0)
    with pytest.raises(ValueError, match="top_p"):
        Sampling(top_p=1.5)
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=-1)


def test_guidance_mixes_conditional_and_unconditional_logits():
    model = stage("semantic")
    condition, _, _ = conditioner(model)

    def null(start, new, end):
        return model.drop_condition(condition(start, new, end))

    def run(cond, guidance):
        return generate_stage(
            model, cond, 60, 2, Sampling(1.0, guidance=guidance), generator=torch.Generator().manual_seed(3)
        )

    # scale 0 samples from the unconditional model, scale 1 from the conditional one (= no guidance)
    assert run(condition, 0.0).equal(run(null, None))
    assert run(condition, 1.0).equal(run(condition, None))
    assert not run(condition, 3.0).equal(run(condition, None))


def test_same_seed_same_tokens_over_all_stages():
    stages = StageSet(stage("semantic", 1), stage("coarse", 2), stage("fine", 3))
    mulan = [(0.0, torch.randint(0, 16, (2, 3))), (2.0, torch.randint(0, 16, (2, 3)))]  # a 2-part story

    def run(seed):
        return generate_tokens(
            stages,
            mulan,
            3.0,
            [Sampling(t, guidance=2.0) for t in (1.0, 0.95, 0.4)],
            generator=torch.Generator().manual_seed(seed),
        )

    a, b, c = run(0), run(0), run(1)
    assert (
        a["semantic"].shape == (2, 75) and a["coarse"].shape == (2, 2, 150) and a["fine"].shape == (2, 3, 150)
    )
    assert all(a[k].equal(b[k]) for k in a)
    assert not all(a[k].equal(c[k]) for k in a)


def test_story_changes_the_conditioning_per_window():
    stages = StageSet(stage("semantic"), stage("coarse"), stage("fine"))
    seen = []
    original = stages.semantic.condition

    def spy(**kwargs):
        seen.append(kwargs["mulan"][0, 0].item())
        return original(**kwargs)

    stages.semantic.condition = spy
    mulan = [(0.0, torch.zeros(1, 3, dtype=torch.long)), (1.0, torch.ones(1, 3, dtype=torch.long))]
    generate_tokens(stages, mulan, 2.0, generator=torch.Generator().manual_seed(0))
    # 2 s fit one window (prompt 0); for 3 s a second window (1..3 s) generates 2..3 s with prompt 1
    assert seen == [0]
    seen.clear()
    generate_tokens(stages, mulan, 3.0, generator=torch.Generator().manual_seed(0))
    assert seen == [0, 1]


def write_shard(path, clips):
    tensors = {f"{i}/{k}": v.to(torch.int32) for i, clip in enumerate(clips) for k, v in clip.items()}
    save_file(tensors, str(path))


def train_on_clips(
    tmp_path, clips: list[dict], name: str, steps: int, codebooks: torch.Tensor | None = None, **overrides
) -> tuple[Trainer, StageDataset]:
    """A tiny ``name`` stage trained with the shared engine (no conditioning dropout) on ``clips``' shard."""
    write_shard(tmp_path / "shard-00000.safetensors", clips)
    model = stage(name, cond_dropout=0.0, **overrides).train()
    if codebooks is not None:
        model.set_mulan_codebooks(codebooks)
    data = StageDataset(load_shards(tmp_path), model)
    config = TrainConfig(
        steps=steps,
        batch_size=8,
        lr=3e-3,
        warmup_steps=10,
        log_every=10,
        ckpt_every=1000,
        progress=False,
        device="cpu",
    )
    trainer = Trainer(model, data, config, tmp_path / "run")
    trainer.fit()
    return trainer, data


def test_trained_stage_reproduces_a_repetitive_token_set(tmp_path):
    """Two 2 s clips with their own repeating patterns and MuLan tokens: after training with the
    shared engine, greedy decoding from each clip's MuLan tokens gives back that clip exactly."""
    patterns = [torch.tensor([3, 7, 7, 1, 12]).repeat(10), torch.tensor([5, 5, 9, 0]).repeat(13)[:50]]
    mulans = [torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])]
    clips = [
        {"semantic": p, "acoustic": torch.zeros(5, 100, dtype=torch.long), "mulan": m}
        for p, m in zip(patterns, mulans)
    ]
    trainer, _ = train_on_clips(tmp_path, clips, "semantic", steps=150)
    trained = trainer.model.eval()
    assert trainer.history[-1]["loss"] < 0.05 < trainer.history[0]["loss"]
    for pattern, mulan in zip(patterns, mulans):
        out = generate_stage(
            trained, lambda s, n, e: trained.condition(mulan=mulan[None]), 50, 1, Sampling(0.0)
        )
        assert out[0, 0].equal(pattern)
    reloaded = StageLM.from_pretrained(tmp_path / "run")  # the engine exported it
    torch.testing.assert_close(reloaded.output_heads, trained.output_heads)


def test_codebook_stage_generalises_to_mulan_tokens_it_never_saw(tmp_path):
    """Clips whose music depends on which side of a plane their MuLan code vector lies: trained on 12 of 16
    codes, a "codebook" stage embeds the 4 unseen codes by their vectors and decodes each one's music; it
    keeps the vectors it was given through saving, and refuses codebooks of another shape."""
    g = torch.Generator().manual_seed(0)
    codebooks = torch.randn(3, 16, 4, generator=g)
    side = codebooks[0, :, 0] > 0
    side[12:] = torch.tensor([True, False, True, False])
    codebooks[0, 12:, 0] = torch.where(side[12:], 1.0, -1.0)  # unseen codes on both sides
    music = {True: torch.full((50,), 3), False: torch.full((50,), 9)}
    clips = [
        {
            "semantic": music[bool(side[i])],
            "acoustic": torch.zeros(5, 100, dtype=torch.long),
            "mulan": torch.tensor([i, 0, 0]),
        }
        for i in range(12)
    ]
    options = dict(mulan_embedding="codebook", mulan_dim=4, mulan_levels=1)
    trainer, _ = train_on_clips(tmp_path, clips, "semantic", steps=100, codebooks=codebooks, **options)
    trained = trainer.model.eval()
    for code in range(12, 16):
        prefix = trained.condition(mulan=torch.tensor([[code, 0, 0]]))
        out = generate_stage(trained, lambda s, n, e: prefix, 5, 1, Sampling(0.0))
        assert out[0, 0].equal(music[bool(side[code])][:5]), code
    reloaded = StageLM.from_pretrained(tmp_path / "run")
    assert reloaded.mulan_codebooks_match(codebooks) and not reloaded.mulan_codebooks_match(codebooks + 1)
    with pytest.raises(ValueError, match="do not fit"):
        reloaded.set_mulan_codebooks(codebooks[:, :8])


def warm_start_one_step(tmp_path, earlier: StageLM, model: StageLM) -> None:
    """``model`` warm-started from ``earlier``'s saved folder, then one step at a negligible learning rate."""
    earlier.save_pretrained(tmp_path / "earlier")
    clip = {
        "semantic": torch.arange(50) % 7,
        "acoustic": torch.zeros(5, 100, dtype=torch.long),
        "mulan": torch.tensor([1, 0, 0]),
    }
    write_shard(tmp_path / "shard-00000.safetensors", [clip])
    config = TrainConfig(steps=1, batch_size=2, lr=1e-9, progress=False, init=str(tmp_path / "earlier"))
    Trainer(model, StageDataset(load_shards(tmp_path), model), config, tmp_path / "run").fit()


def test_warm_start_keeps_the_codebooks_of_the_new_tokens(tmp_path):
    """A "codebook" stage continued on tokens of a retrained MuLan: the Transformer comes from the init, the
    MuLan codebooks stay those of the new tokens."""
    options = dict(mulan_embedding="codebook", mulan_dim=4, mulan_levels=1)
    old, new = torch.randn(2, 3, 16, 4, generator=torch.Generator().manual_seed(0))
    earlier = stage("semantic", **options)
    earlier.set_mulan_codebooks(old)
    model = stage("semantic", seed=1, **options)
    model.set_mulan_codebooks(new)
    warm_start_one_step(tmp_path, earlier, model)
    assert model.mulan_codebooks_match(new) and not model.mulan_codebooks_match(old)
    torch.testing.assert_close(model.output_heads, earlier.output_heads, atol=1e-6, rtol=0)


def test_a_stage_with_lookahead_warm_starts_from_one_without(tmp_path):
    earlier = stage("coarse")
    model = stage("coarse", seed=1, semantic_lookahead=2)
    fresh = model.lookahead.weight.detach().clone()
    warm_start_one_step(tmp_path, earlier, model)
    torch.testing.assert_close(model.output_heads, earlier.output_heads, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.lookahead.weight, fresh, atol=1e-6, rtol=0)  # as built: nothing to read


def test_dataset_windows_for_every_stage(tmp_path):
    g = torch.Generator().manual_seed(0)
    clip = {
        "semantic": torch.randint(0, 20, (80,), generator=g),
        "acoustic": torch.randint(0, 24, (5, 160), generator=g),
        "mulan": torch.tensor([1, 2, 3]),
    }
    write_shard(tmp_path / "shard-00000.safetensors", [clip])
    for name in STAGES:
        model = stage(name)
        item = StageDataset(load_shards(tmp_path), model)[7]
        assert item["codes"].shape == (model.levels, model.window_frames)
        assert item["codes"].shape[-1] == 50  # tiny: semantic 2 s at 25 Hz, acoustic stages 1 s at 50 Hz
        assert item["prefix"][-1] == SEP
        loss = model.training_step({k: v[None] for k, v in item.items()}, step=0, group="model")["loss"]
        assert abs(loss.item() - torch.log(torch.tensor(float(model.codebook)))) < 0.5  # untrained: ~uniform
    with pytest.raises(ValueError, match="as long as"):
        StageDataset(load_shards(tmp_path), stage("semantic", window_seconds=5.0, prefix_seconds=1.0))
    with pytest.raises(FileNotFoundError, match="musiclm tokenize"):
        load_shards(tmp_path / "nowhere")


def test_dataset_conditions_on_the_nearest_mulan_window_or_a_caption(tmp_path):
    g = torch.Generator().manual_seed(0)
    clip = {
        "semantic": torch.randint(0, 20, (300,), generator=g),  # 12 s at 25 Hz
        "acoustic": torch.randint(0, 24, (5, 600), generator=g),
        "mulan": torch.arange(9).view(3, 3),  # windows of 10 s at 0, 2, 4 s (mulan_hop 2)
        "text": torch.tensor([[9, 9, 9], [10, 10, 10]]),
    }
    write_shard(tmp_path / "shard-00000.safetensors", [clip])
    audio_only = stage("coarse", text_share=0.0)
    data = StageDataset(load_shards(tmp_path), audio_only, mulan_hop=2.0, mulan_window=10.0)
    for key in range(20):
        item = data[key]
        start = int(
            torch.nonzero(
                clip["semantic"]
                .unfold(0, data.sem_frames, 1)
                .eq(item["aligned"][::2, 0] - audio_only.offsets["semantic"])
                .all(1)
            )[0]
        )  # the window's first frame
        centre = start / 25 + audio_only.config.window_seconds / 2
        window = min(round(max(centre - 5, 0) / 2), 2)
        mulan = item["prefix"][:3] - audio_only.offsets["mulan"] - torch.arange(3) * 16
        assert mulan.equal(clip["mulan"][window])
    text_only = stage("coarse", text_share=1.0)
    seen = {
        tuple(
            (
                StageDataset(load_shards(tmp_path), text_only)[k]["prefix"][:3]
                - text_only.offsets["mulan"]
                - torch.arange(3) * 16
            ).tolist()
        )
        for k in range(20)
    }
    assert seen == {(9, 9, 9), (10, 10, 10)}


def test_token_shards_are_read_lazily_in_their_stored_dtype(tmp_path):
    """Clips come from the shard headers and files as the int32 they are stored in (an old-format MuLan
    row ``[Qm]`` read as ``[1, Qm]``); StageDataset gives the same int64 items over them as over the
    clips held in memory, in this process and in a forked DataLoader worker."""
    g = torch.Generator().manual_seed(0)

    def clip(seconds: int, mulan_rows: int | None, text: bool = False) -> dict[str, torch.Tensor]:
        shape = (3,) if mulan_rows is None else (mulan_rows, 3)
        clip = {
            "semantic": torch.randint(0, 20, (25 * seconds,), generator=g),
            "acoustic": torch.randint(0, 24, (5, 50 * seconds), generator=g),
            "mulan": torch.randint(0, 16, shape, generator=g),
        }
        if text:
            clip["text"] = torch.randint(0, 16, (2, 3), generator=g)
        return clip

    first, second = [clip(3, None), clip(1, 2)], [clip(12, 3, text=True)]
    write_shard(tmp_path / "shard-00000.safetensors", first)
    write_shard(tmp_path / "shard-00001.safetensors", second)
    shards = load_shards(tmp_path)
    assert isinstance(shards, TokenShards) and len(shards) == 3
    for i, written in enumerate(first + second):
        read = shards[i]
        assert set(read) == set(written) and all(t.dtype == torch.int32 for t in read.values())
        assert read["mulan"].equal(written["mulan"].reshape(-1, 3).int())
        assert {k: tuple(v.shape) for k, v in read.items()} == shards.shapes[i]
        assert all(read[k].equal(written[k].int()) for k in written if k != "mulan")
    in_memory = [
        {k: v.long().reshape(-1, 3) if k == "mulan" else v.long() for k, v in c.items()}
        for c in first + second
    ]
    for name in STAGES:
        model = stage(name, text_share=0.5)
        lazy, eager = StageDataset(shards, model), StageDataset(in_memory, model)
        assert len(lazy) == len(eager) == (2 if name == "semantic" else 3)  # the 1 s clip is shorter than 2 s
        for key in range(12):
            item = lazy[key]
            assert all(v.dtype == torch.int64 and v.equal(eager[key][k]) for k, v in item.items())
    worker = next(iter(torch.utils.data.DataLoader(lazy, batch_size=3, num_workers=1)))
    assert all(worker[k].equal(torch.stack([lazy[i][k] for i in range(3)])) for k in worker)


def test_packed_tokens_train_the_semantic_and_coarse_stages_as_the_folder_they_come_from(tmp_path):
    """pack_tokens keeps the clips with int16 tensors and the first acoustic levels: they read back as the
    int32 of the source, the semantic and coarse stages cut the same items from them, and the fine stage,
    which needs every level, is refused; so is a token that int16 cannot hold."""
    g = torch.Generator().manual_seed(0)
    clips = [
        {
            "semantic": torch.randint(0, 20, (100,), generator=g),
            "acoustic": torch.randint(0, 24, (5, 200), generator=g),
            "mulan": torch.randint(0, 16, (2, 3), generator=g),
            "text": torch.randint(0, 16, (4, 3), generator=g),
        }
        for _ in range(3)
    ]
    source, packed = tmp_path / "tokens", tmp_path / "packed"
    source.mkdir()
    write_shard(source / "shard-00000.safetensors", clips[:2])
    write_shard(source / "shard-00001.safetensors", clips[2:])
    meta = {"num_quantizers": 5, "codebook_size": 24, "semantic_vocab": 20, "mulan_codebook": 16}
    (source / "meta.json").write_text(json.dumps(meta))
    sizes = pack_tokens(source, packed, levels=2)
    assert sizes.shards == 2 and sizes.packed_bytes < sizes.source_bytes / 2
    assert read_meta(packed) == {**meta, "acoustic_levels": 2}
    with safe_open(str(packed / "shard-00000.safetensors"), "pt") as f:
        assert {f.get_slice(key).get_dtype() for key in f.keys()} == {"I16"}
    for read, written in zip(load_shards(packed), clips):
        assert all(t.dtype == torch.int32 for t in read.values())
        assert read["acoustic"].equal(written["acoustic"][:2].int())
        assert all(read[k].equal(written[k].int()) for k in ("semantic", "mulan", "text"))
    for name in ("semantic", "coarse"):
        model = stage(name, text_share=0.5)
        ours, theirs = StageDataset(load_shards(packed), model), StageDataset(load_shards(source), model)
        for key in range(6):
            assert all(v.equal(theirs[key][k]) for k, v in ours[key].items())
    with pytest.raises(ValueError, match="models acoustic levels 1-5, and these clips hold 2"):
        StageDataset(load_shards(packed), stage("fine"))
    with pytest.raises(ValueError, match=r"levels must be in 1\.\.2"):
        pack_tokens(packed, tmp_path / "again", levels=3)
    write_shard(source / "shard-00002.safetensors", [{**clips[0], "semantic": torch.full((100,), 40000)}])
    with pytest.raises(ValueError, match="shard-00002.safetensors 0/semantic holds token 40000, which int16"):
        pack_tokens(source, tmp_path / "wide")


def test_interleaved_coarse_stage_learns_to_follow_its_semantic_tokens_in_time(tmp_path):
    """Acoustic codes that are a function of the semantic token of their own time: after a short training the
    interleaved coarse stage predicts them, and the diagnostic sees a large cost when S is shifted by
    0.5 s."""
    from musiclm.evaluation.diagnostics import conditioning_nll, nll_all_and_early

    g = torch.Generator().manual_seed(0)
    clips = []
    for i in range(8):
        semantic = torch.randint(0, 20, (100,), generator=g)  # 4 s at 25 Hz
        per_frame = semantic.repeat_interleave(2)  # 50 Hz: acoustic frame f sits in semantic frame f // 2
        acoustic = torch.stack(
            [per_frame, (per_frame + 3) % 24, *torch.randint(0, 24, (3, 200), generator=g)]
        )
        clips.append({"semantic": semantic, "acoustic": acoustic, "mulan": torch.tensor([i % 16, 2, 3])})
    trainer, data = train_on_clips(tmp_path, clips, "coarse", steps=120)
    figures = conditioning_nll(trainer.model.eval(), data, clips=8)
    assert figures["nll_own_audio"] < 0.5  # both levels follow S: near-certain once S is heard at its time
    assert figures["cost_shift_semantic"] > 1.0 and figures["cost_other_semantic"] > 1.0
    # the first second's NLL is that of its own frames: the whole window's when the second spans it
    model, items = trainer.model, [data.window(clip, 0, data.audio_tokens(clip, 0.0)) for clip in data.clips]
    frames = items[0]["codes"].shape[-1]
    whole, early = nll_all_and_early(model, items, frames)
    assert early == pytest.approx(whole) and whole == pytest.approx(figures["nll_own_audio"])
    cut = [{**it, "codes": it["codes"][..., :10], "aligned": it["aligned"][:10]} for it in items]
    assert nll_all_and_early(model, items, 10)[1] == pytest.approx(nll_all_and_early(model, cut, 10)[0])
    assert figures["gain_own_audio_first_second"] == pytest.approx(
        figures["nll_null_first_second"] - figures["nll_own_audio_first_second"]
    )


def test_cpu_speed_choices_are_settings_whose_paper_values_are_t5s():
    paper, small = StageConfig.for_stage("coarse", "paper"), StageConfig.for_stage("coarse", "small")
    # the small coarse stage guides its semantic tokens; the paper's samples as the paper does
    assert (small.guide_semantic, small.semantic_lookahead) == (True, 4) and not paper.guide_semantic
    assert not StageConfig.for_stage("semantic", "small").semantic_lookahead
    assert not StageConfig.for_stage("coarse", "small", guide_semantic=False).guide_semantic  # --set wins
    assert (paper.norm, paper.attention_dropout) == ("rmsnorm", 0.1)
    assert (small.norm, small.attention_dropout) == ("layernorm", 0.0)
    rms = stage("semantic", norm="rmsnorm", attention_dropout=0.5)
    assert isinstance(rms.transformer.norm, torch.nn.RMSNorm)
    ids = torch.randint(2, rms.transformer.spec.vocab_size, (2, 30))
    assert torch.equal(rms.transformer(ids), rms.transformer(ids))  # eval: no attention dropout
    rms.train()
    assert not torch.allclose(rms.transformer(ids), rms.transformer(ids))
    with pytest.raises(ConfigError, match="unknown norm"):
        StageConfig.preset("tiny", norm="batchnorm")
