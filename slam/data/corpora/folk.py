"""``folk``: real folk tunes from the music21 corpus, a music-captioning corpus (paper V-B).

The music21 package bundles thousands of tunes in ABC notation with their metadata: the
Essen folk-song collection (origin ``O:``, e.g. "Europa, Mitteleuropa, Deutschland"), Ryan's
Mammoth Collection and O'Neill's Music of Ireland (rhythm ``R:``: reel, jig, hornpipe...).
music21 reads the headers (metre ``M:``, key and mode ``K:``); Debian ``abcmidi`` turns each
tune into MIDI; the first seconds are played on a drawn folk instrument and rendered with
FluidSynth like the synthetic pieces (:mod:`.music`). Several captions per clip are composed
from the metadata: "A reel in G major in two-four time, played on the fiddle." / "Fiddle
playing a folk song from Germany in three-four time, key of D major.".

``corpus.source: folk`` draws clips from the Essen and Ryan's collections, split by a hash of
the tune's title (variants of one title stay in one set). The registered set ``folk_oneills``
holds out a whole collection, O'Neill's Irish dance tunes, as the cross-domain test.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mido
import numpy as np
from lhotse import CutSet

from slam.config import CorpusConfig
from slam.data.corpora.base import CORPORA, SYNTHESIZERS, CorpusBuild
from slam.data.corpora.music import SOUNDFONT, ClipPlan, Event, render_clips, split_clips
from slam.data.corpora.scenes import distinct_captions
from slam.data.corpora.text import SPLITS
from slam.data.corpora.validate import validate_cuts

log = logging.getLogger(__name__)

TRAIN_COLLECTIONS = ("essenFolksong", "ryansMammoth")
HELD_OUT_COLLECTION = "oneills1850"
COLLECTION_ORIGIN = {"oneills1850": "Ireland"}  # where the whole collection comes from
# what a folk tune is played on: caption word -> General MIDI program (0-based)
FOLK_INSTRUMENTS = {"fiddle": 40, "flute": 73, "accordion": 21, "piano": 0, "tin whistle": 78,
                    "harp": 46, "acoustic guitar": 24, "clarinet": 71}  # fmt: skip
# the Essen origins (German) in English; a place not listed is left out of the captions
ORIGINS = {
    "deutschland": "Germany", "luxemburg": "Luxembourg", "lothringen": "Lorraine",
    "irland": "Ireland", "oesterreich": "Austria", "schweiz": "Switzerland",
    "niederlande": "the Netherlands", "ungarn": "Hungary", "china": "China", "polen": "Poland",
    "jugoslawien": "Yugoslavia", "rumaenien": "Romania", "frankreich": "France",
    "udssr": "Russia", "russland": "Russia", "daenemark": "Denmark", "schweden": "Sweden",
    "tschechoslowakei": "Czechoslovakia", "italien": "Italy", "elsass": "Alsace",
}  # fmt: skip
_REGIONS = {"europa", "mitteleuropa", "westeuropa", "osteuropa", "suedosteuropa", "nordeuropa",
            "suedeuropa", "asien", "ostasien"}  # fmt: skip
_NUMBERS = {2: "two", 3: "three", 4: "four", 6: "six", 8: "eight", 9: "nine", 12: "twelve"}
_ACCIDENTALS = {"#": " sharp", "-": " flat"}


@dataclass(frozen=True)
class Tune:
    """One tune of a music21 ABC file and what its captions may say."""

    collection: str
    path: str  # the ABC file, relative to the music21 corpus
    number: int  # its ``X:`` reference number in that file
    title: str
    rhythm: str  # "reel", "slip jig", ...; "folk song" where the file does not say
    metre: str  # "6/8"
    key_name: str  # "G major", "A dorian"
    origin: str | None

    @property
    def split_key(self) -> str:
        return re.sub(r"\W+", " ", self.title.lower()).strip()


def corpus_root() -> Path:
    try:
        from music21 import common
    except ImportError as e:  # pragma: no cover - music21 is a project dependency
        raise RuntimeError("the folk corpus needs music21 (pip install music21)") from e
    return Path(common.getCorpusFilePath())


def origin_of(field: str) -> str | None:
    """The country of an Essen ``O:`` field: "Europa, Mitteleuropa, Deutschland (BRD), Hessen"
    -> "Germany"; None when the place is not one of ``ORIGINS``."""
    for part in re.split(r"[,/;]", field):
        name = re.sub(r"\(.*?\)", "", part).strip().lower()
        if name and name not in _REGIONS:
            return ORIGINS.get(name)
    return None


def _metre(field: str) -> str | None:
    """``M:`` as "6/8"; common time "C" is 4/4 and cut time "C|" 2/2; None if free or odd."""
    field = {"C": "4/4", "C|": "2/2"}.get(field.strip(), field.strip())
    return field if re.fullmatch(r"\d+/\d+", field) else None


def _rhythm(field: str) -> str:
    words = field.strip().rstrip("]").lower().replace("slipjig", "slip jig")
    return words if re.fullmatch(r"[a-z][a-z ]{1,20}", words) else ""


@functools.lru_cache(maxsize=8)
def load_tunes(collection: str) -> tuple[Tune, ...]:
    """Every tune of one music21 collection with a title, metre and key (music21 reads the
    headers); ``R:`` is a rhythm in the dance-tune books and a genre code in Essen."""
    from music21 import abcFormat, key

    root = corpus_root()
    files = sorted((root / collection).glob("*.abc"))
    if not files:
        raise FileNotFoundError(f"no ABC files for collection {collection!r} under {root}")
    tunes = []
    for file in files:
        handler = abcFormat.ABCHandler()
        handler.process(file.read_text(encoding="latin-1"))
        for number, tune in handler.splitByReferenceNumber().items():
            meta = {}
            for token in tune.tokens:
                if isinstance(token, abcFormat.ABCMetadata) and token.tag not in meta:
                    meta[token.tag] = token
            if not {"T", "M", "K"} <= meta.keys():
                continue
            signature, metre = meta["K"].getKeySignatureObject(), _metre(meta["M"].data)
            if not isinstance(signature, key.Key) or metre is None:
                continue
            tonic = signature.tonic.name[0] + _ACCIDENTALS.get(signature.tonic.name[1:], "")
            rhythm = _rhythm(meta["R"].data) if "R" in meta and collection != "essenFolksong" else ""
            origin = origin_of(meta["O"].data) if "O" in meta else COLLECTION_ORIGIN.get(collection)
            default_rhythm = "folk song" if collection == "essenFolksong" else "tune"
            tunes.append(Tune(collection, f"{collection}/{file.name}", int(number), meta["T"].data.strip(),
                              rhythm or default_rhythm, metre, f"{tonic} {signature.mode}",
                              origin))  # fmt: skip
    log.info("folk: %d tunes in %s", len(tunes), collection)
    return tuple(tunes)


# ------------------------------------------------------------------------------ captions
def _article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _metre_words(metre: str) -> str:
    top, bottom = (int(n) for n in metre.split("/"))
    if top in _NUMBERS and bottom in _NUMBERS:
        return f"{_NUMBERS[top]}-{_NUMBERS[bottom]} time"
    return f"{metre} time"


def compose_caption(tune: Tune, instrument: str, rng: np.random.Generator) -> str:
    """One caption naming the rhythm, metre, key, instrument and (when known) origin."""
    rhythm, metre, key = tune.rhythm, _metre_words(tune.metre), tune.key_name
    origin = f" from {tune.origin}" if tune.origin else ""
    music_from = f", music{origin}" if origin else ""
    templates = [
        f"{_article(rhythm)}{origin} in {key}, {metre}, played on the {instrument}",
        f"{instrument} playing {_article(rhythm)}{origin} in {metre}, key of {key}",
        f"{_article(rhythm)} in {metre} and {key} on the {instrument}{music_from}",
        f"the {instrument} plays {_article(rhythm)} in {key}{origin and ','}{origin} in {metre}",
        f"solo {instrument}: {_article(rhythm)}{origin}, {key}, {metre}",
    ]
    text = templates[int(rng.integers(len(templates)))]
    return text[0].upper() + text[1:] + "."


def compose_captions(tune: Tune, instrument: str, rng: np.random.Generator, num: int = 5) -> list[str]:
    return distinct_captions(lambda: compose_caption(tune, instrument, rng), num)


# ------------------------------------------------------------------------------ audio
def tune_notes(tune: Tune, seconds: float) -> list[Event]:
    """The tune's first ``seconds`` as ``(start, end, note)`` in seconds, through abc2midi
    (tempo from ``Q:``, else abc2midi's default); [] when abc2midi writes no notes."""
    if shutil.which("abc2midi") is None:
        raise RuntimeError("abc2midi is not installed (Debian package abcmidi): it plays the folk tunes")
    with tempfile.TemporaryDirectory() as tmp:
        midi_path = Path(tmp) / "tune.mid"
        cmd = ["abc2midi", str(corpus_root() / tune.path), str(tune.number), "-o", str(midi_path)]
        subprocess.run(cmd, capture_output=True, text=True, timeout=60)  # warns on most tunes
        if not midi_path.is_file():
            return []
        now, sounding, notes = 0.0, {}, []
        for message in mido.MidiFile(midi_path):  # times in seconds, tempo changes applied
            now += message.time
            if now >= seconds + 1.0:
                break
            if message.type == "note_on" and message.velocity > 0:
                sounding.setdefault((message.channel, message.note), now)
            elif message.type in ("note_on", "note_off"):
                start = sounding.pop((message.channel, message.note), None)
                if start is not None and start < seconds and now - start > 0.02:
                    notes.append((start, min(now, seconds + 0.5), message.note))
    return sorted(notes)


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, stream, 7])  # 7: apart from the music source's streams


def render_tunes(
    tunes: tuple[Tune, ...], picks: Iterable[tuple[int, int]], cfg: CorpusConfig, prefix: str,
    audio_dir: Path, seconds: float = 8.0,
) -> tuple[list[tuple[Any, Tune]], list[Tune]]:
    """Render each ``(index, tune number)`` pick on a drawn instrument (abc2midi runs in the
    rendering workers); returns ``(cut, tune)`` pairs and the tunes abc2midi could not play."""
    seed = cfg.seed

    def plan(index: int, tune: Tune) -> ClipPlan | None:
        instrument = list(FOLK_INSTRUMENTS)[int(_rng(seed, index, 1).integers(len(FOLK_INSTRUMENTS)))]
        notes = tune_notes(tune, seconds)
        if not notes:
            return None
        captions = compose_captions(tune, instrument, _rng(seed, index, 2))
        custom = {"tune": tune.path, "number": tune.number, "title": tune.title, "rhythm": tune.rhythm,
                  "metre": tune.metre, "key": tune.key_name, "origin": tune.origin,
                  "instrument": instrument}  # fmt: skip
        return ClipPlan(FOLK_INSTRUMENTS[instrument], notes, captions, custom)

    tune_of = {f"{prefix}-s{seed}-{i:06d}": (i, tunes[t]) for i, t in picks}
    plans = [(cut_id, functools.partial(plan, i, tune)) for cut_id, (i, tune) in tune_of.items()]
    cuts, failed = render_clips(audio_dir, plans, SOUNDFONT, cfg.sample_rate, prefix, cfg.num_workers)
    return [(cut, tune_of[cut.id][1]) for cut in cuts], [tune_of[cut_id][1] for cut_id in failed]


@SYNTHESIZERS.register("folk")
def synthesize_folk_corpus(
    cfg: CorpusConfig, audio_dir: Path, splits: Iterable[str] = SPLITS
) -> tuple[dict[str, CutSet], dict[str, Any]]:
    """``corpus.source: folk``: ``corpus.num_utterances`` clips, a collection drawn uniformly
    for each (Essen's 8,000 songs would otherwise drown Ryan's 1,000 dance tunes), then a tune."""
    start = time.perf_counter()
    pools = [load_tunes(c) for c in TRAIN_COLLECTIONS]
    tunes = tuple(t for pool in pools for t in pool)
    offsets = np.cumsum([0] + [len(p) for p in pools])
    picks = []
    for index in range(cfg.num_utterances):
        rng = _rng(cfg.seed, index, 0)
        c = int(rng.integers(len(pools)))
        picks.append((index, int(offsets[c] + rng.integers(len(pools[c])))))
    rendered, failed = render_tunes(tunes, picks, cfg, "folk", audio_dir)
    return split_clips(cfg, [(cut, tune.split_key) for cut, tune in rendered], splits, start, "folk",
                       failed_keys=[tune.split_key for tune in failed])  # fmt: skip


@CORPORA.register("folk_oneills")
def folk_oneills(cfg: CorpusConfig) -> CorpusBuild:
    """The cross-domain test: tunes of a collection never trained on (O'Neill's Music of
    Ireland), ``num_utterances x test_fraction`` of them, drawn without repeats."""
    tunes = load_tunes(HELD_OUT_COLLECTION)
    wanted = min(len(tunes), max(1, round(cfg.num_utterances * cfg.test_fraction)))
    order = np.random.default_rng([cfg.seed, 11]).permutation(len(tunes))[:wanted]
    picks = [(i, int(t)) for i, t in enumerate(order)]
    audio_dir = Path(cfg.dir) / "audio" / "folk_oneills"
    rendered, failed = render_tunes(tunes, picks, cfg, "folk-oneills", audio_dir)
    cuts = CutSet.from_cuts([cut for cut, _ in rendered])
    cut_set, counts = validate_cuts(cuts, cfg.sample_rate, cfg.skip_bad)
    if failed:
        counts["skipped"]["render_failed"] = len(failed)
    counts["source"] = HELD_OUT_COLLECTION
    return cut_set, counts


