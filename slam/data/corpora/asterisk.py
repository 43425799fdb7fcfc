"""``asterisk_<lang>``: real recorded telephony prompts (en, fr, es, it, ru).

Audio from the Debian packages ``asterisk-core-sounds-<lang>-wav`` (one speaker per language,
8 kHz, resampled lazily to 16 kHz), transcripts from ``asterisk-core-sounds-<lang>``: a text
file of ``name: transcript`` lines, ``;`` comments. The French prompts are those of the English
set said in French, so ``asterisk_fr`` carries the English text of the same prompt as its
translation (recipe ``st``); a French prompt without an English one is dropped.
Transcripts carry annotations that were not spoken (``[beep tone]``, ``(10 seconds of
silence)``, ``<beep ascending>``, ``...``) and digits and keypad symbols that were (``press
1``, ``press *``); both are cleaned so the text is what the speaker says (numbers in the
prompt's language). Prompts left without words (pure tones, silence), whose text has no single
reading (``H.323``; in the Italian file letters lost to a bad encoding: ``sar?``) or without a
wav are dropped and counted.

``corpus.source: asterisk`` (recipe ``asr_lang``, profile ``lang``) makes one language's
prompts a corpus of its own: :func:`split_prompts` parts them by text into train/dev/test, and
``corpus.num_utterances`` synthetic utterances in that language (espeak-ng over the sentences
of Debian's gettext catalogs, none of them a dev or test prompt) can pad the training part.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

from slam.config import ConfigError, CorpusConfig
from slam.data.corpora import text as text_mod
from slam.data.corpora.base import CORPORA, REAL_SOURCES, SYNTHESIZERS, CorpusBuild, SynthesisBuild
from slam.data.corpora.parallel import TRANSLATION, parallel_pool
from slam.data.corpora.text import number_to_words
from slam.data.corpora.tts import speak_sentences
from slam.data.corpora.validate import validate_cuts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptLanguage:
    """Where one language's prompts are and how its digits and keypad symbols are said."""

    code: str
    name: str  # as Lhotse supervisions carry it
    speaker: str
    sounds_dirs: tuple[Path, ...]  # where the -wav package puts them, then the alternatives link
    spell_number: Callable[[int], str]
    keys: dict[str, str]  # keypad symbol -> its word
    # transcripts of this language's file that have no single reading beyond the shared rules
    unreadable: str = ""

    @property
    def package(self) -> str:
        """The Debian package of the transcripts (``<package>-wav`` has the audio)."""
        return f"asterisk-core-sounds-{self.code}"

    @property
    def transcripts(self) -> Path:
        return Path(f"/usr/share/doc/{self.package}/core-sounds-{self.code}.txt.gz")


def spelled(language: str, n: int) -> str:
    """``n`` in words of ``language`` (num2words: a well-kept speller of many languages)."""
    from num2words import num2words

    return num2words(n, lang=language)


SOUNDS = Path("/usr/share/asterisk/sounds")
ENGLISH = PromptLanguage("en", "English", "asterisk_en_allison", (SOUNDS / "en_US_f_Allison", SOUNDS / "en"),
                         number_to_words, {"*": "star", "#": "pound"})  # fmt: skip
FRENCH = PromptLanguage("fr", "French", "asterisk_fr_june", (SOUNDS / "fr_CA_f_June", SOUNDS / "fr"),
                        partial(spelled, "fr"), {"*": "étoile", "#": "dièse"})  # fmt: skip
# Mexican Spanish, read by Allison Smith, the English set's speaker
SPANISH = PromptLanguage("es", "Spanish", "asterisk_es_allison", (SOUNDS / "es_MX_f_Allison", SOUNDS / "es"),
                         partial(spelled, "es"), {"*": "asterisco", "#": "numeral"})  # fmt: skip
# a male speaker; the file lost some accented letters to "?" ("sar? esattamente", "La conferenza ?
# piena"): a "?" before more words of the sentence is such a letter, and its prompt is dropped
ITALIAN = PromptLanguage("it", "Italian", "asterisk_it_carlo", (SOUNDS / "it_IT_m_Carlo", SOUNDS / "it"),
                         partial(spelled, "it"), {"*": "asterisco", "#": "cancelletto"},
                         unreadable=r"\?\s*[^\W\d_]")  # fmt: skip
# decimals ("28,8 килобит") and web addresses ("www.asterisk.org") have no single reading
RUSSIAN = PromptLanguage("ru", "Russian", "asterisk_ru_ivrvoice",
                         (SOUNDS / "ru_RU_f_IvrvoiceRU", SOUNDS / "ru"), partial(spelled, "ru"),
                         {"*": "звёздочка", "#": "решётка"},
                         unreadable=r"\d,\d|[^\W\d_]\.[^\W\d_]")  # fmt: skip
LANGUAGES = {language.code: language for language in (ENGLISH, FRENCH, SPANISH, ITALIAN, RUSSIAN)}
_ANNOTATION = r"\[[^\]]*\]|\([^)]*\)|<[^>]*>"  # [beep tone], (silence), <beep>: not speech
_LETTER = r"[^\W\d_]"  # a letter of any script


def parse_prompts(path: Path) -> list[tuple[str, str]]:
    """``(name, raw transcript)`` pairs of an asterisk sounds text file (plain or .gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", errors="replace") as f:  # the Italian file has a BOM
        lines = f.read().splitlines()
    prompts = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        name, sep, text = line.partition(":")
        name, text = name.strip(), text.strip()
        if not sep or not name or " " in name:
            log.warning("%s:%d: not a 'name: transcript' line: %r", path, number, line[:80])
            continue
        text = text.removeprefix(f"{name}:").strip()  # "conf-adminmenu: conf-adminmenu: ..." (Russian)
        prompts.append((name, text))
    return prompts


def clean_prompt(text: str, language: PromptLanguage = ENGLISH) -> str | None:
    """The spoken words of a transcript; ``None`` if nothing (or nothing unambiguous) is left.

    >>> clean_prompt("Press 1 for sales [beep] ...")
    'Press one for sales'
    """
    text = re.sub(_ANNOTATION, " ", text)
    text = re.sub(r"\.{2,}|\u2026", " ", text)
    text = text.replace('"', " ")
    for symbol, word in language.keys.items():
        text = text.replace(symbol, f" {word} ")
    text = re.sub(r"\b(\d+)([A-Z])\b", r"\1 \2", text)  # "3D audio" -> "3 D audio"
    # "H.323", "h-323", "iax2": no single reading
    if re.search(rf"\d{_LETTER}|{_LETTER}[.-]?\d|\d\.\d", text) or (
        language.unreadable and re.search(language.unreadable, text)
    ):
        return None
    text = re.sub(r"\b\d+\b", lambda m: language.spell_number(int(m.group(0))), text)
    text = re.sub(r"\s+([.,])", r"\1", " ".join(text.split())).strip(" ,;:")  # "pound ." -> "pound."
    if not re.search(_LETTER, text):
        return None
    return text


def load_asterisk(
    transcripts: Path | None = None, sounds_dir: Path | None = None, language: PromptLanguage = ENGLISH,
    translations: dict[str, str] | None = None,
) -> tuple[CutSet, dict[str, int]]:  # fmt: skip
    """Pair prompts with their wavs (``<sounds_dir>/<name>.wav``); counts of what was dropped.

    With ``translations`` (prompt name -> text), each cut carries its prompt's translation and
    a prompt without one is dropped.
    """
    transcripts = transcripts or language.transcripts
    if not transcripts.is_file():
        raise FileNotFoundError(f"{transcripts} not found: install the Debian package {language.package} "
                                "(scripts/setup.sh does)")  # fmt: skip
    if sounds_dir is None:
        sounds_dir = next((d for d in language.sounds_dirs if d.is_dir()), language.sounds_dirs[0])
    if not sounds_dir.is_dir():
        raise FileNotFoundError(f"{sounds_dir} not found: install the Debian package {language.package}-wav "
                                "(scripts/setup.sh does)")  # fmt: skip
    dropped: Counter[str] = Counter()
    cuts = []
    prompts = parse_prompts(transcripts)
    texts_of: dict[str, set[str]] = {}
    for name, raw in prompts:
        texts_of.setdefault(name, set()).add(raw)
    for name, raw in dict(prompts).items():  # a name listed twice: once
        if len(texts_of[name]) > 1:  # "digits/0: cero", "digits/0: diez": which one the wav says is unknown
            dropped["conflicting_text"] += 1
            log.info("asterisk %s: listed with %d different transcripts; dropped", name, len(texts_of[name]))
            continue
        text = clean_prompt(raw, language)
        wav = sounds_dir / f"{name}.wav"
        if text is None:
            # annotations only (tones, silence), or words with no single reading ("H.323")
            spoken = re.search(_LETTER, re.sub(_ANNOTATION, " ", raw))
            dropped["ambiguous_text" if spoken else "no_text"] += 1
            log.debug("asterisk %s: no usable transcript in %r", name, raw)
            continue
        if not wav.is_file():
            dropped["no_audio"] += 1
            log.info("asterisk %s: transcript without audio (%s)", name, wav)
            continue
        custom = {"prompt": name}
        if translations is not None:
            if name not in translations:
                dropped["no_translation"] += 1
                continue
            custom[TRANSLATION] = translations[name]
        cut_id = f"asterisk_{language.code}-" + name.replace("/", "-")
        recording = Recording.from_file(wav, recording_id=cut_id)
        supervision = SupervisionSegment(
            id=cut_id, recording_id=cut_id, start=0.0, duration=recording.duration, channel=0,
            text=text, speaker=language.speaker, language=language.name, custom=custom,
        )  # fmt: skip
        cuts.append(
            MonoCut(
                id=cut_id,
                start=0.0,
                duration=recording.duration,
                channel=0,
                recording=recording,
                supervisions=[supervision],
            )
        )
    log.info("asterisk_%s: %d prompts with audio and text, dropped %s", language.code, len(cuts),
             dict(dropped))  # fmt: skip
    return CutSet.from_cuts(cuts), dict(dropped)


def _register(language: PromptLanguage) -> None:
    def build(cfg: CorpusConfig) -> CorpusBuild:
        return _validated(cfg, *load_asterisk(language=language), language)

    build.__doc__ = f"The real {language.name} prompts, validated and resampled to ``cfg.sample_rate``."
    CORPORA.register(f"asterisk_{language.code}")(build)


for _language in (ENGLISH, SPANISH, ITALIAN, RUSSIAN):  # asterisk_fr carries translations: below
    _register(_language)


@CORPORA.register("asterisk_fr")
def asterisk_fr(cfg: CorpusConfig) -> CorpusBuild:
    """The registered real French set with the English text of each prompt as its translation."""
    english = {name: clean_prompt(raw) for name, raw in parse_prompts(ENGLISH.transcripts)}
    translations = {name: text for name, text in english.items() if text is not None}
    return _validated(cfg, *load_asterisk(language=FRENCH, translations=translations), FRENCH)


def _validated(
    cfg: CorpusConfig, cuts: CutSet, dropped: dict[str, int], language: PromptLanguage
) -> CorpusBuild:
    cuts, counts = validate_cuts(cuts, cfg.sample_rate, cfg.skip_bad)
    counts["skipped"] = {**dropped, **counts["skipped"]}
    counts["source"] = str(language.transcripts)
    return cuts, counts


def prompt_language(code: str) -> PromptLanguage:
    """The prompt set of ``corpus.language``, or an error naming the languages that have one."""
    if code not in LANGUAGES:
        raise ConfigError(f"corpus.language {code!r}: Debian has no asterisk prompts in it; "
                          f"languages with prompts: {', '.join(sorted(LANGUAGES))}")  # fmt: skip
    return LANGUAGES[code]


def split_prompts(cuts: CutSet, dev_fraction: float, test_fraction: float, seed: int) -> dict[str, CutSet]:
    """``train``/``dev``/``test`` of a prompt set by text: every prompt text (case and
    punctuation aside) goes to one split, drawn by a hash of ``seed`` and the text, so prompts
    of the same text ("Goodbye" under two names) are always together, no text is in two splits
    and a seed gives the same split on every machine."""
    split = {cut.id: text_mod.split_of(cut.supervisions[0].text, dev_fraction, test_fraction, seed)
             for cut in cuts}  # fmt: skip
    return {name: cuts.filter(lambda cut, name=name: split[cut.id] == name).to_eager()
            for name in text_mod.SPLITS}  # fmt: skip


def padding_sentences(cfg: CorpusConfig, held_out: Iterable[str]) -> list[str]:
    """Sentences in ``cfg.language`` to pad the training part with: the speakable translated
    messages of the gettext catalogs ``cfg.catalogs`` (slam.data.corpora.parallel), ``min_words``
    to ``max_words`` words, shuffled by ``cfg.seed``; none with the text of a ``held_out`` prompt."""
    held = {text_mod.sentence_key(text) for text in held_out}
    pool, _ = parallel_pool(cfg)
    return [sentence for sentence in pool if text_mod.sentence_key(sentence) not in held]


@SYNTHESIZERS.register("asterisk")
def prompts_corpus(cfg: CorpusConfig, audio_dir: Path, splits: Iterable[str]) -> SynthesisBuild:
    """One language's prompts as train/dev/test (:func:`split_prompts` with ``cfg.dev_fraction``,
    ``cfg.test_fraction`` and ``cfg.seed``), the training part padded with ``cfg.num_utterances``
    synthetic utterances of :func:`padding_sentences` (``cfg.engines`` voices of ``cfg.language``)."""
    language = prompt_language(cfg.language)
    cuts, dropped = load_asterisk(language=language)
    parts = split_prompts(cuts, cfg.dev_fraction, cfg.test_fraction, cfg.seed)
    summary: dict[str, Any] = {"prompts": str(language.transcripts), "dropped": dropped,
                               "prompts_by_split": {name: len(part) for name, part in parts.items()},
                               "failed_by_split": {}}  # fmt: skip
    if cfg.num_utterances > 0 and "train" in splits:
        held_out = [cut.supervisions[0].text for name in ("dev", "test") for cut in parts[name]]
        # every synthetic utterance is a training one: the fractions only split the prompts
        only_train = dataclasses.replace(cfg, dev_fraction=0.0, test_fraction=0.0)
        pool = padding_sentences(cfg, held_out)
        synthetic, spoken = speak_sentences(only_train, pool, audio_dir, ["train"], language.name)
        parts["train"] = CutSet.from_cuts([*parts["train"], *synthetic["train"]])
        summary.update(spoken)
    return {name: parts[name] for name in splits}, summary


REAL_SOURCES.add("asterisk")
