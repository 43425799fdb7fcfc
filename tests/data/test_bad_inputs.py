"""Broken inputs at every boundary: each one is named in one line, or skipped and counted.

One corpus of broken items (audio and transcripts) goes through the user-manifest path of
the prepare stage in both accepted forms (SLAM-LLM jsonl and a Lhotse cut manifest), then
through the stage entrypoint (one line on stderr, exit 1, or counts in ``stats.json`` and
MLflow), the cache stage and the ``slam transcribe`` input path. Broken configs too.
(tests/data/test_corpora.py covers the plain corrupt/empty WAV and duplicate cases; the items
here are the rest.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
import soundfile as sf
from lhotse import AudioSource, CutSet, Recording, SupervisionSegment
from lhotse.cut import Cut
from lhotse.utils import fastcopy
from omegaconf import OmegaConf

from slam.config import ConfigError, SlamConfig, as_dict, load_config
from slam.data.cache import build_cache
from slam.data.corpora import BadInputError, prepare_corpus
from slam.data.corpora.user import load_user_corpus
from slam.decode.inference import cuts_from_inputs
from slam.model.encoders import build_encoder
from slam.stages import run_stage

SR = 16000


def tone(seconds: float, sr: int = SR, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def _write_truncated(path: Path) -> None:
    sf.write(str(path), tone(1.0), SR, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a copy cut short: the header still says 1 s


def _write_with(value: float) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        x = tone(1.0)
        x[1000:1010] = value
        sf.write(str(path), x, SR, subtype="FLOAT")

    return write


def _write_long(path: Path) -> None:
    """Ten minutes, written a block at a time (a tone, then silence): 19 MB of 16-bit PCM."""
    with sf.SoundFile(str(path), "w", samplerate=SR, channels=1, subtype="PCM_16") as f:
        f.write(tone(1.0))
        block = np.zeros(60 * SR, dtype=np.float32)
        for _ in range(10):
            f.write(block)


@dataclass
class Item:
    """One entry of the broken corpus: how to make its audio, its transcript, what must happen."""

    write: Callable[[Path], None] | None  # None: the file does not exist
    text: str | bytes = "some words"
    reason: str | None = None  # the skip reason; None: accepted
    named: str = "{file}"  # what the error must name (besides the manifest line)


ITEMS: dict[str, Item] = {
    "corrupt": Item(lambda p: p.write_bytes(np.random.default_rng(0).bytes(3000)), reason="bad_audio"),
    "header_only": Item(lambda p: p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt "), reason="bad_audio"),
    "truncated": Item(_write_truncated, reason="truncated_audio"),
    "zero_length": Item(lambda p: sf.write(str(p), np.zeros(0, np.int16), SR), reason="empty_audio"),
    "all_zero": Item(lambda p: sf.write(str(p), np.zeros(SR, np.float32), SR), reason="silent_audio"),
    "nan": Item(_write_with(np.nan), reason="non_finite"),
    "inf": Item(_write_with(np.inf), reason="non_finite"),
    "missing": Item(None, reason="missing_audio"),
    "empty_text": Item(lambda p: sf.write(str(p), tone(1.0), SR), text="", reason="no_text"),
    "blank_text": Item(lambda p: sf.write(str(p), tone(1.0), SR), text=" \t ", reason="no_text"),
    # a transcript that is not UTF-8: its line is the item to name (the audio is fine)
    "latin1_text": Item(lambda p: sf.write(str(p), tone(1.0), SR), text="caf\xe9".encode("latin-1"),
                        reason="bad_line", named=""),
    # accepted: resampled, downmixed, kept long
    "rate_8k": Item(lambda p: sf.write(str(p), tone(1.0, 8000), 8000)),
    "rate_48k": Item(lambda p: sf.write(str(p), tone(1.0, 48000), 48000)),
    "stereo": Item(lambda p: sf.write(str(p), tone(1.0, channels=2), SR)),
    "ten_minutes": Item(_write_long),
}


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    """Every item's audio, written once (the ten-minute file costs a second)."""
    root = tmp_path_factory.mktemp("broken")
    sf.write(str(root / "good.wav"), tone(1.0), SR)
    for name, item in ITEMS.items():
        if item.write is not None:
            item.write(root / f"{name}.wav")
    return root


def _placeholder(text: str | bytes) -> tuple[str, bytes | None]:
    """JSON cannot hold raw bytes: write a marker and swap the bytes in afterwards."""
    return ("@@RAW@@", text) if isinstance(text, bytes) else (text, None)  # type: ignore[return-value]


def _lines_to_file(path: Path, lines: list[str], raw: bytes | None) -> Path:
    data = "".join(line + "\n" for line in lines).encode()
    if raw is not None:
        data = data.replace(b"@@RAW@@", raw)
    path.write_bytes(data)
    return path


def slam_manifest(directory: Path, audio: Path, names: list[str]) -> Path:
    """SLAM-LLM jsonl: line 1 a good utterance, then one line per item."""
    lines = [json.dumps({"key": "good", "source": str(audio / "good.wav"), "target": "fine words"})]
    raw = None
    for name in names:
        text, raw_text = _placeholder(ITEMS[name].text)
        raw = raw_text or raw
        lines.append(json.dumps({"key": name, "source": str(audio / f"{name}.wav"), "target": text}))
    return _lines_to_file(directory / "slam.jsonl", lines, raw)


def _cut(path: Path, cut_id: str, text: str) -> Cut:
    """A cut as a Lhotse recipe would describe the file (by hand where the file cannot tell)."""
    try:
        rec = Recording.from_file(path, recording_id=cut_id)
    except Exception:  # unreadable or missing: describe it as 1 s of 16 kHz mono
        source = AudioSource(type="file", channels=[0], source=str(path))
        rec = Recording(id=cut_id, sources=[source], sampling_rate=SR, num_samples=SR, duration=1.0)
    cut = rec.to_cut()  # a MultiCut for several channels, its transcript over all of them
    sup = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0, duration=rec.duration,
                             channel=cut.channel, text=text)
    return fastcopy(cut, supervisions=[sup])


def lhotse_manifest(directory: Path, audio: Path, names: list[str]) -> Path:
    """A Lhotse cut manifest (plain jsonl): line 1 a good cut, then one line per item."""
    lines = [json.dumps(_cut(audio / "good.wav", "good", "fine words").to_dict())]
    raw = None
    for name in names:
        text, raw_text = _placeholder(ITEMS[name].text)
        raw = raw_text or raw
        lines.append(json.dumps(_cut(audio / f"{name}.wav", name, text).to_dict()))
    return _lines_to_file(directory / "cuts.jsonl", lines, raw)


MANIFESTS = {"slam_jsonl": slam_manifest, "lhotse": lhotse_manifest}


@pytest.mark.parametrize("form", MANIFESTS)
@pytest.mark.parametrize("name", ITEMS)
def test_each_broken_item_is_named_or_counted(tmp_path: Path, audio: Path, name: str, form: str) -> None:
    item = ITEMS[name]
    manifest = MANIFESTS[form](tmp_path, audio, [name])
    if item.reason is None:  # accepted: normalised, nothing skipped
        cuts, counts = load_user_corpus(str(manifest), SR)
        assert [c.id for c in cuts] == ["good", name] and not counts["skipped"]
        cut = cuts[1]
        assert cut.sampling_rate == SR  # resampled (lazily) to the corpus rate
        samples = cut.load_audio()
        assert abs(samples.shape[1] - SR * cut.duration) <= 1
        if name == "stereo":  # both channels kept; the encoder averages them
            assert counts["downmixed"] == 1 and samples.shape[0] == 2
        if name.startswith("rate"):
            assert counts["resampled"] == 1
        if name == "ten_minutes":
            assert cut.duration == pytest.approx(601.0)
        return
    # an error naming the file (where there is one) and the manifest line ...
    named = item.named.format(file=f"{name}.wav")
    with pytest.raises(BadInputError) as info:
        load_user_corpus(str(manifest), SR)
    message = str(info.value)
    assert "\n" not in message
    assert f"{manifest.name}:2" in message and named in message, message
    # ... or, with skip_bad, a counted skip that costs that item only
    cuts, counts = load_user_corpus(str(manifest), SR, skip_bad=True)
    assert [c.id for c in cuts] == ["good"]
    assert counts["skipped"] == {item.reason: 1}


@pytest.mark.parametrize("form", MANIFESTS)
def test_a_bad_line_in_a_manifest(tmp_path: Path, audio: Path, form: str) -> None:
    manifest = MANIFESTS[form](tmp_path, audio, ["rate_8k"])
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0], '{"key": "x", "source": ', lines[1]]) + "\n")
    with pytest.raises(BadInputError, match=rf"{manifest.name}:2: invalid JSON"):
        load_user_corpus(str(manifest), SR)
    cuts, counts = load_user_corpus(str(manifest), SR, skip_bad=True)
    assert [c.id for c in cuts] == ["good", "rate_8k"] and counts["skipped"] == {"bad_line": 1}


def test_lhotse_entry_with_missing_fields_and_cut_short_gzip(tmp_path: Path, audio: Path) -> None:
    manifest = lhotse_manifest(tmp_path, audio, ["stereo"])
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0], '{"type": "MonoCut", "id": "odd"}', lines[1]]) + "\n")
    with pytest.raises(BadInputError, match=rf"{manifest.name}:2: not a Lhotse manifest entry"):
        load_user_corpus(str(manifest), SR)
    # a gzip manifest cut short (an interrupted copy): named, or the lines before the cut kept
    full = CutSet.from_cuts([_cut(audio / "good.wav", f"u{i}", "words") for i in range(200)])
    gz = tmp_path / "cuts.jsonl.gz"
    full.to_file(gz)
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    with pytest.raises(BadInputError, match="cuts.jsonl.gz:.*cut short"):
        load_user_corpus(str(gz), SR)
    cuts, counts = load_user_corpus(str(gz), SR, skip_bad=True)
    assert 0 < len(cuts) < 200 and counts["skipped"] == {"bad_line": 1}


@pytest.mark.parametrize("form", MANIFESTS)
def test_duplicate_ids_fail_even_with_skip_bad(tmp_path: Path, audio: Path, form: str) -> None:
    manifest = MANIFESTS[form](tmp_path, audio, ["rate_8k"])
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0], lines[1], lines[1]]) + "\n")
    with pytest.raises(BadInputError, match=r"duplicate .*'rate_8k'.*:3"):
        load_user_corpus(str(manifest), SR, skip_bad=True)


# ------------------------------------------------------------------ the prepare stage


def error_line(stderr: str) -> str:
    """The one line a failed stage prints (progress bars share stderr); no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error in stage")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """One MLflow store for the module: creating one costs seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _stage_cfg(tmp_path: Path, manifest: Path, skip_bad: bool, tracking_uri: str = "") -> SlamConfig:
    cfg = SlamConfig()
    cfg.corpus.dir = str(tmp_path / "corpus")
    cfg.corpus.num_utterances = 0  # the user's set only
    cfg.corpus.real_sets = []
    cfg.corpus.user_manifests = {"mine": str(manifest)}
    cfg.corpus.skip_bad = skip_bad
    cfg.tracking.uri = tracking_uri or f"sqlite:///{tmp_path / 'mlflow.db'}"
    return cfg


def _params(cfg: SlamConfig | dict, path: Path) -> str:
    OmegaConf.save(OmegaConf.create(as_dict(cfg) if isinstance(cfg, SlamConfig) else cfg), path)
    return str(path)


def test_prepare_stage_names_a_broken_item(tmp_path: Path, audio: Path, capsys) -> None:
    manifest = slam_manifest(tmp_path, audio, ["rate_48k", "nan", "corrupt"])
    params = _params(_stage_cfg(tmp_path, manifest, skip_bad=False), tmp_path / "params.yaml")
    with pytest.raises(SystemExit) as exit_info:
        run_stage(prepare_corpus, params)
    assert exit_info.value.code == 1
    line = error_line(capsys.readouterr().err)
    # the stage, the file, the manifest line, the fix
    assert line.startswith("error in stage prepare_corpus:")
    assert "corrupt.wav" in line and "slam.jsonl:4" in line and "skip_bad" in line


@pytest.mark.parametrize("form", MANIFESTS)
def test_prepare_stage_counts_skips_in_stats_and_mlflow(
    tmp_path: Path, audio: Path, form: str, tracking_uri: str
) -> None:
    names = list(ITEMS)
    manifest = MANIFESTS[form](tmp_path, audio, names)
    cfg = _stage_cfg(tmp_path, manifest, skip_bad=True, tracking_uri=tracking_uri)
    sets = run_stage(prepare_corpus, _params(cfg, tmp_path / "params.yaml"))
    accepted = ["good"] + [n for n in names if ITEMS[n].reason is None]
    assert [c.id for c in sets["mine"]] == accepted
    expected: dict[str, int] = {}
    for name in names:
        if ITEMS[name].reason:
            expected[ITEMS[name].reason] = expected.get(ITEMS[name].reason, 0) + 1  # type: ignore[index]
    stats = json.loads((tmp_path / "corpus" / "stats.json").read_text())
    mine = stats["sets"]["mine"]
    assert mine["skipped"] == expected
    assert mine["cuts"] == len(accepted) and mine["resampled"] == 2 and mine["downmixed"] == 1
    # the same counts reach MLflow, in a run of the prepare stage
    client = mlflow.MlflowClient(cfg.tracking.uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    run = client.search_runs(experiments, "tags.system = 'prepare'", order_by=["attributes.start_time DESC"],
                             max_results=1)[0]  # this test's run
    assert run.data.tags["system"] == "prepare"
    metrics = run.data.metrics
    assert metrics["mine.skipped"] == sum(expected.values())
    assert {k.removeprefix("mine.skipped."): v for k, v in metrics.items()
            if k.startswith("mine.skipped.")} == expected
    assert metrics["mine.cuts"] == len(accepted) and metrics["mine.downmixed"] == 1


def test_missing_manifest_and_bad_set_name(tmp_path: Path, capsys) -> None:
    cfg = _stage_cfg(tmp_path, tmp_path / "nowhere.jsonl", skip_bad=True)
    with pytest.raises(SystemExit):
        run_stage(prepare_corpus, _params(cfg, tmp_path / "params.yaml"))
    assert "nowhere.jsonl does not exist" in error_line(capsys.readouterr().err)
    cfg.corpus.user_manifests = {"../escape": str(tmp_path / "nowhere.jsonl")}
    with pytest.raises(SystemExit):
        run_stage(prepare_corpus, _params(cfg, tmp_path / "params.yaml"))
    assert "'../escape'" in error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "params, named",
    [
        ({"corpus": {"skip_bad": "maybe"}}, "corpus.skip_bad"),
        ({"train": {"max_steps": "ten"}}, "train.max_steps"),
        ({"corpus": {"skipbad": True}}, "corpus.skipbad: Key 'skipbad' not in 'CorpusConfig' (known keys"),
        ({"nonsense": 1}, "nonsense"),
        ({"corpus": {"user_manifests": ["a.jsonl"]}}, "corpus.user_manifests: expected a mapping"),
        ({"corpus": "data"}, "corpus: expected a mapping"),
        ({"decode": {"num_beams": 4}}, "decode.num_beams"),
        ("corpus:\n  dir: [unclosed\n  seed: 1\n", "params.yaml:3: not a readable config"),
        (b"corpus:\n  dir: \xff\n", "params.yaml: not a readable config"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, capsys, params, named: str) -> None:
    path = tmp_path / "params.yaml"
    if isinstance(params, dict):
        _params(params, path)
    else:
        path.write_bytes(params if isinstance(params, bytes) else params.encode())
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert named in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(SystemExit) as exit_info:
        run_stage(prepare_corpus, str(path))
    assert exit_info.value.code == 1
    assert named in error_line(capsys.readouterr().err)


# ------------------------------------------------------------------------ cache stage


def _cache_corpus(cfg: SlamConfig, cuts: list[Cut]) -> str:
    """A corpus of one set, ``long``, for the cache stage; returns the params file."""
    root = Path(cfg.corpus.dir).parent / "cache-case"
    cfg.corpus.dir, cfg.cache.dir = str(root / "corpus"), str(root / "cache")
    Path(cfg.corpus.dir).mkdir(parents=True)
    CutSet.from_cuts(cuts).to_file(Path(cfg.corpus.dir) / "long.jsonl.gz")
    return _params(cfg, root / "params.yaml")


def test_cache_stage_names_a_cut_it_cannot_read(tiny_cfg, audio: Path, tmp_path: Path, capsys) -> None:
    """Audio that went missing after prepare: the cache stage names the file and the cut."""
    moved = tmp_path / "moved.wav"
    sf.write(str(moved), tone(1.0), SR)
    params = _cache_corpus(tiny_cfg, [_cut(audio / "good.wav", "good", "fine"), _cut(moved, "moved", "gone")])
    moved.unlink()
    with pytest.raises(SystemExit):
        run_stage(build_cache, params)
    line = error_line(capsys.readouterr().err)
    assert "moved.wav" in line and "cut moved of set long" in line and "skip_bad" in line
    tiny_cfg.corpus.skip_bad = True
    info = build_cache(tiny_cfg)
    assert info["sets"] == {"long": 1} and info["cut_problems"] == {"long": {"encode_failed": 1}}


def test_cache_stage_never_passes_off_a_long_cut_as_whole(tiny_cfg, audio: Path) -> None:
    """Ten minutes passes prepare (the corpus knows no encoder); Whisper takes 30 s at most.

    The cut is named (Whisper's own length check), or kept and counted as truncated. Today it
    is the second: ``WhisperEncoder.extract`` lets the feature extractor cut the audio to 30 s
    (transformers' default ``truncation=True``) before its own check can fire; passing
    ``truncation=False`` there turns this into the named error.
    """
    _cache_corpus(tiny_cfg, [_cut(audio / "ten_minutes.wav", "ten_minutes", "a long one")])
    try:
        info = build_cache(tiny_cfg)
    except BadInputError as exc:
        assert "ten_minutes.wav" in str(exc) and "longer than Whisper's 30 s" in str(exc)
    else:
        assert info["cut_problems"] == {"long": {"truncated": 1}}


# ----------------------------------------------------------- the transcribe input path


def test_transcribe_inputs(audio: Path, tiny_models) -> None:
    """``slam transcribe`` reads files as given: what it names, and what validate adds."""
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        cuts_from_inputs([audio / "missing.wav"])
    for name in ("corrupt", "header_only"):
        with pytest.raises(ValueError, match=f"cannot read audio .*{name}.wav"):
            cuts_from_inputs([audio / f"{name}.wav"])
    # Accepted as they are: other rates and stereo (the encoder resamples, and averages the
    # channels of a multi-channel cut) ...
    from slam.config import EncoderConfig

    encoder = build_encoder(EncoderConfig(path=str(tiny_models["whisper"])))
    for name in ("rate_8k", "rate_48k", "stereo"):
        (cut,) = cuts_from_inputs([audio / f"{name}.wav"])
        assert encoder.load_input(cut).shape[0] == 100  # 1 s of 100 Hz mel frames
    # ... while empty, NaN, silent and truncated files are named, as the prepare stage does.
    for name, reason in (("zero_length", ""), ("nan", "NaN"), ("all_zero", "all zeros"),
                         ("truncated", "truncated WAV")):
        with pytest.raises(ValueError, match=re.escape(f"{name}.wav") + f".*{reason}"):
            cuts_from_inputs([audio / f"{name}.wav"])
