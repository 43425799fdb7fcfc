"""Scores: text normalisers (versioned by name) and metrics.

Extra report sections (``score.reports``: MER, the biasing table, the WER breakdown) are registered in
``slam.score.metrics.reports``, imported by the score stage only.
"""

from slam.score.metrics.biasing import biased_counts, score_biasing
from slam.score.metrics.captions import score_captions
from slam.score.metrics.mer import mixed_units, score_mer
from slam.score.metrics.normalize import NORMALIZERS, normalize
from slam.score.metrics.translation import score_translation
from slam.score.metrics.wer import paired_bootstrap_wer, score_wer

# What a transcript recipe selects checkpoints by (``Recipe.error_rate``): the summary key of
# the scorer of that name. MER where words have no spaces between them (code-switching).
TRANSCRIPT_SCORERS = {"wer": score_wer, "mer": score_mer}


def error_rate(name: str, refs: dict[str, str], hyps: dict[str, str], normalizer: str) -> float:
    """The corpus-level error rate ``name`` ("wer", "mer") of ``hyps`` against ``refs``."""
    return TRANSCRIPT_SCORERS[name](refs, hyps, normalizer)["summary"][name]


__all__ = [
    "NORMALIZERS", "TRANSCRIPT_SCORERS", "biased_counts", "error_rate", "mixed_units", "normalize",
    "score_biasing", "score_captions", "paired_bootstrap_wer", "score_mer", "score_translation", "score_wer",
]
