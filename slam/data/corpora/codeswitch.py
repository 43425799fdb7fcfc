"""``corpus.source: codeswitch``: Mandarin sentences with English words switched in, spoken
by espeak-ng's Mandarin voice, which says every Latin-script word in English (recipe
``asr_codeswitch``, the paper's Table V analogue).

No code-switched corpus is offline, but Debian's Chinese gettext catalogs
(``/usr/share/locale/zh_CN/LC_MESSAGES``) hold thousands of modern Mandarin messages written by
people, each beside its English original, and the shortest messages pair a Chinese term with
the English word it translates ("文件" / "File", "打开" / "Open"). Those pairs make a
lexicon (:func:`switch_lexicon`); a sentence's lexicon terms are then said in English each with
probability ``corpus.switch_rate`` (:func:`code_switch`: "无法打开文件。" -> "无法 open 文件。"),
the intra-sentential switching of technical talk. A sentence keeps one switched form (drawn
from a hash of it and ``corpus.seed``), and sentences split into train/dev/test by the Mandarin
original, so no sentence crosses sets whatever its switches; one with no switched term is
left out. Lengths (``corpus.min_words``..``max_words``) count mixed units, as MER does: each
Chinese character, each English word.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from slam.config import ConfigError, CorpusConfig
from slam.data.corpora import text as text_mod
from slam.data.corpora.base import SYNTHESIZERS, SynthesisBuild
from slam.data.corpora.parallel import LANGUAGE_NAMES, gettext_pairs
from slam.data.corpora.tts import speak_sentences
from slam.score.metrics.mer import CJK, mixed_units

log = logging.getLogger(__name__)

LOCALE = "zh_CN"  # the catalogs' folder: simplified Chinese, as Mandarin is written on the mainland
TERM = re.compile(r"^[\u4e00-\u9fff]{2,4}$")  # a lexicon entry's Chinese side
# its English side: one lower-case-able word (a label's "_Open", "File:" and "Save..." marks
# aside); acronyms and names in capitals ("URL", "GNOME") are left out, as they are spelt
ENGLISH_WORD = re.compile(r"^[A-Z]?[a-z]{2,11}$")
# a sentence: Han characters with Chinese commas inside and at most one final mark
SENTENCE = re.compile(r"^[\u4e00-\u9fff][\u4e00-\u9fff，、]*[。！？]?$")
_MARK_SPACES = re.compile(r"\s*([，、。！？])\s*")  # Chinese marks take no spaces around them


def switch_lexicon(pairs: Iterable[tuple[str, str]], min_count: int = 1) -> dict[str, str]:
    """Chinese term -> the English word it most often translates, from ``(Chinese, English)``
    message pairs whose Chinese side is one 2-4 character term and English side one word.

    >>> switch_lexicon([("文件", "_File"), ("文件", "File"), ("文件", "Files"), ("打开", "Open...")])
    {'文件': 'file', '打开': 'open'}
    """
    seen: dict[str, Counter[str]] = defaultdict(Counter)
    for chinese, english in pairs:
        word = english.strip().strip(".:…").replace("_", "").replace("&", "")
        if TERM.match(chinese) and ENGLISH_WORD.match(word):
            seen[chinese][word.lower()] += 1
    lexicon = {}
    for term, counts in sorted(seen.items()):
        (word, count), = counts.most_common(1)
        if count >= min_count:
            lexicon[term] = word
    return lexicon


def code_switch(sentence: str, lexicon: dict[str, str], rate: float, rng: random.Random) -> str:
    """``sentence`` with each lexicon term (longest first, left to right) said in English with
    probability ``rate``; English words stand between spaces ("无法 open 文件。").

    >>> code_switch("无法打开文件。", {"打开": "open", "文件": "file"}, 1.0, random.Random(0))
    '无法 open file。'
    """
    if not lexicon:
        return sentence
    terms = re.compile("|".join(map(re.escape, sorted(lexicon, key=lambda t: (-len(t), t)))))

    def switch(match: re.Match[str]) -> str:
        term = match.group(0)
        return f" {lexicon[term]} " if rng.random() < rate else term

    return _MARK_SPACES.sub(r"\1", " ".join(terms.sub(switch, sentence).split()))


def english_share(text: str) -> float:
    """The share of ``text``'s mixed units that are not Chinese characters."""
    units = mixed_units(text)
    return sum(not CJK.fullmatch(u) for u in units) / max(len(units), 1)


def codeswitch_pool(
    cfg: CorpusConfig, pairs: list[tuple[str, str]]
) -> tuple[dict[str, str], dict[str, Any]]:
    """Code-switched sentence -> its Mandarin original, shuffled by ``cfg.seed`` (only those
    with at least one English word and ``min_words``..``max_words`` mixed units), and a summary."""
    lexicon = switch_lexicon(pairs)
    originals = sorted({chinese for chinese, _ in pairs if SENTENCE.match(chinese)})
    pool: dict[str, str] = {}
    for original in originals:
        switched = code_switch(original, lexicon, cfg.switch_rate, text_mod.stable_rng(cfg.seed, original))
        if switched != original and cfg.min_words <= len(mixed_units(switched)) <= cfg.max_words:
            pool.setdefault(switched, original)
    order = sorted(pool)
    random.Random(cfg.seed).shuffle(order)
    shares = [english_share(s) for s in order]
    summary = {"lexicon_terms": len(lexicon), "mandarin_sentences": len(originals),
               "pool_sentences": len(order),
               "english_unit_share": round(sum(shares) / max(len(shares), 1), 3)}  # fmt: skip
    log.info("code-switching: %d lexicon terms, %d of %d Mandarin sentences switched (%.0f %% English units)",
             len(lexicon), len(order), len(originals), 100 * summary["english_unit_share"])  # fmt: skip
    return {s: pool[s] for s in order}, summary


@SYNTHESIZERS.register("codeswitch")
def synthesize_codeswitch(cfg: CorpusConfig, audio_dir: Path, splits: Iterable[str]) -> SynthesisBuild:
    """zh_CN gettext catalogs -> code-switched sentences -> espeak-ng's Mandarin voices -> cuts
    whose supervision keeps the Mandarin original (``custom["mandarin"]``)."""
    if cfg.language != "zh":
        raise ConfigError(f"corpus.language {cfg.language!r}: source codeswitch speaks Mandarin ('zh')")
    pairs, counts = gettext_pairs(LOCALE, cfg.catalogs, keep_translation=lambda text: True)
    pool, summary = codeswitch_pool(cfg, pairs)
    if not pool:
        raise ConfigError(f"corpus.catalogs: no code-switched sentence from {LOCALE} catalogs {cfg.catalogs}")
    # each Mandarin sentence has one switched form: split by it, no sentence crosses sets
    splits = [s for s in text_mod.SPLITS if s in set(splits)]
    cuts, synthesis = speak_sentences(cfg, list(pool), audio_dir, splits, LANGUAGE_NAMES["zh"])
    for split_cuts in cuts.values():
        for cut in split_cuts:
            cut.supervisions[0].custom = {**(cut.supervisions[0].custom or {}),
                                          "mandarin": pool[cut.supervisions[0].text]}  # fmt: skip
    return cuts, {**synthesis, **summary, "pairs_by_catalog": counts}
