"""The torch model: feature scaling inside the module (so it lands in the ONNX graph) and an MLP."""

from __future__ import annotations

import torch
from torch import nn


class TabularClassifier(nn.Module):
    def __init__(self, n_features: int, n_classes: int, hidden: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Class probabilities for raw (unscaled) features."""
        return torch.softmax(self.net((features - self.mean) / self.std), dim=-1)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.mean) / self.std)
