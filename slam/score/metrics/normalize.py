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


@NORMALIZERS.register("none")
def _none() -> Callable[[str], str]:
    return lambda text: " ".join(text.split())


@cache
def _get(name: str) -> Callable[[str], str]:
    return NORMALIZERS.build(name)


def normalize(text: str, name: str = "english_v1") -> str:
    return " ".join(_get(name)(text).split())
