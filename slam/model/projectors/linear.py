"""The paper's linear projector: concatenate k frames -> Linear -> ReLU -> Linear."""

from __future__ import annotations

import torch
from torch import nn

from slam.config import ProjectorConfig
from slam.model.projectors.base import PROJECTORS, Projector, pad_frames, zero_padding


class FrameGroupProjector(Projector):
    """Any projector that turns each group of k consecutive frames into one position."""

    def __init__(self, cfg: ProjectorConfig, in_dim: int, out_dim: int) -> None:
        super().__init__(cfg, in_dim, out_dim)
        if cfg.k < 1:
            raise ValueError(f"projector.k must be >= 1, got {cfg.k}")
        self.k = cfg.k

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        # A trailing partial group is zero-padded rather than dropped, so short clips keep
        # at least one position and no audio is thrown away.
        return (lengths + self.k - 1) // self.k

    def output_rate(self, frame_rate: float) -> float:
        return frame_rate / self.k

    def grouped_frames(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # Zeroing the batch padding makes a trailing partial group see the same zeros it
        # would see alone.
        return pad_frames(zero_padding(x, lengths), self.k)


@PROJECTORS.register("linear")
class LinearProjector(FrameGroupProjector):
    def __init__(self, cfg: ProjectorConfig, in_dim: int, out_dim: int) -> None:
        super().__init__(cfg, in_dim, out_dim)
        self.net = nn.Sequential(
            nn.Linear(in_dim * cfg.k, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, out_dim)
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.grouped_frames(x, lengths)
        batch, frames, dim = x.shape
        x = x.reshape(batch, frames // self.k, dim * self.k)
        return self.net(x), self.output_lengths(lengths)
