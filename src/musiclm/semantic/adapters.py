"""Feature models from HF ``transformers`` under the same k-means tokenizer: w2v-BERT 2.0
(``Wav2Vec2BertModel``, e.g. facebook/w2v-bert-2.0) and ``HubertModel``.

For users who have those weights locally::

    backbone = HFWav2Vec2Bert.from_hf_pretrained("path/to/w2v-bert-2.0")
    tokenizer = KMeansTokenizer.on(backbone, layer=7, num_clusters=1024)
    tokenizer.fit_kmeans(clips); tokenizer.save_pretrained("semantic_tokenizer")

Both models run at 50 Hz; the tokenizer averages frame pairs down to 25 Hz. The tokenizer folder
stores the HF config and weights itself, so it loads with no ``transformers`` hub access.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


class _HFBackbone(nn.Module):
    sample_rate = 16000
    model_class: str
    config_class: str

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @classmethod
    def from_config_dict(cls, data: dict) -> _HFBackbone:
        import transformers

        config = getattr(transformers, cls.config_class).from_dict(data)
        return cls(getattr(transformers, cls.model_class)(config))

    @classmethod
    def from_hf_pretrained(cls, directory: str | Path) -> _HFBackbone:
        """Load a local HF model folder (never the hub)."""
        import transformers

        return cls(getattr(transformers, cls.model_class).from_pretrained(directory, local_files_only=True))

    def config_dict(self) -> dict:
        return self.model.config.to_dict()

    @property
    def feature_dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    def layer_features(self, wav: torch.Tensor, layer: int) -> torch.Tensor:
        if not 0 <= layer <= self.num_layers:
            raise ValueError(f"layer {layer} out of range: this model has layers 0..{self.num_layers}")
        out = self.model(**self.inputs(wav), output_hidden_states=True)
        return out.hidden_states[layer]

    def inputs(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class HFWav2Vec2Bert(_HFBackbone):
    model_class, config_class = "Wav2Vec2BertModel", "Wav2Vec2BertConfig"

    def inputs(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        # w2v-BERT 2.0 reads stacked 80-bin fbank frames (SeamlessM4T's extractor; defaults need no download).
        from transformers import SeamlessM4TFeatureExtractor

        extractor = SeamlessM4TFeatureExtractor()
        batch = extractor(
            [w.cpu().numpy().astype(np.float32) for w in wav],
            sampling_rate=self.sample_rate,
            return_tensors="pt",
            return_attention_mask=False,
        )
        return {"input_features": batch["input_features"].to(wav.device)}


class HFHubert(_HFBackbone):
    model_class, config_class = "HubertModel", "HubertConfig"

    def inputs(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        # Large HuBERTs were trained on per-clip standardised audio (their extractor's do_normalize).
        if getattr(self.model.config, "do_normalize", False):
            wav = (wav - wav.mean(-1, keepdim=True)) / (wav.std(-1, keepdim=True) + 1e-7)
        return {"input_values": wav}
