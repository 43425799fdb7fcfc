"""The paper's linear projector: concatenate k frames -> Linear -> ReLU -> Linear."""

from __future__ import annotations

import torch
from torch import nn

from slam.config import ProjectorConfig
from slam.projectors.base import PROJECTORS, Projector


@PROJECTORS.register("linear")
class LinearProjector(Projector):
    def __init__(self, cfg: ProjectorConfig, in_dim: int, out_dim: int) -> None:
        super().__init__(cfg, in_dim, out_dim)
        if cfg.k < 1:
            raise ValueError(f"projector.k must be >= 1, got {cfg.k}")
        self.k = cfg.k
        self.net = nn.Sequential(
            nn.Linear(in_dim * cfg.k, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, out_dim)
        )

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        # A trailing partial group is zero-padded rather than dropped, so short clips keep
        # at least one position and no audio is thrown away.
        return (lengths + self.k - 1) // self.k

    def output_rate(self, frame_rate: float) -> float:
        return frame_rate / self.k

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, frames, dim = x.shape
        positions = -(-frames // self.k)
        x = nn.functional.pad(x, (0, 0, 0, positions * self.k - frames))
        x = x.reshape(batch, positions, dim * self.k)
        return self.net(x), self.output_lengths(lengths)
