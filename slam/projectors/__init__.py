"""Projectors map encoder frames to LLM input embeddings; registered in ``PROJECTORS``."""

from __future__ import annotations

from slam.projectors import linear  # noqa: F401  (registers "linear")
from slam.projectors.base import PROJECTORS, Projector, build_projector, load_projector, save_projector

__all__ = ["PROJECTORS", "Projector", "build_projector", "load_projector", "save_projector"]
