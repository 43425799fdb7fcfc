"""``asterisk_en``, ``asterisk_fr``: real recorded telephony prompts as test sets.

Audio from the Debian packages ``asterisk-core-sounds-<lang>-wav`` (one female speaker per
language, 8 kHz, resampled lazily to 16 kHz), transcripts from ``asterisk-core-sounds-<lang>``:
a text file of ``name: transcript`` lines, ``;`` comments. The French prompts are those of
the English set said in French, so ``asterisk_fr`` carries the English text of the same prompt
as its translation (recipe ``st``); a French prompt without an English one is dropped.
Transcripts carry annotations that were not spoken (``[beep tone]``, ``(10 seconds of
silence)``, ``<beep ascending>``, ``...``) and digits and keypad symbols that were (``press
1``, ``press *``); both are cleaned so the text is what the speaker says (numbers in the
prompt's language). Prompts left without words (pure tones, silence) or without a wav are
dropped and counted.
"""

from __future__ import annotations

import gzip
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

from slam.config import CorpusConfig
from slam.data.corpora.base import CORPORA, CorpusBuild
from slam.data.corpora.parallel import TRANSLATION
from slam.data.corpora.text import number_to_words
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

    @property
    def transcripts(self) -> Path:
        return Path(f"/usr/share/doc/asterisk-core-sounds-{self.code}/core-sounds-{self.code}.txt.gz")


def _french_number(n: int) -> str:
    from num2words import num2words  # a well-kept speller; only the French set needs it

    return num2words(n, lang="fr")


SOUNDS = Path("/usr/share/asterisk/sounds")
ENGLISH = PromptLanguage("en", "English", "asterisk_en_allison", (SOUNDS / "en_US_f_Allison", SOUNDS / "en"),
                         number_to_words, {"*": "star", "#": "pound"})  # fmt: skip
FRENCH = PromptLanguage("fr", "French", "asterisk_fr_june", (SOUNDS / "fr_CA_f_June", SOUNDS / "fr"),
                        _french_number, {"*": "étoile", "#": "dièse"})  # fmt: skip
_ANNOTATION = r"\[[^\]]*\]|\([^)]*\)|<[^>]*>"  # [beep tone], (silence), <beep>: not speech


def parse_prompts(path: Path) -> list[tuple[str, str]]:
    """``(name, raw transcript)`` pairs of an asterisk sounds text file (plain or .gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    prompts = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        name, sep, text = line.partition(":")
        if not sep or not name.strip() or " " in name.strip():
            log.warning("%s:%d: not a 'name: transcript' line: %r", path, number, line[:80])
            continue
        prompts.append((name.strip(), text.strip()))
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
    if re.search(r"\d[A-Za-z]|[A-Za-z]\.?\d|\d\.\d", text):  # "H.323", "iax2": no single reading
        return None
    text = re.sub(r"\b\d+\b", lambda m: language.spell_number(int(m.group(0))), text)
    text = re.sub(r"\s+([.,])", r"\1", " ".join(text.split())).strip(" ,;:")  # "pound ." -> "pound."
    if not re.search(r"[A-Za-z]", text):
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
    package = f"asterisk-core-sounds-{language.code}"
    if not transcripts.is_file():
        raise FileNotFoundError(f"{transcripts} not found (Debian package {package})")
    if sounds_dir is None:
        sounds_dir = next((d for d in language.sounds_dirs if d.is_dir()), language.sounds_dirs[0])
    if not sounds_dir.is_dir():
        raise FileNotFoundError(f"{sounds_dir} not found (Debian package {package}-wav)")
    dropped: Counter[str] = Counter()
    cuts = []
    for name, raw in parse_prompts(transcripts):
        text = clean_prompt(raw, language)
        wav = sounds_dir / f"{name}.wav"
        if text is None:
            # annotations only (tones, silence), or words with no single reading ("H.323")
            spoken = re.search(r"[A-Za-z]", re.sub(_ANNOTATION, " ", raw))
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


@CORPORA.register("asterisk_en")
def asterisk_en(cfg: CorpusConfig) -> CorpusBuild:
    """The registered real English test set, validated and resampled to ``cfg.sample_rate``."""
    return _validated(cfg, *load_asterisk(), ENGLISH)


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
