"""Tabular models: an MLP or an FT-Transformer over embedded categories and scaled numbers,
and an autoencoder whose reconstruction error is the score when there are no labels.

Every model takes raw numeric values (NaN where missing) and category ids, and does the
imputation, robust scaling and missing-value indicators itself, so the ONNX graph carries them.
``FraudModel`` adds the calibration (an affine map of the raw score, then a sigmoid)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

ARCHITECTURES = ("mlp", "ft_transformer", "autoencoder")


class NumericInput(nn.Module):
    """Raw numbers -> robust-scaled, squashed values plus 0/1 indicators for columns that had gaps."""

    def __init__(self, numeric: list[dict[str, Any]]):
        super().__init__()
        self.register_buffer("median", torch.tensor([c["median"] for c in numeric], dtype=torch.float32))
        self.register_buffer("scale", torch.tensor([c["scale"] for c in numeric], dtype=torch.float32))
        self.register_buffer("gaps", torch.tensor([i for i, c in enumerate(numeric) if c["missing"]], dtype=torch.long))
        self.has_gaps = bool(len(self.gaps))
        self.width = len(numeric) + len(self.gaps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        missing = torch.isnan(x)
        x = torch.where(missing, self.median, x)
        # asinh keeps the order and the sign of extreme values (the frauds live there) but tames their size
        z = _asinh((x - self.median) / self.scale)
        if self.has_gaps:
            z = torch.cat([z, missing.index_select(1, self.gaps).float()], dim=1)
        return z


def _asinh(z: torch.Tensor) -> torch.Tensor:
    """asinh written out: the ONNX exporter has no aten::asinh."""
    return torch.sign(z) * torch.log(z.abs() + torch.sqrt(z * z + 1))


class MLP(nn.Module):
    def __init__(self, numeric: list[dict[str, Any]], vocab_sizes: list[int], width: int, layers: int, dropout: float, embedding_dim: int):
        super().__init__()
        self.numeric = NumericInput(numeric)
        self.embeddings = nn.ModuleList(nn.Embedding(n, min(embedding_dim, n)) for n in vocab_sizes)
        size = self.numeric.width + sum(e.embedding_dim for e in self.embeddings)
        blocks: list[nn.Module] = []
        for _ in range(layers):
            blocks += [nn.Linear(size, width), nn.ReLU(), nn.Dropout(dropout)]
            size = width
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(size, 1)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        parts = [self.numeric(numeric)] + [e(categorical[:, j]) for j, e in enumerate(self.embeddings)]
        return self.head(self.body(torch.cat(parts, dim=1))).squeeze(1)


class Block(nn.Module):
    """Pre-norm transformer block written out, so the export needs no fused attention op."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(2 * width, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attention = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        x = x + self.drop(self.out((attention @ v).transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.ff(self.norm2(x)))


class FTTransformer(nn.Module):
    """Each feature becomes a token (a learned vector scaled by the number, or a category's
    embedding); transformer blocks mix them; a [CLS] token reads out the score."""

    def __init__(self, numeric: list[dict[str, Any]], vocab_sizes: list[int], width: int, layers: int, dropout: float, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.numeric = NumericInput(numeric)
        n = self.numeric.width
        self.weight = nn.Parameter(torch.randn(n, width) / width**0.5)
        self.bias = nn.Parameter(torch.zeros(n, width))
        self.register_buffer("offsets", torch.tensor([sum(vocab_sizes[:j]) for j in range(len(vocab_sizes))], dtype=torch.long))
        self.has_categorical = bool(vocab_sizes)
        self.embedding = nn.Embedding(max(sum(vocab_sizes), 1), width)
        self.cls = nn.Parameter(torch.randn(1, 1, width) / width**0.5)
        self.blocks = nn.Sequential(*[Block(width, heads, dropout) for _ in range(layers)])
        self.head = nn.Sequential(nn.LayerNorm(width), nn.ReLU(), nn.Linear(width, 1))

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        tokens = [self.cls.expand(numeric.shape[0], -1, -1)]
        if self.numeric.width:
            tokens.append(self.numeric(numeric).unsqueeze(2) * self.weight + self.bias)
        if self.has_categorical:
            tokens.append(self.embedding(categorical + self.offsets))
        x = self.blocks(torch.cat(tokens, dim=1))
        return self.head(x[:, 0]).squeeze(1)


class AutoEncoder(nn.Module):
    """Reconstructs the scaled numbers and one-hot categories through a bottleneck;
    ``forward`` gives the log of each row's reconstruction error (higher: more unusual)."""

    def __init__(self, numeric: list[dict[str, Any]], vocab_sizes: list[int], width: int, layers: int, dropout: float):
        super().__init__()
        self.numeric = NumericInput(numeric)
        self.vocab_sizes = list(vocab_sizes)
        size = self.numeric.width + sum(vocab_sizes)
        widths = [max(width // 2**i, 4) for i in range(layers)]
        encoder: list[nn.Module] = []
        previous = size
        for w in widths:
            encoder += [nn.Linear(previous, w), nn.ReLU(), nn.Dropout(dropout)]
            previous = w
        decoder: list[nn.Module] = []
        for w in reversed(widths[:-1]):
            decoder += [nn.Linear(previous, w), nn.ReLU()]
            previous = w
        decoder.append(nn.Linear(previous, size))
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)
        self.parts = max(self.numeric.width + len(vocab_sizes), 1)

    def errors(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        z = self.numeric(numeric)
        onehots = [F.one_hot(categorical[:, j], n).float() for j, n in enumerate(self.vocab_sizes)]
        x = torch.cat([z, *onehots], dim=1)
        out = self.decoder(self.encoder(x))
        width = self.numeric.width
        error = ((out[:, :width] - z) ** 2).sum(1)
        for j, n in enumerate(self.vocab_sizes):
            error = error + F.cross_entropy(out[:, width : width + n], categorical[:, j], reduction="none")
            width += n
        return error / self.parts

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        return torch.log(self.errors(numeric, categorical) + 1e-6)


def build(arch: str, numeric: list[dict[str, Any]], vocab_sizes: list[int], config: Any) -> nn.Module:
    if arch == "mlp":
        return MLP(numeric, vocab_sizes, config.hidden_size, config.num_layers, config.dropout, config.embedding_dim)
    if arch == "ft_transformer":
        return FTTransformer(numeric, vocab_sizes, config.hidden_size, config.num_layers, config.dropout, config.num_heads)
    if arch == "autoencoder":
        return AutoEncoder(numeric, vocab_sizes, config.hidden_size, config.num_layers, config.dropout)
    raise ValueError(f"model {arch!r}: expected one of {', '.join(ARCHITECTURES)}")


class FraudModel(nn.Module):
    """The network plus its calibration: outputs (score in [0, 1], calibrated log-odds)."""

    def __init__(self, net: nn.Module, has_numeric: bool, has_categorical: bool):
        super().__init__()
        self.net = net
        self.has_numeric, self.has_categorical = has_numeric, has_categorical
        self.register_buffer("a", torch.tensor(1.0))
        self.register_buffer("b", torch.tensor(0.0))

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the export has only the inputs that exist (ONNX drops unused ones); stand in empty tensors for the rest
        inputs_ = list(inputs)
        numeric = inputs_.pop(0) if self.has_numeric else None
        categorical = inputs_.pop(0) if self.has_categorical else None
        batch = (numeric if numeric is not None else categorical).shape[0]
        if numeric is None:
            numeric = torch.zeros(batch, 0, device=categorical.device)
        if categorical is None:
            categorical = torch.zeros(batch, 0, dtype=torch.long, device=numeric.device)
        logit = self.a * self.net(numeric, categorical) + self.b
        return torch.sigmoid(logit), logit

    def input_names(self) -> list[str]:
        return [n for n, present in (("numeric", self.has_numeric), ("categorical", self.has_categorical)) if present]


def focal_loss(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, gamma: float) -> torch.Tensor:
    ce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    p = torch.sigmoid(logits)
    p_true = p * y + (1 - p) * (1 - y)
    return (weight * ce * (1 - p_true) ** gamma).mean()
