"""Shared fixtures: tiny random models and a tiny corpus, built once per session."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, Recording, SupervisionSegment
from lhotse.cut import MonoCut

from slam.config import SlamConfig
from slam.testing import save_tiny_llm, save_tiny_sentence_encoder, save_tiny_whisper

WORDS = "the quick brown fox jumps over the lazy dog hello world".split()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"whisper": save_tiny_whisper(root / "whisper"), "llm": save_tiny_llm(root / "llm"),
            "sentence": save_tiny_sentence_encoder(root / "sentence")}


def write_corpus(directory: Path, sets: dict[str, int], seed: int = 0) -> None:
    """Tones whose pitch depends on the first word: learnable by a tiny model."""
    rng = np.random.default_rng(seed)
    (directory / "audio").mkdir(parents=True, exist_ok=True)
    for name, count in sets.items():
        cuts = []
        for i in range(count):
            words = list(rng.choice(WORDS, size=int(rng.integers(2, 5))))
            duration = float(rng.uniform(0.5, 1.5))
            t = np.arange(int(16000 * duration)) / 16000
            audio = 0.3 * np.sin(2 * np.pi * (200 + 60 * WORDS.index(words[0])) * t)
            path = directory / "audio" / f"{name}-{i}.wav"
            sf.write(path, audio.astype(np.float32), 16000)
            rec = Recording.from_file(path, recording_id=f"{name}-{i}")
            sup = SupervisionSegment(id=rec.id, recording_id=rec.id, start=0, duration=rec.duration,
                                     text=" ".join(words), speaker="tone")
            cuts.append(MonoCut(id=rec.id, start=0, duration=rec.duration, channel=0,
                                recording=rec, supervisions=[sup]))
        CutSet.from_cuts(cuts).to_file(directory / f"{name}.jsonl.gz")


@pytest.fixture()
def tiny_cfg(tmp_path, tiny_models) -> SlamConfig:
    """A config wired to the tiny models and a tiny tone corpus under tmp_path."""
    cfg = SlamConfig()
    cfg.encoder.path = str(tiny_models["whisper"])
    cfg.llm.path = str(tiny_models["llm"])
    cfg.caption.text_model = str(tiny_models["sentence"])
    cfg.corpus.dir = str(tmp_path / "corpus")
    cfg.cache.dir = str(tmp_path / "cache")
    cfg.train.dir = str(tmp_path / "exp")
    cfg.decode.dir = str(tmp_path / "exp" / "hyps")
    cfg.baseline.dir = str(tmp_path / "exp" / "baseline")
    cfg.decode.sets = cfg.baseline.sets = ["test"]
    cfg.score.dir = str(tmp_path / "metrics")
    cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg.projector.hidden = 64
    cfg.peft.r = 4
    cfg.train.max_duration = 6.0
    cfg.train.max_steps = 6
    cfg.train.warmup_steps = 2
    cfg.train.eval_every = 3
    cfg.train.checkpoint_every = 2
    cfg.train.log_every = 1
    cfg.runtime.precision = "fp32"
    write_corpus(Path(cfg.corpus.dir), {"train": 16, "dev": 4, "test": 4})
    return cfg


@pytest.fixture()
def fake_prompts(tmp_path, monkeypatch) -> Callable[..., Path]:
    """``make(code, lines)``: a fake asterisk prompt set standing in for one language's Debian
    packages (``asterisk-core-sounds-<code>`` and ``-wav``): the transcript file of ``lines``
    (``name: text``) and a tone wav per name (8 kHz, pitch by the text's first letter), which
    ``corpus.language: <code>`` then reads. Returns the folder."""
    import dataclasses
    import gzip

    from slam.data.corpora import asterisk

    def make(code: str, lines: list[str], seconds: float = 0.4) -> Path:
        root = tmp_path / f"asterisk-{code}"
        (root / "sounds").mkdir(parents=True, exist_ok=True)
        with gzip.open(root / f"core-sounds-{code}.txt.gz", "wt", encoding="utf-8") as f:
            f.write(f"; fake core sounds in {code}\n" + "\n".join(lines) + "\n")
        for line in lines:
            name, _, text = line.partition(":")
            wav = root / "sounds" / f"{name.strip()}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            t = np.arange(int(8000 * seconds)) / 8000
            pitch = 200 + 10 * (ord(text.strip()[:1].lower() or "a") % 32)
            sf.write(wav, (0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32), 8000, subtype="PCM_16")

        @dataclasses.dataclass(frozen=True)
        class Local(asterisk.PromptLanguage):
            @property
            def transcripts(self) -> Path:
                return root / f"core-sounds-{code}.txt.gz"

        language = asterisk.LANGUAGES[code]
        fields = {f.name: getattr(language, f.name) for f in dataclasses.fields(asterisk.PromptLanguage)}
        fields["sounds_dirs"] = (root / "sounds",)
        monkeypatch.setitem(asterisk.LANGUAGES, code, Local(**fields))
        return root

    return make


PINS = Path(__file__).with_name("pinned_metrics.json")


CLOCKS = ("minutes", "seconds", "rtf", "per_s", "time")  # how long, not what: never pinned


def numbers(tree: object, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of nested dicts, by dotted path (booleans, None and clocks left out)."""
    if isinstance(tree, Mapping):
        out: dict[str, float] = {}
        for key, value in tree.items():
            if not any(clock in str(key).lower() for clock in CLOCKS):
                out.update(numbers(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, int | float) and not isinstance(tree, bool) and math.isfinite(tree):
        return {prefix[:-1]: float(tree)}
    return {}


@pytest.fixture()
def pinned() -> Callable[[str, object], None]:
    """Check a recipe's metrics on its tiny end-to-end run against the values pinned in
    ``pinned_metrics.json``, so that a refactoring which changes what a recipe computes fails
    (``SLAM_UPDATE_PINS=1`` rewrites the pins: for changes meant to move them). Losses and
    scores are compared to 1e-3 relative: the same code on another CPU may round differently."""

    def check(name: str, results: object) -> None:
        values = numbers(results)
        pins = json.loads(PINS.read_text()) if PINS.exists() else {}
        if os.environ.get("SLAM_UPDATE_PINS"):
            pins[name] = values
            PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
            return
        assert name in pins, f"no pinned metrics for {name!r}: run once with SLAM_UPDATE_PINS=1"
        assert sorted(values) == sorted(pins[name]), f"{name}: other metrics than the pinned ones"
        moved = {k: (pins[name][k], v) for k, v in values.items()
                 if not math.isclose(v, pins[name][k], rel_tol=1e-3, abs_tol=1e-6)}
        assert not moved, f"{name}: metrics moved from their pins (pinned, now): {moved}"

    return check
