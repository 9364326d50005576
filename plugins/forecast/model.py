"""The forecaster: an LSTM or GRU encoder and a direct multi-horizon quantile head.

Scaling lives inside the module so it lands in the ONNX graph: targets are standardised with
their series' mean and std (inputs ``loc`` and ``scale``), the context window's mean level is
removed before the encoder and added back after the head, and covariates are standardised with
statistics kept as buffers. Quantiles are ordered by construction: the head gives a median and
positive (softplus) gaps that accumulate outwards from it."""

from __future__ import annotations

import torch
from torch import nn


class Forecaster(nn.Module):
    def __init__(
        self,
        n_targets: int,
        n_past: int,
        n_future: int,
        context_length: int,
        horizon: int,
        quantiles: list[float],
        cell: str = "lstm",
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.1,
        width: int = 32,
    ):
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell {cell!r}: expected lstm or gru")
        self.horizon, self.n_targets, self.n_quantiles = horizon, n_targets, len(quantiles)
        self.has_past, self.has_future = n_past > 0, n_future > 0
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.encoder = rnn(n_targets + n_past, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden_size, horizon * width)
        self.step = nn.Sequential(nn.Linear(width + n_future, width), nn.ReLU(), nn.Linear(width, n_targets * len(quantiles)))
        # LSTNet-style linear "highway" from the context to each horizon step, one map shared by all targets
        self.highway = nn.Linear(context_length, horizon)
        nn.init.zeros_(self.highway.weight)
        nn.init.zeros_(self.highway.bias)
        self.register_buffer("past_mean", torch.zeros(n_past))
        self.register_buffer("past_std", torch.ones(n_past))
        self.register_buffer("future_mean", torch.zeros(n_future))
        self.register_buffer("future_std", torch.ones(n_future))
        self.register_buffer("spread", spread_matrix(quantiles))
        self.median = quantiles.index(0.5)

    def forward(self, context: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, *features: torch.Tensor) -> torch.Tensor:
        """Quantiles [batch, horizon, targets, quantiles] in the data's units.

        ``context`` [batch, context, targets] raw values; ``loc``, ``scale`` [batch, targets];
        then ``past`` [batch, context, n_past] if the model has past features and ``future``
        [batch, horizon, n_future] if it has future ones, both raw."""
        q = self.scaled(context, loc, scale, *features)
        return q * scale[:, None, :, None] + loc[:, None, :, None]

    def scaled(self, context: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, *features: torch.Tensor) -> torch.Tensor:
        """Quantiles in the series' standardised units (what the loss is computed on)."""
        past = features[0] if self.has_past else None
        future = features[-1] if self.has_future else None
        z = (context - loc[:, None, :]) / scale[:, None, :]
        level = z.mean(dim=1, keepdim=True)
        z = z - level
        x = z if past is None else torch.cat([z, (past - self.past_mean) / self.past_std], dim=-1)
        out, _ = self.encoder(x)
        h = self.dropout(out[:, -1])
        steps = self.decoder(h).reshape(h.shape[0], self.horizon, -1)
        if future is not None:
            steps = torch.cat([steps, (future - self.future_mean) / self.future_std], dim=-1)
        params = self.step(steps).reshape(h.shape[0], self.horizon, self.n_targets, self.n_quantiles)
        highway = self.highway(z.transpose(1, 2)).transpose(1, 2)  # [batch, horizon, targets]
        median = params[..., self.median] + highway + level
        gaps = nn.functional.softplus(params) @ self.spread
        return median.unsqueeze(-1) + gaps


def spread_matrix(quantiles: list[float]) -> torch.Tensor:
    """M with (softplus(p) @ M)[i] = -sum of gaps from quantile i up to the median, +sum from the median up to i."""
    q, m = len(quantiles), quantiles.index(0.5)
    matrix = torch.zeros(q, q)
    for i in range(q):
        for j in range(q):
            if i <= j < m:
                matrix[j, i] = -1.0
            elif m < j <= i:
                matrix[j, i] = 1.0
    return matrix


def pinball_loss(predicted: torch.Tensor, actual: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """Mean quantile (pinball) loss; ``predicted`` [..., quantiles], ``actual`` [...]."""
    diff = actual.unsqueeze(-1) - predicted
    return torch.maximum(quantiles * diff, (quantiles - 1) * diff).mean()
