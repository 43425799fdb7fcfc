"""The encoder interface and its registry."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from torch import nn

from slam.config import EncoderConfig
from slam.registry import Registry


class AudioEncoder(nn.Module):
    """Waveform -> frame-wise hidden states ``[batch, frames, dim]`` at ``frame_rate`` Hz.

    Work is split in two so the same code serves the cache stage and in-step encoding:
    ``extract`` turns one waveform into the encoder's input features (CPU, data loader side)
    and ``forward`` runs the network on a padded batch of them.
    """

    dim: int
    frame_rate: float
    sample_rate: int = 16000

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def extract(self, waveform: np.ndarray) -> torch.Tensor:
        """Input features ``[time, feat]`` of one mono waveform at ``sample_rate``."""
        raise NotImplementedError

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode padded ``inputs [batch, time, feat]``; return hidden states and their lengths."""
        raise NotImplementedError

    def cache_key(self) -> str:
        """Changes whenever the cached outputs would change (weights, layer, settings)."""
        n_params = sum(p.numel() for p in self.parameters())
        probe = next(iter(self.parameters())).detach().float().flatten()[:64].tolist()
        payload = json.dumps(
            {"cls": type(self).__name__, "cfg": vars(self.cfg), "n": n_params, "probe": probe},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


ENCODERS: Registry[AudioEncoder] = Registry("encoder")


def build_encoder(cfg: EncoderConfig) -> AudioEncoder:
    """Build the encoder named by ``cfg.name`` (frozen, in eval mode)."""
    encoder = ENCODERS.build(cfg.name, cfg)
    encoder.requires_grad_(False)
    return encoder.eval()


def pad_features(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``[time, feat]`` tensors into ``[batch, max_time, feat]`` with zero padding."""
    lengths = torch.tensor([f.shape[0] for f in features], dtype=torch.long)
    batch = torch.nn.utils.rnn.pad_sequence(features, batch_first=True)
    return batch, lengths
