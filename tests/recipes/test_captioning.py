"""Recipe aac: caption targets, baselines, CLAP-Refine's choice, the scenes corpus source, and
the whole recipe (prepare -> cache -> train -> decode -> baseline -> score) with tiny models."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import CutSet, MonoCut, SupervisionSegment

from slam.config import SlamConfig
from slam.data.corpora import folk, music
from slam.data.corpora.text import split_of_key
from slam.registry import UnknownComponentError
from slam.tasks.captioning import (
    CaptionSpace,
    caption_target,
    captions_of,
    most_frequent_caption,
    training_captions,
)


def _cut(cut_id: str, captions: list[str] | None, text: str = "fallback text") -> MonoCut:
    custom = {"captions": captions} if captions is not None else None
    sup = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0, duration=1.0, text=text, custom=custom)
    return MonoCut(id=cut_id, start=0, duration=1.0, channel=0, supervisions=[sup])


def test_caption_target_takes_each_caption_in_turn():
    cut = _cut("clip-1", ["a beep.", "one beep sounds.", "a short tone."])
    seen = [caption_target(cut, epoch) for epoch in range(6)]
    assert set(seen[:3]) == {"a beep.", "one beep sounds.", "a short tone."}
    assert seen[3:] == seen[:3]  # the cycle repeats
    assert caption_target(cut, 1) == caption_target(_cut("clip-1", captions_of(cut)), 1)  # stable
    assert captions_of(_cut("clip-2", None)) == ["fallback text"]  # a plain transcript is one caption
    assert captions_of(_cut("clip-3", ["", " "])) == ["fallback text"]


def test_most_frequent_caption_and_the_retrieval_bank():
    cuts = CutSet.from_cuts([
        _cut("a", ["a dog barks.", "a bell rings."]),
        _cut("b", ["a bell rings.", "birds sing."]),
        _cut("c", ["birds sing.", "a bell rings."]),
    ])
    assert most_frequent_caption(cuts) == "a bell rings."  # 3 times, the others twice or once
    tie = CutSet.from_cuts([_cut("x", ["b caption.", "a caption."])])
    assert most_frequent_caption(tie) == "a caption."  # ties: the first in sort order
    assert training_captions(cuts) == ["a bell rings.", "a dog barks.", "birds sing."]


class _FixedSpace(CaptionSpace):
    """Embeddings given by hand: each cut's audio vector and each text's vector."""

    def __init__(self, audio: dict[str, list[float]], text: dict[str, list[float]]) -> None:
        self._audio, self._text = audio, text

    def audio(self, cuts):
        return torch.tensor([self._audio[c.id] for c in cuts])

    def text(self, texts):
        return torch.tensor([self._text[t] for t in texts])


def test_refine_picks_the_candidate_nearest_the_audio_and_retrieval_the_nearest_caption():
    space = _FixedSpace(
        audio={"c1": [1.0, 0.0], "c2": [0.0, 1.0]},
        text={"beep": [0.9, 0.1], "hum": [0.1, 0.9], "tone": [0.9, 0.1]},
    )
    cuts = CutSet.from_cuts([_cut("c1", ["x"]), _cut("c2", ["y"])])
    assert space.refine(cuts, [["hum", "beep"], ["beep", "hum"]]) == ["beep", "hum"]
    assert space.refine(cuts, [["tone", "beep"], ["tone", "beep"]]) == ["tone", "tone"]  # equals: the first
    assert space.nearest(cuts, ["hum", "beep"]) == ["beep", "hum"]


def test_drcap_retrieval_leaves_out_own_captions_and_projection_decoding_moves_to_the_text_side():
    from slam.config import CaptionConfig
    from slam.tasks.drcap import AudioRows, Datastore, TextOnlyRows, prompt

    s = 2**-0.5
    text = {"a beep": [1.0, 0.0], "a short beep": [s, s], "a low hum": [0.0, 1.0], "a dog": [-1.0, 0.0]}
    space = _FixedSpace(audio={"c1": [0.8, 0.6], "c2": [-0.6, -0.8]}, text=text)
    cc = CaptionConfig(retrieved=2, projection_temperature=1e-3)
    store = Datastore(space, sorted(text), cc)
    query = torch.tensor([[1.0, 0.0]])
    assert store.nearest(query) == [["a beep", "a short beep"]]
    assert store.nearest(query, [["a beep"]]) == [["a short beep", "a low hum"]]  # its own left out
    # cosines of c1's audio with the captions: 0.8, ~0.99, 0.6, -0.8: at a tiny temperature the
    # projection is the nearest caption's vector; at a large one the mean of all four, renormalised
    audio = torch.tensor([[0.8, 0.6]])
    assert torch.allclose(store.project(audio), torch.tensor([[s, s]]), atol=1e-4)
    store.cc = CaptionConfig(projection_temperature=1e4)
    mean = torch.tensor([[1.0 + s - 1.0, s + 1.0]])
    assert torch.allclose(store.project(audio), mean / mean.norm(), atol=1e-3)
    store.cc = cc

    cuts = CutSet.from_cuts([_cut("c1", ["a beep", "a short beep"]), _cut("c2", ["a low hum"])])
    rows = TextOnlyRows(space, cuts, CutSet.from_cuts([]), cc)
    # training: the input is the epoch's target caption's own vector, the prompt its neighbours
    # among the training captions other than the clip's own
    target = caption_target(cuts[0], 0)
    assert torch.allclose(rows.features(cuts[0], 0), torch.tensor([text[target]]))
    assert rows.instruction(cuts[0], 0) == prompt(cc, ["a low hum"])  # nothing else is left
    decoding = AudioRows(space, store, cuts)
    assert torch.allclose(decoding.features(cuts[0]), torch.tensor([[s, s]]), atol=1e-4)
    assert decoding.instruction(cuts[1]) == prompt(cc, ["a dog", "a beep"])  # cosines 0.6, -0.6


def test_scenes_source_and_an_unknown_source(tmp_path):
    from slam.data.corpora import prepare_corpus

    cfg = SlamConfig()
    cfg.corpus.dir = str(tmp_path / "corpus")
    cfg.corpus.source, cfg.corpus.num_utterances, cfg.corpus.real_sets = "scenes", 40, []
    cfg.corpus.dev_fraction = cfg.corpus.test_fraction = 0.2
    cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = prepare_corpus(cfg)
    assert sum(len(cuts) for cuts in sets.values()) == 40
    assert all(len(sets[s]) for s in ("train", "dev", "test"))
    for cut in sets["test"]:
        assert len(captions_of(cut)) == 5 and cut.supervisions[0].text == captions_of(cut)[0]
    stats = json.loads((tmp_path / "corpus" / "stats.json").read_text())
    assert stats["sets"]["train"]["source"] == "scenes" and stats["synthesis"]["clips"] == 40
    cfg.corpus.source = "midi"
    with pytest.raises(UnknownComponentError, match="unknown corpus source 'midi'.*scenes, styles, tts"):
        prepare_corpus(cfg)


def test_aac_recipe_end_to_end(tiny_cfg, tmp_path, pinned):
    from slam.data.cache import build_cache
    from slam.data.corpora import prepare_corpus
    from slam.decode.hyps import read_hyps
    from slam.decode.stage import decode, decode_baseline
    from slam.score.stage import score
    from slam.train.loop import MODEL, train

    cfg = tiny_cfg
    cfg.recipe = "aac"
    cfg.corpus.dir = str(tmp_path / "scenes")
    cfg.corpus.source, cfg.corpus.num_utterances, cfg.corpus.real_sets = "scenes", 30, []
    cfg.corpus.dev_fraction = cfg.corpus.test_fraction = 0.2
    cfg.train.max_steps, cfg.train.max_duration = 3, 12.0
    cfg.train.ctc_weight = 0.0
    cfg.decode.num_beams, cfg.caption.refine_beams = [1, 2], [1, 2]
    cfg.decode.max_new_tokens = 4
    cfg.caption.steps, cfg.caption.batch_size, cfg.caption.meteor = 60, 8, False
    prepare_corpus(cfg)
    build_cache(cfg)
    summary = train(cfg)
    # the contrastive model learns: below the loss of guessing among a batch
    assert summary["contrastive_loss"] < math.log(8)
    assert (Path(cfg.train.dir) / MODEL / "contrastive.safetensors").exists()

    decode(cfg)
    decode_baseline(cfg)
    train_cuts = CutSet.from_file(tmp_path / "scenes/train.jsonl.gz")
    test_ids = {c.id for c in CutSet.from_file(tmp_path / "scenes/test.jsonl.gz")}
    hyps_dir = Path(cfg.decode.dir)
    for label in ("beam1", "beam2", "refine", "retrieval"):
        assert {r["id"] for r in read_hyps(hyps_dir / f"test.{label}.jsonl")} == test_ids
    bank = set(training_captions(train_cuts))
    assert {r["hyp"] for r in read_hyps(hyps_dir / "test.retrieval.jsonl")} <= bank
    refine = read_hyps(hyps_dir / "test.refine.jsonl")
    beams = [{r["id"]: r["hyp"] for r in read_hyps(hyps_dir / f"test.beam{b}.jsonl")} for b in (1, 2)]
    assert all(r["hyp"] in {b[r["id"]] for b in beams} for r in refine)  # one of the candidates
    frequent = read_hyps(Path(cfg.baseline.dir) / "test.most_frequent.jsonl")
    assert {r["hyp"] for r in frequent} == {most_frequent_caption(train_cuts)}

    metrics = score(cfg)
    assert set(metrics) == {"llm", "baseline"}
    assert set(metrics["llm"]) == {"test.beam1", "test.beam2", "test.refine", "test.retrieval"}
    assert metrics["baseline"]["test.most_frequent"]["clips"] == len(test_ids)
    assert metrics["llm"]["test.beam1"]["meteor"] is None  # not requested
    pinned("aac", {"train": summary, "score": metrics})
    results = (Path(cfg.score.dir) / "aac" / "results.md").read_text()
    assert "| test | most frequent training caption |" in results and "CIDEr-D" in results
    assert "METEOR n/a: not requested" in results
    assert (Path(cfg.score.dir) / "aac" / "scores.png").exists()


def test_aac_zero_shot_recipe_end_to_end(tiny_cfg, tmp_path, monkeypatch, pinned):
    """DRCap: the LLM trains on caption vectors only and decodes from projected audio vectors."""
    from slam.data import cuts
    from slam.data.cache import build_cache
    from slam.data.corpora import prepare_corpus
    from slam.decode.hyps import read_hyps
    from slam.decode.stage import decode
    from slam.score.stage import score
    from slam.train.loop import MODEL, train

    cfg = tiny_cfg
    cfg.recipe, cfg.caption.zero_shot = "aac", True
    cfg.corpus.dir = str(tmp_path / "scenes")
    cfg.corpus.source, cfg.corpus.num_utterances, cfg.corpus.real_sets = "scenes", 30, []
    cfg.corpus.dev_fraction = cfg.corpus.test_fraction = 0.2
    cfg.projector.k, cfg.caption.dim = 1, 16
    cfg.train.max_steps, cfg.train.max_duration, cfg.train.ctc_weight = 3, 60.0, 0.0
    cfg.decode.num_beams, cfg.caption.refine_beams, cfg.decode.max_new_tokens = [1, 2], [1, 2], 4
    cfg.caption.steps, cfg.caption.batch_size, cfg.caption.meteor = 60, 8, False
    prepare_corpus(cfg)
    build_cache(cfg)
    seen: list[tuple[list[str], list[int]]] = []
    getitem = cuts.AudioTextDataset.__getitem__

    def spy(self, cuts):  # what the LLM is given: instructions and input lengths
        batch = getitem(self, cuts)
        seen.append((batch.get("instructions") or [], batch["lengths"].tolist()))
        return batch

    monkeypatch.setattr(cuts.AudioTextDataset, "__getitem__", spy)
    summary = train(cfg)
    assert summary["contrastive_loss"] < math.log(8)
    assert seen and all(length == 1 for _, lengths in seen for length in lengths)  # one vector per clip
    assert all(i.startswith("Similar captions: ") for instructions, _ in seen for i in instructions)
    projector = json.loads((Path(cfg.train.dir) / MODEL / "projector.json").read_text())
    assert projector["in_dim"] == 16  # the joint space, not the encoder's frames

    decode(cfg)
    test_ids = {c.id for c in CutSet.from_file(tmp_path / "scenes/test.jsonl.gz")}
    for label in ("beam1", "beam2", "refine", "retrieval"):
        assert {r["id"] for r in read_hyps(Path(cfg.decode.dir) / f"test.{label}.jsonl")} == test_ids
    metrics = score(cfg)
    assert set(metrics["llm"]) == {"test.beam1", "test.beam2", "test.refine", "test.retrieval"}
    pinned("aac_zeroshot", {"train": summary, "score": metrics})


# -- music ---------------------------------------------------------------------------------------
needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None
    or not (music.SOUNDFONT.is_file() and music.HELD_OUT_SOUNDFONT.is_file()),
    reason="Debian fluidsynth, fluid-soundfont-gm and timgm6mb-soundfont (scripts/setup.sh)",
)


def test_music_captions_name_every_choice_and_midi_keeps_pieces_apart(tmp_path):
    import mido

    rng = np.random.default_rng(0)
    pieces = [music.draw_piece(rng) for _ in range(3)]
    for piece in pieces:
        for caption in music.compose_captions(piece, rng):
            assert piece.instrument in caption and piece.key_name in caption
    drawn = [(p, *music.piece_notes(p, np.random.default_rng(i), 8.0)) for i, p in enumerate(pieces)]
    for piece, bpm, notes in drawn:
        low, high = music.TEMPI[piece.tempo]
        assert low <= bpm <= high
        seconds = max(start + length for start, length, _ in notes) * 60 / bpm
        assert 6.0 <= seconds <= 9.0  # about the 8 s asked for
    clips = [(music.INSTRUMENTS[p.instrument][0], music.beats_to_seconds(bpm, n)) for p, bpm, n in drawn]
    spans = music.write_midi(clips, tmp_path / "batch.mid")
    for (_, end), (next_start, _) in zip(spans, spans[1:]):
        assert next_start - end == pytest.approx(music.GAP)
    midi = mido.MidiFile(tmp_path / "batch.mid")
    programs = [m.program for m in midi.tracks[0] if m.type == "program_change"]
    assert programs == [music.INSTRUMENTS[p.instrument][0] for p in pieces]
    channels = {m.channel for m in midi.tracks[0] if m.type == "note_on"}
    assert 9 not in channels and len(channels) == 3  # never the drum channel; one per piece
    assert midi.length == pytest.approx(spans[-1][1], abs=0.01)


@needs_fluidsynth
def test_music_source_and_the_held_out_soundfont(tmp_path):
    from slam.data.corpora import prepare_corpus

    cfg = SlamConfig()
    cfg.corpus.dir = str(tmp_path / "corpus")
    cfg.corpus.source, cfg.corpus.num_utterances, cfg.corpus.real_sets = "music", 12, ["music_timgm"]
    cfg.corpus.dev_fraction, cfg.corpus.test_fraction = 0.2, 0.25
    cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = prepare_corpus(cfg)
    assert sum(len(sets[s]) for s in ("train", "dev", "test")) == 12
    assert len(sets["music_timgm"]) == 3  # num_utterances x test_fraction
    for name, cuts in sets.items():
        for cut in cuts:
            audio = cut.load_audio()
            assert 6.0 < cut.duration < 11.0 and np.abs(audio).max() > 0.01  # rendered, not silent
            font = cut.supervisions[0].custom["soundfont"]
            assert font == ("TimGM6mb.sf2" if name == "music_timgm" else "FluidR3_GM.sf2")
    test_pieces = {c.supervisions[0].custom["piece"] for c in sets["music_timgm"]}
    train_pieces = {c.supervisions[0].custom["piece"] for c in sets["train"]}
    assert not test_pieces & train_pieces


# -- folk tunes ----------------------------------------------------------------------------------
needs_abc2midi = pytest.mark.skipif(shutil.which("abc2midi") is None, reason="Debian abcmidi (setup.sh)")
# Three tiny collections laid out as the music21 corpus: one tune lacks a key and is dropped
_TUNES = {
    "essenFolksong/songs.abc": """X:1
T: Ein Lied
O: Europa, Mitteleuropa, Deutschland (BRD), Hessen
R: Liebeslied]
M: 3/4
L: 1/4
Q: 1/4=60
K: D
DEF | A3 |]

X:2
T: Ohne Tonart
O: Irland
M: 2/4
L: 1/4
""",
    "ryansMammoth/TheLittleReel.abc": """X:1
T:The Little -- Reel
M:C|
L:1/4
Q:1/4=120
R:slipjig
K:Ador
ABcd | e4 |]

X:2
T:Rests Only -- Reel
M:4/4
L:1/4
R:reel
K:D
z4 | z4 |]
""",
    "oneills1850/0001-0002.abc": """X:1
T:The Held Out Jig
M:6/8
L:1/8
R:jig
K:G
GAB cde | d6 |]

X:2
T:An Air With No Rhythm Given
M:9/8
L:1/8
K:Bb
B3 d3 f3 |]
""",
}


@pytest.fixture
def folk_corpus(tmp_path, monkeypatch):
    for name, text in _TUNES.items():
        (tmp_path / "m21" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "m21" / name).write_text(text)
    monkeypatch.setattr(folk, "corpus_root", lambda: tmp_path / "m21")
    folk.load_tunes.cache_clear()
    yield tmp_path / "m21"
    folk.load_tunes.cache_clear()


def test_folk_tunes_metadata_and_captions(folk_corpus):
    (song,) = folk.load_tunes("essenFolksong")  # "Ohne Tonart" has no K: line
    assert (song.title, song.metre, song.key_name, song.rhythm, song.origin) == (
        "Ein Lied", "3/4", "D major", "folk song", "Germany")  # Essen's R: is a genre code, not a rhythm
    reel, _silent = folk.load_tunes("ryansMammoth")
    assert (reel.metre, reel.key_name, reel.rhythm, reel.origin) == ("2/2", "A dorian", "slip jig", None)
    jig, air = folk.load_tunes("oneills1850")
    assert (jig.rhythm, jig.key_name, jig.origin, air.rhythm, air.key_name) == (
        "jig", "G major", "Ireland", "tune", "B flat major")
    assert folk.origin_of("Osteuropa, UdSSR, Russland") == "Russia"
    assert folk.origin_of("Europa, Atlantis") is None  # an unknown place is left out, not guessed
    for tune, words in [(song, ["three-four", "D major", "Germany"]), (jig, ["jig", "six-eight", "G major"]),
                        (air, ["nine-eight", "B flat major", "Ireland"])]:  # fmt: skip
        captions = folk.compose_captions(tune, "harp", np.random.default_rng(0))
        assert len(set(captions)) == 5
        for caption in captions:
            assert all(w.lower() in caption.lower() for w in [*words, "harp"]), caption
    with pytest.raises(FileNotFoundError, match="nottingham"):
        folk.load_tunes("nottingham")


@needs_abc2midi
def test_folk_tune_notes_follow_the_abc(folk_corpus):
    (song,) = folk.load_tunes("essenFolksong")
    notes = folk.tune_notes(song, seconds=8.0)  # quarter notes at 60 bpm: one a second
    assert [n for _, _, n in notes] == [62, 64, 66, 69]  # D E F# (K:D) A
    assert [round(start, 1) for start, _, _ in notes] == [0.0, 1.0, 2.0, 3.0]
    assert notes[-1][1] - notes[-1][0] == pytest.approx(3.0, abs=0.05)  # A3: three beats
    assert [round(s, 1) for s, _, _ in folk.tune_notes(song, seconds=1.5)] == [0.0, 1.0]  # cut at 1.5 s


@needs_abc2midi
@needs_fluidsynth
def test_folk_source_splits_by_title_and_holds_out_a_collection(folk_corpus, tmp_path):
    from slam.data.corpora import prepare_corpus

    cfg = SlamConfig()
    cfg.corpus.dir = str(tmp_path / "corpus")
    cfg.corpus.source, cfg.corpus.num_utterances, cfg.corpus.real_sets = "folk", 10, ["folk_oneills"]
    cfg.corpus.test_fraction = 0.2
    cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = prepare_corpus(cfg)
    synthetic = [c for s in ("train", "dev", "test") for c in sets[s]]
    failed = json.loads((tmp_path / "corpus" / "stats.json").read_text())["synthesis"]["failed_by_split"]
    assert sum(failed.values()) > 0 and len(synthetic) + sum(failed.values()) == 10  # rests only: skipped
    assert set(failed) == {split_of_key("rests only reel", 0.05, 0.2)}  # counted in the set of its title
    for name in ("train", "dev", "test"):  # both tunes drawn, each in the set its title hashes to
        for cut in sets[name]:
            title = cut.supervisions[0].custom["title"]
            key = folk.Tune("", "", 0, title, "", "", "", None).split_key
            assert split_of_key(key, cfg.corpus.dev_fraction, cfg.corpus.test_fraction) == name
    assert {c.supervisions[0].custom["title"] for c in synthetic} == {"Ein Lied", "The Little -- Reel"}
    held_out = sets["folk_oneills"]
    assert sorted(c.supervisions[0].custom["title"] for c in held_out) == ["An Air With No Rhythm Given",
                                                                           "The Held Out Jig"]  # fmt: skip
    for cut in [*synthetic, *held_out]:
        sup = cut.supervisions[0]
        assert np.abs(cut.load_audio()).max() > 0.01 and 1.0 < cut.duration < 10.0
        assert sup.custom["instrument"] in sup.text.lower() and sup.text == sup.custom["captions"][0]
