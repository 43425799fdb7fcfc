"""Projectors map encoder frames to LLM input embeddings; registered in ``PROJECTORS``."""

from __future__ import annotations

# Importing a module registers its projectors under their config names.
from slam.model.projectors import conv1d, linear, qformer, window_qformer  # noqa: F401
from slam.model.projectors.base import PROJECTORS, Projector, build_projector, load_projector, save_projector

__all__ = ["PROJECTORS", "Projector", "build_projector", "load_projector", "save_projector"]
