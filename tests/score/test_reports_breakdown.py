"""The ``breakdown`` report: WER of every system and decoding by synthesis engine, voice and
utterance length, from the set's manifest and hand-written hypothesis files."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.audio import AudioSource

from slam.config import SlamConfig
from slam.score.metrics.reports import REPORTS, breakdown_report, duration_bucket, engine_of, voice_of

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
WRONG = "zulu"  # no reference word: every hypothesis word of a wrong row is a substitution
# (id, speaker, custom, duration): festival is always recognised, espeak never
CUTS = [
    ("f0", "festival:ked_diphone", {"engine": "festival", "voice": "ked_diphone"}, 1.0),
    ("f1", "festival:ked_diphone", {"engine": "festival", "voice": "ked_diphone"}, 3.0),
    ("f2", "festival:ked_diphone", {"engine": "festival", "voice": "ked_diphone"}, 5.0),
    ("f3", "festival:ked_diphone", {"engine": "festival", "voice": "ked_diphone"}, 8.0),
    ("f4", "festival:ked_diphone", {"engine": "festival", "voice": "ked_diphone"}, 12.0),
    ("e0", "espeak:en-gb+adam", {"engine": "espeak", "voice": "en-gb+adam"}, 1.5),
    ("e1", "espeak:en-gb+adam", {"engine": "espeak", "voice": "en-gb+adam"}, 2.0),
    ("e2", "espeak:en-gb+adam", {"engine": "espeak", "voice": "en-gb+adam"}, 3.9),
    ("e3", "espeak:en-gb+adam", {"engine": "espeak", "voice": "en-gb+adam"}, 6.0),
    ("e4", "espeak:en-us", None, 10.0),  # no custom: the engine comes from the speaker
]
BUCKETS = {"<2 s": 2, "2-4 s": 3, "4-6 s": 1, "6-10 s": 2, ">=10 s": 2}


def _text(i: int) -> str:
    return " ".join(WORDS[(i + k) % len(WORDS)] for k in range(2 + i % 3))


def _write_manifest(corpus: Path, shorter_than: float = float("inf")) -> dict[str, str]:
    """The set ``test`` (no audio is read: the report needs the manifest only); its transcripts."""
    cuts, texts = [], {}
    for i, (cut_id, speaker, custom, duration) in enumerate(CUTS):
        if duration >= shorter_than:
            continue
        texts[cut_id] = _text(i)
        source = AudioSource(type="file", channels=[0], source=f"{cut_id}.wav")
        rec = Recording(id=cut_id, sources=[source], sampling_rate=16000, num_samples=int(16000 * duration),
                        duration=duration)  # fmt: skip
        sup = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0, duration=duration, channel=0,
                                 text=texts[cut_id], speaker=speaker, custom=custom)  # fmt: skip
        cuts.append(MonoCut(id=cut_id, start=0, duration=duration, channel=0, recording=rec,
                            supervisions=[sup]))  # fmt: skip
    corpus.mkdir(parents=True, exist_ok=True)
    CutSet.from_cuts(cuts).to_file(corpus / "test.jsonl.gz")
    return texts


def _write_hyps(path: Path, texts: dict[str, str], wrong: set[str]) -> None:
    """A hypothesis file: the cuts of ``wrong`` get as many words as the reference, all wrong."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"id": i, "ref": t, "hyp": " ".join([WRONG] * len(t.split())) if i in wrong else t}
            for i, t in texts.items()]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _counts(table: dict[str, dict]) -> dict[str, int]:
    return {group: row["cuts"] for group, row in table.items()}


@pytest.fixture()
def cfg(tmp_path: Path) -> SlamConfig:
    """The default ASR recipe, with the LLM's greedy and CTC readings and Whisper's greedy one."""
    cfg = SlamConfig()
    cfg.corpus.dir = str(tmp_path / "corpus")
    cfg.train.dir = str(tmp_path / "exp")
    cfg.decode.dir = str(tmp_path / "exp" / "hyps")
    cfg.baseline.dir = str(tmp_path / "exp" / "baseline")
    cfg.score.dir = str(tmp_path / "metrics")
    cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    texts = _write_manifest(Path(cfg.corpus.dir))
    espeak = {cut_id for cut_id, *_ in CUTS if cut_id.startswith("e")}
    _write_hyps(Path(cfg.decode.dir) / "test.beam1.jsonl", texts, wrong=espeak)
    _write_hyps(Path(cfg.decode.dir) / "test.ctc.jsonl", texts, wrong=set(texts))
    _write_hyps(Path(cfg.baseline.dir) / "test.beam1.jsonl", texts, wrong=set())
    return cfg


def test_group_keys():
    def cut(speaker: str | None, custom: dict | None = None) -> SimpleNamespace:
        return SimpleNamespace(supervisions=[SimpleNamespace(speaker=speaker, custom=custom)])

    assert engine_of(cut("x:y", {"engine": "piper", "voice": "amy"})) == "piper"  # custom wins
    assert engine_of(cut("festival:ked_diphone")) == "festival"
    assert engine_of(cut("alice")) == engine_of(cut(None)) == "real"  # a recorded speaker
    espeak = cut("espeak:en-gb+adam", {"engine": "espeak", "voice": "en-gb+adam"})
    assert voice_of(espeak) == "espeak:en-gb+adam"
    assert voice_of(cut("alice")) == "alice"
    assert [duration_bucket(s) for s in (0.3, 1.99, 2.0, 4.0, 9.99, 10.0, 30.0)] == [
        "<2 s", "<2 s", "2-4 s", "4-6 s", "6-10 s", ">=10 s", ">=10 s"]  # fmt: skip
    assert "breakdown" in REPORTS.names()


def test_breakdown_by_engine_voice_and_length(cfg: SlamConfig, tmp_path: Path):
    metrics_dir = tmp_path / "metrics" / "asr"
    text = breakdown_report(cfg, metrics_dir, min_utterances=5)
    result = json.loads((metrics_dir / "breakdown.json").read_text())["test"]
    llm, ctc, whisper = "llm.test.beam1", "llm.test.ctc", "whisper.test.beam1"
    assert [c["key"] for c in result["columns"]] == [llm, ctc, whisper]  # the results table's order
    wer = {kind: {g: {k: s["wer"] for k, s in row["systems"].items()} for g, row in result[kind].items()}
           for kind in ("engine", "voice", "duration")}  # fmt: skip
    # one engine recognised, the other not: 0 and 100 %; the CTC reading wrong, Whisper right everywhere
    assert wer["engine"] == {"espeak": {llm: 1.0, ctc: 1.0, whisper: 0.0},
                             "festival": {llm: 0.0, ctc: 1.0, whisper: 0.0}}  # fmt: skip
    assert _counts(result["engine"]) == {"espeak": 5, "festival": 5}
    # ked_diphone has 5 cuts: its own row; en-gb+adam (4) and en-us (1) are pooled
    assert _counts(result["voice"]) == {"festival:ked_diphone": 5, "other voices": 5}
    assert wer["voice"]["festival:ked_diphone"][llm] == 0.0 and wer["voice"]["other voices"][llm] == 1.0
    assert _counts(result["duration"]) == BUCKETS
    lengths = text.split("By utterance length")[1].splitlines()
    rows = [line.split(" | ")[0].removeprefix("| ") for line in lengths]
    assert [r for r in rows if r in BUCKETS] == list(BUCKETS)  # the table in order of length
    assert wer["duration"]["4-6 s"][llm] == 0.0  # festival's only
    assert 0 < wer["duration"]["<2 s"][llm] < 1  # one of each engine
    assert "| festival | 5 | 0.0 | 100.0 | 0.0 |" in text and "| espeak | 5 | 100.0 | 100.0 | 0.0 |" in text
    assert "| 4-6 s | 1 | 0.0 | 100.0 | 0.0 |" in text
    assert ("| engine | utts | LLM-based (encoder + projector + LLM), greedy | CTC head of the projector, "
            "alone (no LLM), best path | Whisper (own decoder), greedy |") in text
    # with the default threshold (20 cuts) every voice of this small set is pooled
    breakdown_report(cfg, metrics_dir)
    voices = json.loads((metrics_dir / "breakdown.json").read_text())["test"]["voice"]
    assert _counts(voices) == {"other voices": 10}


def test_empty_bucket_and_missing_hypotheses(cfg: SlamConfig, tmp_path: Path):
    # the LLM's file lacks the festival cuts: they count as all deletions
    rows = (Path(cfg.baseline.dir) / "test.beam1.jsonl").read_text().splitlines(keepends=True)
    (Path(cfg.decode.dir) / "test.beam1.jsonl").write_text("".join(r for r in rows if '"id": "e' in r))
    (Path(cfg.decode.dir) / "test.ctc.jsonl").unlink()
    metrics_dir = tmp_path / "metrics" / "asr"
    breakdown_report(cfg, metrics_dir)
    result = json.loads((metrics_dir / "breakdown.json").read_text())["test"]
    assert result["engine"]["festival"]["systems"]["llm.test.beam1"]["wer"] == 1.0
    assert result["engine"]["espeak"]["systems"]["llm.test.beam1"]["wer"] == 0.0
    # a bucket no cut falls in reads "—"
    cfg.corpus.dir = str(tmp_path / "short")
    texts = _write_manifest(Path(cfg.corpus.dir), shorter_than=6.0)
    for path in (Path(cfg.decode.dir) / "test.beam1.jsonl", Path(cfg.baseline.dir) / "test.beam1.jsonl"):
        _write_hyps(path, texts, wrong=set())
    text = breakdown_report(cfg, metrics_dir)
    assert "| >=10 s | 0 | — | — |" in text and "| 6-10 s | 0 | — | — |" in text


def test_score_stage_appends_the_breakdown(cfg: SlamConfig):
    from slam.score.stage import score

    cfg.score.reports = ["breakdown"]
    metrics = score(cfg)
    assert metrics["llm"]["test.ctc"]["wer"] == 1.0  # the results table scores every label too
    metrics_dir = Path(cfg.score.dir) / "asr"
    results = (metrics_dir / "results.md").read_text()
    assert "## Breakdown: WER (%) by synthesis engine, voice and utterance length" in results
    assert "### test" in results and "| festival | 5 | 0.0 | 100.0 | 0.0 |" in results
    assert set(json.loads((metrics_dir / "breakdown.json").read_text())) == {"test"}


def test_breakdown_skips_recipes_not_scored_by_wer(cfg: SlamConfig, tmp_path: Path):
    cfg.recipe = "aac"
    assert breakdown_report(cfg, tmp_path / "metrics" / "aac") == ""
    assert not (tmp_path / "metrics" / "aac" / "breakdown.json").exists()


def test_held_out_voices_are_reported_apart(cfg: SlamConfig, tmp_path: Path):
    manifest = Path(cfg.corpus.dir) / "test.jsonl.gz"
    cuts = []
    for cut in CutSet.from_file(manifest):  # espeak's adam voice never spoke a training sentence
        if cut.supervisions[0].speaker == "espeak:en-gb+adam":
            cut.supervisions[0].custom["held_out"] = True
        cuts.append(cut)
    CutSet.from_cuts(cuts).to_file(manifest)
    metrics_dir = tmp_path / "metrics" / "asr"
    text = breakdown_report(cfg, metrics_dir)
    heard = json.loads((metrics_dir / "breakdown.json").read_text())["test"]["heard"]
    assert _counts(heard) == {"voices heard in training": 6, "voices held out of training": 4}
    assert heard["voices held out of training"]["systems"]["llm.test.beam1"]["wer"] == 1.0
    assert "| voices held out of training | 4 | 100.0 | 100.0 | 0.0 |" in text
