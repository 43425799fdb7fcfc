"""Versioned text normalisers applied to references and hypotheses before WER.

A normaliser's name is its version: once results were published with ``english_v1`` it
must not change; a better one gets a new name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache

from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

from slam.registry import Registry

NORMALIZERS: Registry[Callable[[str], str]] = Registry("normalizer")


@NORMALIZERS.register("english_v1")
def _english_v1() -> Callable[[str], str]:
    # Whisper's English normaliser (case, punctuation, contractions, numbers to digits) without
    # a spelling map: the one most English LLM-ASR results are reported with.
    return EnglishTextNormalizer({})


@NORMALIZERS.register("basic_v1")
def _basic_v1() -> Callable[[str], str]:
    return BasicTextNormalizer()


# Not Whisper's BasicTextNormalizer: it splits "don't" into "don t"; a transcript a model is
# to write keeps its words whole. Letters and digits of any script, and apostrophes inside words.
_NOT_WORD = re.compile(r"[^\w']+|_|(?<!\w)'|'(?!\w)")


@NORMALIZERS.register("words_v1")
def _words_v1() -> Callable[[str], str]:
    # lower case, every mark but a word-internal apostrophe a space ("Speed-dial." -> "speed
    # dial"); numbers stay as written: what a model writes as a transcript without case or
    # punctuation (train.answer_normalizer), LibriSpeech-style
    return lambda text: " ".join(_NOT_WORD.sub(" ", text.lower()).split())


# Whisper's basic normaliser (lower case, brackets, marks and symbols out), then every number
# read out in the language (num2words: Whisper writes "Pulse 1" where the prompt says "uno"),
# and the letters where typed transcripts and systems disagree folded: accents in the Latin
# scripts (most of the Spanish prompts are typed without them: "numero", "contrasena"), ё in
# Russian. The normaliser of profile lang (recipe asr_lang): spoken_<corpus.language>_v1.
SPOKEN_LANGUAGES = ("en", "es", "fr", "it", "ru")


def _spoken(language: str) -> Callable[[str], str]:
    from num2words import num2words

    basic = BasicTextNormalizer(remove_diacritics=language != "ru")

    def normalize_spoken(text: str) -> str:
        text = basic(text).replace("ё", "е")
        text = re.sub(r"\d+", lambda m: f" {num2words(int(m.group(0)), lang=language)} ", text)
        return basic(text)  # the words' own hyphens and commas ("vingt-et-un")

    return normalize_spoken


for _language in SPOKEN_LANGUAGES:
    NORMALIZERS.register(f"spoken_{_language}_v1")(lambda language=_language: _spoken(language))


@NORMALIZERS.register("mixed_zh_v1")
def _mixed_zh_v1() -> Callable[[str], str]:
    # Mandarin with English words (recipe asr_codeswitch): Whisper's basic normaliser (lower
    # case, marks out), then traditional characters folded into simplified ones (OpenCC's t2s
    # table): the references are simplified, Whisper writes Mandarin in either script
    from opencc import OpenCC

    basic, to_simplified = BasicTextNormalizer(), OpenCC("t2s")
    return lambda text: to_simplified.convert(basic(text))


@NORMALIZERS.register("none")
def _none() -> Callable[[str], str]:
    return lambda text: " ".join(text.split())


@cache
def _get(name: str) -> Callable[[str], str]:
    return NORMALIZERS.build(name)


def normalize(text: str, name: str = "english_v1") -> str:
    return " ".join(_get(name)(text).split())
