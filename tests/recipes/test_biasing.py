"""Contextual biasing (recipe asr_bias): lists, the CTC filter, per-row prompts, the biased
metrics and MER against hand-computed values, and one tiny train + decode + score run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml
from lhotse import SupervisionSegment
from lhotse.cut import MonoCut

from slam.config import BiasConfig
from slam.model.speech_llm import IGNORE_INDEX, build_speech_llm
from slam.registry import UnknownComponentError
from slam.score.metrics import biased_counts, mixed_units, score_biasing, score_mer
from slam.score.metrics.reports import REPORTS
from slam.tasks.biasing import (
    CTC_HEAD_KEYS,
    TRAINING_KEYS,
    Condition,
    RareWords,
    TrainingLists,
    decode_conditions,
    format_prompt,
    full_list,
    manifest_keywords,
    prompt_list,
    read_lists,
    scoring_list,
    utterance_record,
    words_of,
)
from slam.tasks.ctc_filter import CtcHead, ctc_filter, fuzzy_scores
from slam.train.loop import run_key

TRAIN_TEXTS = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "the cat and the dog",
    "a zebra ate the apple",
    "an owl saw the moon",
    "quiet rivers run deep",
]
COMMON = 6  # the: 8, sat/on/cat/dog: 2 each, then "a" (ties broken alphabetically)


def make_cut(cut_id: str, text: str, **custom: object) -> MonoCut:
    sup = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0, duration=1.0, text=text,
                             custom=dict(custom) or None)
    return MonoCut(id=cut_id, start=0, duration=1.0, channel=0, supervisions=[sup])


@pytest.fixture()
def rare() -> RareWords:
    return RareWords.from_texts(TRAIN_TEXTS, COMMON)


# -- lists -------------------------------------------------------------------------------------
def test_common_and_rare_words(rare):
    assert rare.common == {"the", "sat", "on", "cat", "dog", "a"}
    assert "zebra" in rare.pool and "the" not in rare.pool and len(rare.pool) == 14
    # words unseen in training are rare too; each once, in order
    own = rare.of("The cat met a Zebra, the zebra's friend, and the ZEBRA")
    assert own == ["met", "zebra", "zebra's", "friend", "and"]
    assert words_of("Don't stop_now") == ["don't", "stop", "now"]


def test_test_lists_sizes_nesting_and_no_leakage(rare):
    cfg = BiasConfig(list_sizes=[4, 8], unfiltered_sizes=[4])
    text = "the zebra saw an owl near the moon"  # rare: zebra, saw, an, owl, near, moon
    record = utterance_record(make_cut("u1", text), rare, cfg)
    assert record["rare"] == ["zebra", "saw", "an", "owl", "near", "moon"]
    ref_words = set(words_of(text))
    for size in (4, 8):
        listed = full_list(record, size)
        # the reference reaches the list through its own rare words only
        assert set(listed) & ref_words == set(record["rare"])
        assert len(listed) == max(size, len(record["rare"])) and len(set(listed)) == len(listed)
    # seeded: the same record again, another seed draws other distractors
    assert utterance_record(make_cut("u1", text), rare, cfg) == record
    short = utterance_record(make_cut("u2", "a cat"), rare, cfg)
    assert short["rare"] == [] and len(full_list(short, 8)) == 8
    assert full_list(short, 8)[:4] == full_list(short, 4)  # nested: a longer list extends a shorter
    other = utterance_record(make_cut("u2", "a cat"), rare, BiasConfig(list_sizes=[4, 8], seed=1))
    assert other["distractors"] != short["distractors"]
    # a pool too small for the list: every rare word not in the utterance, no repeats
    tiny = utterance_record(make_cut("u3", "a cat"), rare, BiasConfig(list_sizes=[100]))
    assert len(tiny["distractors"]) == len(rare.pool)


def test_conditions_and_prompt_lists(rare):
    cfg = BiasConfig(list_sizes=[8], unfiltered_sizes=[8], filter_threshold=75, filter_max=8)
    record = utterance_record(make_cut("u1", "the zebra ate an apple"), rare, cfg)
    record["ctc"] = "the zebre ate an aple"  # a rough CTC transcript
    names = [c.name for c in decode_conditions(cfg, keywords=False)]
    assert names == ["none", "n8_ctc", "n8", "gt"]
    assert [c.name for c in decode_conditions(cfg, keywords=True)][-2:] == ["keywords", "gt"]
    none, ctc, whole, gt = decode_conditions(cfg, keywords=False)
    assert prompt_list(none, record, cfg) == []
    assert sorted(prompt_list(gt, record, cfg)) == sorted(record["rare"])
    assert sorted(prompt_list(whole, record, cfg)) == sorted(full_list(record, 8))
    filtered = prompt_list(ctc, record, cfg)
    assert {"zebra", "apple", "ate", "an"} <= set(filtered) and set(filtered) <= set(full_list(record, 8))
    # B-WER counts against the list the condition draws from (own rare words for none/gt)
    assert scoring_list(none, record) == scoring_list(gt, record) == record["rare"]
    assert scoring_list(ctc, record) == full_list(record, 8)
    assert ctc.label == "8 biasing words, CTC-filtered" and gt.label == "ground-truth hotwords"


def test_training_lists(rare):
    cfg = BiasConfig(train_keep=1.0, train_distractors=4)
    lists = TrainingLists(rare, cfg)
    cut = make_cut("t1", "a zebra ate the apple")
    seen = []
    for epoch in range(6):
        keywords = lists.keywords(cut, epoch)
        assert {"zebra", "ate", "apple"} <= set(keywords)  # train_keep=1: all own rare words
        extra = set(keywords) - {"zebra", "ate", "apple"}
        assert len(extra) <= 4 and extra <= set(rare.pool)
        assert not extra & set(words_of(cut.supervisions[0].text))  # no other word of the reference
        assert lists.keywords(cut, epoch) == keywords  # seeded by epoch and cut: resumable
        seen.append(tuple(keywords))
    assert len(set(seen)) > 1  # a new list every epoch
    dropped = TrainingLists(rare, BiasConfig(train_keep=0.0, train_distractors=0))
    assert dropped.keywords(cut, 0) == []
    assert dropped(cut, 0) == "Transcribe the audio. Hotwords: ."


def test_manifest_keywords_in_prompt_and_training(rare):
    cut = make_cut("m1", "slides about zebra crossings", keywords=["zebra crossing", "Slides"])
    assert manifest_keywords(cut, "keywords") == ["zebra crossing", "Slides"]
    assert manifest_keywords(make_cut("m2", "x", keywords="a, b ,"), "keywords") == ["a", "b"]
    assert manifest_keywords(make_cut("m3", "x"), "keywords") is None
    cfg = BiasConfig(train_keep=1.0, train_distractors=0)
    assert sorted(TrainingLists(rare, cfg).keywords(cut, 0)) == ["Slides", "zebra crossing"]
    record = utterance_record(cut, rare, cfg)
    assert prompt_list(Condition("keywords", "keywords"), record, cfg) == ["zebra crossing", "Slides"]
    prompt = format_prompt(cfg, ["zebra crossing", "Slides"])
    assert prompt == "Transcribe the audio. Hotwords: zebra crossing, Slides."
    with pytest.raises(ValueError, match="keywords"):
        format_prompt(BiasConfig(prompt="no placeholder"), [])


# -- the CTC filter ----------------------------------------------------------------------------
def test_fuzzy_filter_keeps_misspelled_hotwords_and_drops_unrelated():
    entries = ["xylophone", "nightingale", "new york", "example", "cat"]
    transcript = "the nightengale flew to new yorc for an ex ample"
    kept = ctc_filter(entries, transcript, threshold=75, limit=10)
    assert set(kept) == {"nightingale", "new york", "example"}  # misspelt, multi-word, split
    scores = fuzzy_scores(entries, transcript)
    assert kept == [entries[i] for i in sorted((1, 2, 3), key=lambda i: -scores[i])]  # best first
    assert len(ctc_filter(entries, transcript, threshold=75, limit=1)) == 1
    assert ctc_filter(entries, "", threshold=75, limit=10) == [] and ctc_filter([], "a", 75, 10) == []
    # words the head ran together: a long entry is found inside them, a short one is not
    assert ctc_filter(["creation", "mit", "ocean"], "frommitscreation the plan", 75, 10) == ["creation"]


def test_ctc_head_greedy_and_vocabulary():
    head = CtcHead(dim=4, hidden=8, vocab=[" ", "a", "b", "c"])
    assert head.encode("A b?c") == [2, 1, 3, 4]  # unknown characters are dropped
    path = [0, 2, 2, 0, 2, 3, 3, 1, 4, 4, 1]  # blank a a blank a b b space c c space
    log_probs = torch.nn.functional.one_hot(torch.tensor([path, path]), 5).float().log()
    assert head.greedy(log_probs, torch.tensor([11, 5])) == ["aab c", "aa"]
    assert head(torch.randn(2, 7, 4)).shape == (2, 7, 5)


# -- metrics -----------------------------------------------------------------------------------
def test_biased_counts_hand_computed():
    # the -> the, quick -> quack (biased substitution), brown fox equal, "jumps" inserted and listed
    counts = biased_counts("the quick brown fox", "the quack brown fox jumps", {"quick", "jumps"})
    assert (counts["b_ref"], counts["b_sub"], counts["b_ins"], counts["b_hit"]) == (1, 1, 1, 0)
    assert (counts["u_ref"], counts["u_sub"], counts["u_del"], counts["u_ins"]) == (3, 0, 0, 0)
    # bob deleted, paris -> pairs: both biased; the unbiased words are all right
    counts = biased_counts("alice met bob in paris", "alice met in pairs", {"bob", "paris", "zurich"})
    assert (counts["b_ref"], counts["b_del"], counts["b_sub"], counts["u_ref"]) == (2, 1, 1, 3)
    assert counts["u_sub"] + counts["u_del"] + counts["u_ins"] == 0


def test_score_biasing_hand_computed():
    refs = {"a": "Alice met Bob in Paris.", "b": "the quick brown fox"}
    hyps = {"a": "alice met bob in paris zurich", "b": "the quack brown"}
    lists = {"a": ["Bob", "Paris", "Zurich"], "b": ["quick"]}
    s = score_biasing(refs, hyps, lists, "english_v1")["summary"]
    # a: biased bob, paris hit, zurich a biased insertion; b: quick substituted, fox deleted
    assert (s["b_ref"], s["u_ref"]) == (3, 6)
    assert s["b_wer"] == pytest.approx(2 / 3)  # zurich inserted + quick substituted
    assert s["u_wer"] == pytest.approx(1 / 6)  # fox deleted
    assert s["wer"] == pytest.approx(3 / 9)
    assert s["recall"] == pytest.approx(2 / 3)  # bob, paris of bob, paris, quick
    assert s["precision"] == pytest.approx(2 / 3)  # bob, paris right of bob, paris, zurich
    # no hypothesis: every word deleted
    s = score_biasing({"a": "bob ran"}, {}, {"a": ["bob"]})["summary"]
    assert (s["b_wer"], s["u_wer"], s["recall"], s["missing_hyps"]) == (1.0, 1.0, 0.0, 1)


def test_mer_hand_computed():
    assert mixed_units("我们用 Python写code") == ["我", "们", "用", "Python", "写", "code"]
    # 们 -> 门 and python -> pyton substituted, 写 inserted: 3 errors over 4 units
    s = score_mer({"x": "我们用 python"}, {"x": "我门用 pyton 写"}, "basic_v1")["summary"]
    assert s["mer"] == pytest.approx(3 / 4) and (s["ref_units"], s["cjk_units"]) == (4, 3)
    assert (s["substitutions"], s["insertions"], s["deletions"]) == (2, 1, 0)
    # Latin-only text: MER is WER
    assert score_mer({"y": "hello big world"}, {"y": "hello world"})["summary"]["mer"] == pytest.approx(1 / 3)


def test_reports_are_registered():
    assert {"mer", "biasing"} <= set(REPORTS.names())
    with pytest.raises(UnknownComponentError, match="known reports"):
        REPORTS.get("bleu9")


# -- per-row prompts ---------------------------------------------------------------------------
def test_per_row_prompts_labels_cover_exactly_the_answer(tiny_cfg):
    model = build_speech_llm(tiny_cfg, encoder_dim=32)
    audio, positions = model.projector(torch.randn(2, 9, 32), torch.tensor([9, 4]))
    targets = [[5, 6, 7], [8, 9]]
    instructions = [format_prompt(tiny_cfg.bias, words) for words in ([], ["alpha", "beta", "gamma"])]
    prompts = model.row_prompts(instructions, 2)
    assert len(prompts[1].suffix_ids) > len(prompts[0].suffix_ids)  # the list follows the audio
    assert "alpha, beta, gamma" in model.tokenizer.decode(prompts[1].suffix_ids)
    _, mask, labels = model.assemble(audio, positions, targets, prompts=prompts)
    for i, target in enumerate(targets):
        own = len(prompts[i].prefix_ids) + len(prompts[i].suffix_ids)
        assert mask[i].sum() == own + positions[i] + len(target) + 1
        assert labels[i][labels[i] != IGNORE_INDEX].tolist() == target + [model.prompt.eos_id]
    # the fixed prompt as a per-row prompt gives exactly the fixed path's tensors
    fixed = model.assemble(audio, positions, targets)
    as_rows = model.row_prompts([tiny_cfg.train.prompt] * 2, 2)
    same = model.assemble(audio, positions, targets, prompts=as_rows)
    for a, b in zip(fixed, same):
        assert torch.equal(a, b)
    out = model(torch.randn(2, 9, 32), torch.tensor([9, 4]), targets, instructions=instructions)
    assert torch.isfinite(out["loss"]) and out["tokens"] == 3 + 1 + 2 + 1
    hyps = model.eval().generate(torch.randn(2, 9, 32), torch.tensor([9, 4]), max_new_tokens=2,
                                 instructions=instructions)
    assert len(hyps) == 2
    with pytest.raises(ValueError, match="instructions"):
        model.row_prompts(instructions, 3)


def test_run_key_and_train_stage_params_follow_the_training_keys(tiny_cfg):
    key = run_key(tiny_cfg)
    tiny_cfg.bias.train_distractors = 3
    assert run_key(tiny_cfg) == key  # the default recipe's checkpoints still resume
    tiny_cfg.recipe = "asr_bias"
    bias_key = run_key(tiny_cfg)
    assert bias_key != key
    tiny_cfg.bias.filter_threshold, tiny_cfg.bias.list_sizes = 50.0, [10]
    assert run_key(tiny_cfg) == bias_key  # decoding settings do not restart training
    # the train stage reruns on exactly the keys that shape training or the CTC head
    stages = yaml.safe_load((Path(__file__).resolve().parents[2] / "dvc.yaml").read_text())["stages"]
    listed = {p.removeprefix("bias.") for p in stages["train"]["params"] if p.startswith("bias.")}
    assert listed == set(TRAINING_KEYS) | set(CTC_HEAD_KEYS)
    assert listed <= {f.name for f in dataclasses.fields(BiasConfig)}


# -- end to end --------------------------------------------------------------------------------
def test_biasing_train_decode_score(tiny_cfg, pinned):
    from slam.data.cache import build_cache
    from slam.decode.hyps import read_hyps
    from slam.decode.stage import decode, decode_baseline
    from slam.score.stage import score
    from slam.train.loop import MODEL, train

    cfg = tiny_cfg
    cfg.recipe = "asr_bias"
    cfg.bias.common_words = 3  # the tone corpus has 11 words: 8 of them rare
    cfg.bias.list_sizes, cfg.bias.unfiltered_sizes = [4, 6], [4]
    cfg.bias.ctc_steps, cfg.bias.ctc_hidden = 4, 16
    cfg.train.max_steps, cfg.train.checkpoint_every = 3, 3
    cfg.decode.max_new_tokens = cfg.baseline.max_new_tokens = 3
    cfg.score.reports = ["biasing"]
    build_cache(cfg)
    summary = train(cfg)
    assert summary["steps"] == 3 and "ctc_head_loss" in summary
    assert (Path(cfg.train.dir) / MODEL / "ctc_head.safetensors").exists()

    decode(cfg)
    decode_baseline(cfg)
    hyps_dir = Path(cfg.decode.dir)
    for name in ("none", "n4_ctc", "n6_ctc", "n4", "gt"):
        assert len(read_hyps(hyps_dir / f"test.{name}.beam1.jsonl")) == 4
    records = read_lists(hyps_dir, "test")
    for record in records.values():
        assert sorted(record["prompts"]["gt"]) == sorted(record["rare"])
        assert len(record["prompts"]["n4"]) == max(4, len(record["rare"]))
        assert set(record["prompts"]["n4_ctc"]) <= set(full_list(record, 4))

    score(cfg)
    metrics_dir = Path(cfg.score.dir) / "asr_bias"
    table = json.loads((metrics_dir / "biasing.json").read_text())["test.beam1"]
    assert set(table) == {"whisper", "none", "n4_ctc", "n6_ctc", "n4", "gt"}
    for row in table.values():
        assert {"wer", "b_wer", "u_wer", "recall"} <= set(row) and row["utterances"] == 4
    assert table["gt"]["prompt_rare_recall"] == 1.0 and table["none"]["prompt_entries"] == 0
    pinned("asr_bias", {"train": summary, "biasing": table})
    # Table VII's cells come from the runs: each condition's B-WER, U-WER and recall are logged
    from mlflow import MlflowClient

    from slam.decode.hyps import RUN_FILE

    client = MlflowClient(cfg.tracking.uri)
    for system, directory in (("llm", cfg.decode.dir), ("whisper", cfg.baseline.dir)):
        run_id = json.loads((Path(directory) / RUN_FILE).read_text())["mlflow_run_id"]
        logged = client.get_run(run_id).data.metrics
        for name, row in table.items():
            if (name == "whisper") == (system == "whisper"):
                label = "test_beam1" if name == "whisper" else f"test_{name}_beam1"
                assert logged[f"b_wer_{label}"] == pytest.approx(row["b_wer"])
                assert logged[f"recall_{label}"] == pytest.approx(row["recall"])
    results = (metrics_dir / "results.md").read_text()
    assert "Contextual biasing" in results and "| LLM-based | ground-truth hotwords |" in results
