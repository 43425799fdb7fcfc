"""Recipe ``asr_lang``: LLM-based ASR in a lower-resource language (the paper's Table IV).

The paper sets Whisper's own decoder, that decoder fine-tuned on the same low-resource data
("+ Fine-tuning") and the Whisper encoder + LLM side by side, per language. Here the data are
one language's real asterisk prompts (``corpus.source: asterisk``, ``corpus.language``: fr, es,
it, ru; slam.data.corpora.asterisk), split by text into train/dev/test, the training part
optionally padded with synthetic speech of the language; profile ``lang`` sets it all up.
Training, decoding and the two Whisper rows are the ASR recipe's (``baseline.finetune_minutes``
fine-tunes Whisper's decoder on the same cached training set); scoring adds the character
error rate to the WER, both after the language's ``spoken_<code>_v1`` normaliser (numbers read
out in the language, so Whisper's digits count as the words the speaker said).
"""

from __future__ import annotations

from slam.config import ConfigError, SlamConfig
from slam.recipes import RECIPES
from slam.recipes.asr import SpeechRecognition
from slam.score.metrics.normalize import SPOKEN_LANGUAGES
from slam.score.stage import WER_CER_SCORING, Scoring


def spoken_normalizer(language: str) -> str:
    """The normaliser that reads numbers out in ``language``."""
    return f"spoken_{language}_v1"


@RECIPES.register("asr_lang")
class LanguageASR(SpeechRecognition):
    description = "LLM-based ASR in another language (WER and CER)"

    def check_training(self, cfg: SlamConfig, use_cache: bool) -> None:
        """A ``spoken_`` normaliser must read numbers in the language spoken (a mismatch would
        spell Whisper's digits in another language and count them all wrong)."""
        language, normalizer = cfg.corpus.language, cfg.score.normalizer
        if normalizer.startswith("spoken_") and normalizer != spoken_normalizer(language):
            known = ", ".join(spoken_normalizer(code) for code in SPOKEN_LANGUAGES)
            raise ConfigError(f"score.normalizer {normalizer} does not read numbers in corpus.language "
                              f"{language!r}: use {spoken_normalizer(language)} "
                              f"(known: {known})")  # fmt: skip

    def scoring(self) -> Scoring:
        return WER_CER_SCORING
