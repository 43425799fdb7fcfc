"""SLAM-LLM's Q-Former projector: learned queries cross-attend to the encoder frames through
transformers' BLIP-2 Q-Former, then Linear + LayerNorm to the LLM width.

Every clip becomes the same ``num_queries`` LLM positions, whatever its duration, so the
output has no rate in positions per second (``output_rate`` returns 0).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from slam.config import ProjectorConfig
from slam.model.projectors.base import PROJECTORS, Projector, frame_mask, zero_padding


def _check_positive(cfg: ProjectorConfig, *keys: str) -> None:
    for key in keys:
        if getattr(cfg, key) < 1:
            raise ValueError(f"projector.{key} must be >= 1, got {getattr(cfg, key)}")


@PROJECTORS.register("qformer")
class QFormerProjector(Projector):
    def __init__(self, cfg: ProjectorConfig, in_dim: int, out_dim: int) -> None:
        super().__init__(cfg, in_dim, out_dim)
        _check_positive(cfg, "num_queries", "qformer_layers", "qformer_heads", "qformer_hidden")
        if cfg.qformer_hidden % cfg.qformer_heads:
            raise ValueError(
                f"projector.qformer_hidden ({cfg.qformer_hidden}) must be divisible by "
                f"projector.qformer_heads ({cfg.qformer_heads})"
            )
        self.num_queries = cfg.num_queries
        config = Blip2QFormerConfig(
            hidden_size=cfg.qformer_hidden,
            num_hidden_layers=cfg.qformer_layers,
            num_attention_heads=cfg.qformer_heads,
            intermediate_size=4 * cfg.qformer_hidden,
            encoder_hidden_size=in_dim,
            cross_attention_frequency=1,  # every layer reads the audio, not every other one
        )
        self.qformer = Blip2QFormerModel(config)
        # Random, not BLIP-2's zeros: without position embeddings, identical queries would
        # get identical updates and stay identical.
        self.queries = nn.Parameter(torch.randn(1, cfg.num_queries, cfg.qformer_hidden) * 0.02)
        self.proj = nn.Linear(cfg.qformer_hidden, out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        # An empty clip gets no positions (its queries would have nothing to attend to).
        return torch.where(lengths > 0, self.num_queries, 0)

    def output_rate(self, frame_rate: float) -> float:
        return 0.0  # num_queries positions per clip, not per second

    def attend(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[n, frames, in_dim]`` with a ``[n, frames]`` bool mask -> ``[n, num_queries, out_dim]``.

        Rows without any valid frame come back as zeros without running the Q-Former:
        attention over no keys at all would give NaN.
        """
        keep = mask.any(-1)
        if keep.all():
            return self._run(frames, mask)
        out = frames.new_zeros(frames.shape[0], self.num_queries, self.out_dim)
        if keep.any():
            valid = self._run(frames[keep], mask[keep])
            out = out.to(valid.dtype)
            out[keep] = valid
        return out

    def _run(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        queries = self.queries.expand(frames.shape[0], -1, -1)
        hidden = self.qformer(
            query_embeds=queries, encoder_hidden_states=frames, encoder_attention_mask=mask.long()
        ).last_hidden_state
        return self.norm(self.proj(hidden))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = frame_mask(lengths, x.shape[1])
        return self.attend(zero_padding(x, lengths), mask), self.output_lengths(lengths)
