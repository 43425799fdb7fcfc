"""Recipe asr_codeswitch (Table V analogue): the code-switched corpus, MER by language, the
normaliser, the recipe's checks and its table."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from slam.compose import compose_params
from slam.config import ConfigError, CorpusConfig, to_config
from slam.data.corpora import codeswitch
from slam.data.corpora.codeswitch import code_switch, codeswitch_pool, english_share, switch_lexicon
from slam.recipes import recipe_of
from slam.score.metrics import error_rate, normalize, score_mer
from slam.score.stage import results_table
from slam.track.tables import load_specs

PAIRS = [  # (Chinese, English) as gettext catalogs give them
    ("文件", "_File"), ("文件", "File"), ("文件", "Files"), ("打开", "Open..."), ("文件夹", "Folder"),
    ("统一资源", "URL"),  # an acronym: spelt, not a word to switch in
    ("保存文件", "Save file"),  # two words: not a lexicon entry
    ("无法打开文件。", "Cannot open file."), ("请选择一个文件夹", "Please choose a folder"),
    ("无法读取数据", "Cannot read data"),  # no lexicon term: stays out of the corpus
    ("打开文件夹失败，请重试", "Failed to open the folder, please retry"),
]


def test_the_lexicon_takes_one_word_translations_by_majority():
    assert switch_lexicon(PAIRS) == {"文件": "file", "打开": "open", "文件夹": "folder"}


def test_switching_takes_the_longest_term_and_follows_the_rate():
    lexicon = switch_lexicon(PAIRS)
    # the longest term first: "folder", not "file夹"
    assert code_switch("请选择一个文件夹", lexicon, 1.0, random.Random(0)) == "请选择一个 folder"
    assert code_switch("打开文件夹失败，请重试", lexicon, 1.0, random.Random(0)) == "open folder 失败，请重试"
    assert code_switch("无法打开文件。", lexicon, 1e-9, random.Random(0)) == "无法打开文件。"
    # over many draws, about ``rate`` of the terms are said in English
    outputs = [code_switch("打开文件", lexicon, 0.3, random.Random(i)) for i in range(400)]
    english_words = sum(sum(w.isascii() for w in out.split()) for out in outputs)
    assert 0.25 < english_words / (2 * 400) < 0.35
    assert english_share("无法 open file。") == pytest.approx(2 / 4)


def test_the_pool_keeps_only_switched_sentences_one_form_each_and_is_seeded():
    cfg = CorpusConfig(language="zh", switch_rate=1.0, min_words=4, max_words=30)
    pool, summary = codeswitch_pool(cfg, PAIRS)
    assert set(pool.values()) == {"无法打开文件。", "请选择一个文件夹", "打开文件夹失败，请重试"}
    assert "无法 open file。" in pool and summary["pool_sentences"] == 3
    assert summary["lexicon_terms"] == 3 and 0 < summary["english_unit_share"] < 1
    half = CorpusConfig(language="zh", switch_rate=0.5, min_words=4, max_words=30)
    assert codeswitch_pool(half, PAIRS) == codeswitch_pool(half, PAIRS)  # the same draw each run
    short = CorpusConfig(language="zh", switch_rate=1.0, min_words=4, max_words=4)
    assert list(codeswitch_pool(short, PAIRS)[0]) == ["无法 open file。"]  # 4 units


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_synthesis_speaks_the_switched_text_with_mandarin_voices(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(codeswitch, "gettext_pairs", lambda *a, **k: (PAIRS, {"fake": len(PAIRS)}))
    cfg = CorpusConfig(language="zh", switch_rate=1.0, min_words=3, num_utterances=6, dev_fraction=0.0,
                       test_fraction=0.0, engines=["espeak"], num_workers=1)
    cuts, summary = codeswitch.synthesize_codeswitch(cfg, tmp_path, ["train"])
    train = list(cuts["train"])
    assert len(train) == 6 and summary["failed"] == 0 and summary["lexicon_terms"] == 3
    for cut in train:
        sup = cut.supervisions[0]
        assert sup.speaker.startswith("espeak:cmn+") and sup.language == "Chinese"
        assert english_share(sup.text) > 0 and sup.custom["mandarin"] in {p for p, _ in PAIRS}
        assert cut.duration > 0.15 * len(sup.text.split()) + 0.3  # more than silence trimmed to a pad
    with pytest.raises(ConfigError, match="Mandarin"):
        codeswitch.synthesize_codeswitch(CorpusConfig(language="en"), tmp_path, ["train"])


def test_mer_scores_each_language_apart_after_folding_traditional_characters():
    assert normalize("無法開啟 File，請重試。", "mixed_zh_v1") == "无法开启 file 请重试"
    refs = {"a": "无法 open file。", "b": "请选择一个 folder"}
    hyps = {"a": "無法 open the 文件", "b": "请选择一个 folder"}
    summary = score_mer(refs, hyps, "mixed_zh_v1")["summary"]
    # a: 无 法 | open file -> 无 法 | open the 文 件: Chinese right, "file" gone (2 English errors
    # against 2 words... aligned alone: open the vs open file = 1 sub) plus 2 inserted characters
    assert summary["cjk_units"] == 7 and summary["ref_units"] == 10
    assert summary["zh_cer"] == pytest.approx(2 / 7)  # 文件 inserted among the characters
    assert summary["en_wer"] == pytest.approx(1 / 3)  # "file" -> "the"
    assert error_rate("mer", refs, hyps, "mixed_zh_v1") == summary["mer"]
    english_only = score_mer({"c": "open file"}, {"c": "open file"}, "mixed_zh_v1")["summary"]
    assert english_only["zh_cer"] is None and english_only["en_wer"] == 0.0
    table = results_table({"llm": {"test.beam1": {**english_only, "mer": 0.0}}}, None,
                          rates=("mer", "zh_cer", "en_wer"))  # fmt: skip
    assert "CER (zh) test (%)" in table and "| — |" in table


def test_profile_codeswitch_composes_and_the_recipe_refuses_another_normaliser():
    cfg = to_config(OmegaConf.create(compose_params(["profile=codeswitch"])))
    assert (cfg.recipe, cfg.corpus.source, cfg.corpus.language) == ("asr_codeswitch", "codeswitch", "zh")
    recipe = recipe_of(cfg)
    assert recipe.error_rate == "mer" and recipe.joint_ctc_decoding
    recipe.check_training(cfg, use_cache=True)
    cfg.score.normalizer = "basic_v1"
    with pytest.raises(ConfigError, match="mixed_zh_v1"):
        recipe.check_training(cfg, use_cache=True)
    spec = {s.name: s for s in load_specs()}["table5_codeswitch"]
    assert [c.metric for c in spec.columns] == ["mer_test{row}", "zh_cer_test{row}", "en_wer_test{row}"]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_asr_codeswitch_prepare_train_decode_baselines_and_score(tiny_cfg, monkeypatch, pinned):
    from slam.data.cache import build_cache
    from slam.data.corpora import prepare_corpus
    from slam.decode.stage import decode, decode_baseline
    from slam.score.stage import score
    from slam.train.loop import train

    many = PAIRS + [(f"{chinese}{suffix}", "x") for chinese, _ in PAIRS[7:] for suffix in "一二三四五六"]
    monkeypatch.setattr(codeswitch, "gettext_pairs", lambda *a, **k: (many, {"fake": len(many)}))
    cfg = tiny_cfg
    cfg.recipe, cfg.corpus.source, cfg.corpus.language, cfg.corpus.switch_rate = (
        "asr_codeswitch", "codeswitch", "zh", 1.0)
    cfg.corpus.real_sets, cfg.corpus.engines, cfg.corpus.min_words = [], ["espeak"], 3
    cfg.corpus.num_utterances, cfg.corpus.dev_fraction, cfg.corpus.test_fraction = 24, 0.25, 0.25
    cfg.score.normalizer, cfg.score.reports = "mixed_zh_v1", []
    cfg.train.max_steps, cfg.train.checkpoint_every, cfg.train.ctc_warmup_steps = 3, 3, 2
    cfg.train.dev_wer_cuts, cfg.train.eval_every, cfg.train.num_buckets = 2, 3, 2
    cfg.decode.max_new_tokens = cfg.baseline.max_new_tokens = 4
    cfg.decode.ctc_weight = 0.5
    cfg.baseline.finetune_minutes, cfg.baseline.finetune_dev_cuts = 0.01, 2
    sets = prepare_corpus(cfg)
    assert {name: len(cuts) for name, cuts in sets.items()} == {"train": 12, "dev": 6, "test": 6}
    build_cache(cfg)
    summary = train(cfg)
    assert summary["steps"] == 3 and 0 <= summary["best_dev_wer"]  # dev MER: units, not words
    decode(cfg)
    decode_baseline(cfg)
    metrics = score(cfg)
    for system, labels in ("llm", {"test.beam1", "test.ctc"}), ("whisper", {"test.beam1", "test.finetuned"}):
        assert set(metrics[system]) == labels
        assert all(r["cjk_units"] > 0 and r["mer"] >= 0 for r in metrics[system].values())
    table = (Path(cfg.score.dir) / "asr_codeswitch" / "results.md").read_text()
    assert "| system | decoding | MER test (%) | CER (zh) test (%) | WER (en) test (%) |" in table
    scores = {s: {k: {m: v[m] for m in ("mer", "zh_cer")} for k, v in r.items()} for s, r in metrics.items()}
    pinned("asr_codeswitch", {"train": summary, "score": scores})
