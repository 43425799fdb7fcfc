"""Audio encoders: one module per family, each registered in ``ENCODERS`` by config name.

An encoder declares ``dim`` (output width) and ``frame_rate`` (output frames per second; 0.0
with ``sequence_wise`` for one vector per clip) and ``sample_rate`` (input Hz) so that
projector sizes and the number of LLM audio positions are derived, never hard-coded. Adding a
family is one module here (imported below) plus one ``params/encoder/<name>.yaml``.
"""

from __future__ import annotations

# Each import registers its config names in ENCODERS.
from slam.model.encoders import beats, clap, codec, data2vec2, fbank, ssl, whisper  # noqa: F401
from slam.model.encoders.base import ENCODERS, AudioEncoder, build_encoder

__all__ = ["ENCODERS", "AudioEncoder", "build_encoder"]
