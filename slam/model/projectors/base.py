"""The projector interface, its registry, and saving/loading the Hugging Face way
(``projector.json`` config + ``projector.safetensors`` weights)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from slam.config import ProjectorConfig
from slam.registry import Registry

CONFIG_NAME = "projector.json"
WEIGHTS_NAME = "projector.safetensors"


class Projector(nn.Module):
    """``[batch, frames, in_dim]`` encoder output -> ``[batch, positions, out_dim]`` LLM inputs."""

    def __init__(self, cfg: ProjectorConfig, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.cfg, self.in_dim, self.out_dim = cfg, in_dim, out_dim

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Number of LLM positions for encoder outputs of ``lengths`` frames."""
        raise NotImplementedError

    def output_rate(self, frame_rate: float) -> float:
        """LLM positions per second of audio, given the encoder's frame rate."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"cfg": vars(self.cfg), "in_dim": self.in_dim, "out_dim": self.out_dim}


PROJECTORS: Registry[Projector] = Registry("projector")


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """``[batch, frames]`` bool, True on the first ``lengths[i]`` frames of row i."""
    return torch.arange(frames, device=lengths.device)[None] < lengths[:, None]


def zero_padding(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``x`` with the frames past each row's length set to zero.

    A batched encoder leaves arbitrary values (even NaN) there; projectors that mix frames
    (a group of k, a window, masked attention whose zero weights would still multiply a NaN)
    must not let them reach a valid output.
    """
    return x.masked_fill(~frame_mask(lengths, x.shape[1])[..., None], 0.0)


def pad_frames(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the time axis of ``[batch, frames, dim]`` up to a multiple of ``multiple``."""
    return nn.functional.pad(x, (0, 0, 0, -x.shape[1] % multiple))


def build_projector(cfg: ProjectorConfig, in_dim: int, out_dim: int) -> Projector:
    return PROJECTORS.build(cfg.name, cfg, in_dim, out_dim)


def save_projector(projector: Projector, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_NAME).write_text(json.dumps(projector.describe(), indent=2))
    state = {k: v.detach().float().contiguous() for k, v in projector.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME))


def load_projector(directory: Path) -> Projector:
    spec = json.loads((directory / CONFIG_NAME).read_text())
    projector = build_projector(ProjectorConfig(**spec["cfg"]), spec["in_dim"], spec["out_dim"])
    projector.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
    return projector
