"""The decoder-only Transformer and the three MusicLM token stages (semantic, coarse, fine)."""

from musiclm.stages.sampling import Sampling, generate_stage, sample
from musiclm.stages.stages import STAGES, StageConfig, StageLM, count_parameters

__all__ = ["STAGES", "Sampling", "StageConfig", "StageLM", "count_parameters", "generate_stage", "sample"]
