"""``asterisk_en``: real recorded English telephony prompts as a test set.

Audio from the Debian package ``asterisk-core-sounds-en-wav`` (one female speaker, 8 kHz,
resampled lazily to 16 kHz), transcripts from ``asterisk-core-sounds-en``: a text file of
``name: transcript`` lines, ``;`` comments. Transcripts carry annotations that were not
spoken (``[beep tone]``, ``(10 seconds of silence)``, ``<beep ascending>``, ``...``) and
digits and keypad symbols that were (``press 1``, ``press *``); both are cleaned so the text
is what the speaker says. Prompts left without words (pure tones, silence) or without a wav
are dropped and counted.
"""

from __future__ import annotations

import gzip
import logging
import re
from collections import Counter
from pathlib import Path

from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

from slam.config import CorpusConfig
from slam.corpora.base import CORPORA, CorpusBuild
from slam.corpora.text import number_to_words
from slam.corpora.validate import validate_cuts

log = logging.getLogger(__name__)

TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
SOUNDS_DIRS = (
    Path("/usr/share/asterisk/sounds/en_US_f_Allison"),  # where the -wav package puts them
    Path("/usr/share/asterisk/sounds/en"),  # alternatives symlink to the same
)
SPEAKER = "asterisk_en_allison"
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


def clean_prompt(text: str) -> str | None:
    """The spoken words of a transcript; ``None`` if nothing (or nothing unambiguous) is left.

    >>> clean_prompt("Press 1 for sales [beep] ...")
    'Press one for sales'
    """
    text = re.sub(_ANNOTATION, " ", text)
    text = re.sub(r"\.{2,}|\u2026", " ", text)
    text = text.replace('"', " ").replace("*", " star ").replace("#", " pound ")
    text = re.sub(r"\b(\d+)([A-Z])\b", r"\1 \2", text)  # "3D audio" -> "3 D audio"
    if re.search(r"\d[A-Za-z]|[A-Za-z]\.?\d|\d\.\d", text):  # "H.323", "iax2": no single reading
        return None
    text = re.sub(r"\b\d+\b", lambda m: number_to_words(int(m.group(0))), text)
    text = " ".join(text.split()).strip(" ,;:")
    if not re.search(r"[A-Za-z]", text):
        return None
    return text


def load_asterisk(
    transcripts: Path = TRANSCRIPTS, sounds_dir: Path | None = None, speaker: str = SPEAKER
) -> tuple[CutSet, dict[str, int]]:
    """Pair prompts with their wavs (``<sounds_dir>/<name>.wav``); counts of what was dropped."""
    if not transcripts.is_file():
        raise FileNotFoundError(f"{transcripts} not found (Debian package asterisk-core-sounds-en)")
    if sounds_dir is None:
        sounds_dir = next((d for d in SOUNDS_DIRS if d.is_dir()), SOUNDS_DIRS[0])
    if not sounds_dir.is_dir():
        raise FileNotFoundError(f"{sounds_dir} not found (Debian package asterisk-core-sounds-en-wav)")
    dropped: Counter[str] = Counter()
    cuts = []
    for name, raw in parse_prompts(transcripts):
        text = clean_prompt(raw)
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
        cut_id = "asterisk_en-" + name.replace("/", "-")
        recording = Recording.from_file(wav, recording_id=cut_id)
        supervision = SupervisionSegment(
            id=cut_id, recording_id=cut_id, start=0.0, duration=recording.duration, channel=0,
            text=text, speaker=speaker, language="English", custom={"prompt": name},
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
    log.info("asterisk_en: %d prompts with audio and text, dropped %s", len(cuts), dict(dropped))
    return CutSet.from_cuts(cuts), dict(dropped)


@CORPORA.register("asterisk_en")
def asterisk_en(cfg: CorpusConfig) -> CorpusBuild:
    """The registered real English test set, validated and resampled to ``cfg.sample_rate``."""
    cuts, dropped = load_asterisk()
    cuts, counts = validate_cuts(cuts, cfg.sample_rate, cfg.skip_bad)
    counts["skipped"] = {**dropped, **counts["skipped"]}
    counts["source"] = str(TRANSCRIPTS)
    return cuts, counts
