"""SALMONN's window-level Q-Former: the Q-Former of ``qformer`` run on every window of
``window`` frames, ``num_queries`` queries each, so the output keeps a rate in time
(``frame_rate / window * num_queries`` positions per second) instead of a fixed count.
"""

from __future__ import annotations

import torch

from slam.config import ProjectorConfig
from slam.model.projectors.base import PROJECTORS, frame_mask, pad_frames, zero_padding
from slam.model.projectors.qformer import QFormerProjector, _check_positive


@PROJECTORS.register("window_qformer")
class WindowQFormerProjector(QFormerProjector):
    def __init__(self, cfg: ProjectorConfig, in_dim: int, out_dim: int) -> None:
        _check_positive(cfg, "window")
        super().__init__(cfg, in_dim, out_dim)
        self.window = cfg.window

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        # The trailing partial window counts: its queries attend to its valid frames only.
        return (lengths + self.window - 1) // self.window * self.num_queries

    def output_rate(self, frame_rate: float) -> float:
        return frame_rate / self.window * self.num_queries

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, dim = x.shape[0], x.shape[2]
        x = pad_frames(zero_padding(x, lengths), self.window)
        windows = x.shape[1] // self.window
        # Every window of every clip is one Q-Former row; windows wholly past a clip's end
        # have an empty mask and come back as zeros without running the Q-Former.
        mask = frame_mask(lengths, x.shape[1]).reshape(batch * windows, self.window)
        out = self.attend(x.reshape(batch * windows, self.window, dim), mask)
        return out.reshape(batch, windows * self.num_queries, self.out_dim), self.output_lengths(lengths)
