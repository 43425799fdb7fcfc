"""Joint CTC/LLM decoding: the CTC prefix scores against brute force over every alignment, and
decoding that follows the audio's CTC reading against the LLM's prior."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch

from slam.decode.ctc_prefix import CTCPrefixScorer
from slam.model.speech_llm import build_speech_llm, load_assets, save_assets

CLASSES = torch.tensor([11, 12, 13])  # LLM token ids of the CTC classes; class 3 is the blank
EOS = 2


def brute_force(log_probs: torch.Tensor, prefix: tuple[int, ...], whole: bool) -> float:
    """log P(the collapsed CTC output starts with / equals ``prefix``), over every path."""
    T, C1 = log_probs.shape
    blank = C1 - 1
    total = -math.inf
    for path in itertools.product(range(C1), repeat=T):
        out = [p for i, p in enumerate(path) if p != blank and (i == 0 or p != path[i - 1])]
        tokens = tuple(int(CLASSES[p]) for p in out)
        if (tokens == prefix) if whole else (tokens[: len(prefix)] == prefix):
            score = sum(log_probs[t, p] for t, p in enumerate(path))
            total = float(torch.logaddexp(torch.tensor(total), score))
    return total


@pytest.mark.parametrize("prefix", [(), (11,), (12, 12), (11, 13, 11)])
def test_prefix_scores_match_every_alignment(prefix):
    torch.manual_seed(0)
    log_probs = torch.randn(1, 5, 4).log_softmax(-1)
    scorer = CTCPrefixScorer(log_probs, torch.tensor([5]), CLASSES, EOS)
    tokens = torch.tensor([11, 12, 13, EOS, 40])  # 40: a token the CTC head cannot emit
    _, psi, psi_prev = scorer.extend(0, prefix, tokens)
    assert psi_prev.item() == pytest.approx(brute_force(log_probs[0], prefix, whole=False) if prefix else 0.0,
                                            abs=1e-4)  # fmt: skip
    for token, score in zip(tokens.tolist(), psi.tolist()):
        if token == 40:
            assert score < -1e29
        elif token == EOS:  # the end: the prefix is the whole transcript
            assert score == pytest.approx(brute_force(log_probs[0], prefix, whole=True), abs=1e-4)
        else:
            assert score == pytest.approx(brute_force(log_probs[0], prefix + (token,), whole=False), abs=1e-4)


SPELLED = {40: (0, 1), 41: (2,) * 2}  # token 40 is written as 11 12, token 41 as 13 13


@pytest.mark.parametrize("prefix", [(), (11,), (12,), (40,), (41, 12)])
def test_a_token_without_a_class_is_scored_as_its_spelling(prefix):
    """decode.ctc_spell_unknown: a token the CTC head has no class for gets the prefix score of
    the classes that spell it (repeats need their blank, within and across tokens); without a
    spelling it stays impossible."""
    torch.manual_seed(2)
    log_probs = torch.randn(1, 6, 4).log_softmax(-1)
    scorer = CTCPrefixScorer(log_probs, torch.tensor([6]), CLASSES, EOS, spell=lambda t: SPELLED.get(t, ()))
    written = tuple(int(CLASSES[c]) for t in prefix for c in SPELLED.get(t, (int(t) - 11,)))
    tokens = torch.tensor([11, 12, 40, 41, 42, EOS])  # 42: no class, no spelling
    _, psi, psi_prev = scorer.extend(0, prefix, tokens)
    if prefix:
        assert psi_prev.item() == pytest.approx(brute_force(log_probs[0], written, whole=False), abs=1e-4)
    for token, score in zip(tokens.tolist(), psi.tolist()):
        if token == 42:
            assert score < -1e29
        elif token == EOS:
            assert score == pytest.approx(brute_force(log_probs[0], written, whole=True), abs=1e-4)
        else:
            pieces = tuple(int(CLASSES[c]) for c in SPELLED.get(token, (token - 11,)))
            expected = brute_force(log_probs[0], written + pieces, whole=False)
            if expected == -math.inf:  # more labels and blanks than frames
                assert score < -1e29
            else:
                assert score == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("prefix", [(), (11,), (50,), (11, 50), (50, 12, 50, 12)])
def test_a_silent_token_leaves_the_ctc_state_as_it_was(prefix):
    """train.ctc_skip_punctuation: a token the head does not write (50, a comma) costs no CTC
    score, and whatever follows is scored as if it were not there (repeats across it still
    need their blank); the end likewise."""
    torch.manual_seed(3)
    log_probs = torch.randn(1, 5, 4).log_softmax(-1)
    scorer = CTCPrefixScorer(log_probs, torch.tensor([5]), CLASSES, EOS, silent=frozenset({50}))
    written = tuple(t for t in prefix if t != 50)
    tokens = torch.tensor([11, 12, 50, EOS])
    _, psi, psi_prev = scorer.extend(0, prefix, tokens)
    before = brute_force(log_probs[0], written, whole=False) if written else 0.0
    assert psi_prev.item() == pytest.approx(before, abs=1e-4)
    for token, score in zip(tokens.tolist(), psi.tolist()):
        if token == 50:
            assert score == pytest.approx(psi_prev.item(), abs=1e-6)
        elif token == EOS:
            assert score == pytest.approx(brute_force(log_probs[0], written, whole=True), abs=1e-4)
        else:
            expected = brute_force(log_probs[0], written + (token,), whole=False)
            assert score == pytest.approx(expected, abs=1e-4)


def test_punctuation_has_no_ctc_class_nor_target_when_skipped(tiny_cfg):
    """train.ctc_skip_punctuation: punctuation and whitespace tokens are not CTC classes and the
    CTC targets leave them out; words, special tokens and byte pieces stay."""
    tiny_cfg.train.ctc_weight, tiny_cfg.train.ctc_skip_punctuation = 1.0, True
    model = build_speech_llm(tiny_cfg, encoder_dim=32).eval()
    tok = model.tokenizer
    ids = tok("the fox, the dog.", add_special_tokens=False).input_ids
    words = tok("the fox the dog", add_special_tokens=False).input_ids
    silent = model.ctc_silent_tokens()
    assert tok.convert_tokens_to_ids(",") in silent and tok.convert_tokens_to_ids(".") in silent
    assert not silent & set(words) and model.prompt.eos_id not in silent
    model.restrict_ctc(ids + [model.prompt.eos_id])
    classes = model.ctc_class_ids().tolist()
    assert not silent & set(classes)
    assert [classes[c] for c in model.ctc_labels(ids)] == [t for t in ids if t not in silent]
    tiny_cfg.train.ctc_skip_punctuation = False  # the default: every token of the transcripts
    plain = build_speech_llm(tiny_cfg, encoder_dim=32)
    plain.restrict_ctc(ids)
    assert plain.ctc_silent_tokens() == frozenset() and len(plain.ctc_labels(ids)) == len(ids)


def test_spelling_takes_the_fewest_class_tokens_and_never_a_special_one(tiny_cfg):
    tiny_cfg.train.ctc_weight = 1.0
    model = build_speech_llm(tiny_cfg, encoder_dim=32).eval()
    tok = model.tokenizer
    strings = tok.convert_ids_to_tokens(list(range(len(tok))))
    special = set(tok.all_special_ids)
    index = {strings[t]: t for t in range(len(tok)) if t not in special}
    # a token whose first characters (two or more) are a token too ("Ġthe", "Ġth")
    word, cut = next((t, k) for t in index.values() for k in range(len(strings[t]) - 1, 1, -1)
                     if strings[t][:k] in index)  # fmt: skip
    text, head = strings[word], index[strings[word][:cut]]
    singles = {s: t for s, t in index.items() if len(s) == 1}
    model.restrict_ctc([*singles.values(), head, model.prompt.eos_id])
    ids = model.ctc_class_ids().tolist()
    spell = model.ctc_spelling()
    pieces = spell(word)
    assert "".join(strings[ids[c]] for c in pieces) == text
    # the head, then single characters
    assert len(pieces) == 1 + len(text) - cut and strings[ids[pieces[0]]] == text[:cut]
    assert spell(model.prompt.eos_id) == ()  # specials are never spelled out of "<", "|", ...
    model.restrict_ctc([head])  # the rest of the word has no class
    assert model.ctc_spelling()(word) == ()


def test_a_token_is_spelled_by_the_class_that_sounds_the_same(tiny_cfg):
    """"Press" opening an answer has no class when the transcripts only held " press": it is
    that one class (same sound, other case and no word mark), not "P" + "ress"; a token with
    an exact spelling as short keeps it."""
    tiny_cfg.train.ctc_weight = 1.0
    model = build_speech_llm(tiny_cfg, encoder_dim=32).eval()
    strings = model.tokenizer.convert_ids_to_tokens(list(range(len(model.tokenizer))))
    index = {piece: t for t, piece in enumerate(strings)}
    # a word without a word mark ("Press") whose lower case after one is a token too ("Ġpress"),
    # and which splits into two tokens ("P", "ress")
    press, lower, p, ress = next(
        (index[w], index["\u0120" + w.lower()], index[w[:k]], index[w[k:]])
        for w in index if len(w) > 2 and w.isalpha() and w.isascii()
        and "\u0120" + w.lower() in index
        for k in range(1, len(w)) if w[:k] in index and w[k:] in index
    )  # fmt: skip
    model.restrict_ctc([lower, p, ress])
    ids = model.ctc_class_ids().tolist()
    assert [ids[c] for c in model.ctc_spelling()(press)] == [lower]
    model.restrict_ctc([p, ress])  # no class sounds the same: the exact pieces
    ids = model.ctc_class_ids().tolist()
    assert [ids[c] for c in model.ctc_spelling()(press)] == [p, ress]


def test_padding_frames_do_not_count():
    torch.manual_seed(1)
    log_probs = torch.randn(2, 6, 4).log_softmax(-1)
    log_probs[1, :4] = log_probs[0, :4]
    scorer = CTCPrefixScorer(log_probs, torch.tensor([4, 4]), CLASSES, EOS)
    for prefix in [(), (12,), (12, 11)]:
        a = scorer.extend(0, prefix, torch.tensor([11, 13, EOS]))[1]
        b = scorer.extend(1, prefix, torch.tensor([11, 13, EOS]))[1]
        torch.testing.assert_close(a, b)


def test_joint_decoding_follows_the_audio_and_the_head_survives_save_and_load(tiny_cfg, tmp_path):
    """An untrained LLM says whatever its prior says; with the CTC head peaked on a token
    sequence, CTC-weighted greedy and beam search both write exactly that sequence."""
    tiny_cfg.train.ctc_weight = 1.0
    model = build_speech_llm(tiny_cfg, encoder_dim=32).eval()
    words = model.tokenizer("the quick fox", add_special_tokens=False).input_ids
    model.restrict_ctc(words + [model.prompt.eos_id])
    # what a well warmed-up CTC head reads: each word, then a blank
    classes = model.ctc_class_ids().tolist()
    blank = len(classes)
    path = [c for token in words for c in (classes.index(token), blank)]
    peaked = torch.full((1, len(path), blank + 1), -20.0)
    peaked[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
    model.ctc_log_probs = lambda audio: peaked.log_softmax(-1)
    audio, lengths = torch.randn(1, len(path), 32), torch.tensor([len(path)])
    model.audio_embeddings = lambda inputs, lengths, encoded: (audio, lengths)  # the LLM hears noise
    plain = model.generate(audio, lengths, max_new_tokens=8)
    assert plain != ["the quick fox"]  # the random LLM alone does not say it
    for beams in (1, 3):
        assert model.generate(audio, lengths, num_beams=beams, max_new_tokens=8, ctc_weight=0.9) == [
            "the quick fox"
        ]
    # a batch is searched as the decode config says (decode stage, training's dev WER, slam transcribe)
    batch = {"inputs": audio, "lengths": lengths, "encoded": True}
    for weight, expected in ((0.9, True), (0.0, False)):
        decode = dataclasses.replace(tiny_cfg.decode, ctc_weight=weight, max_new_tokens=8)
        assert (model.transcribe_batch(batch, tiny_cfg.runtime, decode) == ["the quick fox"]) is expected
    # the CTC head (blank and classes) is part of the saved assets
    model.ctc_blank.data.normal_()
    save_assets(model, tmp_path / "model", {})
    fresh = build_speech_llm(tiny_cfg, encoder_dim=32)
    load_assets(fresh, tmp_path / "model")
    torch.testing.assert_close(fresh.ctc_blank, model.ctc_blank)
    assert fresh.ctc_class_ids().tolist() == classes


def test_ctc_weight_out_of_range_is_named():
    with pytest.raises(ValueError, match="decode.ctc_weight"):
        CTCPrefixScorer(torch.zeros(1, 2, 4), torch.tensor([2]), CLASSES, EOS, weight=1.5)



def test_a_clip_the_ctc_head_reads_as_one_word_keeps_that_reading(tiny_cfg):
    """decode.ctc_max_words: rows whose CTC best path has at most that many words are the CTC
    head's reading; the others are the LLM's, searched on those rows alone."""
    tiny_cfg.train.ctc_weight = 1.0
    model = build_speech_llm(tiny_cfg, encoder_dim=32).eval()
    texts = ["fox", "the quick fox", "quick"]
    tokens = [model.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    model.restrict_ctc(sorted({t for row in tokens for t in row}) + [model.prompt.eos_id])
    classes = model.ctc_class_ids().tolist()
    blank, frames = len(classes), 2 * max(map(len, tokens))
    peaked = torch.full((3, frames, blank + 1), -20.0)
    peaked[:, :, blank] = 0.0  # blank wherever a row has nothing more to say
    for row, ids in enumerate(tokens):
        for k, token in enumerate(ids):
            peaked[row, 2 * k] = -20.0
            peaked[row, 2 * k, classes.index(token)] = 0.0
    model.ctc_log_probs = lambda audio: peaked.log_softmax(-1)
    model.audio_embeddings = lambda inputs, lengths, encoded: (inputs, lengths)  # the LLM hears noise
    torch.manual_seed(0)
    audio, lengths = torch.randn(3, frames, 32), torch.tensor([frames, frames, frames - 1])
    batch = {"inputs": audio, "lengths": lengths, "encoded": True}
    decode = dataclasses.replace(tiny_cfg.decode, ctc_weight=0.0, max_new_tokens=8, ctc_max_words=1)
    assert model.ctc_greedy(audio, lengths) == texts
    alone = model.generate(audio[1:2], lengths[1:2], max_new_tokens=8)[0]  # the LLM on row 1 only
    assert alone != "the quick fox"
    assert model.transcribe_batch(batch, tiny_cfg.runtime, decode) == ["fox", alone, "quick"]
    # off: every row is the LLM's
    off = model.transcribe_batch(batch, tiny_cfg.runtime, dataclasses.replace(decode, ctc_max_words=0))
    assert off == model.generate(audio, lengths, max_new_tokens=8) and not {"fox", "quick"} & set(off)


def test_ctc_max_words_without_a_ctc_head_is_named(tiny_cfg):
    model = build_speech_llm(tiny_cfg, encoder_dim=32).eval()
    assert model.ctc_blank is None
    batch = {"inputs": torch.randn(1, 4, 32), "lengths": torch.tensor([4]), "encoded": True}
    decode = dataclasses.replace(tiny_cfg.decode, ctc_max_words=1)
    with pytest.raises(ValueError, match="decode.ctc_max_words"):
        model.transcribe_batch(batch, tiny_cfg.runtime, decode)

def test_batch_rows_keeps_the_rows_asked_for_and_cuts_the_padding():
    from slam.data.cuts import batch_rows

    inputs = torch.arange(3 * 5 * 2, dtype=torch.float).reshape(3, 5, 2)
    batch = {"ids": ["a", "b", "c"], "inputs": inputs, "lengths": torch.tensor([5, 2, 3]),
             "keywords": [["x"], [], ["y"]], "encoded": True}  # fmt: skip
    part = batch_rows(batch, [2, 1])
    assert part["ids"] == ["c", "b"] and part["keywords"] == [["y"], []]
    assert part["lengths"].tolist() == [3, 2]
    torch.testing.assert_close(part["inputs"], inputs[[2, 1], :3])
    assert part["encoded"] is True
