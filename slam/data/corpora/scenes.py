"""``scenes``: a procedurally synthesised sound-event captioning corpus (paper section V-A).

Each clip is a scene drawn from a seeded generator: one to three events among beeps (pitch,
count), chirps (rising or falling), noise bursts (white or pink, short or long), clicks (slow
or fast), chords (major or minor) and a low hum, each quiet, normal or loud; the events
other than the hum come one after another or overlap, the hum lies under the whole clip;
optionally a faint background hiss and reverb. The audio is synthesised with numpy (16 kHz
mono WAV, hundreds of times faster than real time), and several reference captions are
composed from the SAME choices in varied wording, so every caption is true of its clip:
"A high beep repeats three times over a low hum." / "Three high-pitched beeps sound, with a
steady drone underneath."

What a caption says is :attr:`Scene.key`; the exact pitches, timings and room are drawn per
clip and never named. The train/dev/test split is a hash of that key, so a scene drawn twice
lands in one set and no test scene was heard in training. Clip ``i`` of a seed is the same
whatever ``num_clips`` is (each clip has its own generators, seeded by ``(seed, i)``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from lhotse import AudioSource, CutSet, MonoCut, Recording, SupervisionSegment

from slam.config import CorpusConfig
from slam.data.corpora.base import SYNTHESIZERS
from slam.data.corpora.text import SPLITS, split_of_key
from slam.utils import atomic_path

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
KINDS = ("beep", "chirp", "noise", "clicks", "chord", "hum")
KIND_WEIGHTS = (0.25, 0.17, 0.17, 0.15, 0.14, 0.12)
LOUDNESS = ("quiet", "normal", "loud")
EVENT_DB = {"quiet": -32.0, "normal": -22.0, "loud": -14.0}  # RMS of the sounding part, dBFS
HUM_DB = {"quiet": -38.0, "normal": -30.0, "loud": -22.0}  # a bed under the events: lower
BACKGROUND_DB = -44.0
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
_STREAMS = {"scene": 0, "audio": 1, "words": 2}  # one generator per purpose: wording never moves audio


@dataclass(frozen=True)
class Event:
    """One sound event: its kind and the attributes the captions name (unused ones stay empty)."""

    kind: str
    loudness: str = "normal"
    pitch: str = ""  # beep: low, mid, high
    count: int = 0  # beep: how many
    direction: str = ""  # chirp: rising, falling
    colour: str = ""  # noise: white, pink
    length: str = ""  # noise: short, long
    rate: str = ""  # clicks: slow, fast
    mode: str = ""  # chord: major, minor

    @property
    def key(self) -> str:
        details = [self.pitch, str(self.count) if self.count else "", self.direction, self.colour,
                   self.length, self.rate, self.mode]  # fmt: skip
        return ":".join([self.kind, self.loudness, *(d for d in details if d)])


@dataclass(frozen=True)
class Scene:
    """The choices behind one clip: what its captions describe, nothing else."""

    events: tuple[Event, ...]  # in order of onset; a hum, if any, is last and spans the clip
    overlap: bool = False  # foreground events at once rather than in sequence (needs two)
    background: bool = False  # a faint noise bed under everything
    reverb: bool = False

    @property
    def foreground(self) -> tuple[Event, ...]:
        return tuple(e for e in self.events if e.kind != "hum")

    @property
    def hum(self) -> Event | None:
        return next((e for e in self.events if e.kind == "hum"), None)

    @property
    def key(self) -> str:
        """Canonical description: equal for two scenes exactly when their captions may be."""
        fg = [e.key for e in self.foreground]
        parts = ["&".join(sorted(fg)) if self.overlap else ">".join(fg)]
        if self.hum:
            parts.append(self.hum.key)
        parts += [name for name, on in (("background", self.background), ("reverb", self.reverb)) if on]
        return "|".join(parts)


# ------------------------------------------------------------------------------ choices


def _pick(rng: np.random.Generator, options: tuple | list) -> str:
    return options[int(rng.integers(len(options)))]


def draw_event(kind: str, rng: np.random.Generator) -> Event:
    """An event of ``kind`` with random attributes and loudness."""
    loudness = str(rng.choice(LOUDNESS, p=[0.25, 0.5, 0.25]))
    if kind == "beep":
        count = int(rng.choice([1, 2, 3, 4, 5], p=[0.15, 0.3, 0.3, 0.15, 0.1]))
        return Event(kind, loudness, pitch=_pick(rng, ("low", "mid", "high")), count=count)
    if kind == "chirp":
        return Event(kind, loudness, direction=_pick(rng, ("rising", "falling")))
    if kind == "noise":
        colour, length = _pick(rng, ("white", "pink")), _pick(rng, ("short", "long"))
        return Event(kind, loudness, colour=colour, length=length)
    if kind == "clicks":
        return Event(kind, loudness, rate=_pick(rng, ("slow", "fast")))
    if kind == "chord":
        return Event(kind, loudness, mode=_pick(rng, ("major", "minor")))
    if kind == "hum":
        return Event(kind, loudness)
    raise ValueError(f"unknown event kind {kind!r}; known: {', '.join(KINDS)}")


def draw_scene(rng: np.random.Generator) -> Scene:
    """One to three events of distinct kinds, their arrangement, background and reverb."""
    n = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
    kinds = rng.choice(KINDS, size=n, replace=False, p=KIND_WEIGHTS)
    events = [draw_event(str(k), rng) for k in kinds]
    events.sort(key=lambda e: e.kind == "hum")  # the hum is a bed, not a step in the sequence
    overlap = sum(e.kind != "hum" for e in events) >= 2 and bool(rng.random() < 0.35)
    if overlap:  # "A with B" is "B with A": one canonical order, so one key
        fg = sorted((e for e in events if e.kind != "hum"), key=lambda e: e.key)
        events = fg + [e for e in events if e.kind == "hum"]
    return Scene(tuple(events), overlap, bool(rng.random() < 0.3), bool(rng.random() < 0.3))


# ------------------------------------------------------------------------------ captions
# Vocabulary is kept apart on purpose: number words only count beeps, "noise" only names a
# noise event (the background is a "hiss"/"static"), "hum"/"drone" only the hum, so a
# caption can be checked against its scene word by word.

_LOUD_WORDS = {"quiet": ("quiet", "soft", "faint"), "normal": ("",), "loud": ("loud", "strong", "powerful")}
_LOUD_ADVERBS = {"quiet": ("quietly", "softly", "faintly"), "loud": ("loudly", "strongly")}
_PITCH_WORDS = {
    "low": ("low", "low-pitched", "deep"),
    "mid": ("mid-pitched", "medium-pitched", "medium"),
    "high": ("high", "high-pitched", "shrill"),
}
_TIMES = {1: ("once",), 2: ("twice", "two times"), 3: ("three times",), 4: ("four times",),
          5: ("five times",)}  # fmt: skip
_DIRECTION = {"rising": ("rising", "upward", "ascending"), "falling": ("falling", "downward", "descending")}
_DIRECTION_VERB = {
    "rising": ("rises in pitch", "sweeps up", "glides upward", "climbs"),
    "falling": ("falls in pitch", "sweeps down", "glides downward", "drops"),
}
_NOISE_LENGTH = {"short": ("short", "brief"), "long": ("long", "sustained", "lengthy")}
_NOISE_ADVERB = {"short": ("briefly", "for a moment"), "long": ("for a long time", "at length")}
_RATE = {"slow": ("slow",), "fast": ("fast", "rapid")}
_RATE_ADVERB = {"slow": ("slowly",), "fast": ("rapidly", "quickly")}
_MODE = {"major": ("major", "bright major"), "minor": ("minor", "sad minor", "dark minor")}
_BACKGROUND = (
    ", with faint background hiss", " over soft background static", ", against a quiet background hiss",
    " amid faint static in the background", ", with a soft hiss in the background",
)
_REVERB = (" in a reverberant room", ", echoing", " with a lot of echo", " in an echoing hall",
           ", with reverberation")  # fmt: skip
SEQUENCE_WORDS = ("then", "followed", "after", "first", "turn")
OVERLAP_WORDS = ("same", "together", "while", "simultaneously", "overlapping")


def _a(phrase: str) -> str:
    """``phrase`` with its indefinite article: "an upward sweep", "a high beep"."""
    phrase = " ".join(phrase.split())
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _loud(rng: np.random.Generator, event: Event) -> str:
    word = _pick(rng, _LOUD_WORDS[event.loudness])
    return f"{word} " if word else ""


def event_phrases(event: Event, rng: np.random.Generator) -> tuple[str, str]:
    """A noun phrase and a clause for ``event`` ("three high beeps", "a high beep repeats
    three times"), wording drawn from ``rng``; the hum's clause is its sentence on its own."""
    loud = _loud(rng, event)
    if event.kind == "beep":
        adj = f"{loud}{_pick(rng, _PITCH_WORDS[event.pitch])}"
        noun = _pick(rng, ("beep", "tone", "bleep", "pip"))
        times, num = _pick(rng, _TIMES[event.count]), NUMBERS[event.count]
        if event.count == 1:
            nps = [f"a single {adj} {noun}", f"one {adj} {noun}", f"a lone {adj} {noun}"]
            clauses = [
                f"a single {adj} {noun} sounds",
                f"one {adj} {noun} rings out",
                f"{_a(adj)} {noun} sounds once",
            ]
        else:
            nps = [
                f"{num} {adj} {noun}s",
                f"a series of {num} {adj} {noun}s",
                f"{_a(adj)} {noun} repeated {times}",
            ]
            clauses = [
                f"{_a(adj)} {noun} repeats {times}",
                f"{num} {adj} {noun}s sound",
                f"{_a(adj)} {noun} sounds {times}",
                f"{num} {adj} {noun}s ring out in a row",
            ]
    elif event.kind == "chirp":
        adj = _pick(rng, _DIRECTION[event.direction])
        noun = _pick(rng, ("chirp", "sweep", "whistle"))
        # not "a sweep that sweeps up"
        verb = _pick(rng, [v for v in _DIRECTION_VERB[event.direction] if not v.startswith(noun[:4])])
        nps = [_a(f"{loud}{adj} {noun}"), _a(f"{loud}{noun}") + f" that {verb}"]
        clauses = [_a(f"{loud}{adj} {noun}") + " sounds", _a(f"{loud}{noun}") + f" {verb}"]
    elif event.kind == "noise":
        length, colour = _pick(rng, _NOISE_LENGTH[event.length]), event.colour
        nps = [_a(f"{length} burst of {loud}{colour} noise"), _a(f"{loud}{length} blast of {colour} noise")]
        clauses = [
            _a(f"{length} burst of {loud}{colour} noise") + " plays",
            f"{loud}{colour} noise hisses {_pick(rng, _NOISE_ADVERB[event.length])}",
        ]
    elif event.kind == "clicks":
        rate, adverb = _pick(rng, _RATE[event.rate]), _pick(rng, _RATE_ADVERB[event.rate])
        noun, gerund = _pick(rng, ("clicks", "ticks")), _pick(rng, ("clicking", "ticking"))
        loudly = f" and {_pick(rng, _LOUD_ADVERBS[event.loudness])}" if loud else ""
        nps = [f"{loud}{rate} {noun}", f"{loud}{rate} {gerund}", _a(f"{loud}{rate} series of {noun}")]
        clauses = [
            f"something clicks {adverb}{loudly}",
            f"{loud}{rate} {noun} sound",
            _a(f"{loud}{rate} {gerund} sound") + " plays",
            _a(f"{loud}clock-like {gerund}") + f" goes on {adverb}",
        ]
    elif event.kind == "chord":
        mode = _pick(rng, _MODE[event.mode])
        nps = [_a(f"{loud}{mode} chord"), _a(f"{loud}chord") + f" in a {event.mode} key"]
        clauses = [_a(f"{loud}{mode} chord") + _pick(rng, (" rings", " is struck", " plays", " is played"))]
    elif event.kind == "hum":
        adj, noun = _pick(rng, ("low", "deep", "steady low", "constant low")), _pick(rng, ("hum", "drone"))
        hum = _a(f"{loud}{adj} {noun}")
        nps = [hum]
        clauses = [
            f"{hum} drones on",
            f"{hum} continues throughout",
            f"{hum} fills the recording",
            f"{hum} can be heard",
            f"there is {hum}",
            f"{hum} goes on steadily",
        ]
    else:
        raise ValueError(f"unknown event kind {event.kind!r}")
    return _pick(rng, nps), _pick(rng, clauses)


def _foreground_sentence(scene: Scene, rng: np.random.Generator) -> str:
    events = list(scene.foreground)
    if scene.overlap:  # no order to keep: vary it
        events = [events[i] for i in rng.permutation(len(events))]
    phrases = [event_phrases(e, rng) for e in events]
    a, b, c = ([p[0] for p in phrases] + ["", ""])[:3]  # noun phrases
    ca, cb = ([p[1] for p in phrases] + [""])[:2]  # clauses
    if len(events) == 1:
        options = [ca, ca, f"{a} can be heard", f"you can hear {a}"]
    elif scene.overlap and len(events) == 2:
        options = [
            f"{a} and {b} at the same time",
            f"{ca} while {cb}",
            f"{a} together with {b}",
            f"{a} overlapping with {b}",
            f"{a} and {b} play simultaneously",
        ]
    elif scene.overlap:
        options = [
            f"{a}, {b} and {c} at the same time",
            f"{a}, {b} and {c} all together",
            f"{a} together with {b} and {c}",
            f"{ca} while {b} and {c} play",
        ]
    elif len(events) == 2:
        options = [
            f"{ca}, then {b}",
            f"{a} followed by {b}",
            f"first {a}, then {b}",
            f"{ca}, after which {cb}",
            f"{a} and then {b}",
            f"{cb} after {a}",
        ]
    else:
        options = [
            f"{ca}, then {b}, then {c}",
            f"{a} followed by {b} and then {c}",
            f"first {a}, then {b}, and finally {c}",
            f"{a}, {b} and {c} in turn",
        ]
    return _pick(rng, options)


def compose_caption(scene: Scene, rng: np.random.Generator) -> str:
    """One caption naming every choice of ``scene``, words and structure drawn from ``rng``."""
    modifiers = []
    if scene.foreground:
        main = _foreground_sentence(scene, rng)
        if scene.hum:
            hum = event_phrases(scene.hum, rng)[0]
            if rng.random() < 0.3:
                main = _pick(rng, [f"with {hum} underneath, ", f"over {hum}, "]) + main
            else:
                modifiers.append(_pick(rng, [f" over {hum}", f" above {hum}", f", with {hum} underneath",
                                             f" against {hum}", f", accompanied by {hum} throughout"]))
    else:
        main = event_phrases(scene.events[0], rng)[1]
    if scene.background:
        modifiers.append(_pick(rng, _BACKGROUND))
    if scene.reverb:
        modifiers.append(_pick(rng, _REVERB))
    text = main + "".join(modifiers[i] for i in rng.permutation(len(modifiers)))
    return text[0].upper() + text[1:] + "."


def compose_captions(scene: Scene, rng: np.random.Generator, num: int = 5) -> list[str]:
    """``num`` captions of ``scene``, distinct where the wording allows (a few tries each)."""
    return distinct_captions(lambda: compose_caption(scene, rng), num)


def distinct_captions(compose: Callable[[], str], num: int) -> list[str]:
    """``num`` results of ``compose()``, distinct where it allows (20 tries per caption); a
    clip with little to say repeats captions rather than inventing any."""
    captions: list[str] = []
    for _ in range(20 * num):
        caption = compose()
        if caption not in captions:
            captions.append(caption)
        if len(captions) == num:
            return captions
    while len(captions) < num:
        captions.append(captions[len(captions) % max(len(captions), 1)])
    return captions


# ------------------------------------------------------------------------------ audio


def _fade(x: np.ndarray, sr: int, attack: float = 0.005, release: float = 0.005) -> np.ndarray:
    """Raised-cosine edges: a hard edge clicks, which would be a sound the captions omit."""
    x = x.copy()
    for seconds, at_end in ((attack, False), (release, True)):
        n = min(int(seconds * sr), len(x) // 2)
        if n:
            ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n))
            if at_end:
                x[-n:] *= ramp[::-1]
            else:
                x[:n] *= ramp
    return x


def _pink(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-variance 1/f noise: white noise shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    x = np.fft.irfft(spectrum, n)
    return x / (np.std(x) + 1e-12)


def _tone(freq: float | np.ndarray, n: int, sr: int, harmonics: tuple[float, ...] = (1.0,)) -> np.ndarray:
    """A sum of harmonics of ``freq`` (a constant or one frequency per sample)."""
    phase = 2 * np.pi * np.cumsum(np.broadcast_to(freq, (n,))) / sr
    return sum(a * np.sin((h + 1) * phase) for h, a in enumerate(harmonics))


def render_event(event: Event, rng: np.random.Generator, sr: int) -> np.ndarray:
    """The event's own samples at unit scale (loudness is applied when mixing)."""
    if event.kind == "beep":
        low, high = {"low": (300, 500), "mid": (700, 1100), "high": (1600, 2600)}[event.pitch]
        freq, length, gap = rng.uniform(low, high), rng.uniform(0.08, 0.16), rng.uniform(0.1, 0.22)
        beep = _fade(_tone(freq, int(length * sr), sr, (1.0, 0.15)), sr)
        pause = np.zeros(int(gap * sr))
        parts = [p for _ in range(event.count) for p in (beep, pause)][:-1]
        return np.concatenate(parts)
    if event.kind == "chirp":
        n = int(rng.uniform(0.3, 0.8) * sr)
        start, end = rng.uniform(350, 700), rng.uniform(2000, 3500)
        if event.direction == "falling":
            start, end = end, start
        freq = start * (end / start) ** np.linspace(0, 1, n)  # exponential: even in pitch
        return _fade(_tone(freq, n, sr, (1.0, 0.2)), sr, 0.01, 0.02)
    if event.kind == "noise":
        n = int(rng.uniform(*{"short": (0.15, 0.45), "long": (1.0, 2.0)}[event.length]) * sr)
        x = rng.standard_normal(n) if event.colour == "white" else _pink(rng, n)
        return _fade(x, sr, 0.01, 0.04)
    if event.kind == "clicks":
        rate = rng.uniform(*{"slow": (2.5, 4.0), "fast": (10.0, 16.0)}[event.rate])
        n = int(rng.uniform(1.0, 2.0) * sr)
        click_n = int(0.004 * sr)
        click = rng.standard_normal(click_n) * np.exp(-np.arange(click_n) / (0.0008 * sr))
        x = np.zeros(n + click_n)
        t = 0.0
        while t * sr < n:
            i = int(t * sr)
            x[i : i + click_n] += click
            t += rng.uniform(0.95, 1.05) / rate
        return x
    if event.kind == "chord":
        root, n = rng.uniform(180, 330), int(rng.uniform(0.8, 1.6) * sr)
        steps = (0, 4, 7) if event.mode == "major" else (0, 3, 7)
        x = sum(_tone(root * 2 ** (s / 12), n, sr, (1.0, 0.5, 0.3, 0.15)) for s in steps)
        decay = np.exp(-np.arange(n) / (n / 3))
        return _fade(x * decay, sr, 0.01, 0.05)
    raise ValueError(f"render_event: {event.kind!r} is not a foreground event")


def _hum(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    x = _tone(rng.uniform(55, 120), n, sr, (1.0, 0.6, 0.35, 0.2, 0.1))
    x *= 1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t)  # a slow waver, as real hums have
    return _fade(x, sr, 0.1, 0.1)


def _scaled(x: np.ndarray, db: float) -> np.ndarray:
    """``x`` with the RMS of its sounding part at ``db`` dBFS (silent gaps do not count)."""
    active = np.abs(x) > 1e-3 * (np.abs(x).max() + 1e-12)
    rms = np.sqrt(np.mean(x[active] ** 2)) if active.any() else 1.0
    return x * (10 ** (db / 20) / (rms + 1e-12))


def _reverb(x: np.ndarray, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Convolution with a synthetic room: exponentially decaying noise, RT60 0.4-1 s."""
    rt60 = rng.uniform(0.4, 1.0)
    t = np.arange(int(rt60 * sr)) / sr
    ir = rng.standard_normal(len(t)) * 10 ** (-3 * t / rt60)  # -60 dB at rt60
    ir = np.concatenate([np.zeros(int(0.01 * sr)), ir / np.sqrt(np.sum(ir**2))])  # 10 ms pre-delay
    size = 1 << int(np.ceil(np.log2(len(x) + len(ir))))
    wet = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)[: len(x)]
    return x + rng.uniform(0.4, 0.8) * wet


def render_scene(
    scene: Scene, rng: np.random.Generator, sr: int = SAMPLE_RATE, seconds: tuple[float, float] = (3.0, 6.0)
) -> np.ndarray:
    """The clip's samples (float32, peak <= 0.95): events placed, hum, reverb, background.

    The length is drawn from ``seconds``, longer only when the events need more room.
    """
    parts = [_scaled(render_event(e, rng, sr), EVENT_DB[e.loudness]) for e in scene.foreground]
    lead, tail = rng.uniform(0.1, 0.5), 0.25
    if scene.overlap:
        starts = [lead + rng.uniform(0.0, 0.4) for _ in parts]
    else:
        starts, t = [], lead
        for p in parts:
            starts.append(t)
            t += len(p) / sr + rng.uniform(0.2, 0.6)
    needed = max((s + len(p) / sr for s, p in zip(starts, parts)), default=0.0) + tail
    n = int(round(np.ceil(max(rng.uniform(*seconds), needed) * 10) / 10 * sr))  # whole tenths of a second
    mix = np.zeros(n)
    for start, p in zip(starts, parts):
        i = int(start * sr)
        mix[i : i + len(p)] += p
    if scene.hum:
        mix += _scaled(_hum(rng, n, sr), HUM_DB[scene.hum.loudness])
    if scene.reverb:
        mix = _reverb(mix, rng, sr)
    if scene.background:
        mix += _scaled(_pink(rng, n), BACKGROUND_DB)
    peak = np.abs(mix).max()
    if peak > 0.95:
        mix *= 0.95 / peak
    return mix.astype(np.float32)


# ------------------------------------------------------------------------------ corpus


def _rng(seed: int, index: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([seed, index, _STREAMS[stream]])


def _write_wav(audio: np.ndarray, path: Path, sr: int) -> None:
    with atomic_path(path, ".wav") as tmp:
        sf.write(str(tmp), audio, sr, subtype="PCM_16")


def synthesize_scenes(
    out_dir: Path,
    num_clips: int,
    seed: int = 0,
    dev_fraction: float = 0.05,
    test_fraction: float = 0.1,
    num_captions: int = 5,
    sample_rate: int = SAMPLE_RATE,
    seconds: tuple[float, float] = (3.0, 6.0),
) -> dict[str, CutSet]:
    """Draw ``num_clips`` scenes, write ``out_dir/<id>.wav``, return ``train``/``dev``/``test`` cuts.

    Each cut has one supervision whose ``text`` is the first caption and whose ``custom`` holds
    ``captions`` (all ``num_captions``) and ``scene`` (:attr:`Scene.key`).
    """
    if dev_fraction + test_fraction > 1:
        raise ValueError("dev_fraction + test_fraction must not exceed 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[MonoCut]] = {s: [] for s in SPLITS}
    start, audio_seconds = time.perf_counter(), 0.0
    for index in range(num_clips):
        scene = draw_scene(_rng(seed, index, "scene"))
        captions = compose_captions(scene, _rng(seed, index, "words"), num_captions)
        audio = render_scene(scene, _rng(seed, index, "audio"), sample_rate, seconds)
        cut_id = f"scenes-s{seed}-{index:06d}"
        path = out_dir / f"{cut_id}.wav"
        _write_wav(audio, path, sample_rate)
        duration = len(audio) / sample_rate
        audio_seconds += duration
        recording = Recording(
            id=cut_id, sources=[AudioSource(type="file", channels=[0], source=str(path))],
            sampling_rate=sample_rate, num_samples=len(audio), duration=duration,
        )  # fmt: skip
        supervision = SupervisionSegment(
            id=cut_id, recording_id=cut_id, start=0.0, duration=duration, channel=0, text=captions[0],
            language="English", custom={"captions": captions, "scene": scene.key},
        )  # fmt: skip
        cut = MonoCut(id=cut_id, start=0.0, duration=duration, channel=0, recording=recording,
                      supervisions=[supervision])  # fmt: skip
        by_split[split_of_key(scene.key, dev_fraction, test_fraction)].append(cut)
    wall = time.perf_counter() - start
    log.info(
        "scenes: %d clips (%s), %.2f h of audio in %.1f s: %.0fx real time",
        num_clips, ", ".join(f"{s} {len(c)}" for s, c in by_split.items()),
        audio_seconds / 3600, wall, audio_seconds / max(wall, 1e-9),
    )  # fmt: skip
    return {split: CutSet.from_cuts(cuts) for split, cuts in by_split.items()}


@SYNTHESIZERS.register("scenes")
def synthesize_scene_corpus(
    cfg: CorpusConfig, audio_dir: Path, splits: Iterable[str] = SPLITS
) -> tuple[dict[str, CutSet], dict[str, Any]]:
    """``corpus.source: scenes``: ``corpus.num_utterances`` clips, split as the config says."""
    start = time.perf_counter()
    sets = synthesize_scenes(audio_dir, cfg.num_utterances, cfg.seed, cfg.dev_fraction, cfg.test_fraction,
                             sample_rate=cfg.sample_rate)  # fmt: skip
    wall = time.perf_counter() - start
    hours = sum(c.duration for cuts in sets.values() for c in cuts) / 3600
    summary = {"clips": sum(len(c) for c in sets.values()), "audio_hours": round(hours, 4),
               "wall_seconds": round(wall, 1), "failed_by_split": {}}  # fmt: skip
    return {s: sets[s] for s in SPLITS if s in set(splits)}, summary
