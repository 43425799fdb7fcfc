"""``tuxpaint``: real environmental recordings with a one-line description, a captioning test set.

From the Debian package ``tuxpaint-stamps-default``: under ``/usr/share/tuxpaint/stamps/``
every stamp ``<dir>/<name>`` is an image (``<name>.png`` or ``.svg``), a description
(``<name>.txt``: the English text on the first line, then ``<locale>.utf8=<text>``
translations) and, for about one stamp in seven, a sound effect (``<name>.ogg``, or ``.wav``)
recorded at 5-44.1 kHz, mono or stereo. ``<name>_desc*.ogg`` (the description read aloud)
and ``<name>_<locale>.ogg`` (localised sounds) are speech, not the stamp's sound, and are
ignored. The English description is the caption: "A crow.", "An electric kettle.".

Stamps under ``symbols/`` (spoken digits, letters and moods) are speech too and are left out
by default; so are sounds without a description and all-zero sounds, each counted. Audio is
resampled lazily to the corpus rate and averaged to mono on load by Lhotse. Some descriptions
name the object rather than its sound ("A checkered flag.", the dreidel rules): they are kept
as the package has them (``custom["stamp"]`` names each stamp, to filter on).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf
from lhotse import CutSet, Recording, SupervisionSegment
from lhotse.utils import fastcopy

from slam.config import CorpusConfig
from slam.data.corpora.base import CORPORA, CorpusBuild
from slam.data.corpora.validate import validate_cuts

log = logging.getLogger(__name__)

STAMPS_DIR = Path("/usr/share/tuxpaint/stamps")
SOUND_SUFFIXES = (".ogg", ".wav")  # the order Tux Paint tries them
IMAGE_SUFFIXES = (".png", ".svg")
EXCLUDE_DIRS = ("symbols",)  # spoken digits, letters and moods: speech, not sound events
_TRANSLATION = re.compile(r"^[A-Za-z]{2,3}(_[A-Za-z]{2,4})?(@\w+)?\.(utf8|UTF-8)=")
_LOCALE_SUFFIX = re.compile(r"_[a-z]{2,3}(_[A-Za-z]{2,4})?(@\w+)?$")  # 7_en_GB, 7_zh_tw


def read_description(path: Path) -> str | None:
    """The English description of a stamp's ``.txt`` (its first line that is no translation)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        line = " ".join(line.split())
        if line and not _TRANSLATION.match(line):
            return line
    return None


def is_silent(path: Path) -> bool:
    """Whether a sound decodes to nothing but zeros (or fails to decode: validation says why)."""
    try:
        samples, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception:  # libsndfile errors vary by format; validate_cuts reports them
        return False
    return not np.any(samples)


def find_stamps(stamps_dir: Path) -> list[Path]:
    """Every stamp as ``<dir>/<name>`` without suffix: whatever has an image, a description or
    a sound of its own (not ``_desc`` speech, not a localised ``<stamp>_<locale>`` sound)."""
    stems = {p.with_suffix("") for p in stamps_dir.rglob("*") if p.suffix in (*IMAGE_SUFFIXES, ".txt")}
    for sound in stamps_dir.rglob("*"):
        if sound.suffix not in SOUND_SUFFIXES or "_desc" in sound.stem:
            continue
        stem = sound.with_suffix("")
        localised_of = stem.with_name(_LOCALE_SUFFIX.sub("", stem.name))
        if localised_of != stem and localised_of in stems:
            continue
        stems.add(stem)
    return sorted(stems)


def load_tuxpaint(
    stamps_dir: Path = STAMPS_DIR, exclude_dirs: tuple[str, ...] = EXCLUDE_DIRS
) -> tuple[CutSet, dict[str, int], int]:
    """Cuts of the stamps with a sound and a description; what was dropped, by reason; and the
    number of stamps without any sound (most of them: not drops, just not sound stamps)."""
    if not stamps_dir.is_dir():
        raise FileNotFoundError(f"{stamps_dir} not found (Debian package tuxpaint-stamps-default)")
    dropped: Counter[str] = Counter()
    silent = 0
    cuts = []
    for stem in find_stamps(stamps_dir):
        sound = next((p for s in SOUND_SUFFIXES if (p := stem.with_name(stem.name + s)).is_file()), None)
        if sound is None:
            silent += 1
            continue
        rel = stem.relative_to(stamps_dir).as_posix()
        if rel.split("/", 1)[0] in exclude_dirs:
            dropped["speech"] += 1
            continue
        text = read_description(stem.with_name(stem.name + ".txt"))
        if text is None:
            dropped["no_description"] += 1
            log.info("tuxpaint %s: sound without a description", rel)
            continue
        if is_silent(sound):
            # the package ships four placeholders (giraffe, iguana, rhea, wombat): not a user error
            dropped["silent_audio"] += 1
            log.info("tuxpaint %s: %s is all zeros", rel, sound.name)
            continue
        cut_id = "tuxpaint-" + rel.replace("/", "-")
        recording = Recording.from_file(sound, recording_id=cut_id)
        cut = recording.to_cut()  # every channel: validation averages stereo to mono on load
        supervision = SupervisionSegment(
            id=cut_id, recording_id=cut_id, start=0.0, duration=recording.duration, channel=cut.channel,
            text=text, language="English", custom={"captions": [text], "stamp": rel},
        )  # fmt: skip
        cuts.append(fastcopy(cut, id=cut_id, supervisions=[supervision]))
    log.info(
        "tuxpaint: %d sounds with a description, dropped %s, %d stamps without sound",
        len(cuts), dict(dropped), silent,
    )  # fmt: skip
    return CutSet.from_cuts(cuts), dict(dropped), silent


@CORPORA.register("tuxpaint")
def tuxpaint(cfg: CorpusConfig) -> CorpusBuild:
    """The registered real captioning test set, validated and resampled to ``cfg.sample_rate``."""
    cuts, dropped, silent = load_tuxpaint(STAMPS_DIR)
    cuts, counts = validate_cuts(cuts, cfg.sample_rate, cfg.skip_bad)
    counts["skipped"] = {**dropped, **counts["skipped"]}
    counts["stamps_without_sound"] = silent
    counts["source"] = str(STAMPS_DIR)
    return cuts, counts
