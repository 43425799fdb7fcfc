"""``corpus.source: styles``: speaking-style captioning (recipe ``style_caption``, the paper's
Table XII analogue, speech emotion captioning).

No emotional speech corpus is offline, but a synthesiser's style is controllable: each clip is
an English sentence (the tts source's pool) read by espeak-ng with a drawn :class:`Style` (the
speaker's sex by voice variant, the rate, the pitch, and long pauses between words or none), and
five reference captions are composed from the SAME choices in varied wording, so every caption
is true of its clip: "A woman speaks quickly in a high-pitched voice." / "Fast speech from a
female speaker with a high pitch." Loudness is not an attribute: Whisper's log-mel features are
normalised to each clip's maximum, so the encoder barely sees it.

The split is by sentence (a hash of its text): no test sentence was heard in training, while
every style is in every split (the task is to describe how a new sentence is said).
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from slam.config import ConfigError, CorpusConfig
from slam.data.corpora import text as text_mod
from slam.data.corpora.base import SYNTHESIZERS, SynthesisBuild
from slam.data.corpora.scenes import distinct_captions
from slam.data.corpora.tts import EspeakEngine, RenderJob, jobs_to_cuts, render

log = logging.getLogger(__name__)

STYLE = "style"  # the supervision's custom key of the clip's attributes
# the attributes and their values, in the order a classifier predicts them
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "sex": ("female", "male"),
    "speed": ("slow", "normal", "fast"),
    "pitch": ("low", "medium", "high"),
    "pauses": ("none", "long"),
}
SPEED_FACTORS = {"slow": 0.65, "normal": 1.0, "fast": 1.5}  # x espeak's 175 words a minute
PITCHES = {"low": 12, "medium": 50, "high": 88}  # espeak -p (0-99)
WORD_GAP = 30  # espeak -g in 10 ms units: 300 ms of silence between words
PAUSE_SHARE = 0.3  # of the clips read with long pauses
# espeak-ng voice variants by the sex they sound (the named ones are left out: unsure)
VARIANTS = {"male": ("m1", "m2", "m3", "m4", "m5", "m6", "m7"), "female": ("f1", "f2", "f3", "f4", "f5")}


@dataclass(frozen=True)
class Style:
    """How a clip is said: what its captions describe, nothing else."""

    sex: str
    speed: str
    pitch: str
    pauses: str

    def __post_init__(self) -> None:
        for name, values in ATTRIBUTES.items():
            if getattr(self, name) not in values:
                raise ValueError(f"style {name} {getattr(self, name)!r}: one of {values}")


def draw_style(rng: random.Random) -> Style:
    return Style(sex=rng.choice(ATTRIBUTES["sex"]), speed=rng.choice(ATTRIBUTES["speed"]),
                 pitch=rng.choice(ATTRIBUTES["pitch"]),
                 pauses="long" if rng.random() < PAUSE_SHARE else "none")  # fmt: skip


# -------------------------------------------------------------------------------- captions
# words for each value; a caption draws one of each list (the first: the template caption)
_NOUN = {"female": ["woman", "female speaker"], "male": ["man", "male speaker"]}
_ADJECTIVE = {"female": ["female"], "male": ["male"]}
_HOW_FAST = {"slow": ["slowly", "at a slow pace", "unhurriedly"],
             "normal": ["at a normal pace", "at an even pace", "at a moderate speed"],
             "fast": ["quickly", "fast", "at a rapid pace"]}  # fmt: skip
_FAST_ADJECTIVE = {"slow": ["slow", "unhurried"], "normal": ["steady", "evenly paced"],
                   "fast": ["fast", "rapid", "hurried"]}  # fmt: skip
_PITCH = {"low": ["low", "deep"], "medium": ["medium", "moderate"], "high": ["high", "raised"]}
_PITCHED = {"low": ["low-pitched", "deep"], "medium": ["medium-pitched", "mid-pitched"],
            "high": ["high-pitched", "high"]}  # fmt: skip
_PAUSES = {"none": [""], "long": [", pausing between words", ", with long pauses between words",
                                  ", word by word"]}  # fmt: skip
_TEMPLATES = (
    "A {noun} speaks {how_fast} in a {pitched} voice{pauses}.",
    "{Fast} speech from a {adjective} speaker with a {pitch} pitch{pauses}.",
    "A {pitched} {adjective} voice reads a sentence {how_fast}{pauses}.",
    "The {noun} talks {how_fast} in a {pitch} voice{pauses}.",
    "Someone with a {pitched} {adjective} voice says a sentence {how_fast}{pauses}.",
)


def compose_caption(style: Style, rng: random.Random | None = None, template: int | None = None) -> str:
    """One caption of ``style``: a drawn template and words, or with no ``rng`` the first of each
    (the template caption a classifier's prediction becomes)."""
    pick = rng.choice if rng else (lambda options: options[0])
    words = {"noun": pick(_NOUN[style.sex]), "adjective": pick(_ADJECTIVE[style.sex]),
             "how_fast": pick(_HOW_FAST[style.speed]),
             "Fast": pick(_FAST_ADJECTIVE[style.speed]).capitalize(),
             "pitch": pick(_PITCH[style.pitch]), "pitched": pick(_PITCHED[style.pitch]),
             "pauses": pick(_PAUSES[style.pauses])}  # fmt: skip
    chosen = _TEMPLATES[template if template is not None else (rng.randrange(len(_TEMPLATES)) if rng else 0)]
    return chosen.format(**words)


def style_captions(style: Style, rng: random.Random, num: int = 5) -> list[str]:
    """``num`` distinct captions of ``style``, one per template first."""
    firsts = [compose_caption(style, rng, template=i) for i in range(min(num, len(_TEMPLATES)))]
    return firsts if len(firsts) == num else distinct_captions(lambda: compose_caption(style, rng), num)


# what a caption says of each attribute, read back by keywords (the captions' vocabulary above):
# the first value whose pattern matches; an attribute no pattern matches is not said
_SAID: dict[str, tuple[tuple[str, str], ...]] = {
    "sex": (("female", r"\b(woman|female)\b"), ("male", r"\b(man|male)\b")),
    "speed": (("slow", r"\b(slow|slowly|unhurried|unhurriedly)\b"),
              ("fast", r"\b(fast|quickly|rapid|hurried)\b"),
              ("normal", r"\b(normal pace|even pace|evenly paced|moderate speed|steady)\b")),
    "pitch": (("high", r"\b(high|raised)\b"), ("low", r"\b(low|deep)\b"),
              ("medium", r"\b(medium|mid|moderate)\b(?! speed)")),
    "pauses": (("long", r"\b(paus\w*|word by word)\b"),),
}  # fmt: skip


def said_style(caption: str) -> dict[str, str | None]:
    """The attribute values a caption states (``None``: not said; pauses unsaid: "none").

    >>> said_style("A deep male voice reads a sentence quickly, word by word.")
    {'sex': 'male', 'speed': 'fast', 'pitch': 'low', 'pauses': 'long'}
    """
    text = caption.lower().replace("low-pitched", "low").replace("high-pitched", "high")
    said: dict[str, str | None] = {}
    for name, patterns in _SAID.items():
        said[name] = next((value for value, pattern in patterns if re.search(pattern, text)), None)
    said["pauses"] = said["pauses"] or "none"
    return said


def style_of(cut: Any) -> Style:
    """A cut's :class:`Style` (``custom["style"]`` of its supervision)."""
    return Style(**cut.supervisions[0].custom[STYLE])


# -------------------------------------------------------------------------------- synthesis
def plan_styles(
    sentences: dict[str, list[str]], voices: list[str], seed: int
) -> list[tuple[RenderJob, Style]]:
    """One espeak job per sentence with a drawn style and a voice of its sex."""
    planned = []
    for split, texts in sentences.items():
        for index, text in enumerate(texts):
            rng = text_mod.stable_rng(seed, index, text)
            style = draw_style(rng)
            variants = [v for v in voices if v.split("+", 1)[1] in VARIANTS[style.sex]]
            if not variants:
                raise ConfigError(f"corpus.source styles: espeak-ng has no {style.sex} voice variant here")
            key = hashlib.sha256(text.encode()).hexdigest()[:12]
            gap = WORD_GAP if style.pauses == "long" else 0
            job = RenderJob(id=f"style_{key}_{split}{index}", split=split, text=text, engine="espeak",
                            voice=rng.choice(variants), speed=SPEED_FACTORS[style.speed],
                            pitch=PITCHES[style.pitch], word_gap=gap)  # fmt: skip
            planned.append((job, style))
    return planned


@SYNTHESIZERS.register("styles")
def synthesize_styles(cfg: CorpusConfig, audio_dir: Path, splits: Iterable[str]) -> SynthesisBuild:
    """English sentences -> a style each -> espeak-ng -> cuts with the style and 5 captions."""
    if cfg.language != "en":
        raise ConfigError(f"corpus.language {cfg.language!r}: source styles speaks English")
    splits = [s for s in text_mod.SPLITS if s in set(splits)]
    pool = text_mod.sentence_pool(cfg.min_words, cfg.max_words, cfg.seed)
    sentences = text_mod.pick_sentences(pool, cfg.num_utterances, cfg.dev_fraction, cfg.test_fraction, splits)
    engine = EspeakEngine("en")
    planned = plan_styles(sentences, engine.installed_voices(), cfg.seed)
    jobs = [job for job, _ in planned]
    report = render(jobs, audio_dir, {"espeak": engine}, cfg.num_workers, cfg.sample_rate)
    styles = {job.id: style for job, style in planned}
    cuts = {}
    for split in splits:
        cuts[split] = jobs_to_cuts([job for job, _ in planned if job.split == split], report)
        for cut in cuts[split]:
            style = styles[cut.id]
            sup = cut.supervisions[0]
            captions = style_captions(style, text_mod.stable_rng(cfg.seed, -1, sup.text))
            sup.custom = {**(sup.custom or {}), STYLE: asdict(style), "captions": captions}
    failed = Counter(job.split for job, _ in planned if job.id in report.failed)
    summary = {"pool_sentences": len(pool), "utterances": len(report.done), "failed": len(report.failed),
               "failed_by_split": dict(failed), "audio_hours": round(report.audio_seconds / 3600, 4),
               "wall_seconds": round(report.wall_seconds, 1),
               "styles": {name: dict(Counter(getattr(style, name) for _, style in planned))
                          for name in ATTRIBUTES}}  # fmt: skip
    return cuts, summary
