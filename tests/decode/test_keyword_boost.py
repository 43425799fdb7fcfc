"""Keyword boosting: completed listed words keep their bonus, broken partial matches give it
back, the CTC scorer scores the words' tokens, and a tiny model writes a listed word only when
boosted."""

from __future__ import annotations

import pytest
import torch

from slam.decode.ctc_prefix import NEG_INF, CTCPrefixScorer
from slam.decode.keyword_boost import KeywordBoost, word_variants
from slam.model.speech_llm import build_speech_llm

VOCAB = 12


def total_gain(boost: KeywordBoost, tokens: list[int]) -> float:
    """What the processor adds to the scores of ``tokens``, written one after another."""
    total = 0.0
    for i, token in enumerate(tokens):
        scores = boost(torch.tensor([tokens[:i]], dtype=torch.long), torch.zeros(1, VOCAB))
        total += float(scores[0, token])
    return total


@pytest.mark.parametrize(("path", "expected"), [
    ([5, 6, 7], 3.0),  # the word written: every token keeps its bonus
    ([5, 6, 9], 0.0),  # broken off after two tokens: both given back
    ([5, 6, 7, 9], 3.0),  # after a completed word nothing is taken back
    ([5, 5, 6, 7], 3.0),  # a restart inside a match: the first 5 is given back
    ([8, 5, 6], 2.0),  # an open match counts by its depth so far
    ([1, 2, 3], 0.0),
])  # fmt: skip
def test_bonus_of_a_path_is_its_completed_words_plus_the_open_match(path, expected):
    boost = KeywordBoost([[(5, 6, 7), (8,)]], bonus=1.0)
    assert total_gain(boost, path) == pytest.approx(expected + (1.0 if 8 in path else 0.0))


def test_rows_take_their_own_sample_lists_across_beams():
    boost = KeywordBoost([[(5,)], [(6,)]], bonus=2.0, num_beams=2)
    scores = boost(torch.zeros(4, 0, dtype=torch.long), torch.zeros(4, VOCAB))
    assert scores[:2, 5].tolist() == [2.0, 2.0] and scores[:2, 6].tolist() == [0.0, 0.0]
    assert scores[2:, 6].tolist() == [2.0, 2.0] and scores[2:, 5].tolist() == [0.0, 0.0]


def test_negative_bonus_is_named():
    with pytest.raises(ValueError, match="decode.keyword_bonus"):
        KeywordBoost([[(5,)]], bonus=-1.0)


def test_ctc_scorer_scores_the_listed_tokens_it_would_not_have_tried():
    """A token neither the LLM's pre-beam nor the CTC head's top-2 per frame holds is scored
    (finite) once a keyword list offers it, and is left out (NEG_INF) otherwise."""
    classes = torch.arange(3, 11)  # LLM ids 3..10 are CTC classes; the blank is last
    log_probs = torch.full((1, 6, len(classes) + 1), -30.0)
    log_probs[0, :, 0] = 0.0  # the head hears only LLM id 3 ...
    log_probs[0, :, 1] = -1.0  # ... and id 4, never id 9
    log_probs = log_probs.log_softmax(-1)
    llm_scores = torch.zeros(1, VOCAB)
    llm_scores[0, :2] = 5.0  # the LLM prefers ids 0 and 1
    prefix = torch.zeros(1, 0, dtype=torch.long)
    plain = CTCPrefixScorer(log_probs, torch.tensor([6]), classes, eos_id=2, pre_beam=2)(prefix, llm_scores)
    assert plain[0, 9] < NEG_INF / 2
    boost = KeywordBoost([[(9, 10)]], bonus=1.0)
    listed = CTCPrefixScorer(log_probs, torch.tensor([6]), classes, eos_id=2, pre_beam=2,
                             extra_candidates=boost.continuations)(prefix, llm_scores)  # fmt: skip
    assert NEG_INF / 2 < listed[0, 9] < 0


def test_word_variants_cover_spacing_and_case(tiny_cfg):
    model = build_speech_llm(tiny_cfg, encoder_dim=32)
    tok = model.tokenizer
    variants = word_variants(tok, ["sclerotic", " ", "Zurich"])
    for form in ("sclerotic", " sclerotic", "Sclerotic", " Sclerotic", "Zurich", " Zurich", " zurich"):
        assert tuple(tok(form, add_special_tokens=False).input_ids) in variants
    assert len(variants) == len(set(variants)) == 8


def test_tiny_model_writes_a_listed_word_only_when_boosted(tiny_cfg):
    torch.manual_seed(0)
    model = build_speech_llm(tiny_cfg, encoder_dim=32).eval()
    audio, lengths = torch.randn(1, 6, 32), torch.tensor([6])
    model.audio_embeddings = lambda inputs, lengths, encoded: (audio, lengths)
    keywords = [["zebra"]]  # 5 tokens of the tiny tokenizer
    plain = model.generate(audio, lengths, max_new_tokens=12, keywords=keywords)  # no bonus: unchanged
    assert plain == model.generate(audio, lengths, max_new_tokens=12)
    assert "zebra" not in plain[0].lower()
    for beams in (1, 2):
        boosted = model.generate(audio, lengths, num_beams=beams, max_new_tokens=12, keywords=keywords,
                                 keyword_bonus=50.0)  # fmt: skip
        assert "zebra" in boosted[0].lower()
