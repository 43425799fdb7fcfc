"""``music``: a synthesised music-captioning corpus (paper section V-B).

Each clip is a short piece drawn from a seeded generator: an instrument (a General MIDI
program), a tempo (slow, moderate, fast), a key and mode, and a style (melody, arpeggios,
block chords, waltz, or a bass line under a melody). The notes are written as MIDI with
``mido`` and rendered with FluidSynth through a SoundFont, and several captions per clip are
composed from the same metadata in varied wording ("A slow waltz in D minor played on the
violin." / "Solo violin, three-four time, slow, in D minor.").

The train/dev/test split is a hash of :attr:`Piece.key` (what a caption may say), so no
described piece of the test set was heard in training. The registered set ``music_timgm``
renders fresh test pieces through another SoundFont (TimGM6mb instead of FluidR3): the same
descriptions, different instrument samples — the cross-domain test.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import mido
import numpy as np
import soundfile as sf
from lhotse import CutSet, Recording, SupervisionSegment
from lhotse.utils import fastcopy
from tqdm import tqdm

from slam.config import CorpusConfig
from slam.data.corpora.base import CORPORA, SYNTHESIZERS, CorpusBuild
from slam.data.corpora.scenes import distinct_captions
from slam.data.corpora.text import SPLITS, split_of_key
from slam.data.corpora.validate import validate_cuts
from slam.utils import atomic_path

log = logging.getLogger(__name__)

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")  # Debian fluid-soundfont-gm
HELD_OUT_SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")  # Debian timgm6mb-soundfont
# instrument -> (General MIDI program, 0-based; lowest comfortable MIDI note)
INSTRUMENTS = {
    "piano": (0, 48), "harpsichord": (6, 48), "marimba": (12, 48), "church organ": (19, 48),
    "acoustic guitar": (24, 45), "violin": (40, 57), "cello": (42, 38), "harp": (46, 45),
    "trumpet": (56, 55), "clarinet": (71, 52), "flute": (73, 62), "strings": (48, 48),
}  # fmt: skip
TEMPI = {"slow": (56, 76), "moderate": (88, 112), "fast": (132, 168)}  # bpm ranges
KEYS = ["C", "C sharp", "D", "E flat", "E", "F", "F sharp", "G", "A flat", "A", "B flat", "B"]
MODES = {"major": [0, 2, 4, 5, 7, 9, 11], "minor": [0, 2, 3, 5, 7, 8, 10]}
STYLES = ("melody", "arpeggios", "chords", "waltz", "bass and melody")
NUMBERS = {3: "three", 4: "four"}
TICKS = 480  # per beat


@dataclass(frozen=True)
class Piece:
    """The choices behind one clip: what its captions describe."""

    instrument: str
    tempo: str
    key_name: str
    mode: str
    style: str

    @property
    def key(self) -> str:
        return "|".join([self.instrument, self.tempo, self.key_name, self.mode, self.style])

    @property
    def beats_per_bar(self) -> int:
        return 3 if self.style == "waltz" else 4


def draw_piece(rng: np.random.Generator) -> Piece:
    return Piece(str(rng.choice(list(INSTRUMENTS))), str(rng.choice(list(TEMPI))), str(rng.choice(KEYS)),
                 str(rng.choice(list(MODES))), str(rng.choice(STYLES)))  # fmt: skip


# ------------------------------------------------------------------------------ captions
_STYLE_PHRASES = {
    "melody": ["a simple melody", "a single melodic line", "a tune"],
    "arpeggios": ["flowing arpeggios", "broken chords", "arpeggiated chords"],
    "chords": ["block chords", "sustained chords", "a chord progression"],
    "waltz": ["a waltz", "a waltz in three-four time", "a piece in triple metre"],
    "bass and melody": ["a melody over a bass line", "a tune with a walking bass",
                        "a bass line and a melody"],
}  # fmt: skip
_TEMPO_WORDS = {"slow": ["slow", "unhurried", "gentle"], "moderate": ["moderate", "medium-paced", "steady"],
                "fast": ["fast", "lively", "brisk"]}  # fmt: skip


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def compose_caption(piece: Piece, rng: np.random.Generator) -> str:
    """One caption naming the instrument, tempo, key, mode and style in a drawn wording."""
    style, tempo = _pick(rng, _STYLE_PHRASES[piece.style]), _pick(rng, _TEMPO_WORDS[piece.tempo])
    key = f"{piece.key_name} {piece.mode}"
    templates = [
        f"a {tempo} piece of {style} in {key}, played on the {piece.instrument}",
        f"{style} in {key} on the {piece.instrument} at a {tempo} tempo",
        f"solo {piece.instrument} playing {style} in {key}, {tempo}",
        f"the {piece.instrument} plays {style} in {key} at a {tempo} pace",
        f"a {tempo} {piece.mode}-key piece for {piece.instrument}: {style} in {piece.key_name}",
    ]
    text = _pick(rng, templates)
    return text[0].upper() + text[1:] + "."


def compose_captions(piece: Piece, rng: np.random.Generator, num: int = 5) -> list[str]:
    return distinct_captions(lambda: compose_caption(piece, rng), num)


# ------------------------------------------------------------------------------ notes
Note = tuple[float, float, int]  # start (beats), length (beats), MIDI note number


def piece_notes(piece: Piece, rng: np.random.Generator, seconds: float) -> tuple[int, list[Note]]:
    """``(bpm, [(start beat, length in beats, MIDI note)])`` filling about ``seconds``."""
    low, high = TEMPI[piece.tempo]
    bpm = int(rng.integers(low, high + 1))
    beats = max(piece.beats_per_bar, int(seconds * bpm / 60))
    tonic = INSTRUMENTS[piece.instrument][1] + KEYS.index(piece.key_name) % 12
    scale = MODES[piece.mode]

    def degree(d: int, octave: int = 0) -> int:  # scale degree d (0 = tonic), any octave
        return tonic + 12 * (octave + d // 7) + scale[d % 7]

    progression = [0, 3, 4, 0] if rng.random() < 0.5 else [0, 5, 3, 4]  # I-IV-V-I or I-vi-IV-V
    notes: list[Note] = []
    bar = piece.beats_per_bar
    for b in range(0, beats, bar):
        root = progression[(b // bar) % len(progression)]
        triad = [degree(root), degree(root + 2), degree(root + 4)]
        if piece.style == "chords":
            notes += [(b, bar, n) for n in triad]
        elif piece.style == "arpeggios":
            pattern = [*triad, triad[0] + 12, triad[2], triad[1]]  # up and back down
            notes += [(b + i / 2, 0.5, pattern[i % len(pattern)]) for i in range(2 * bar)]
        elif piece.style == "waltz":
            notes += [(b, 1, degree(root, -1)), (b + 1, 1, triad[1]), (b + 2, 1, triad[2])]
            notes += [(b + 1, 1, triad[0] + 12)]
        else:  # melody, or a melody over a bass line
            step = int(rng.integers(0, 7))
            for i in range(bar):
                step = int(np.clip(step + rng.integers(-2, 3), 0, 9))
                notes.append((b + i, 1, degree(step, 1) if piece.style == "melody" else degree(step)))
            if piece.style == "bass and melody":
                notes += [(b + i, 1, degree(root, -1) + (7 if i % 2 else 0)) for i in range(bar)]
    return bpm, [n for n in notes if n[0] < beats]


GAP = 2.0  # seconds of silence between two pieces of one rendering: room for reverb tails
BATCH = 40  # pieces per FluidSynth call: loading FluidR3 (145 MB) takes longer than a piece


Event = tuple[float, float, int]  # start and end in seconds from the clip's start, MIDI note


def beats_to_seconds(bpm: int, notes: list[Note]) -> list[Event]:
    return [(start * 60 / bpm, (start + length) * 60 / bpm, note) for start, length, note in notes]


def write_midi(clips: list[tuple[int, list[Event]]], path: Path) -> list[tuple[float, float]]:
    """Several clips ``(General MIDI program, notes)`` one after another in one MIDI file (1
    tick = 1 ms at a fixed 60 bpm); returns each clip's ``(start, end)`` in seconds. Each clip
    has a channel of its own (never 10, the drums)."""
    events, spans, offset = [], [], 0.0
    for i, (program, notes) in enumerate(clips):
        channel = [c for c in range(16) if c != 9][i % 15]
        program_change = mido.Message("program_change", channel=channel, program=program)
        events.append((round(offset * 1000), 0, program_change))
        end = offset
        for start, stop, note in notes:
            on, off = offset + start, offset + stop - 0.01
            note_on = mido.Message("note_on", channel=channel, note=note, velocity=80)
            events.append((round(on * 1000), 2, note_on))
            events.append((round(off * 1000), 1, mido.Message("note_off", channel=channel, note=note)))
            end = max(end, off)
        spans.append((offset, end))
        offset = end + GAP
    events.sort(key=lambda e: (e[0], e[1]))  # at equal times: program, then offs, then ons
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(60))])
    now = 0
    for tick, _, message in events:
        track.append(message.copy(time=tick - now))
        now = tick
    midi = mido.MidiFile(ticks_per_beat=1000)
    midi.tracks.append(track)
    midi.save(str(path))
    return spans


def render_midi(midi: Path, soundfont: Path, sample_rate: int) -> np.ndarray:
    """FluidSynth offline (``-ni -F``): the mono waveform at ``sample_rate``."""
    if shutil.which("fluidsynth") is None:
        raise RuntimeError("fluidsynth is not installed (Debian package fluidsynth): it renders the music")
    if not soundfont.is_file():
        raise FileNotFoundError(f"SoundFont {soundfont} not found (see scripts/setup.sh)")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "out.wav"
        cmd = ["fluidsynth", "-ni", "-q", "-g", "0.5", "-r", str(sample_rate), "-F", str(raw),
               str(soundfont), str(midi)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0 or not raw.is_file():
            raise RuntimeError(f"fluidsynth failed on {midi}: {done.stderr.strip()[-300:]}")
        audio, _ = sf.read(raw, dtype="float32", always_2d=True)
    return audio.mean(axis=1)


def _clip(audio: np.ndarray, start: float, end: float, sample_rate: int) -> np.ndarray:
    """A piece's span plus its release (up to 1 s, until the sound dies away), peak-limited."""
    a, b = int(start * sample_rate), min(len(audio), int((end + 1.0) * sample_rate))
    clip = audio[a:b]
    loud = np.flatnonzero(np.abs(clip) > 1e-3)
    clip = clip[: max(loud[-1] + 1, int((end - start) * sample_rate))] if len(loud) else clip
    peak = float(np.abs(clip).max()) if len(clip) else 0.0
    return clip * (0.99 / peak) if peak > 0.99 else clip


# ------------------------------------------------------------------------------ corpus
def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, stream])


@dataclass
class ClipPlan:
    """What one rendered clip plays and what its captions say."""

    program: int  # General MIDI, 0-based
    notes: list[Event]
    captions: list[str]
    custom: dict[str, Any]  # kept in the supervision (with the SoundFont's name)


def render_clips(
    out_dir: Path, plans: Iterable[tuple[str, Callable[[], ClipPlan | None]]], soundfont: Path,
    sample_rate: int, desc: str, num_workers: int = 0,
) -> tuple[list[Any], list[str]]:
    """Render ``(cut id, plan)`` pairs, ``BATCH`` clips per FluidSynth call and ``num_workers``
    calls at once (a plan is made in the worker; ``None`` or no notes skips the clip); returns
    the cuts in order and the ids of the skipped clips."""
    out_dir.mkdir(parents=True, exist_ok=True)

    def batch(chunk: list[tuple[str, Callable[[], ClipPlan | None]]]) -> tuple[list[Any], list[str]]:
        drawn, skipped = [], []
        for cut_id, plan in chunk:
            clip = plan()
            if clip is not None and clip.notes:
                drawn.append((cut_id, clip))
            else:
                skipped.append(cut_id)
        if not drawn:
            return [], skipped
        with tempfile.TemporaryDirectory() as tmp:
            midi = Path(tmp) / "batch.mid"
            spans = write_midi([(clip.program, clip.notes) for _, clip in drawn], midi)
            audio = render_midi(midi, soundfont, sample_rate)
        out = []
        for (cut_id, clip), (start, end) in zip(drawn, spans):
            wav = out_dir / f"{cut_id}.wav"
            with atomic_path(wav, ".wav") as tmp_wav:
                sf.write(str(tmp_wav), _clip(audio, start, end, sample_rate), sample_rate, subtype="PCM_16")
            recording = Recording.from_file(wav, recording_id=cut_id)
            supervision = SupervisionSegment(
                id=cut_id, recording_id=cut_id, start=0.0, duration=recording.duration, channel=0,
                text=clip.captions[0], language="English",
                custom={"captions": clip.captions, **clip.custom, "soundfont": soundfont.name},
            )  # fmt: skip
            out.append(fastcopy(recording.to_cut(), id=cut_id, supervisions=[supervision]))
        return out, skipped

    plans = list(plans)
    chunks = [plans[i : i + BATCH] for i in range(0, len(plans), BATCH)]
    workers = num_workers or os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:  # each FluidSynth runs in its own process
        done = list(tqdm(pool.map(batch, chunks), total=len(chunks), desc=f"rendering {desc}", mininterval=9))
    return [cut for cuts, _ in done for cut in cuts], [cut_id for _, skipped in done for cut_id in skipped]


def synthesize_pieces(
    out_dir: Path, indices: Iterable[int], seed: int, soundfont: Path, sample_rate: int,
    seconds: float = 8.0, prefix: str = "music", num_workers: int = 0,
) -> list[tuple[Any, Piece]]:
    """Render pieces ``indices`` of ``seed``; returns ``(cut, piece)`` pairs in index order."""
    pieces = {index: draw_piece(_rng(seed, index, 0)) for index in indices}

    def plan(index: int) -> ClipPlan:
        piece = pieces[index]
        bpm, notes = piece_notes(piece, _rng(seed, index, 2), seconds)
        captions = compose_captions(piece, _rng(seed, index, 1))
        program = INSTRUMENTS[piece.instrument][0]
        return ClipPlan(program, beats_to_seconds(bpm, notes), captions, {"piece": piece.key, "bpm": bpm})

    plans = [(f"{prefix}-s{seed}-{index:06d}", partial(plan, index)) for index in pieces]
    cuts, _ = render_clips(out_dir, plans, soundfont, sample_rate, prefix, num_workers)
    return [(cut, pieces[index]) for cut, index in zip(cuts, pieces)]


@SYNTHESIZERS.register("music")
def synthesize_music_corpus(
    cfg: CorpusConfig, audio_dir: Path, splits: Iterable[str] = SPLITS
) -> tuple[dict[str, CutSet], dict[str, Any]]:
    """``corpus.source: music``: ``corpus.num_utterances`` clips through FluidR3, split by piece."""
    start = time.perf_counter()
    rendered = synthesize_pieces(audio_dir, range(cfg.num_utterances), cfg.seed, SOUNDFONT,
                                 cfg.sample_rate, num_workers=cfg.num_workers)  # fmt: skip
    return split_clips(cfg, [(cut, piece.key) for cut, piece in rendered], splits, start, "music")


def split_clips(
    cfg: CorpusConfig, keyed: list[tuple[Any, str]], splits: Iterable[str], start: float, source: str,
    failed_keys: Iterable[str] = (),
) -> tuple[dict[str, CutSet], dict[str, Any]]:
    """Rendered ``(cut, identity)`` pairs into train/dev/test by a hash of the identity, with
    the synthesis summary (clips, hours, speed, the failed renders of each split)."""
    by_split: dict[str, list] = {s: [] for s in SPLITS}
    for cut, key in keyed:
        by_split[split_of_key(key, cfg.dev_fraction, cfg.test_fraction)].append(cut)
    failed: dict[str, int] = {}
    for key in failed_keys:
        split = split_of_key(key, cfg.dev_fraction, cfg.test_fraction)
        failed[split] = failed.get(split, 0) + 1
    wall = time.perf_counter() - start
    hours = sum(c.duration for c, _ in keyed) / 3600
    log.info("%s: %d clips, %.2f h in %.0f s (%.0fx real time), %d failed", source, len(keyed), hours,
             wall, hours * 3600 / max(wall, 1e-9), sum(failed.values()))  # fmt: skip
    summary = {"clips": len(keyed), "audio_hours": round(hours, 4), "wall_seconds": round(wall, 1),
               "soundfont": SOUNDFONT.name, "failed_by_split": failed}  # fmt: skip
    return {s: CutSet.from_cuts(by_split[s]) for s in SPLITS if s in set(splits)}, summary


@CORPORA.register("music_timgm")
def music_timgm(cfg: CorpusConfig) -> CorpusBuild:
    """The cross-domain test: test-split pieces of another seed, rendered through TimGM6mb."""
    wanted = max(1, round(cfg.num_utterances * cfg.test_fraction))
    seed, cuts, index = cfg.seed + 1000, [], 0
    audio_dir = Path(cfg.dir) / "audio" / "music_timgm"
    while len(cuts) < wanted:  # draw pieces until enough fall in the test split
        keys = {i: draw_piece(_rng(seed, i, 0)).key for i in range(index, index + 4 * wanted)}
        batch = [i for i, k in keys.items() if split_of_key(k, cfg.dev_fraction, cfg.test_fraction) == "test"]
        index += 4 * wanted
        rendered = synthesize_pieces(audio_dir, batch[: wanted - len(cuts)], seed, HELD_OUT_SOUNDFONT,
                                     cfg.sample_rate, prefix="music-timgm",
                                     num_workers=cfg.num_workers)  # fmt: skip
        cuts += [cut for cut, _ in rendered]
    cut_set, counts = validate_cuts(CutSet.from_cuts(cuts), cfg.sample_rate, cfg.skip_bad)
    counts["source"] = HELD_OUT_SOUNDFONT.name
    return cut_set, counts
