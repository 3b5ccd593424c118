"""Text in, music out: MuLan tokens -> semantic stage -> coarse stage -> fine stage -> codec decoder.

A pipeline folder holds one sub-folder per part (``codec/``, ``semantic/``, ``mulan/``, optional
``melody/``, ``semantic_stage/``, ``coarse_stage/``, optional ``fine_stage/``) and a ``pipeline.json``.
Without a fine stage the codec decodes the coarse levels alone (a lower bitrate): a small fine stage
measured no better than that (``musiclm eval-stage``), and leaving it out saves a third of the time. Parts
are used only through the protocols of :mod:`musiclm.interfaces` and loaded by their ``model_type``,
so any codec / tokenizer / conditioner implementing them (ours or an HF adapter) can be assembled.

:func:`generate_tokens` is the token-level procedure (tested and benchmarked on its own);
:meth:`MusicLM.generate` adds checking of the request, text/melody/audio tokenization and decoding. A
prompt may be a clip of music (``style``) as well as, or instead of, text: the stages were trained on
MuLan *audio* tokens, so the clip's tokens condition them as a training clip's did; several texts and clips
blend with weights in MuLan's joint space before quantisation (``blend``, ``style``).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from musiclm.audio import AudioError, load_audio, loudness_normalize, resample
from musiclm.config import ConfigError
from musiclm.files import write_text_atomic
from musiclm.interfaces import AcousticCodec, Conditioner, MelodyEmbedder, SemanticTokenizer, load_component
from musiclm.pretrained import PretrainedMixin
from musiclm.progress import tqdm
from musiclm.stages.sampling import Sampling, generate_stage
from musiclm.stages.stages import StageConfig, StageLM
from musiclm.stages.tokenize import encode_aligned, mulan_window_embeddings

PIPELINE_FILE = "pipeline.json"
# The trained small model committed with the repository (an editable install finds it here)
SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "checkpoints" / "musiclm_small"
# the parts a pipeline folder must hold (melody/ and fine_stage/ are optional)
PARTS = ("codec", "semantic", "mulan", "semantic_stage", "coarse_stage")
PAPER_TEMPERATURES = (1.0, 0.95, 0.4)  # semantic, coarse, fine
MAX_DURATION = 300.0  # the paper generates clips of up to 5 minutes
# MuLan pads a clip shorter than its window with silence, as it did the short clips it trained on; under a
# second there is too little music left to hear (and it is more likely a cut-off file than a prompt)
MIN_STYLE_SECONDS = 1.0

AudioSource = str | Path | torch.Tensor


class GenerationError(ValueError):
    """A generation request that cannot be served; raised before any token is sampled."""


@dataclass
class StageSet:
    semantic: StageLM
    coarse: StageLM
    fine: StageLM | None = None  # None: decode the coarse levels alone

    def __iter__(self):
        return iter(s for s in (self.semantic, self.coarse, self.fine) if s is not None)


def generate_tokens(
    stages: StageSet,
    mulan: Sequence[tuple[float, torch.Tensor]],
    seconds: float,
    samplings: Sequence[Sampling] = tuple(Sampling(t) for t in PAPER_TEMPERATURES),
    melody: torch.Tensor | None = None,
    melody_hop: float = 3.0,
    prompt_semantic: torch.Tensor | None = None,
    prompt_acoustic: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    use_cache: bool = True,
) -> dict[str, torch.Tensor]:
    """Sample the three token streams for ``seconds`` of audio.

    ``mulan``: the text conditioning schedule ``[(start_second, tokens [B, Qm]), ...]`` sorted by start
    (one entry, or one per story segment); a window takes the tokens in force where its new part begins.
    ``melody``: melody tokens ``[B, W, Q]`` of windows every ``melody_hop`` seconds. Prompts
    (continuation): ``prompt_semantic [B, Fs]`` and ``prompt_acoustic [B, Q, Fa]``, kept in the output.
    Returns ``semantic [B, Fs]``, ``coarse [B, Qc, Fa]``, ``fine [B, Qf, Fa]`` (``fine`` only with a fine
    stage).
    """
    sem, coarse, fine = stages.semantic, stages.coarse, stages.fine
    n_sem = round(seconds * sem.frame_rate)
    n_ac = round(seconds * coarse.frame_rate)
    ratio = sem.frame_rate / coarse.frame_rate
    qc = coarse.levels
    sample = functools.partial(
        _sample_stage, batch=mulan[0][1].shape[0], generator=generator, progress=progress, use_cache=use_cache
    )

    def semantic_condition(start: int, new: int, end: int) -> torch.Tensor:
        tokens = _mulan_in_force(mulan, new, sem.frame_rate)
        # without a melody, a melody-conditioned stage sees NULL melody tokens
        melody_tokens = None if melody is None else sem.melody_windows(melody, start, melody_hop)
        return sem.condition(mulan=tokens, melody=melody_tokens)

    def coarse_condition(start: int, new: int, end: int) -> torch.Tensor:
        return coarse.condition(
            mulan=_mulan_in_force(mulan, new, coarse.frame_rate),
            semantic=semantic[:, round(start * ratio) : round(end * ratio)],
        )

    semantic = sample(
        "semantic",
        sem,
        n_sem,
        samplings[0],
        semantic_condition,
        prompt=None if prompt_semantic is None else prompt_semantic[:, None],
    )[:, 0]
    coarse_codes = sample(
        "coarse",
        coarse,
        n_ac,
        samplings[1],
        coarse_condition,
        prompt=None if prompt_acoustic is None else prompt_acoustic[:, :qc],
        aligned=lambda start, end: coarse.aligned(start, end, semantic=semantic),
    )
    if fine is None:
        return {"semantic": semantic, "coarse": coarse_codes}
    fine_codes = sample(
        "fine",
        fine,
        n_ac,
        samplings[2],
        lambda start, new, end: fine.condition(coarse=coarse_codes[..., start:end]),
        prompt=None if prompt_acoustic is None else prompt_acoustic[:, qc:],
        aligned=lambda start, end: fine.aligned(start, end, coarse=coarse_codes),
    )
    return {"semantic": semantic, "coarse": coarse_codes, "fine": fine_codes}


def _mulan_in_force(mulan: Sequence[tuple[float, torch.Tensor]], frame: int, rate: float) -> torch.Tensor:
    """The MuLan tokens of the schedule ``mulan`` in force at ``frame`` of a stream of ``rate`` frames a
    second (a hair after the frame's start, so a segment starting on it counts despite float rounding)."""
    second = frame / rate + 1e-6
    return [tokens for start, tokens in mulan if start <= second][-1]


def _sample_stage(
    name: str,
    stage: StageLM,
    frames: int,
    sampling: Sampling,
    condition: Callable[[int, int, int], torch.Tensor],
    prompt: torch.Tensor | None,
    aligned: Callable[[int, int], torch.Tensor] | None = None,
    *,
    batch: int,
    generator: torch.Generator | None,
    progress: bool,
    use_cache: bool,
) -> torch.Tensor:
    """:func:`~musiclm.stages.sampling.generate_stage` of one stage, behind a progress bar of its frames."""
    with tqdm(total=frames, desc=f"{name} stage", unit="frame", disable=not progress, leave=False) as bar:
        return generate_stage(
            stage,
            condition,
            frames,
            batch,
            sampling,
            prompt=prompt,
            generator=generator,
            on_frame=bar.update,
            use_cache=use_cache,
            aligned=aligned,
        )


def stage_config(stage: str, preset: str, vocab: dict) -> StageConfig:
    """A stage config of ``preset`` sized to the parts' vocabularies (``vocab``: see :func:`vocabularies`)."""
    return StageConfig.for_stage(stage, preset, **vocab)


def vocabularies(
    codec: AcousticCodec,
    semantic: SemanticTokenizer,
    mulan: Conditioner,
    melody: MelodyEmbedder | None = None,
    coarse_quantizers: int = 4,
) -> dict:
    """The vocabulary fields of :class:`StageConfig` that the parts dictate."""
    if not 0 < coarse_quantizers < codec.num_quantizers:
        raise GenerationError(
            f"coarse_quantizers must be in 1..{codec.num_quantizers - 1}, got {coarse_quantizers}"
        )
    return {
        "mulan_quantizers": mulan.num_quantizers,
        "mulan_codebook": mulan.codebook_size,
        "mulan_dim": mulan.embed_dim,
        "melody_quantizers": melody.num_quantizers if melody is not None else 0,
        "melody_codebook": melody.codebook_size if melody is not None else 512,
        "semantic_vocab": semantic.vocab_size,
        "semantic_rate": float(semantic.frame_rate),
        "codebook_size": codec.codebook_size,
        "coarse_quantizers": coarse_quantizers,
        "fine_quantizers": codec.num_quantizers - coarse_quantizers,
        "acoustic_rate": float(codec.frame_rate),
    }


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Loading imports the parts' libraries (transformers, einx) and builds their modules, some 400,000
    objects that live as long as the model, and sampling makes tensors freed as they go: neither leaves
    cyclic garbage. Python's collector, started every few hundred new objects, would still walk that whole
    heap again and again: a fifth of the shipped pipeline's load, and 0.4 s of a generation's first
    seconds. It runs again afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class MusicLM:
    """The assembled model. Build it from parts, or from their folders with :meth:`from_parts`, or load a
    pipeline folder with :meth:`from_pretrained`."""

    def __init__(
        self,
        codec: AcousticCodec,
        semantic: SemanticTokenizer,
        mulan: Conditioner,
        stages: StageSet,
        melody: MelodyEmbedder | None = None,
        max_duration: float = MAX_DURATION,
        guidance: float | None = None,
        candidates: int = 1,
    ):
        self.codec, self.semantic, self.mulan, self.melody = codec, semantic, mulan, melody
        self.stages, self.max_duration = stages, max_duration
        # the scale generate() uses unless told otherwise: a property of the trained model, chosen by
        # measuring its adherence with and without (None: off, the paper's sampling)
        self.guidance = _checked_guidance(guidance)
        # likewise the number of samples generate() draws per prompt, keeping the one MuLan finds closest
        # to the prompt: the stages move the music the asked way too weakly to leave it to one sample
        self.candidates = _checked_candidates(candidates)
        coarse = stages.coarse.config.coarse_quantizers
        if not 0 < coarse < codec.num_quantizers:  # else vocabularies() blames an argument nobody passed
            raise GenerationError(
                f"the stages were trained for other parts: the coarse stage models {coarse} RVQ levels, "
                f"but this codec has {codec.num_quantizers}; use the codec they were tokenized with, "
                "or retrain them"
            )
        expected = vocabularies(codec, semantic, mulan, melody, stages.coarse.config.coarse_quantizers)
        for stage in stages:
            stage.eval()
            got = {k: getattr(stage.config, k) for k in expected}
            if stage.config.stage != "semantic":  # melody only conditions the semantic stage
                got.pop("melody_quantizers"), got.pop("melody_codebook")
            wrong = [f"{k}={v} (parts: {expected[k]})" for k, v in got.items() if v != expected[k]]
            if wrong:
                raise GenerationError(
                    f"the {stage.config.stage} stage was trained for other parts: {', '.join(wrong)}; "
                    "retrain it on tokens of these parts (musiclm tokenize, then musiclm train stage)"
                )
            if not stage.mulan_codebooks_match(mulan.code_vectors()):
                raise GenerationError(
                    f"the {stage.config.stage} stage embeds another MuLan's codebooks than this pipeline's "
                    "MuLan: assemble it with the MuLan its tokens were made with, or retrain it"
                )

    # ------------------------------------------------------------ persistence
    @classmethod
    @_collector_paused()
    def from_pretrained(
        cls, directory: str | Path = SHIPPED_MODEL, map_location: str | torch.device = "cpu"
    ) -> MusicLM:
        """Load a pipeline folder; without one, the shipped small model."""
        directory = Path(directory)
        if not (directory / PIPELINE_FILE).is_file():
            raise FileNotFoundError(
                f"{directory} has no {PIPELINE_FILE}: not a MusicLM pipeline folder (save one with "
                "MusicLM.save_pretrained or `musiclm assemble`)"
            )
        missing = [p for p in PARTS if not (directory / p / "config.json").is_file()]
        if missing:
            raise FileNotFoundError(
                f"pipeline {directory} lacks {', '.join(missing)}: each part must be a sub-folder saved with "
                "save_pretrained (train the missing stage with `musiclm train stage --stage ...`)"
            )
        try:
            meta = json.loads((directory / PIPELINE_FILE).read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{directory / PIPELINE_FILE} is not valid JSON ({err}); restore it") from err
        optional = {p: directory / p for p in ("melody", "fine_stage") if (directory / p).is_dir()}
        return cls.from_parts(
            **{p: directory / p for p in PARTS},
            **optional,
            max_duration=meta.get("max_duration", MAX_DURATION),
            guidance=meta.get("guidance"),
            candidates=meta.get("candidates", 1),
            map_location=map_location,
        )

    @classmethod
    @_collector_paused()
    def from_parts(
        cls,
        codec: str | Path,
        semantic: str | Path,
        mulan: str | Path,
        semantic_stage: str | Path,
        coarse_stage: str | Path,
        fine_stage: str | Path | None = None,
        melody: str | Path | None = None,
        *,
        max_duration: float = MAX_DURATION,
        guidance: float | None = None,
        candidates: int = 1,
        map_location: str | torch.device = "cpu",
    ) -> MusicLM:
        """The pipeline of trained part folders, each saved with ``save_pretrained`` (``musiclm assemble``
        puts them together so); the parts are checked to fit each other. Without ``fine_stage`` the codec
        decodes the coarse levels alone."""

        def load(folder):
            return None if folder is None else load_component(folder, map_location)

        stages = StageSet(load(semantic_stage), load(coarse_stage), load(fine_stage))
        return cls(
            load(codec), load(semantic), load(mulan), stages, load(melody), max_duration, guidance, candidates
        )

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """``dtype=torch.float16`` stores every part's weights at half size (an HF codec keeps its own)."""
        directory = Path(directory)
        named = {
            "codec": self.codec,
            "semantic": self.semantic,
            "mulan": self.mulan,
            "melody": self.melody,
            "semantic_stage": self.stages.semantic,
            "coarse_stage": self.stages.coarse,
            "fine_stage": self.stages.fine,
        }
        for name, part in named.items():
            if part is None:
                continue
            if isinstance(part, PretrainedMixin):
                part.save_pretrained(directory / name, dtype)
            else:
                part.save_pretrained(directory / name)
        write_text_atomic(
            directory / PIPELINE_FILE,
            json.dumps(
                {"max_duration": self.max_duration, "guidance": self.guidance, "candidates": self.candidates},
                indent=2,
            )
            + "\n",
        )
        return directory

    # ------------------------------------------------------------ placement
    def to(self, device: str | torch.device) -> MusicLM:
        """Move every part to ``device`` (as an HF pipeline does); returns the pipeline."""
        for part in (self.codec, self.semantic, self.mulan, self.melody, *self.stages):
            if part is not None:
                part.to(device)
        return self

    @property
    def device(self) -> torch.device:
        """Where generation runs: the stages' device (inputs are moved there)."""
        return self.stages.semantic.output_heads.device

    # ------------------------------------------------------------ generation
    def guidance_for(self, guidance: float | None) -> float | None:
        """The scale a request with ``guidance`` samples with: the pipeline's own when it names none."""
        return self.guidance if guidance is None else _checked_guidance(guidance)

    def candidates_for(self, candidates: int | None) -> int:
        """Samples per prompt a request with ``candidates`` draws: the pipeline's own when it names none."""
        return self.candidates if candidates is None else _checked_candidates(candidates)

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @torch.no_grad()
    @_collector_paused()
    def generate(
        self,
        texts: str | Sequence[str] | None,
        duration: float,
        melody: str | Path | torch.Tensor | None = None,
        continuation: str | Path | torch.Tensor | None = None,
        story: Sequence[tuple[str, float]] | None = None,
        seed: int | None = None,
        guidance: float | None = None,
        temperatures: Sequence[float] = PAPER_TEMPERATURES,
        top_k: int | None = None,
        top_p: float | None = None,
        candidates: int | None = None,
        style: AudioSource | tuple[AudioSource, float] | Sequence | None = None,
        blend: str | tuple[str, float] | Sequence | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Waveforms ``[B, T]`` at :attr:`sample_rate`, one per prompt.

        ``duration``: seconds to generate (after the ``continuation`` audio, which is kept at the start
        of the output). ``story``: ``[(prompt, seconds), ...]`` adding up to ``duration``, instead of
        ``texts``. ``melody``: a hummed/whistled wav (path or ``[T]`` tensor at the melody embedder's
        rate) whose melody tokens join the text tokens. ``guidance``: classifier-free guidance scale
        (None: the pipeline's own, :attr:`guidance`; 1: off, the paper's sampling). ``temperatures``:
        semantic, coarse, fine (paper's default). ``candidates``: samples drawn per prompt, of which the one
        whose MuLan audio embedding is closest to the prompt's embedding is returned (None: the
        pipeline's own, :attr:`candidates`; 1: no choosing, the paper's sampling). ``style``: music to sound
        like: an audio file or a ``[T]`` tensor at MuLan's rate, a ``(clip, weight)`` pair, or a list of
        these; each text prompt is blended with the clips, the text weighing 1 (without texts: one output,
        from the clips alone). ``blend``: more texts blended into each prompt in the same way, a text or a
        ``(text, weight)`` pair or a list of these, e.g. ``blend=[("a slow organ chorale", 0.5)]``; without
        texts, ``blend=[("a jig", 0.7), ("a chorale", 0.3)]`` is one prompt of two texts. Weights are finite
        and >= 0 (see :func:`prompt_blend`). Neither with ``story``.
        """
        styles, blends = prompt_blend(texts, story, style, blend)
        schedule = self._check_request(texts, duration, story, styles + blends)
        if len(temperatures) != 3 or not all(math.isfinite(t) and t >= 0 for t in temperatures):
            raise GenerationError(
                f"temperatures takes 3 finite values >= 0 (semantic, coarse, fine), got {list(temperatures)}"
            )
        guidance = self.guidance_for(guidance)
        samplings = [Sampling(t, top_k, top_p, guidance) for t in temperatures]
        candidates = self.candidates_for(candidates)
        clips = [(read_style(source, self.mulan.sample_rate), weight) for source, weight in styles]
        rows = max(len(schedule[0][1]), 1) * candidates  # the candidates of a prompt are adjacent rows
        melody_tokens = self._melody_tokens(melody, rows)
        prompt_sem = prompt_ac = None
        prompt_seconds = 0.0
        if continuation is not None:
            prompt_sem, prompt_ac, prompt_seconds = self._prompt_tokens(continuation, rows)
        prompts_embedded = [
            (start + prompt_seconds, self._embed_prompts(texts, clips, blends)) for start, texts in schedule
        ]
        mulan = [
            (start, self.mulan.quantize(embedded).repeat_interleave(candidates, 0).to(self.device))
            for start, embedded in prompts_embedded
        ]
        mulan[0] = (0.0, mulan[0][1])
        generator = torch.Generator(self.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        tokens = generate_tokens(
            self.stages,
            mulan,
            prompt_seconds + duration,
            samplings,
            melody=melody_tokens,
            melody_hop=self.melody.hop_seconds if self.melody is not None else 3.0,
            prompt_semantic=prompt_sem,
            prompt_acoustic=prompt_ac,
            generator=generator,
            progress=progress,
        )
        levels = [tokens["coarse"]] + ([tokens["fine"]] if "fine" in tokens else [])
        wavs = self.codec.decode(torch.cat(levels, dim=1))
        if candidates == 1:
            return wavs
        return self._closest_to_prompt(wavs.unflatten(0, (-1, candidates)), prompts_embedded)

    @torch.no_grad()
    def _closest_to_prompt(self, wavs: torch.Tensor, prompts_embedded) -> torch.Tensor:
        """``wavs [B, N, T]`` -> ``[B, T]``: per prompt, the candidate whose MuLan audio embedding is closest
        to the prompt's (text, clips or their blend), each story segment judged against its own prompt and
        weighted by its length (audio prepared as MuLan saw it in training: its rate, loudness-normalised)."""
        batch, count, length = wavs.shape
        bounds = [round(start * self.sample_rate) for start, _ in prompts_embedded] + [length]
        score = torch.zeros(batch, count)
        for (begin, end), (_, prompt) in zip(itertools.pairwise(bounds), prompts_embedded):
            audio = self.embed_audio(wavs[..., begin:end].flatten(0, 1), self.sample_rate)
            closeness = (audio.unflatten(0, (batch, count)).cpu() * prompt[:, None].cpu()).sum(-1)
            score += closeness * (end - begin)
        return wavs[torch.arange(batch), score.argmax(1)]

    @torch.no_grad()
    def embed_style(self, wav: torch.Tensor) -> torch.Tensor:
        """The unit MuLan embedding ``[D]`` of a style clip ``[T]`` at MuLan's rate: its windows prepared and
        embedded as tokenization does for the clips the stages trained on, averaged (a clip up to one
        window long has one window, whose tokens are then those of a training clip's window)."""
        windows = mulan_window_embeddings(self.mulan, wav, device=self.device)
        return F.normalize(windows.mean(0), dim=-1)

    def _embed_prompts(
        self, texts: list[str], clips: list[tuple[torch.Tensor, float]], blends: list[tuple[str, float]]
    ) -> torch.Tensor:
        """``[B, D]`` unit embeddings to quantize: each text's, blended with the clips' and the blended
        texts' (the text weighing 1) as the weighted sum of unit embeddings, renormalised; without texts,
        one row of the clips and blended texts alone."""
        if not clips and not blends:
            return self.mulan.embed_text(texts)
        embedded = [self.embed_style(wav) for wav, _ in clips]
        if blends:
            embedded += list(self.mulan.embed_text([text for text, _ in blends]))
        weights = [weight for _, weight in clips + blends]
        mix = sum(weight * e.to(self.device) for weight, e in zip(weights, embedded))
        if texts:
            mix = self.mulan.embed_text(texts).to(self.device) + mix
        return F.normalize(mix.reshape(-1, mix.shape[-1]), dim=-1)

    @torch.no_grad()
    def embed_audio(self, wavs: torch.Tensor, rate: int) -> torch.Tensor:
        """``[B, D]`` MuLan audio embeddings of ``wavs [B, T]`` at ``rate``, the audio prepared as MuLan heard
        it in training: at its rate, each row loudness-normalised."""
        mulan_rate = self.mulan.sample_rate
        heard = resample(wavs.float().cpu(), rate, mulan_rate)
        return self.mulan.embed_audio(torch.stack([loudness_normalize(w, mulan_rate) for w in heard]))

    def _check_request(self, texts, duration: float, story, mixed) -> list[tuple[float, list[str]]]:
        """Everything that can be wrong with a request, raised before any work is done (its style clips and
        blended texts, ``mixed``: :func:`prompt_blend`; the clips' audio: :func:`read_style`)."""
        if not isinstance(duration, (int, float)) or not math.isfinite(duration) or duration <= 0:
            raise GenerationError(f"duration must be a positive number of seconds, got {duration!r}")
        if duration > self.max_duration:
            raise GenerationError(
                f"duration {duration} s is above this model's maximum of {self.max_duration} s"
            )
        if story is not None:
            if texts:
                raise GenerationError("pass either texts or story, not both")
            if not story:
                raise GenerationError("story is empty; give a list of (prompt, seconds)")
            for prompt, seconds in story:
                if not isinstance(prompt, str) or not prompt.strip():
                    raise GenerationError(f"story prompt {prompt!r} is empty")
                if not (isinstance(seconds, (int, float)) and seconds > 0):
                    raise GenerationError(f"story segment {prompt!r} has {seconds} s; each needs > 0 s")
            total = sum(seconds for _, seconds in story)
            if abs(total - duration) > 1e-3:
                raise GenerationError(
                    f"the story's segments add up to {total} s but duration is {duration} s; make them equal"
                )
            starts = [sum(s for _, s in story[:i]) for i in range(len(story))]
            return [(start, [prompt]) for start, (prompt, _) in zip(starts, story)]
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            if not mixed:
                raise GenerationError(
                    "no prompts: pass at least one text, a style clip, a blend of texts or a story"
                )
            return [(0.0, [])]
        empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
        if empty:
            raise GenerationError(f"prompt(s) at position {empty} are empty; describe the music to generate")
        return [(0.0, list(texts))]

    def _melody_tokens(self, melody, batch: int) -> torch.Tensor | None:
        if melody is None:
            return None
        if self.melody is None or not self.stages.semantic.config.melody_quantizers:
            raise GenerationError("this pipeline has no melody embedder / melody-conditioned semantic stage")
        wav = _audio(melody, self.melody.sample_rate, "melody")
        seconds = wav.shape[-1] / self.melody.sample_rate
        if seconds < self.melody.window_seconds:
            raise GenerationError(
                f"the melody is {seconds:.2f} s long; it needs at least one window of "
                f"{self.melody.window_seconds} s"
            )
        if _silent(wav):
            raise GenerationError("the melody file is silent; record the hummed/whistled melody louder")
        tokens = self.melody.quantize(self.melody.embed(wav[None]))
        return tokens.to(self.device).expand(batch, -1, -1)

    def _prompt_tokens(self, audio, batch: int):
        wav = _audio(audio, self.codec.sample_rate, "continuation")
        seconds = wav.shape[-1] / self.codec.sample_rate
        min_seconds = 2 / self.stages.semantic.frame_rate
        if seconds < min_seconds:
            raise GenerationError(
                f"the continuation audio is {seconds:.3f} s; it needs at least {min_seconds} s"
            )
        device = self.device
        semantic, acoustic = encode_aligned(wav, self.codec.sample_rate, self.codec, self.semantic, device)
        seconds = acoustic.shape[-1] / self.codec.frame_rate
        return semantic.to(device).expand(batch, -1), acoustic.to(device).expand(batch, -1, -1), seconds


def _checked_guidance(guidance: float | None) -> float | None:
    if guidance is None:
        return None
    number = isinstance(guidance, (int, float)) and not isinstance(guidance, bool)
    if not number or not math.isfinite(guidance) or guidance < 0:
        raise GenerationError(
            f"guidance must be a finite scale >= 0 (e.g. 3.0; 1 turns it off) or None, got {guidance!r}"
        )
    return float(guidance)


def _checked_candidates(candidates: int) -> int:
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise GenerationError(
            f"candidates must be a whole number >= 1 (samples per prompt; 1: no choosing), got {candidates!r}"
        )
    return candidates


def story_segment(item: str) -> tuple[str, float]:
    """``'TEXT:SECONDS'`` -> ``(TEXT, SECONDS)``: a story segment of ``--story`` and of the web page."""
    return _text_and_number(item, "a story segment is 'TEXT:SECONDS', e.g. 'calm piano:15'")


def blended_text(item: str) -> tuple[str, float]:
    """``'TEXT:WEIGHT'`` -> ``(TEXT, WEIGHT)``: a blended text of ``--blend``."""
    return _text_and_number(item, "a blended text is 'TEXT:WEIGHT', e.g. 'a slow organ chorale:0.5'")


def _text_and_number(item: str, form: str) -> tuple[str, float]:
    text, sep, number = item.rpartition(":")
    try:
        if sep:
            return text.strip(), float(number)
    except ValueError:
        pass
    raise ValueError(f"{form}; got {item!r}")


def prompt_blend(
    texts, story=None, style=None, blend=None
) -> tuple[list[tuple[AudioSource, float]], list[tuple[str, float]]]:
    """``style`` and ``blend`` of :meth:`MusicLM.generate` as ``(clip, weight)`` and ``(text, weight)``
    pairs, checked against the request's ``texts`` and ``story``. Each is one item (a clip: an audio file
    or a ``[T]`` tensor; a text), one ``(item, weight)`` pair, or a list of items and pairs; an item
    without a weight weighs 1, as a text prompt does. Weights are finite and >= 0 (0 leaves an item out),
    and without a text prompt at least one is above 0."""
    styles = [_style_part(item) for item in _listed(style)]
    blends = [_blend_part(item) for item in _listed(blend)]
    if (styles or blends) and story:
        raise GenerationError(
            "story mode takes text prompts only; give style clips and blended texts with texts or alone"
        )
    if (styles or blends) and not texts and not any(weight for _, weight in styles + blends):
        raise GenerationError(
            "every style clip and blended text weighs 0 and there is no text prompt: "
            "give one a weight above 0"
        )
    return styles, blends


def _listed(items) -> list:
    """``style`` or ``blend``: one item or pair, or a list of them, as a list."""
    if items is None:
        return []
    return [items] if isinstance(items, (str, Path, torch.Tensor)) or _weighted(items) else list(items)


def _style_part(item) -> tuple[AudioSource, float]:
    clip, weight = item if _weighted(item) else (item, 1.0)
    if not isinstance(clip, (str, Path, torch.Tensor)):
        raise GenerationError(
            f"a style clip is an audio file or a [T] tensor, or a (clip, weight) pair; got {clip!r}"
        )
    return clip, _checked_weight(weight, f"style clip {_named(clip)}")


def _blend_part(item) -> tuple[str, float]:
    text, weight = item if _weighted(item) else (item, 1.0)
    if not isinstance(text, str) or not text.strip():
        raise GenerationError(
            f"a blended text is a text describing music, or a (text, weight) pair; got {text!r}"
        )
    return text, _checked_weight(weight, f"blended text {text!r}")


def _checked_weight(weight: float, what: str) -> float:
    if not math.isfinite(weight) or weight < 0:
        raise GenerationError(
            f"the weight of {what} must be a finite number >= 0 (a text prompt weighs 1), got {weight!r}"
        )
    return float(weight)


def read_style(source: AudioSource, sample_rate: int) -> torch.Tensor:
    """A style clip as mono ``[T]`` at ``sample_rate`` (a tensor is taken to be at that rate already),
    refused when it is too short or too quiet to be heard."""
    wav = _audio(source, sample_rate, "style")
    seconds = wav.shape[-1] / sample_rate
    if seconds < MIN_STYLE_SECONDS:
        raise GenerationError(
            f"style clip {_named(source)} is {seconds:.2f} s long; give at least "
            f"{MIN_STYLE_SECONDS:g} s of music"
        )
    if _silent(wav):
        raise GenerationError(
            f"style clip {_named(source)} is silent; give a clip of the music to sound like"
        )
    return wav


def _weighted(item) -> bool:
    """Whether ``item`` is a ``(clip or text, weight)`` pair rather than a list of them."""
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[1], (int, float))
        and not isinstance(item[1], bool)
    )


def _named(source: AudioSource) -> str:
    return "(a tensor)" if isinstance(source, torch.Tensor) else str(source)


def _silent(wav: torch.Tensor) -> bool:
    return bool(wav.abs().max() < 1e-4 or wav.pow(2).mean().sqrt() < 1e-4)


def _audio(source, sample_rate: int, what: str) -> torch.Tensor:
    if isinstance(source, torch.Tensor):
        wav = source.float()
        if wav.dim() != 1:
            raise GenerationError(f"the {what} tensor must be mono [T], got shape {tuple(wav.shape)}")
        if not torch.isfinite(wav).all():
            raise GenerationError(f"the {what} tensor contains NaN or infinite samples")
        return wav
    path = Path(source)
    if not path.exists():
        raise GenerationError(f"{what} file {path} not found")
    try:
        return load_audio(path, sample_rate)
    except AudioError as err:  # the library's one error type for a request it cannot serve
        raise GenerationError(str(err)) from err
