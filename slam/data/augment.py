"""SpecAugment on encoder outputs while training (torchaudio's masks).

With the cache the encoder runs once per utterance, so every epoch would show the projector the
very same frames. Masking spans of frames and of channels of those outputs (Park et al.'s
SpecAugment, applied after the frozen encoder as SLAM-ASR-style connectors can afford) makes
each pass a little different at no cost. Decoding and evaluation (``eval()``) never mask.
"""

from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import nn

from slam.config import TrainConfig


class EncoderOutputMasking(nn.Module):
    """``[batch, frames, dim]`` -> the same with masked spans set to 0, in training only."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.time_masks, self.time_width = cfg.spec_time_masks, cfg.spec_time_width
        self.time_fraction = cfg.spec_time_fraction
        self.feature_masks, self.feature_width = cfg.spec_feature_masks, cfg.spec_feature_width

    @property
    def active(self) -> bool:
        return self.training and (self.time_masks > 0 or self.feature_masks > 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        spec = x.transpose(1, 2).unsqueeze(1)  # [batch, 1, dim, frames]: torchaudio's layout
        for _ in range(self.time_masks):  # each row its own span (iid)
            spec = AF.mask_along_axis_iid(spec, self.time_width, 0.0, axis=3, p=self.time_fraction)
        for _ in range(self.feature_masks):
            spec = AF.mask_along_axis_iid(spec, self.feature_width, 0.0, axis=2)
        return spec.squeeze(1).transpose(1, 2)
