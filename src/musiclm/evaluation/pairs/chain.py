"""Where along the chain the asked direction is lost: the reference renders sent through the back of the
model and scored like generated pairs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from musiclm.audio import save_audio
from musiclm.evaluation import chain
from musiclm.evaluation.pairs.audio import side_paths
from musiclm.evaluation.pairs.file import Pair
from musiclm.pipeline import PAPER_TEMPERATURES
from musiclm.progress import tqdm
from musiclm.stages.sampling import Sampling

# row name -> what the reference renders go through (``musiclm eval-pairs --chain``)
CHAIN_LINKS = {
    "renders through the codec": "codec",
    "renders' semantic tokens through the acoustic stages": "acoustic",
    "renders' MuLan audio tokens through every stage": "stages",
}


def chain_pairs(
    pipeline,
    pairs: Sequence[Pair],
    renders: Sequence[tuple[torch.Tensor, torch.Tensor]],
    rate: int,
    out_dir: str | Path,
    seed: int = 0,
    guidance: float | None = None,
) -> dict[str, Path]:
    """The reference renders (pair audio at ``rate``) sent through the back of the chain, one folder of
    pair audio per row of :data:`CHAIN_LINKS`; scored like generated pairs, they say which link loses the
    asked direction:

    - codec: encoded and decoded with only the RVQ levels the stages generate;
    - acoustic: the renders' real semantic tokens (and their MuLan audio tokens) given to the acoustic
      stages, which sample the codes;
    - stages: only the renders' MuLan audio tokens, every stage sampling: the stages conditioned as in
      training, on music that has the attribute, instead of on the prompt's text.

    Sampling uses the pipeline's temperatures and guidance, one seed per pair for both sides (resumable,
    like :func:`musiclm.evaluation.pairs.audio.generate_pairs`)."""
    scale = pipeline.guidance_for(guidance)
    samplings = [Sampling(t, guidance=scale) for t in PAPER_TEMPERATURES]

    def sampled(index: int, wav: torch.Tensor, link: str) -> torch.Tensor:
        if link == "codec":
            return chain.through_codec(pipeline, wav[None], rate)[0]
        generator = torch.Generator(pipeline.device)
        generator.manual_seed(seed + index)
        real_semantic = link == "acoustic"
        return chain.through_stages(pipeline, wav[None], rate, samplings, generator, real_semantic)[0]

    folders = {}
    for name, link in CHAIN_LINKS.items():
        folder = folders[name] = Path(out_dir) / link
        folder.mkdir(parents=True, exist_ok=True)
        for index, sides in enumerate(tqdm(renders, desc=f"renders through {link}", unit="pair")):
            paths = side_paths(folder, index)
            if all(p.is_file() for p in paths):
                continue
            for wav, path in zip(sides, paths):
                save_audio(path, sampled(index, wav, link).float().cpu(), pipeline.sample_rate)
    return folders
