"""Recipe ``asr_codeswitch``: Mandarin-English code-switching ASR (the paper's Table V).

The corpus is Mandarin with English words switched in (``corpus.source: codeswitch``,
slam.data.corpora.codeswitch), spoken by espeak-ng; profile ``codeswitch`` sets it up with
Whisper base (multilingual) and Qwen2.5 (which reads and writes both). Training, joint CTC/LLM
decoding and the Whisper rows (its own decoder told ``<|zh|>``, and fine-tuned on the same
cached set with ``baseline.finetune_minutes``) are the ASR recipe's. Mandarin has no spaces
between words, so the scores are the mixed error rate (each Chinese character a unit, each
English word a unit; slam.score.metrics.mer) with its Chinese CER and English WER apart, after
``mixed_zh_v1`` (marks out, traditional characters folded into simplified); the checkpoint kept
is the best by dev MER.
"""

from __future__ import annotations

from slam.config import ConfigError, SlamConfig
from slam.recipes import RECIPES
from slam.recipes.asr import SpeechRecognition
from slam.score.stage import MER_SCORING, Scoring

NORMALIZER = "mixed_zh_v1"


@RECIPES.register("asr_codeswitch")
class CodeSwitchingASR(SpeechRecognition):
    description = "Mandarin-English code-switching ASR (MER)"
    error_rate = "mer"

    def check_training(self, cfg: SlamConfig, use_cache: bool) -> None:
        """MER needs the Chinese characters as written: a normaliser that drops or romanises
        them, or folds nothing, would score another thing."""
        if cfg.score.normalizer != NORMALIZER:
            raise ConfigError(f"score.normalizer {cfg.score.normalizer}: recipe asr_codeswitch scores "
                              f"Mandarin with English words after {NORMALIZER}")  # fmt: skip

    def scoring(self) -> Scoring:
        return MER_SCORING
