"""Recipe st: Table X's prompt formats, the curriculum, parallel text (gettext, TSV), the French
asterisk set, BLEU against hand-computed values, and the whole recipe with tiny models."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, MonoCut, SupervisionSegment

from slam.config import ConfigError, SlamConfig
from slam.data.corpora.asterisk import FRENCH, load_asterisk
from slam.data.corpora.parallel import TRANSLATION, gettext_pairs, speakable, tsv_pairs
from slam.score.metrics import score_translation
from slam.tasks.translation import Curriculum, answer, instruction, split_output
from slam.testing import write_mo

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="Debian espeak-ng (scripts/setup.sh)")  # fmt: skip


def _cut(cut_id: str, text: str, translation: str) -> MonoCut:
    sup = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=1.0, text=text,
                             custom={TRANSLATION: translation})  # fmt: skip
    return MonoCut(id=cut_id, start=0.0, duration=1.0, channel=0, supervisions=[sup])


def test_checkpoints_are_kept_by_dev_bleu_of_the_translation_part(tiny_cfg):
    from slam.recipes import recipe_of

    tiny_cfg.recipe, tiny_cfg.corpus.translation_language = "st", "en"
    recipe = recipe_of(tiny_cfg)
    refs = {"a": "Il pleut. <|en|>It has been raining since this morning.",
            "b": "Le chat dort. <|en|>The cat sleeps on the warm bed."}  # fmt: skip
    # a wrong transcript costs nothing: BLEU reads the translation
    right = {"a": "Il pleu. <|en|>It has been raining since this morning.",
             "b": "Le cha dort. <|en|>The cat sleeps on the warm bed."}  # fmt: skip
    assert recipe.dev_error(tiny_cfg, refs, right) == pytest.approx(0.0)
    half = {**right, "b": "Le chat dort. <|en|>A dog runs in the park."}
    assert 0.2 < recipe.dev_error(tiny_cfg, refs, half) < 0.9
    assert recipe.dev_error(tiny_cfg, refs, {"a": "Il pleut.", "b": "Le chat dort."}) > 0.9  # no translation
    # the curriculum's ASR stage: answers without a translation, every checkpoint alike
    assert recipe.dev_error(tiny_cfg, {"a": "Il pleut."}, {"a": "Il pleut."}) == 1.0


def test_table_x_prompts_answers_and_how_outputs_split():
    assert instruction("asr", "fr", "en") == "<|fr|>"
    assert instruction("srt", "fr", "en") == "<|en|>"
    assert instruction("mmt", "fr", "en", "Il pleut.") == "Il pleut.<|en|>"
    assert answer("asr", "en", "Il pleut.", "It rains.") == "Il pleut."
    assert answer("srt", "en", "Il pleut.", "It rains.") == "Il pleut. <|en|>It rains."
    assert answer("mmt", "en", "Il pleut.", "It rains.") == answer("srt", "en", "Il pleut.", "It rains.")
    assert split_output("Il pleut. <|en|>It rains.", "en") == ("Il pleut.", "It rains.")
    assert split_output("It rains.", "en") == (None, "It rains.")  # no tag: all of it is the translation


def test_curriculum_stages_and_tasks():
    cfg = SlamConfig()
    cfg.corpus.language, cfg.corpus.translation_language = "fr", "en"
    cfg.train.max_steps = 10
    curriculum = Curriculum(cfg)  # defaults: asr | asr+mmt | srt+mmt over 0.4, 0.3, 0.3
    assert [curriculum.tasks_at(s) for s in (0, 3, 4, 6, 7, 9)] == [
        ["asr"], ["asr"], ["asr", "mmt"], ["asr", "mmt"], ["srt", "mmt"], ["srt", "mmt"]]
    cuts = [_cut(f"c{i}", f"phrase {i}", f"sentence {i}") for i in range(40)]
    # a row's task depends on cut and epoch only: prompt and answer agree
    drawn = {curriculum.task(c, 0, 8) for c in cuts}
    assert drawn == {"srt", "mmt"}
    for cut in cuts:
        task = curriculum.task(cut, 0, 8)
        assert curriculum.task(cut, 0, 9) == task
        expected = "<|en|>" if task == "srt" else f"{cut.supervisions[0].text}<|en|>"
        assert curriculum.instruction(cut, 0, 8) == expected
        assert curriculum.answer(cut, 0, 8).endswith(f"<|en|>{cut.supervisions[0].custom[TRANSLATION]}")
        assert curriculum.answer(cut, 0, 0) == cut.supervisions[0].text  # stage 1: ASR only
    assert any(curriculum.task(c, 0, 8) != curriculum.task(c, 1, 8) for c in cuts)  # redrawn each epoch
    # dev cuts are asked SRT at every stage: the dev BLEU is that of the task decoded
    dev = Curriculum(cfg, srt_cuts={"c0", "c1"})
    for step in (0, 5, 9):
        assert dev.instruction(cuts[0], 0, step) == "<|en|>"
        assert dev.answer(cuts[1], 0, step) == "phrase 1 <|en|>sentence 1"
    assert dev.answer(cuts[2], 0, 0) == "phrase 2"  # the other rows follow the curriculum

    cfg.st.stage_fractions = [0.5, 0.3, 0.3]
    with pytest.raises(ConfigError, match="st.stage_fractions"):
        Curriculum(cfg)
    cfg.st.stage_fractions, cfg.st.curriculum = [0.5, 0.5], ["asr", "asr+st"]
    with pytest.raises(ConfigError, match=r"unknown task\(s\) \['st'\]"):
        Curriculum(cfg)
    cfg.st.curriculum, cfg.corpus.translation_language = ["asr", "srt"], ""
    with pytest.raises(ConfigError, match="translation_language"):
        Curriculum(cfg)


def test_the_ctc_term_reads_the_transcript_of_a_translation_answer(tiny_models):
    import torch
    from transformers import AutoTokenizer

    from slam.data.cuts import AudioTextDataset

    cfg = SlamConfig()
    cfg.corpus.language, cfg.corpus.translation_language = "fr", "en"
    cfg.train.max_steps = 10
    curriculum = Curriculum(cfg, srt_cuts={"a"})
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["llm"])
    dataset = AudioTextDataset(tokenizer, instruction=curriculum.instruction, target=curriculum.answer,
                               features=lambda cut, epoch: torch.zeros(4, 8))  # fmt: skip
    cuts = CutSet.from_cuts([_cut("a", "il pleut", "it rains")])
    batch = dataset[cuts]
    assert batch["texts"] == ["il pleut <|en|>it rains"]  # the answer: transcript and translation
    assert batch["ctc_targets"] == [dataset.tokenize("il pleut")] != batch["targets"]
    asr = AudioTextDataset(tokenizer, features=lambda cut, epoch: torch.zeros(4, 8))
    # ASR: the answer itself
    assert asr[cuts]["ctc_targets"] == asr[cuts]["targets"] == [dataset.tokenize("il pleut")]


def test_bleu_and_chrf_against_hand_computed_values():
    refs = {"a": "the cat sat on a mat"}
    # 1-4-gram precisions 5/6, 3/5, 2/4, 1/3, no brevity penalty: (1/12) ** (1/4)
    scored = score_translation(refs, {"a": "the cat sat on the mat"})
    assert scored["summary"]["bleu"] == pytest.approx(100 * (1 / 12) ** 0.25)
    assert scored["utterances"][0]["bleu"] == pytest.approx(100 * (1 / 12) ** 0.25)
    assert score_translation(refs, dict(refs))["summary"]["bleu"] == pytest.approx(100)
    missing = score_translation(refs, {})["summary"]
    assert missing["bleu"] == 0 and missing["chrf"] == 0 and missing["missing_hyps"] == 1


def test_parallel_text_from_gettext_catalogs_and_tsv(tmp_path):
    assert speakable("Impossible de lire le fichier.") and speakable("l'éditeur est sorti en erreur")
    assert not speakable("%s: fichier introuvable") and not speakable("le serveur OCSP répond")
    assert not speakable("voir --help") and not speakable("3 fichiers")
    write_mo(tmp_path / "fr/LC_MESSAGES/tool.mo", {
        "": "Content-Type: text/plain; charset=UTF-8\n",
        "cannot read the file": "impossible de lire le fichier",
        "%s: not found": "%s : introuvable",
        "Options": "Options",  # the same in both: not a translation
        "the editor\u2019s window": "la fen\u00eatre de l\u2019\u00e9diteur",
    })  # fmt: skip
    pairs, counts = gettext_pairs("fr", ["tool", "absent"], locale_dir=tmp_path)
    assert sorted(pairs) == [("impossible de lire le fichier", "cannot read the file"),
                             ("la fenêtre de l'éditeur", "the editor's window")]  # fmt: skip
    assert counts == {"tool": 2, "absent": 0}

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("bonjour tout le monde\thello everyone\n\nsans traduction\n")
    with pytest.raises(ValueError, match=r"pairs.tsv:3: expected 'source<TAB>translation'"):
        tsv_pairs(tsv)


def test_french_asterisk_prompts_carry_the_english_text(tmp_path):
    txt = tmp_path / "core-sounds-fr.txt"
    txt.write_text("; French\nagent-pass: Composez votre mot de passe suivi du #.\n"
                   "vm-next: Appuyez sur 6 pour le message suivant.\nextra: Pas de version anglaise.\n"
                   "beep: [bip]\n")  # fmt: skip
    sounds = tmp_path / "sounds"
    sounds.mkdir()
    for name in ("agent-pass", "vm-next", "extra", "beep"):
        sf.write(str(sounds / f"{name}.wav"), np.random.default_rng(0).normal(0, 0.1, 4000), 8000)
    english = {"agent-pass": "Please enter your password followed by the pound key.",
               "vm-next": "Press six to play the next message.", "beep": "beep"}  # fmt: skip
    cuts, dropped = load_asterisk(txt, sounds, FRENCH, english)
    texts = {c.id: (c.supervisions[0].text, c.supervisions[0].custom[TRANSLATION]) for c in cuts}
    assert texts == {
        "asterisk_fr-agent-pass": ("Composez votre mot de passe suivi du dièse.", english["agent-pass"]),
        "asterisk_fr-vm-next": ("Appuyez sur six pour le message suivant.", english["vm-next"]),
    }
    assert dropped == {"no_translation": 1, "no_text": 1}
    assert {c.supervisions[0].language for c in cuts} == {"French"}


@needs_espeak
def test_st_recipe_end_to_end(tiny_cfg, tmp_path, pinned):
    from slam.data.cache import build_cache
    from slam.data.corpora import prepare_corpus
    from slam.decode.hyps import read_hyps
    from slam.decode.stage import decode, decode_baseline
    from slam.score.stage import score
    from slam.train.loop import train

    cfg = tiny_cfg
    cfg.recipe = "st"
    tsv = tmp_path / "pairs.tsv"
    pairs = [
        ("le chat dort sur le lit", "the cat sleeps on the bed"),
        ("il pleut depuis ce matin", "it has rained since this morning"),
        ("ouvrir le fichier suivant", "open the next file"),
        ("la porte reste fermée", "the door stays closed"),
        ("nous partons demain soir", "we leave tomorrow evening"),
        ("le train arrive bientôt", "the train arrives soon"),
        ("fermer toutes les fenêtres", "close all windows"),
        ("le café est trop chaud", "the coffee is too hot"),
    ]
    tsv.write_text("".join(f"{fr}\t{en}\n" for fr, en in pairs))
    cfg.corpus.dir = str(tmp_path / "st")
    cfg.corpus.source, cfg.corpus.parallel_text = "parallel", str(tsv)
    cfg.corpus.engines = ["espeak", "flite"]
    cfg.corpus.language, cfg.corpus.translation_language = "fr", "en"
    cfg.corpus.num_utterances, cfg.corpus.real_sets = 24, []
    cfg.corpus.dev_fraction = cfg.corpus.test_fraction = 0.25
    # the CTC term on the transcript part of each answer (its classes: the French transcripts' tokens)
    cfg.train.max_steps, cfg.train.ctc_weight, cfg.train.num_buckets = 5, 0.3, 2
    cfg.decode.max_new_tokens = 6
    cfg.score.normalizer = "basic_v1"
    cfg.corpus.join_fraction = 0.5  # joined sentences would have no translation: named, not a KeyError
    with pytest.raises(ValueError, match="corpus.join_fraction=0.5"):
        prepare_corpus(cfg)
    cfg.corpus.join_fraction = 0.0
    sets = prepare_corpus(cfg)
    for cut in sets["test"]:  # French speech with its English translation
        sup = cut.supervisions[0]
        assert sup.language == "French" and sup.custom[TRANSLATION] == dict(pairs)[sup.text]
        assert sup.speaker.startswith("espeak:fr-")  # flite speaks no French: skipped
    build_cache(cfg)
    cfg.train.dev_wer_cuts = 2  # checkpoints kept by dev BLEU (1 - BLEU / 100, logged as dev_wer)
    summary = train(cfg)
    assert summary["steps"] == 5 and 0.0 <= summary["best_dev_wer"] <= 1.0

    decode(cfg)
    hyps_dir = Path(cfg.decode.dir)
    test_ids = {c.id for c in CutSet.from_file(tmp_path / "st/test.jsonl.gz")}
    for label in ("beam1", "cascade", "mmt_gold"):
        assert {r["id"] for r in read_hyps(hyps_dir / f"test.{label}.jsonl")} == test_ids
    assert all("<|en|>" in r["hyp"] for r in read_hyps(hyps_dir / "test.cascade.jsonl"))
    # Whisper translates only with a multilingual model; the tiny one is English-only
    with pytest.raises(ConfigError, match="multilingual Whisper"):
        decode_baseline(cfg)

    metrics = score(cfg)
    results = metrics["llm"]
    assert set(results) == {"test.beam1", "test.cascade", "test.mmt_gold"}
    assert results["test.cascade"]["transcript_wer"] is not None
    assert "transcript_wer" not in results["test.mmt_gold"]  # it was given the transcript
    assert all(0 <= r["bleu"] <= 100 for r in results.values())
    pinned("st", {"train": summary, "score": metrics})
    table = (Path(cfg.score.dir) / "st" / "results.md").read_text()
    assert "| test | SRT (chain of thought), greedy |" in table and "| test | cascade: ASR" in table
