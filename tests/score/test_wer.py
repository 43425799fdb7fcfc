"""WER and the paired bootstrap that says how sure a WER difference is."""

from __future__ import annotations

import pytest

from slam.score.metrics import paired_bootstrap_wer, score_wer

REFS = {f"u{i}": ref for i, ref in enumerate(["press one to record", "dollar sign", "call forwarding",
                                               "please hold the line", "fifty", "goodbye"] * 5)}  # fmt: skip


def test_wer_counts_substitutions_deletions_and_insertions():
    out = score_wer({"a": "press one to record"}, {"a": "Press won, to record please."})
    assert out["summary"]["substitutions"] == 1 and out["summary"]["deletions"] == 0
    assert out["summary"]["insertions"] == 1 and out["summary"]["wer"] == pytest.approx(2 / 4)
    assert score_wer({"a": "dollar sign"}, {})["summary"]["deletions"] == 2  # no hypothesis: all deleted


def test_paired_bootstrap_separates_a_real_gain_from_none():
    worse = {k: v.replace("one", "won").replace("sign", "sine") for k, v in REFS.items()}
    base, perfect = score_wer(REFS, worse), score_wer(REFS, REFS)
    same = paired_bootstrap_wer(base, base)
    assert same["difference"] == same["low"] == same["high"] == 0.0 and same["system_better"] == 0.0
    gain = paired_bootstrap_wer(base, perfect)
    assert gain["difference"] == pytest.approx(-base["summary"]["wer"]) and gain["high"] < 0
    assert gain["system_better"] == 1.0 and gain["low"] <= gain["difference"] <= gain["high"]
    # better where the baseline errs, worse elsewhere, as many errors in all: the interval straddles 0
    mixed = {k: "good bye" if v == "goodbye" else v for k, v in REFS.items()}
    split = paired_bootstrap_wer(base, score_wer(REFS, mixed))
    assert split["low"] < 0 < split["high"] and 0.0 < split["system_better"] < 1.0


def test_paired_bootstrap_refuses_results_of_different_utterances():
    with pytest.raises(ValueError, match="different utterances"):
        paired_bootstrap_wer(score_wer(REFS, REFS), score_wer({"u0": REFS["u0"]}, REFS))
