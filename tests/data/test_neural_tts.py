"""The neural TTS engines (kokoro, piper): real renders where the packages and models are
installed, and the skip with a warning where they are not."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from slam.data.corpora import neural_tts
from slam.data.corpora.neural_tts import KokoroEngine, PiperEngine
from slam.data.corpora.tts import TTS_ENGINES, RenderJob, available_engines, plan_renderings, render

ROOT = Path(__file__).resolve().parents[2]
SENTENCE = "The quick brown fox jumps over the lazy dog."


def _kokoro_dir() -> Path:
    return Path(os.environ.get(neural_tts.KOKORO_DIR_ENV) or ROOT / neural_tts.KOKORO_DEFAULT_DIR)


def _skip_unless_runs(engine: KokoroEngine | PiperEngine) -> None:
    missing = engine.missing()
    if missing:
        pytest.skip(f"{engine.name} cannot run here, it lacks: {', '.join(missing)} "
                    "(pip install -e .; Kokoro's model: the zoo stage, or SLAM_KOKORO_DIR)")


def _assert_speech(path: Path, low: float, high: float) -> None:
    audio, rate = sf.read(str(path), dtype="float32")
    seconds = len(audio) / rate
    assert rate == 16000 and audio.ndim == 1
    assert low < seconds < high, f"{seconds:.2f} s for {SENTENCE!r}"
    assert float(np.sqrt(np.mean(audio**2))) > 0.01  # speech, not silence


@pytest.mark.parametrize(
    "name,voice,other", [("kokoro", "af_heart", "bm_george"), ("piper", "joe", "joe")]
)
def test_engine_renders_a_sentence(name, voice, other, tmp_path) -> None:
    engine = KokoroEngine(model_dir=_kokoro_dir()) if name == "kokoro" else PiperEngine()
    _skip_unless_runs(engine)
    jobs = [
        RenderJob(id=f"{name}_a", split="train", text=SENTENCE, engine=name, voice=voice, speed=1.0),
        RenderJob(id=f"{name}_b", split="train", text="Thank you.", engine=name, voice=other, speed=1.3),
    ]
    engine.batch_size = 1  # one job per task: two threads share the one loaded model
    report = render(jobs, tmp_path, {name: engine}, num_workers=2)
    assert report.failed == {}
    _assert_speech(report.done[f"{name}_a"], 1.2, 5.0)
    _assert_speech(report.done[f"{name}_b"], 0.3, 2.0)


def test_piper_renders_the_same_bytes_in_any_order_and_thread(tmp_path) -> None:
    """VITS samples noise inside its ONNX graph; the corpus is a DVC output, so a batch must
    render the same bytes whichever thread takes it and whatever was rendered before."""
    engine = PiperEngine()
    _skip_unless_runs(engine)
    engine.batch_size = 2
    texts = [SENTENCE, "Thank you.", "Please hold the line.", "Goodbye for now."]
    jobs = [RenderJob(id=f"p{i}", split="train", text=text, engine="piper", voice="joe")
            for i, text in enumerate(texts)]

    def rendered(out: Path, batch: list[RenderJob], workers: int) -> dict[str, bytes]:
        report = render(batch, out, {"piper": engine}, num_workers=workers)
        assert report.failed == {}
        return {k: Path(v).read_bytes() for k, v in report.done.items()}

    one_thread = rendered(tmp_path / "a", jobs, 1)
    assert rendered(tmp_path / "b", jobs, 2) == one_thread  # batches in parallel, any order
    assert rendered(tmp_path / "c", jobs[2:], 1) == {k: one_thread[k] for k in ("p2", "p3")}  # alone
    assert one_thread["p0"] != one_thread["p1"]


def test_engines_registered_with_their_voices() -> None:
    assert {"kokoro", "piper"} <= set(TTS_ENGINES.names())
    kokoro = KokoroEngine(model_dir="/nonexistent")
    assert len(kokoro.declared_voices()) == 28
    assert all(v[:3] in ("af_", "am_", "bf_", "bm_") for v in kokoro.declared_voices())
    assert kokoro.pitch_range("af_heart") == (0.0, 0.0) == PiperEngine().pitch_range("joe")
    assert PiperEngine().declared_voices() == ["joe"]
    with pytest.raises(ValueError, match="speaks"):
        KokoroEngine("fr")


def test_missing_kokoro_model_is_skipped_with_a_warning(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv(neural_tts.KOKORO_DIR_ENV, str(tmp_path))
    engine = KokoroEngine()
    assert engine.installed_voices() == []
    assert str(tmp_path / neural_tts.KOKORO_MODEL_FILE) in engine.missing()
    with caplog.at_level(logging.WARNING, logger="slam.data.corpora.tts"):
        with pytest.raises(RuntimeError, match="none of the TTS engines"):
            available_engines(["kokoro"])
    assert "TTS engine kokoro" in caplog.text and neural_tts.KOKORO_VOICES_FILE in caplog.text
    if importlib.util.find_spec("kokoro_onnx") is None:
        return
    # with the model files in place (contents are only read when rendering) it is listed
    for name in (neural_tts.KOKORO_MODEL_FILE, neural_tts.KOKORO_VOICES_FILE):
        (tmp_path / name).write_bytes(b"")
    engines = available_engines(["kokoro"])
    assert engines["kokoro"][1] == engine.declared_voices()
    jobs = plan_renderings({"train": ["one two three four"] * 3}, engines, seed=0)
    assert {j.engine for j in jobs} == {"kokoro"} and {j.pitch for j in jobs} == {0.0}


def test_missing_package_is_skipped_with_a_warning(monkeypatch, caplog) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "piper" else real(n, *a))
    assert PiperEngine().installed_voices() == []
    assert "Python package piper" in PiperEngine().missing()
    with caplog.at_level(logging.WARNING, logger="slam.data.corpora.tts"):
        with pytest.raises(RuntimeError, match="none of the TTS engines"):
            available_engines(["piper"])
    assert "TTS engine piper (Python package piper)" in caplog.text


def test_zoo_importer_writes_the_files_the_engine_reads() -> None:
    from slam.zoo import kokoro

    assert (kokoro.MODEL_FILE, kokoro.VOICES_FILE) == (
        neural_tts.KOKORO_MODEL_FILE,
        neural_tts.KOKORO_VOICES_FILE,
    )
    assert kokoro.MIN_VOICES == len(neural_tts.KOKORO_VOICES)
