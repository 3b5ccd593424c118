"""MuLan's text tower and its tokenizer.

The packaged default, all-MiniLM-L6-v2, is a 6-layer BERT encoder; it is built here in plain torch and its
tokenizer read with ``tokenizers``. transformers builds the same model, but importing it and going through
AutoTokenizer and AutoModel cost 2.6 s of CPU, a third of ``musiclm generate``'s start, for 22M parameters.
This encoder reads the package's own files, keeps transformers' parameter names (a MuLan saved with one
loads with the other) and gives the same hidden states bit for bit (tests/test_mulan.py compares them).
Any other tower (an HF name, a saved ``text/`` folder, a fine-tuned whole tower) loads through transformers.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.files import write_text_atomic

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def load_text_tower(path: str, packaged: bool) -> tuple[Any, nn.Module]:
    """``(tokenizer, encoder)`` of the text model at ``path`` (an HF name or a folder); ``packaged``: the
    frozen default tower, which needs no transformers."""
    if packaged:
        return PackagedTokenizer(Path(path)), BertEncoder.from_folder(Path(path))
    return _load_with_transformers(path)


def _load_with_transformers(path: str) -> tuple[Any, nn.Module]:
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = HFTokenizer(AutoTokenizer.from_pretrained(path))
    folder = Path(path)
    on_meta = torch.get_default_device().type == "meta"  # parameter counting: no weights to load
    has_weights = not on_meta and (
        not folder.is_dir() or any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))
    )
    # A saved MuLan keeps the text tower's config and tokenizer but its weights live in model.safetensors.
    encoder = (
        AutoModel.from_pretrained(path)
        if has_weights
        else AutoModel.from_config(AutoConfig.from_pretrained(path))
    )
    return tokenizer, encoder


# ----------------------------------------------------------------------------------------------- tokenizers
class PackagedTokenizer:
    """The package's ``tokenizer.json`` (BERT's uncased WordPiece): the ids and mask transformers' tokenizer
    gives for the same texts."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # the file pads every text to 128 tokens; transformers pads a batch to its longest text
        pad_id = self.backend.token_to_id("[PAD]")
        self.backend.enable_padding(pad_id=pad_id, pad_token="[PAD]")
        self.backend.no_truncation()
        self.folder = folder

    def batch(self, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` ``[B, L]``, each text cut to ``max_length`` tokens."""
        self.backend.enable_truncation(max_length)
        try:
            encoded = self.backend.encode_batch(texts)
        finally:
            self.backend.no_truncation()
        return {
            "input_ids": torch.tensor([e.ids for e in encoded]),
            "attention_mask": torch.tensor([e.attention_mask for e in encoded]),
        }

    def lengths(self, texts: list[str]) -> list[int]:
        return [len(self.backend.encode(text).ids) for text in texts]

    def save_pretrained(self, directory: Path) -> None:
        """The package's tokenizer files, which transformers' AutoTokenizer reads."""
        for name in TOKENIZER_FILES:
            if (self.folder / name).is_file():
                write_text_atomic(directory / name, (self.folder / name).read_text())


class HFTokenizer:
    """A transformers tokenizer behind the same two calls as :class:`PackagedTokenizer`."""

    def __init__(self, tokenizer: Any):
        self.hf = tokenizer

    def batch(self, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        encoded = self.hf(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def lengths(self, texts: list[str]) -> list[int]:
        return [len(self.hf(text, truncation=False, verbose=False)["input_ids"]) for text in texts]

    def save_pretrained(self, directory: Path) -> None:
        self.hf.save_pretrained(directory)


# ----------------------------------------------------------------------------------------------- encoder
@dataclasses.dataclass(frozen=True)
class BertShape:
    """The fields of an HF BERT ``config.json`` that :class:`BertEncoder` is built from."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_dropout_prob: float
    attention_probs_dropout_prob: float
    pad_token_id: int
    folder: Path  # where its config.json is, copied when a tower is saved whole

    @classmethod
    def read(cls, folder: Path) -> BertShape:
        meta = json.loads((folder / "config.json").read_text())
        built_as = {"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute"}
        other = {k: meta.get(k, v) for k, v in built_as.items() if meta.get(k, v) != v}
        if other:
            raise ValueError(f"{folder} is not a plain BERT encoder ({other}); load it through transformers")
        return cls(
            **{f.name: meta[f.name] for f in dataclasses.fields(cls) if f.name != "folder"}, folder=folder
        )

    def save_pretrained(self, directory: Path) -> None:
        write_text_atomic(directory / "config.json", (self.folder / "config.json").read_text())


class _Residual(nn.Module):
    """Projection, dropout, then LayerNorm of the sum with the block's input (BERT's ``*Output``)."""

    def __init__(self, width: int, c: BertShape):
        super().__init__()
        self.dense = nn.Linear(width, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, block_input: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + block_input)


class _SelfAttention(nn.Module):
    def __init__(self, c: BertShape):
        super().__init__()
        self.heads, self.dropout = c.num_attention_heads, c.attention_probs_dropout_prob
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        heads = (*x.shape[:-1], self.heads, -1)
        q, k, v = (proj(x).view(heads).transpose(1, 2) for proj in (self.query, self.key, self.value))
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            scale=q.shape[-1] ** -0.5,
        )
        return out.transpose(1, 2).reshape(*x.shape[:-1], -1)


class _Attention(nn.Module):
    def __init__(self, c: BertShape):
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _Residual(c.hidden_size, c)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, c: BertShape):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, c: BertShape):
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _Residual(c.intermediate_size, c)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        attended = self.attention(x, mask)
        return self.output(self.intermediate(attended), attended)


class _Embeddings(nn.Module):
    def __init__(self, c: BertShape):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        # every text is one segment: token type 0
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(torch.zeros_like(input_ids))
        return self.dropout(self.LayerNorm(x + self.position_embeddings(positions)))


class _Layers(nn.Module):
    def __init__(self, c: BertShape):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))


class _Pooler(nn.Module):
    def __init__(self, c: BertShape):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)


class BertEncoder(nn.Module):
    """BERT under transformers' parameter names; called as transformers' ``BertModel`` is, its token states
    first in the result."""

    def __init__(self, config: BertShape):
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Layers(config)
        # never run (MuLan pools the token states itself), but kept so that the state dict is BertModel's:
        # a MuLan whose tower is saved whole loads through transformers (see save_pretrained)
        self.pooler = _Pooler(config)

    @classmethod
    def from_folder(cls, folder: Path) -> BertEncoder:
        """The encoder with the folder's weights. Built on the CPU and then overwritten: building on the meta
        device would skip a 0.1 s random init, but its initialisers import torch._dynamo (0.6 s). That init
        leaves the global random stream as it was, as transformers' loading does, so that a seeded MuLan
        starts its new layers from the same weights either way."""
        with torch.random.fork_rng(devices=[]):
            encoder = cls(BertShape.read(folder))
        if torch.get_default_device().type == "meta":  # parameter counting: no weights to load
            return encoder
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
        expected = encoder.state_dict()
        missing = sorted(set(expected) - set(state))
        if missing:
            raise ValueError(
                f"{folder / 'model.safetensors'} lacks the text tower's {', '.join(missing[:5])}"
            )
        encoder.load_state_dict({k: state[k] for k in expected})
        return encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor]:
        # without padding every token attends to every other: no mask, as transformers does then
        mask = None if bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return (x,)
