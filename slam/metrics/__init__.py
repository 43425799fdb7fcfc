"""Scores: text normalisers (versioned by name) and metrics.

Extra report sections (``score.reports``: MER, the biasing table, the WER breakdown) are registered in
``slam.metrics.reports``, imported by the score stage only.
"""

from slam.metrics.biasing import biased_counts, score_biasing
from slam.metrics.captions import score_captions
from slam.metrics.mer import mixed_units, score_mer
from slam.metrics.normalize import NORMALIZERS, normalize
from slam.metrics.translation import score_translation
from slam.metrics.wer import score_wer

__all__ = [
    "NORMALIZERS", "biased_counts", "mixed_units", "normalize", "score_biasing", "score_captions",
    "score_mer", "score_translation", "score_wer",
]
