"""Keyword-prompted ASR (recipe asr_keywords, Table VI): each test utterance's keyword list, and
one tiny train + decode + score run with and without keywords in the prompt."""

from __future__ import annotations

import json
from pathlib import Path

from lhotse import CutSet, SupervisionSegment
from lhotse.cut import MonoCut

from slam.recipes import recipe_of
from slam.recipes.asr_keywords import keyword_lists
from slam.tasks.biasing import RareWords, read_lists, words_of

TEXTS = ["the cat sat on the mat", "a zebra ate the apple", "an owl saw the moon", "quiet rivers run deep"]


def make_cut(cut_id: str, text: str) -> MonoCut:
    sup = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0, duration=1.0, text=text)
    return MonoCut(id=cut_id, start=0, duration=1.0, channel=0, supervisions=[sup])


def test_keyword_lists_hold_own_rare_words_and_other_utterances_rare_words():
    rare = RareWords.from_texts(["the cat sat on the mat", "the cat ran"], 3)  # common: the, cat, mat
    cuts = CutSet.from_cuts(make_cut(f"u{i}", t) for i, t in enumerate(TEXTS))
    lists = keyword_lists(cuts, rare, distractors=3, seed=0)
    rare_of = {c.id: set(rare.of(c.supervisions[0].text)) for c in cuts}
    others_rare = {c.id: set().union(*(rare_of[d] for d in rare_of if d != c.id)) for c in cuts}
    for cut in cuts:
        text = cut.supervisions[0].text
        own, entries = rare.of(text), lists[cut.id]
        extra = [w for w in entries if w not in own]
        assert set(own) <= set(entries) and len(extra) == 3 == len(set(extra))
        assert set(extra) <= others_rare[cut.id] and not set(extra) & set(words_of(text))
    assert lists["u0"] != sorted(lists["u0"]) or lists["u1"] != sorted(lists["u1"])  # shuffled
    # seeded by cut id: the same lists whatever order the set comes in
    assert keyword_lists(CutSet.from_cuts(reversed(list(cuts))), rare, 3, 0) == lists
    assert keyword_lists(cuts, rare, 3, seed=1) != lists


def test_keywords_train_decode_score(tiny_cfg, pinned):
    from slam.data.cache import build_cache
    from slam.decode.hyps import read_hyps
    from slam.decode.stage import decode, decode_baseline
    from slam.score.stage import score
    from slam.train.loop import MODEL, train

    cfg = tiny_cfg
    cfg.recipe = "asr_keywords"
    assert type(recipe_of(cfg)).__name__ == "KeywordPromptedASR"
    cfg.bias.common_words = 3  # the tone corpus has 11 words: 8 of them rare
    cfg.bias.list_sizes, cfg.bias.unfiltered_sizes = [], []  # as params/profile/keywords.yaml
    cfg.bias.train_distractors = 2
    cfg.train.max_steps, cfg.train.checkpoint_every = 3, 3
    cfg.decode.max_new_tokens = cfg.baseline.max_new_tokens = 3
    cfg.train.ctc_weight = 1.0  # the CTC head, and joint CTC/LLM decoding with a keyword list per row
    cfg.decode.ctc_weight = 0.5
    cfg.score.reports = ["biasing"]
    build_cache(cfg)
    summary = train(cfg)
    assert summary["steps"] == 3 and "ctc_head_loss" not in summary  # no filtered list: no CTC head
    assert not (Path(cfg.train.dir) / MODEL / "ctc_head.safetensors").exists()

    decode(cfg)
    decode_baseline(cfg)
    hyps_dir = Path(cfg.decode.dir)
    assert sorted(p.name for p in hyps_dir.glob("test.*.jsonl")) == [
        "test.gt.beam1.jsonl", "test.keywords.beam1.jsonl", "test.none.beam1.jsonl"]  # fmt: skip
    for name in ("none", "keywords", "gt"):
        assert len(read_hyps(hyps_dir / f"test.{name}.beam1.jsonl")) == 4
    for record in read_lists(hyps_dir, "test").values():
        entries = record["prompts"]["keywords"]
        assert set(record["rare"]) <= set(entries) and record["prompts"]["none"] == []
        assert len(entries) <= len(record["rare"]) + 2

    # keyword boosting: each listed row's hypothesis now begins a word of its list (written as
    # the LLM would: lower case or capitalised, with or without a space); unlisted rows as before
    before = {h["id"]: h["hyp"] for h in read_hyps(hyps_dir / "test.none.beam1.jsonl")}
    lists = {r["id"]: r["prompts"]["keywords"] for r in read_lists(hyps_dir, "test").values()}
    cfg.decode.keyword_bonus = 50.0
    decode(cfg)
    assert {h["id"]: h["hyp"] for h in read_hyps(hyps_dir / "test.none.beam1.jsonl")} == before
    for h in read_hyps(hyps_dir / "test.keywords.beam1.jsonl"):
        forms = [f for w in lists[h["id"]] for f in (w.lower(), " " + w.lower())]
        assert h["hyp"].strip() and lists[h["id"]]
        assert any(f.startswith(h["hyp"].lower()) for f in forms), (h["hyp"], lists[h["id"]])
    cfg.decode.keyword_bonus = 0.0
    decode(cfg)

    score(cfg)
    table = json.loads((Path(cfg.score.dir) / "asr_keywords" / "biasing.json").read_text())["test.beam1"]
    assert set(table) == {"whisper", "none", "keywords", "gt"}
    assert table["keywords"]["label"] == "per-utterance keywords"
    assert table["keywords"]["prompt_rare_recall"] == 1.0
    pinned("asr_keywords", {"train": summary, "biasing": table})
