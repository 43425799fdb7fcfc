"""``corpus.source: parallel``: synthetic speech in one language over parallel text, each
utterance carrying its translation (recipe ``st``).

Parallel text is rare offline, but every Debian system holds some: the gettext catalogs of its
programs (``/usr/share/locale/<lang>/LC_MESSAGES/<domain>.mo``) pair each English message with
its translation, written by people. ``corpus.parallel_text: gettext`` reads the catalogs named
in ``corpus.catalogs`` (messages with format codes, markup, digits or acronyms are dropped:
they have no single spoken form); a path instead reads a user's own tab-separated
``source<TAB>translation`` file. The source side is spoken (espeak-ng speaks French) and the
translation goes into each supervision's ``custom["translation"]``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from slam.config import CorpusConfig
from slam.data.corpora import text as text_mod
from slam.data.corpora.base import SYNTHESIZERS, SynthesisBuild
from slam.data.corpora.text import LOCALE_DIR, speakable
from slam.data.corpora.tts import speak_sentences

log = logging.getLogger(__name__)

TRANSLATION = "translation"  # the supervision's custom key of the translated text
# ISO 639-1 -> the name Lhotse supervisions carry
LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian",
                  "ru": "Russian", "zh": "Chinese"}  # fmt: skip
def gettext_pairs(
    language: str, catalogs: Iterable[str], locale_dir: Path = LOCALE_DIR,
    keep_translation: Callable[[str], bool] = speakable,
) -> tuple[list[tuple[str, str]], dict[str, int]]:  # fmt: skip
    """``(translated message, English message)`` pairs of the named catalogs, and how many
    each gave (a catalog missing on this machine gives 0 and a warning). ``language`` is the
    locale folder's name ("fr", "zh_CN"); ``keep_translation`` filters the translated side
    (the English side must be :func:`speakable`)."""
    pairs, counts = [], {}
    for domain in catalogs:
        path = locale_dir / language / "LC_MESSAGES" / f"{domain}.mo"
        if not path.is_file():
            log.warning("gettext catalog %s not found; skipped", path)
            counts[domain] = 0
            continue
        before = len(pairs)
        for english, translated in text_mod.catalog_messages(path).items():
            if translated.lower() != english.lower() and speakable(english) and keep_translation(translated):
                pairs.append((translated, english))
        counts[domain] = len(pairs) - before
    return pairs, counts


def tsv_pairs(path: Path) -> list[tuple[str, str]]:
    """A user's ``source<TAB>translation`` lines; a line without both halves is an error."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        source, sep, target = line.partition("\t")
        if not sep or not source.strip() or not target.strip():
            raise ValueError(f"{path}:{number}: expected 'source<TAB>translation', got {line[:80]!r}")
        pairs.append((source.strip(), target.strip()))
    return pairs


def parallel_pool(cfg: CorpusConfig) -> tuple[dict[str, str], dict[str, Any]]:
    """Distinct source sentences of ``min_words..max_words`` words -> translation, shuffled by
    ``cfg.seed``; plus where they came from."""
    if cfg.parallel_text == "gettext":
        pairs, counts = gettext_pairs(cfg.language, cfg.catalogs)
    else:
        path = Path(cfg.parallel_text)
        if not path.is_file():
            raise FileNotFoundError(f"corpus.parallel_text: {path} is neither 'gettext' nor a file")
        pairs, counts = tsv_pairs(path), {str(path): 0}
    seen, pool = set(), {}
    for source, target in pairs:
        key = text_mod.sentence_key(source)
        if key in seen or not cfg.min_words <= text_mod.count_words(source) <= cfg.max_words:
            continue
        seen.add(key)
        pool[source] = target
    order = sorted(pool)
    random.Random(cfg.seed).shuffle(order)
    log.info("parallel text: %d distinct %s sentences of %d-%d words", len(order), cfg.language,
             cfg.min_words, cfg.max_words)  # fmt: skip
    return {s: pool[s] for s in order}, {"pairs_by_source": counts, "pool_sentences": len(order)}


@SYNTHESIZERS.register("parallel")
def synthesize_parallel(cfg: CorpusConfig, audio_dir: Path, splits: Iterable[str]) -> SynthesisBuild:
    """Parallel text -> the source sentences spoken (:func:`speak_sentences`, so no sentence
    crosses sets) -> cuts with their translations."""
    if not cfg.translation_language:
        raise ValueError("corpus.source parallel needs corpus.translation_language (e.g. 'en')")
    if cfg.join_fraction > 0:  # a joined utterance's text has no translation in the pool
        raise ValueError(f"corpus.join_fraction={cfg.join_fraction}: corpus.source parallel reads one "
                         "sentence per utterance; set corpus.join_fraction=0")  # fmt: skip
    splits = [s for s in text_mod.SPLITS if s in set(splits)]
    pool, sources = parallel_pool(cfg)
    language = LANGUAGE_NAMES.get(cfg.language, cfg.language)
    cuts, summary = speak_sentences(cfg, list(pool), audio_dir, splits, language)
    for split_cuts in cuts.values():
        for cut in split_cuts:  # an eager CutSet: the supervisions are the objects kept
            cut.supervisions[0].custom[TRANSLATION] = pool[cut.supervisions[0].text]
    return cuts, {**summary, **sources}
