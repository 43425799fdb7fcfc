"""Synthetic speech from the Debian TTS engines (espeak-ng, flite, festival, SVOX Pico), and the
optional neural ones of :mod:`slam.data.corpora.neural_tts` (kokoro, piper).

Every utterance gets a seeded random engine, voice, speed and pitch, so the corpus has many
voices. Rendering runs on all cores in a thread pool (the work happens in subprocesses);
festival is driven through one generated Scheme script per batch (``festival --batch``)
because starting festival and loading a voice costs far more than synthesising a sentence.
Every raw render goes through sox: 16 kHz, 16-bit, mono, with leading and trailing silence
trimmed (shorter audio trains faster) and 50 ms of padding left so onsets are not clipped.

``speed`` is a rate factor for every engine (1.0 = the voice's normal rate, 1.2 = 20 %
faster); ``pitch`` is engine-native: espeak-ng's 0-99 scale, the target F0 mean in Hz for
flite and festival's diphone voices, for festival's HTS voice (whose festival wrapper accepts
no F0 option) a shift in cents that sox applies, and Pico's pitch level in percent of its
voice's own.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from tqdm import tqdm

from slam.config import ConfigError, CorpusConfig
from slam.data.corpora import text as text_mod
from slam.data.corpora.base import SYNTHESIZERS
from slam.registry import Registry
from slam.utils import atomic_path

log = logging.getLogger(__name__)

FESTIVAL_VOICES_DIR = Path("/usr/share/festival/voices")  # Debian festvox-* packages
MIN_SECONDS = 0.3  # a render shorter than this after trimming is broken
PAD_SECONDS = 0.05
SILENCE_THRESHOLD = "0.2%"  # below about -54 dBFS counts as silence when trimming


@dataclass
class RenderJob:
    """One utterance to synthesise; ``id`` is also the wav file's stem."""

    id: str
    split: str
    text: str
    engine: str = ""
    voice: str = ""
    speed: float = 1.0
    pitch: float = 0.0
    held_out: bool = False  # a voice no training utterance uses
    word_gap: int = 0  # espeak's pause between words, in 10 ms (source styles: long pauses)

    @property
    def speaker(self) -> str:
        return f"{self.engine}:{self.voice}"


@dataclass
class RenderReport:
    """What :func:`render` produced: finished wav per job id, failures with the reason."""

    done: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    wall_seconds: float = 0.0
    audio_seconds: float = 0.0


class TtsEngine:
    """One synthesiser: its voices, speed and pitch ranges, and how to render a batch."""

    name = ""
    binary = ""
    speed_range = (0.85, 1.3)
    batch_size = 1  # jobs per task handed to a worker
    languages: tuple[str, ...] = ("en",)  # what its voices speak (ISO 639-1)

    def __init__(self, language: str = "en") -> None:
        if language not in self.languages:
            raise ValueError(f"TTS engine {self.name} speaks {list(self.languages)}, not {language!r}")
        self.language = language

    def declared_voices(self) -> list[str]:
        raise NotImplementedError

    def installed_voices(self) -> list[str]:
        """The declared voices this machine can render (empty if the engine is missing)."""
        if shutil.which(self.binary) is None:
            return []
        return self.declared_voices()

    def requirement(self) -> str:
        """What the engine needs, for the warning when it is skipped."""
        return self.binary

    def pitch_range(self, voice: str) -> tuple[float, float]:
        raise NotImplementedError

    def render(self, jobs: list[RenderJob], workdir: Path) -> dict[str, Path | str]:
        """Render ``jobs`` into ``workdir``: job id -> raw wav path, or an error message."""
        raise NotImplementedError

    def sox_effects(self, job: RenderJob) -> list[str]:
        """Extra sox effects for a job (what the engine itself cannot do)."""
        return []


TTS_ENGINES: Registry[TtsEngine] = Registry("tts engine")


def _run(cmd: list[str], timeout: float, **kwargs: Any) -> str | None:
    """Run a command; the error text if it failed, else ``None``."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{cmd[0]}: {exc}"
    if proc.returncode != 0:
        return f"{cmd[0]} exited with {proc.returncode}: {proc.stderr.strip()[:300]}"
    return None


class _PerCallEngine(TtsEngine):
    """Engines cheap enough to start once per utterance."""

    def command(self, job: RenderJob, out: Path) -> list[str]:
        raise NotImplementedError

    def render(self, jobs: list[RenderJob], workdir: Path) -> dict[str, Path | str]:
        results: dict[str, Path | str] = {}
        for job in jobs:
            out = workdir / f"{job.id}.raw.wav"
            error = _run(self.command(job, out), timeout=60)
            results[job.id] = error if error else out
        return results


@TTS_ENGINES.register("espeak")
class EspeakEngine(_PerCallEngine):
    """espeak-ng: 8 English accents, 3 French, 2 Spanish (Spain, Latin America), Italian, 2
    Russian ones (Russia, Latvia) or Mandarin x voice variants (formant synthesis, 22.05 kHz)."""

    name = "espeak"
    binary = "espeak-ng"
    speed_range = (0.85, 1.4)
    accents_of = {
        "en": ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
               "en-gb-x-gbcwmd", "en-029", "en-us-nyc"),
        "fr": ("fr-fr", "fr-be", "fr-ch"),
        "es": ("es", "es-419"),
        "it": ("it",),
        "ru": ("ru", "ru-lv"),
        "zh": ("cmn",),  # Mandarin; it says Latin-script words in English (code-switching)
    }  # fmt: skip
    languages = tuple(accents_of)
    # variant files of espeak-ng-data/voices/!v; the whisper ones are left out (no voicing)
    variants = (
        "m1 m2 m3 m4 m5 m6 m7 m8 f1 f2 f3 f4 f5 croak klatt klatt2 klatt3 klatt4 klatt5 "
        "klatt6 adam Alex Alicia Andrea Andy anika anikaRobot Annie antonio AnxiousAndy aunty "
        "belinda benjamin boris caleb david Demonic Denis Diogo ed edward edward2 Gene Gene2 "
        "grandma grandpa gustave announcer Henrique Hugo iven iven2 iven3 iven4 Jacky john "
        "kaukovalta Lee linda marcelo Marco Mario max Michael michel miguel Mike Mr Nguyen "
        "norbert pablo paul pedro quincy RicishayMax RicishayMax2 RicishayMax3 rob robert "
        "robosoft robosoft2 robosoft3 robosoft4 robosoft5 robosoft6 robosoft7 robosoft8 "
        "sandro shelby steph steph2 steph3 Storm travis Tweaky UniRobot victor zac"
    ).split()
    normal_wpm = 175

    def declared_voices(self) -> list[str]:
        accents = self.accents_of[self.language]
        return [f"{accent}+{variant}" for accent in accents for variant in self.variants]

    def installed_voices(self) -> list[str]:
        if shutil.which(self.binary) is None:
            return []
        listing = subprocess.run(
            [self.binary, "--voices=variant"], capture_output=True, text=True, check=False
        ).stdout
        present = {
            line.split()[4].removeprefix("!v/") for line in listing.splitlines()[1:] if len(line.split()) > 4
        }
        return [v for v in self.declared_voices() if v.split("+", 1)[1] in present]

    def pitch_range(self, voice: str) -> tuple[float, float]:
        return (25, 75)

    def command(self, job: RenderJob, out: Path) -> list[str]:
        wpm = str(round(self.normal_wpm * job.speed))
        gap = ["-g", str(job.word_gap)] if job.word_gap else []
        pitch = str(int(job.pitch))
        return [self.binary, "-v", job.voice, "-s", wpm, "-p", pitch, *gap, "-w", str(out), job.text]


@TTS_ENGINES.register("flite")
class FliteEngine(_PerCallEngine):
    """flite: four voices (diphone kal16, clustergen awb, rms, slt), 16 kHz."""

    name = "flite"
    binary = "flite"
    voices = {"kal16": (85, 130), "awb": (85, 130), "rms": (80, 125), "slt": (150, 210)}

    def declared_voices(self) -> list[str]:
        return list(self.voices)

    def installed_voices(self) -> list[str]:
        if shutil.which(self.binary) is None:
            return []
        listing = subprocess.run([self.binary, "-lv"], capture_output=True, text=True, check=False).stdout
        present = set(listing.split(":", 1)[-1].split())
        return [v for v in self.voices if v in present]

    def pitch_range(self, voice: str) -> tuple[float, float]:
        return self.voices[voice]

    def command(self, job: RenderJob, out: Path) -> list[str]:
        return [
            self.binary, "-voice", job.voice,
            "--setf", f"duration_stretch={1 / job.speed:.3f}",
            "--setf", f"int_f0_target_mean={job.pitch:.0f}",
            "-t", job.text, "-o", str(out),
        ]  # fmt: skip


@TTS_ENGINES.register("pico")
class PicoEngine(_PerCallEngine):
    """SVOX Pico (``pico2wave``, Debian non-free ``libttspico-utils``): natural-sounding female
    voices of US and British English, French, Spanish and Italian, 16 kHz, ~100x real time per
    core (scripts/voice_probe.py). Speed and pitch go in its markup tags; the pitch level is a
    percentage of the voice's own F0 (en-US: 60 -> ~100 Hz, 100 -> ~170 Hz, 160 -> ~270 Hz),
    so one voice also gives lower, male-range speakers."""

    name = "pico"
    binary = "pico2wave"
    voices_of = {"en": ("en-US", "en-GB"), "fr": ("fr-FR",), "es": ("es-ES",), "it": ("it-IT",)}
    languages = tuple(voices_of)

    def declared_voices(self) -> list[str]:
        return list(self.voices_of[self.language])

    def requirement(self) -> str:
        return "pico2wave: Debian non-free libttspico-utils (scripts/setup.sh)"

    def pitch_range(self, voice: str) -> tuple[float, float]:
        return (65, 135)

    def command(self, job: RenderJob, out: Path) -> list[str]:
        # the text sits inside markup, where a "<" could open a tag (Pico reads entities such as
        # &lt; out literally, so they are no escape)
        text = job.text.replace("<", " ").replace(">", " ")
        speed, pitch = round(100 * job.speed), round(job.pitch)
        markup = f'<speed level="{speed}"><pitch level="{pitch}">{text}</pitch></speed>'
        return [self.binary, "-l", job.voice, "-w", str(out), markup]


@TTS_ENGINES.register("festival")
class FestivalEngine(TtsEngine):
    """festival with the festvox kal/ked diphone voices and the CMU SLT HTS voice."""

    name = "festival"
    binary = "festival"
    batch_size = 40
    # voice -> (directory under FESTIVAL_VOICES_DIR, kind, pitch range)
    voices = {
        "kal_diphone": ("english/kal_diphone", "diphone", (85.0, 135.0)),
        "ked_diphone": ("english/ked_diphone", "diphone", (85.0, 135.0)),
        "cmu_us_slt_arctic_hts": ("us/cmu_us_slt_arctic_hts", "hts", (-300.0, 300.0)),
    }

    def declared_voices(self) -> list[str]:
        return list(self.voices)

    def installed_voices(self) -> list[str]:
        if shutil.which(self.binary) is None:
            return []
        return [v for v, (sub, _, _) in self.voices.items() if (FESTIVAL_VOICES_DIR / sub).is_dir()]

    def pitch_range(self, voice: str) -> tuple[float, float]:
        return self.voices[voice][2]

    def script(self, jobs: list[RenderJob], workdir: Path) -> str:
        """Scheme for one batch; each utterance guarded so one failure does not stop the rest."""
        lines = []
        current = None
        for job in sorted(jobs, key=lambda j: j.voice):  # load each voice once
            if job.voice != current:
                lines.append(f"(voice_{job.voice})")
                current = job.voice
            if self.voices[job.voice][1] == "hts":
                lines.append(
                    f"(set! hts_engine_params (append {job.voice}::hts_engine_params "
                    f'(list (list "-r" {job.speed:.3f}))))'
                )
            else:
                lines.append(
                    f"(set! int_lr_params '((target_f0_mean {job.pitch:.0f}) (target_f0_std 15) "
                    "(model_f0_mean 170) (model_f0_std 34)))"
                )
                lines.append(f"(Parameter.set 'Duration_Stretch {1 / job.speed:.3f})")
            text = job.text.replace("\\", " ").replace('"', " ")
            out = workdir / f"{job.id}.raw.wav"
            lines.append(
                f'(unwind-protect (utt.save.wave (utt.synth (Utterance Text "{text}")) "{out}" \'riff) '
                f'(format stderr "FAILED {job.id}\\n"))'
            )
        return "\n".join(lines) + "\n"

    def sox_effects(self, job: RenderJob) -> list[str]:
        if self.voices[job.voice][1] == "hts" and job.pitch:
            return ["pitch", f"{job.pitch:.0f}"]
        return []

    def render(self, jobs: list[RenderJob], workdir: Path) -> dict[str, Path | str]:
        script = workdir / f"batch-{jobs[0].id}.scm"
        script.write_text(self.script(jobs, workdir))
        error = _run([self.binary, "--batch", str(script)], timeout=30 + 10 * len(jobs))
        results: dict[str, Path | str] = {}
        for job in jobs:
            out = workdir / f"{job.id}.raw.wav"
            results[job.id] = out if out.is_file() else (error or "festival wrote no audio")
        return results


def finish_audio(raw: Path, out: Path, sample_rate: int = 16000, effects: Iterable[str] = ()) -> str | None:
    """sox: resample to 16-bit mono ``sample_rate`` and trim silence at both ends.

    Trimming runs forwards, then on the reversed signal for the tail; a short pad keeps soft
    onsets. Returns an error message, or ``None`` when ``out`` is a usable file.
    """
    trim = ["silence", "1", "0.02", SILENCE_THRESHOLD]
    try:
        with atomic_path(out, ".wav") as tmp:
            cmd = [
                "sox", "-D", "-V1", str(raw), "-b", "16", "-c", "1", str(tmp),
                *effects, *trim, "reverse", *trim, "reverse",
                "rate", "-h", str(sample_rate), "pad", str(PAD_SECONDS), str(PAD_SECONDS),
            ]  # fmt: skip
            error = _run(cmd, timeout=60)
            if not error and (seconds := sf.info(str(tmp)).duration) < MIN_SECONDS:
                error = f"only {seconds:.2f} s of audio after trimming silence"
            if error:
                raise _Unusable(error)  # leaves ``out`` as it was
    except _Unusable as unusable:
        return str(unusable)
    return None


class _Unusable(Exception):
    """A render that must not replace the output file."""


def available_engines(names: Iterable[str], language: str = "en") -> dict[str, tuple[TtsEngine, list[str]]]:
    """The requested engines that are installed and speak ``language``, each with its installed
    voices."""
    names = list(names)
    engines = {}
    for name in names:
        if language not in TTS_ENGINES.get(name).languages:
            log.warning("TTS engine %s does not speak %r; skipped", name, language)
            continue
        engine = TTS_ENGINES.build(name, language)
        voices = engine.installed_voices()
        if not voices:
            log.warning(
                "TTS engine %s (%s) is not installed or has no voices; skipped", name, engine.requirement()
            )
            continue
        missing = len(engine.declared_voices()) - len(voices)
        if missing:
            log.info("%s: %d declared voices not installed", name, missing)
        engines[name] = (engine, voices)
    if not engines:
        raise RuntimeError(
            f"none of the TTS engines {names} is installed and speaks {language!r} "
            "(apt-get install espeak-ng flite festival)"
        )
    return engines


def held_out_check(held_out: Iterable[str], engines: dict[str, tuple[TtsEngine, list[str]]]) -> set[str]:
    """``corpus.held_out_voices`` checked against the installed engines and voices."""
    held = set(held_out)
    speakers = {f"{name}:{voice}" for name, (_, voices) in engines.items() for voice in voices}
    unknown = sorted(held - speakers - set(engines))
    if unknown:
        raise ConfigError(
            f"corpus.held_out_voices: {unknown} are neither an installed engine nor engine:voice "
            f"(installed: {sorted(engines)}; voices e.g. {sorted(speakers)[:4]})"
        )
    if all(speaker in held or speaker.split(":", 1)[0] in held for speaker in speakers):
        raise ConfigError("corpus.held_out_voices holds out every installed voice: nothing left to train on")
    return held


def plan_renderings(
    sentences: dict[str, list[str]],
    engines: dict[str, tuple[TtsEngine, list[str]]],
    seed: int,
    held_out: Iterable[str] = (),
    weights: dict[str, float] | None = None,
) -> list[RenderJob]:
    """One job per sentence (per repeat): engine, voice, speed and pitch drawn with ``seed``.
    Training sentences never draw a ``held_out`` voice (an engine name holds out all of its
    voices); dev and test draw from every voice and flag the held-out ones. ``weights``: each
    engine's relative share (1 for an engine not named)."""
    held = held_out_check(held_out, engines)
    unknown = sorted(set(weights or {}) - set(engines))
    if unknown or any(w < 0 for w in (weights or {}).values()):
        raise ConfigError(f"corpus.engine_weights: {weights} names engines not in use ({unknown}) or a "
                          f"negative weight; engines in use: {sorted(engines)}")  # fmt: skip

    def draw(rng: random.Random, names: list[str]) -> str:
        if not weights:  # the unweighted draw, so corpora made before weights existed stay the same
            return rng.choice(names)
        return rng.choices(names, weights=[weights.get(n, 1.0) for n in names])[0]

    def is_held(engine: str, voice: str) -> bool:
        return engine in held or f"{engine}:{voice}" in held

    rng = random.Random(seed)
    names = sorted(engines)
    training_voices = {n: [v for v in engines[n][1] if not is_held(n, v)] for n in names}
    jobs = []
    for split in text_mod.SPLITS:
        repeats: Counter[str] = Counter()
        for sentence in sentences.get(split, []):
            key = hashlib.sha256(text_mod.sentence_key(sentence).encode()).hexdigest()[:12]
            if split == "train" and held:
                engine_name = draw(rng, [n for n in names if training_voices[n]])
                engine, voices = engines[engine_name][0], training_voices[engine_name]
            else:
                engine_name = draw(rng, names)
                engine, voices = engines[engine_name]
            voice = rng.choice(voices)
            low, high = engine.pitch_range(voice)
            jobs.append(
                RenderJob(
                    id=f"tts_{key}_{repeats[key]}",
                    split=split,
                    text=sentence,
                    engine=engine_name,
                    voice=voice,
                    speed=round(rng.uniform(*engine.speed_range), 2),
                    pitch=round(rng.uniform(low, high), 1),
                    held_out=is_held(engine_name, voice),
                )
            )
            repeats[key] += 1
    return jobs


def _render_task(
    engine: TtsEngine, jobs: list[RenderJob], out_dir: Path, sample_rate: int
) -> dict[str, Path | str]:
    with tempfile.TemporaryDirectory(prefix="slam-tts-") as tmp:
        raw = engine.render(jobs, Path(tmp))
        results: dict[str, Path | str] = {}
        for job in jobs:
            res = raw[job.id]
            if isinstance(res, str):
                results[job.id] = res
                continue
            out = out_dir / f"{job.id}.wav"
            error = finish_audio(res, out, sample_rate, engine.sox_effects(job))
            results[job.id] = error if error else out
        return results


def render(
    jobs: list[RenderJob],
    out_dir: Path,
    engines: dict[str, TtsEngine] | None = None,
    num_workers: int = 0,
    sample_rate: int = 16000,
) -> RenderReport:
    """Render all ``jobs`` into ``out_dir/<id>.wav`` on ``num_workers`` threads (0: all cores).

    A failed render is logged and counted in the report, never fatal.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    engines = engines or {name: TTS_ENGINES.build(name) for name in sorted({j.engine for j in jobs})}
    workers = num_workers or os.cpu_count() or 1
    tasks = []
    for name, engine in engines.items():
        mine = [j for j in jobs if j.engine == name]
        mine.sort(key=lambda j: j.voice)  # festival batches then share voices
        tasks += [(engine, mine[i : i + engine.batch_size]) for i in range(0, len(mine), engine.batch_size)]
    # longest tasks first so that no worker is left with a big festival batch at the end
    tasks.sort(key=lambda t: -len(t[1]))
    report = RenderReport()
    start = time.perf_counter()
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(jobs), desc="tts", unit="utt") as bar,
    ):
        futures = {
            pool.submit(_render_task, engine, batch, out_dir, sample_rate): batch for engine, batch in tasks
        }
        for future in as_completed(futures):
            batch = futures[future]
            try:
                results: dict[str, Path | str] = future.result()
            except Exception as exc:  # a broken task must not lose the whole corpus
                results = {job.id: f"{type(exc).__name__}: {exc}" for job in batch}
            for job in batch:
                res = results[job.id]
                if isinstance(res, Path):
                    report.done[job.id] = res
                else:
                    report.failed[job.id] = res
                    log.warning("render %s failed (%s %s): %s", job.id, job.engine, job.voice, res)
            bar.update(len(batch))
    report.wall_seconds = time.perf_counter() - start
    report.audio_seconds = sum(sf.info(str(p)).duration for p in report.done.values())
    seconds = max(report.wall_seconds, 1e-9)
    log.info(
        "rendered %d utterances (%d failed), %.2f h of audio in %.1f s on %d workers: "
        "%.1f utt/s, %.0fx real time",
        len(report.done),
        len(report.failed),
        report.audio_seconds / 3600,
        report.wall_seconds,
        workers,
        len(report.done) / seconds,
        report.audio_seconds / seconds,
    )
    return report


def jobs_to_cuts(jobs: Iterable[RenderJob], report: RenderReport, language: str = "English") -> CutSet:
    """Cuts for the rendered jobs; the supervision records engine, voice, speed and pitch."""
    cuts = []
    for job in jobs:
        path = report.done.get(job.id)
        if path is None:
            continue
        recording = Recording.from_file(path, recording_id=job.id)
        supervision = SupervisionSegment(
            id=job.id,
            recording_id=job.id,
            start=0.0,
            duration=recording.duration,
            channel=0,
            text=job.text,
            speaker=job.speaker,
            language=language,
            custom={
                "engine": job.engine, "voice": job.voice, "speed": job.speed, "pitch": job.pitch,
                **({"held_out": True} if job.held_out else {}),
            },  # fmt: skip
        )
        cuts.append(
            MonoCut(
                id=job.id,
                start=0.0,
                duration=recording.duration,
                channel=0,
                recording=recording,
                supervisions=[supervision],
            )
        )
    return CutSet.from_cuts(cuts)


def speak_sentences(
    cfg: CorpusConfig, pool: list[str], audio_dir: Path, splits: list[str], language: str = "English",
    extra_train: Sequence[str] = (),
) -> tuple[dict[str, CutSet], dict[str, Any]]:  # fmt: skip
    """Sentences per split (by a hash of each, from ``pool``) -> seeded voices of
    ``cfg.language`` -> wavs -> one CutSet per split, and a summary (counts, failures,
    throughput) for ``stats.json``. Shared by the tts and parallel sources. ``extra_train``:
    more training sentences, voiced by a draw of their own (the others' voices stay the same)."""
    sentences = text_mod.pick_sentences(pool, cfg.num_utterances, cfg.dev_fraction, cfg.test_fraction, splits)
    if "train" in sentences:  # dev and test keep one sentence per utterance (comparable sets)
        sentences["train"] = text_mod.join_sentences(
            sentences["train"], cfg.join_fraction, cfg.join_max, cfg.seed
        )
    engines = available_engines(cfg.engines, cfg.language)
    jobs = plan_renderings(sentences, engines, cfg.seed, cfg.held_out_voices, cfg.engine_weights)
    if extra_train and "train" in sentences:
        jobs += plan_renderings({"train": list(extra_train)}, engines, cfg.seed + 1, cfg.held_out_voices,
                                cfg.engine_weights)  # fmt: skip
    report = render(
        jobs, audio_dir, {n: e for n, (e, _) in engines.items()}, cfg.num_workers, cfg.sample_rate
    )
    cuts = {s: jobs_to_cuts([j for j in jobs if j.split == s], report, language) for s in splits}
    failed = Counter(j.split for j in jobs if j.id in report.failed)
    summary = {
        "pool_sentences": len(pool),
        "engines": {n: len(v) for n, (_, v) in engines.items()},  # installed voices
        "utterances": len(report.done),
        "failed": len(report.failed),
        "failed_by_split": dict(failed),
        "audio_hours": round(report.audio_seconds / 3600, 4),
        "wall_seconds": round(report.wall_seconds, 1),
        "utterances_per_second": round(len(report.done) / max(report.wall_seconds, 1e-9), 2),
        "realtime_factor": round(report.audio_seconds / max(report.wall_seconds, 1e-9), 1),
        "workers": cfg.num_workers or os.cpu_count() or 1,
    }
    return cuts, summary


@SYNTHESIZERS.register("tts")
def synthesize_corpus(
    cfg: CorpusConfig, audio_dir: Path, splits: Iterable[str] = text_mod.SPLITS
) -> tuple[dict[str, CutSet], dict[str, Any]]:
    """Text pool -> :func:`speak_sentences`."""
    if cfg.language != "en":
        raise ValueError(f"corpus.language {cfg.language!r}: the tts source speaks English sentences; "
                         "source parallel speaks other languages")
    splits = [s for s in text_mod.SPLITS if s in set(splits)]
    pool = text_mod.sentence_pool(cfg.min_words, cfg.max_words, cfg.seed)
    short = text_mod.short_sentences(cfg.short_utterances, cfg.min_words, cfg.dev_fraction, cfg.test_fraction,
                                     cfg.seed)  # fmt: skip
    messages = text_mod.message_sentences(cfg.message_utterances, cfg.catalogs, cfg.min_words, cfg.max_words,
                                          cfg.dev_fraction, cfg.test_fraction, cfg.seed)  # fmt: skip
    spoken = text_mod.spoken_forms(cfg.spoken_form_utterances, cfg.dev_fraction, cfg.test_fraction, cfg.seed)
    return speak_sentences(cfg, pool, audio_dir, splits, extra_train=short + messages + spoken)


# the in-process engines (kokoro, piper) register themselves in TTS_ENGINES on import
from slam.data.corpora import neural_tts  # noqa: E402, F401
