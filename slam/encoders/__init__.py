"""Audio encoders: one module per family, each registered in ``ENCODERS`` by config name.

An encoder declares ``dim`` (output width) and ``frame_rate`` (output frames per second) so
that projector sizes and the number of LLM audio positions are derived, never hard-coded.
"""

from __future__ import annotations

from slam.encoders import whisper  # noqa: F401  (registers "whisper")
from slam.encoders.base import ENCODERS, AudioEncoder, build_encoder

__all__ = ["ENCODERS", "AudioEncoder", "build_encoder"]
