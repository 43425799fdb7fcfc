"""Scores: text normalisers (versioned by name) and metrics."""

from slam.metrics.normalize import NORMALIZERS, normalize
from slam.metrics.wer import score_wer

__all__ = ["NORMALIZERS", "normalize", "score_wer"]
