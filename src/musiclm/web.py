"""The web page of ``musiclm serve``: a Gradio app over one loaded :class:`~musiclm.pipeline.MusicLM`.

:func:`build_app` takes a model that the caller loaded once; every request shares it. The queue runs one
generation at a time: two at once would share the same cores and both finish later. Requests
are checked by the pipeline itself; its errors (and any other error musiclm raises about the input)
reach the page as one readable message, and anything else as Gradio's plain "Error", never a traceback.
"""

from __future__ import annotations

import functools
import html
import secrets
import shlex
import socket
import time
import warnings
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from musiclm.audio import MelSpectrogram
from musiclm.errors import raised_on_purpose
from musiclm.pipeline import PAPER_TEMPERATURES, SHIPPED_MODEL, MusicLM, story_segment

MAX_VARIATIONS = 4
MAX_SECONDS = 60  # the model allows more; past this a page waits minutes on 2 cores
# Prompts in the vocabulary the shipped model was trained on (README: "What the shipped model knows")
EXAMPLES = [
    "a lively Irish folk dance on fiddle and accordion, fast, in D major",
    "a slow chorale for church organ in F major",
    "a sad folk song on solo oboe, slow",
    "a calm Renaissance madrigal for choir, with a roomy reverb",
    "a cheerful fiddle tune on violin, upbeat, in G major",
    "a melancholic medieval piece on recorder and harp, in D minor",
    "a gentle hymn for brass section, at about 80 BPM",
    "a bright folk song on solo flute, dry",
]
STORY_HELP = (
    "One segment per line, `prompt: seconds`, as `musiclm generate --story`. The seconds set the "
    "length (the duration slider is then not used), and the prompt box must be empty."
)


def build_app(model: MusicLM, checkpoint: str | Path | None = None) -> gr.Blocks:
    """The page for ``model``; ``checkpoint`` (its folder) only goes into the equivalent CLI command shown."""
    default_guidance = model.guidance or 1.0  # the slider starts where the model measured best
    generate = _generation_handler(model, checkpoint, default_guidance)
    with gr.Blocks(title="musiclm", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(
            "# musiclm: text in, music out\nDescribe the music; the small shipped model knows "
            "folk tunes, fiddle tunes, chorales and early music on General MIDI instruments."
        )
        with gr.Row():
            with gr.Column(scale=3):
                prompt, duration, variations, seed = _prompt_panel()
                melody, continuation, style, style_share = _audio_prompts()
                second_prompt, second_share, story = _text_prompts()
                guidance, temperature_sliders = _advanced_options(default_guidance)
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                info, outputs = _results_panel()
        button.click(
            generate,
            [
                prompt,
                duration,
                seed,
                variations,
                melody,
                continuation,
                story,
                guidance,
                *temperature_sliders,
                style,
                style_share,
                second_prompt,
                second_share,
            ],
            [info, *outputs],
            concurrency_limit=1,
        )
    return app


def _prompt_panel() -> tuple[gr.Textbox, gr.Slider, gr.Slider, gr.Number]:
    """The prompt box with its examples, and the duration, variations and seed."""
    prompt = gr.Textbox(
        label="Prompt",
        lines=2,
        elem_id="prompt",
        placeholder="a slow chorale for church organ in F major",
    )
    gr.Examples([[e] for e in EXAMPLES], inputs=[prompt], label="Prompts the model knows well")
    with gr.Row():
        duration = gr.Slider(1, MAX_SECONDS, value=10, step=1, label="Duration (s)", elem_id="duration")
        variations = gr.Slider(1, MAX_VARIATIONS, value=1, step=1, label="Variations")
        seed = gr.Number(-1, precision=0, minimum=-1, label="Seed (-1: random)", elem_id="seed")
    return prompt, duration, variations, seed


def _audio_prompts() -> tuple[gr.Audio, gr.Audio, gr.Audio, gr.Slider]:
    """The folded-away audio prompts: a melody to follow, audio to continue, a clip to sound like (and its
    share of the blend)."""
    with gr.Accordion("Melody to follow", open=False):
        melody = gr.Audio(
            sources=["upload", "microphone"],
            type="filepath",
            label="Hum or whistle a melody (at least 4 s)",
        )
    with gr.Accordion("Continue an audio file", open=False):
        continuation = gr.Audio(
            sources=["upload"],
            type="filepath",
            label="Audio to continue (kept at the start of the result)",
        )
    with gr.Accordion("Sound like a clip", open=False):
        style = gr.Audio(
            sources=["upload"],
            type="filepath",
            label="Music to sound like (its MuLan audio tokens condition the stages)",
        )
        style_share = gr.Slider(
            0,
            1,
            value=0.5,
            step=0.05,
            label="Blend: 0 the text only, 1 the clip only (without a text: the clip)",
        )
    return melody, continuation, style, style_share


def _text_prompts() -> tuple[gr.Textbox, gr.Slider, gr.Textbox]:
    """The folded-away text prompts: a second prompt to blend with (and its share), and a story."""
    with gr.Accordion("Blend with a second prompt", open=False):
        second_prompt = gr.Textbox(
            value="", label="Second prompt", placeholder="a slow chorale for church organ"
        )
        second_share = gr.Slider(
            0, 1, value=0.5, step=0.05, label="Blend: 0 the first prompt only, 1 the second only"
        )
    with gr.Accordion("Story mode", open=False):
        story = gr.Textbox(
            label="Story",
            lines=4,
            info=STORY_HELP,
            placeholder="a calm piano piece: 5\na lively fiddle tune: 5",
        )
    return second_prompt, second_share, story


def _advanced_options(default_guidance: float) -> tuple[gr.Slider, list[gr.Slider]]:
    """The guidance slider and one temperature slider per stage, folded away."""
    with gr.Accordion("Advanced", open=False, elem_id="advanced"):
        guidance = gr.Slider(
            1,
            10,
            value=default_guidance,
            step=0.5,
            label="Classifier-free guidance (1: off, as in the paper)",
            elem_id="guidance",
        )
        temperature_sliders = [
            gr.Slider(0.05, 2, value=t, step=0.05, label=f"Temperature, {stage} stage")
            for stage, t in zip(("semantic", "coarse", "fine"), PAPER_TEMPERATURES)
        ]
    return guidance, temperature_sliders


def _results_panel() -> tuple[gr.Markdown, list[gr.Audio | gr.Image]]:
    """The line about the last result, then a player and a spectrogram per variation (the first shown)."""
    info = gr.Markdown(elem_id="info")
    outputs = []
    for i in range(MAX_VARIATIONS):
        outputs.append(
            gr.Audio(
                type="numpy",
                format="wav",
                interactive=False,
                visible=i == 0,
                buttons=["download"],
                label="Result",
                elem_id=f"result-{i}",
            )
        )
        outputs.append(
            gr.Image(
                type="numpy",
                interactive=False,
                visible=i == 0,
                show_label=False,
                buttons=["download", "fullscreen"],
                elem_id=f"spectrogram-{i}",
            )
        )
    return info, outputs


def _generation_handler(model: MusicLM, checkpoint: str | Path | None, default_guidance: float):
    """The Generate button's function: its parameters are the page's inputs in the order the button passes
    them; it returns the info line and an update of each player and spectrogram."""
    mel = MelSpectrogram(model.sample_rate, n_fft=1024, hop_length=256, n_mels=80)

    @_messages_in_page
    def generate(
        prompt,
        duration,
        seed,
        variations,
        melody,
        continuation,
        story,
        guidance,
        t_semantic,
        t_coarse,
        t_fine,
        # last and with defaults, so that a client of the page's /generate endpoint written before them works
        style=None,
        style_share=0.5,
        second_prompt="",
        second_share=0.5,
        progress=gr.Progress(track_tqdm=True),
    ):
        segments = [story_segment(line) for line in (story or "").splitlines() if line.strip()] or None
        texts, blend, styles = page_blend(prompt, second_prompt, second_share, style, style_share)
        seconds = sum(s for _, s in segments) if segments else float(duration)
        seed = int(seed) if seed is not None and seed >= 0 else secrets.randbelow(2**31)
        temperatures = (t_semantic, t_coarse, t_fine)
        started = time.perf_counter()
        wavs = []
        for i in range(int(variations)):
            progress((i, int(variations)), desc=f"variation {i + 1} of {int(variations)}")
            wavs.append(
                model.generate(
                    texts,
                    seconds,
                    melody=melody,
                    continuation=continuation,
                    story=segments,
                    seed=seed + i,
                    guidance=guidance,
                    temperatures=temperatures,
                    style=styles,
                    blend=blend,
                    progress=True,
                )[0].cpu()  # the player and the spectrogram read NumPy
            )
        elapsed = time.perf_counter() - started
        command = [  # uploads by their file names: the user has them under those names
            "musiclm",
            "generate",
            *([texts] if texts else []),
            *[f"--story={text}:{s:g}" for text, s in segments or []],
            f"--duration={seconds:g}",
            f"--seed={seed}",
            *([f"--melody={Path(melody).name}"] if melody else []),
            *([f"--continue={Path(continuation).name}"] if continuation else []),
            *[f"--blend={text}:{weight:g}" for text, weight in blend],
            *[f"--style={Path(clip).name}:{weight:g}" for clip, weight in styles],
            *([f"--guidance={guidance:g}"] if guidance != default_guidance else []),
            *(["--temperatures", *map(str, temperatures)] if temperatures != PAPER_TEMPERATURES else []),
            *([f"--checkpoint={checkpoint}"] if checkpoint else []),
        ]
        seeds = f"**{seed}**" + (f" to {seed + len(wavs) - 1} (one per variation)" if len(wavs) > 1 else "")
        info = (
            f"Seed {seeds}"
            + f" · {len(wavs)} × {seconds:g} s in {elapsed:.1f} s · the first from the command line: "
            f"`{shlex.join(command)}`"
        )
        return [info, *_result_updates(wavs, seed, mel, model.sample_rate)]

    return generate


def _result_updates(wavs: list[torch.Tensor], seed: int, mel: MelSpectrogram, sample_rate: int) -> list:
    """A player and a spectrogram update per variation slot: filled and shown for each of ``wavs`` (made
    with seeds from ``seed`` on), emptied and hidden for the rest."""
    updates = []
    for i in range(MAX_VARIATIONS):
        shown = i < len(wavs)
        label = f"variation {i + 1} · seed {seed + i}" if shown else None
        updates.append(gr.Audio(_pcm16(wavs[i], sample_rate) if shown else None, label=label, visible=shown))
        updates.append(gr.Image(_spectrogram(mel, wavs[i], sample_rate) if shown else None, visible=shown))
    return updates


def page_blend(
    prompt: str, second: str, second_share: float, style: str | None, style_share: float
) -> tuple[str | None, list[tuple[str, float]], list[tuple[str, float]]]:
    """The ``texts``, ``blend`` and ``style`` of :meth:`MusicLM.generate` for the page's boxes, whose sliders
    are shares: the second prompt's of the two texts, the clip's of the whole. A plain prompt stays a text
    prompt; a mix becomes weights summing to 1 (without a text prompt the library weighs them against
    each other), so that each slider means the same whatever else is filled in."""
    written = [text for text in (prompt, second) if text.strip()]
    if not style and len(written) < 2:
        return (written or [prompt])[0], [], []  # an empty prompt reaches the library's own message
    shares = [1 - second_share, second_share] if len(written) == 2 else [1.0] * len(written)
    clip_share = (style_share if written else 1.0) if style else 0.0
    blend = [(text, share * (1 - clip_share)) for text, share in zip(written, shares)]
    return None, blend, [(style, clip_share)] if style else []


def serve(
    checkpoint: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    device: str | torch.device = "cpu",
) -> None:
    """Load the model once (``checkpoint``; default: the shipped one) onto ``device`` and serve the page
    until interrupted."""
    with socket.socket() as sock:  # before the model loads, and as one line rather than Gradio's traceback
        try:
            sock.bind((host, port))
        except OSError as err:
            message = f"cannot listen on {host}:{port} ({err.strerror}); pass another --port"
            raise ValueError(message) from None
    model = MusicLM.from_pretrained(checkpoint or SHIPPED_MODEL, map_location=device)
    app = build_app(model, checkpoint)
    app.queue(default_concurrency_limit=1, max_size=32)
    app.launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        show_error=False,
    )


def _messages_in_page(fn):
    """``fn`` with musiclm's own errors shown as a message in the page, and its warnings as notices."""

    @functools.wraps(fn)  # Gradio reads the signature, to pass the Progress tracker
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings(record=True) as caught:  # safe: the queue runs one at a time
                warnings.simplefilter("always")
                result = fn(*args, **kwargs)
        except Exception as err:
            if raised_on_purpose(err):
                raise gr.Error(html.escape(str(err), quote=False), print_exception=False) from None
            raise
        for warning in caught:
            if issubclass(warning.category, UserWarning):
                gr.Warning(html.escape(str(warning.message), quote=False))
        return result

    return wrapper


def _pcm16(wav: torch.Tensor, sample_rate: int) -> tuple[int, np.ndarray]:
    """16-bit audio for the player, at the level the CLI writes (Gradio would peak-normalise float audio)."""
    return sample_rate, (wav.float().clamp(-1, 1) * 32767).round().to(torch.int16).numpy()


def _spectrogram(mel: MelSpectrogram, wav: torch.Tensor, sample_rate: int) -> np.ndarray:
    spec = mel(wav.float()).numpy()
    figure = Figure(figsize=(6, 2.2), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    axes.imshow(
        spec,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0, wav.shape[-1] / sample_rate, 0, spec.shape[0]),
    )
    axes.set(title="log-mel spectrogram", xlabel="seconds", ylabel="mel band")
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
