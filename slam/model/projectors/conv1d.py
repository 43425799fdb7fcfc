"""SLAM-LLM's convolutional projector: a Conv1d with kernel = stride = k over time, then an MLP."""

from __future__ import annotations

import torch
from torch import nn

from slam.config import ProjectorConfig
from slam.model.projectors.base import PROJECTORS
from slam.model.projectors.linear import FrameGroupProjector


@PROJECTORS.register("conv1d")
class Conv1dProjector(FrameGroupProjector):
    def __init__(self, cfg: ProjectorConfig, in_dim: int, out_dim: int) -> None:
        super().__init__(cfg, in_dim, out_dim)
        # Non-overlapping groups of k frames, as the linear projector, but through a learned
        # in_dim-wide bottleneck instead of the in_dim * k concatenation.
        self.conv = nn.Conv1d(in_dim, in_dim, kernel_size=cfg.k, stride=cfg.k)
        # The ReLU after the convolution keeps it from folding into the first Linear (two
        # linear maps in a row are one).
        self.net = nn.Sequential(
            nn.ReLU(), nn.Linear(in_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, out_dim)
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.grouped_frames(x, lengths)
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)  # [batch, frames / k, in_dim]
        return self.net(x), self.output_lengths(lengths)
