"""Biased and unbiased word error rates and keyword recall (paper IV-B, after Le et al.).

Every reference word is biased when it is in the utterance's biasing list and unbiased
otherwise; its substitution or deletion counts on that side. An inserted hypothesis word
counts as biased when it is in the list. B-WER = biased errors / biased reference words,
U-WER = unbiased errors / unbiased reference words, WER = all errors / all reference words;
recall = biased reference words recognised (aligned as equal) / biased reference words.
The alignment is jiwer's.
"""

from __future__ import annotations

from functools import cache

import jiwer

from slam.score.metrics.normalize import normalize

COUNTS = ("b_sub", "b_del", "b_ins", "b_ref", "b_hit", "u_sub", "u_del", "u_ins", "u_ref", "hyp_listed")


@cache
def _normalized_words(entry: str, normalizer: str) -> tuple[str, ...]:
    # an entry of the list may become several words (or none) after normalisation
    return tuple(normalize(entry, normalizer).split())


def biased_counts(ref: str, hyp: str, listed: set[str]) -> dict[str, int]:
    """Error counts split by whether the word is in ``listed`` (normalised texts, one utterance).

    ``hyp_listed`` is the number of hypothesis words in the list (for precision).
    """
    counts = dict.fromkeys(COUNTS, 0)
    ref_words, hyp_words = ref.split(), hyp.split()
    counts["hyp_listed"] = sum(w in listed for w in hyp_words)
    for w in ref_words:
        counts["b_ref" if w in listed else "u_ref"] += 1
    if not ref_words:
        counts["b_ins"] = counts["hyp_listed"]
        counts["u_ins"] = len(hyp_words) - counts["hyp_listed"]
        return counts
    for chunk in jiwer.process_words(ref, hyp).alignments[0]:
        if chunk.type == "insert":
            for w in hyp_words[chunk.hyp_start_idx : chunk.hyp_end_idx]:
                counts["b_ins" if w in listed else "u_ins"] += 1
            continue
        for w in ref_words[chunk.ref_start_idx : chunk.ref_end_idx]:
            side = "b" if w in listed else "u"
            if chunk.type == "equal":
                counts["b_hit"] += side == "b"
            elif chunk.type == "substitute":
                counts[f"{side}_sub"] += 1
            else:  # delete
                counts[f"{side}_del"] += 1
    return counts


def biased_rates(counts: dict[str, int]) -> dict[str, float]:
    b_err = counts["b_sub"] + counts["b_del"] + counts["b_ins"]
    u_err = counts["u_sub"] + counts["u_del"] + counts["u_ins"]
    ref = counts["b_ref"] + counts["u_ref"]
    return {
        "wer": (b_err + u_err) / max(ref, 1),
        "b_wer": b_err / max(counts["b_ref"], 1),
        "u_wer": u_err / max(counts["u_ref"], 1),
        "recall": counts["b_hit"] / max(counts["b_ref"], 1),
        # listed hypothesis words that are right: low when the model copies distractors
        "precision": counts["b_hit"] / max(counts["hyp_listed"], 1),
    }


def score_biasing(
    refs: dict[str, str],
    hyps: dict[str, str],
    lists: dict[str, list[str]],
    normalizer: str = "english_v1",
) -> dict:
    """WER, B-WER, U-WER, recall and precision over the cuts of ``refs``.

    ``lists`` gives each cut's biasing list (entries are normalised like the texts); a cut
    without a hypothesis counts as all deletions, one without a list has no biased words.
    """
    totals = dict.fromkeys(COUNTS, 0)
    rows = []
    for cut_id, ref_raw in refs.items():
        ref = normalize(ref_raw, normalizer)
        if not ref:  # nothing to recognise after normalisation: not scoreable (as score_wer)
            continue
        hyp = normalize(hyps.get(cut_id, ""), normalizer)
        listed = {w for entry in lists.get(cut_id, []) for w in _normalized_words(entry, normalizer)}
        counts = biased_counts(ref, hyp, listed)
        rows.append({"id": cut_id, "ref": ref, "hyp": hyp, **counts})
        for key, value in counts.items():
            totals[key] += value
    summary = {**biased_rates(totals), **totals, "utterances": len(rows),
               "missing_hyps": sum(1 for c in refs if c not in hyps)}
    return {"summary": summary, "utterances": rows}
