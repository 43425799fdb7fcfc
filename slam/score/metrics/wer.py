"""Word error rate with jiwer, per set and per utterance."""

from __future__ import annotations

import jiwer

from slam.score.metrics.normalize import normalize


def score_wer(refs: dict[str, str], hyps: dict[str, str], normalizer: str = "english_v1") -> dict:
    """WER over the cuts of ``refs``; a cut with no hypothesis counts as all deletions.

    Returns corpus-level counts and one row per utterance.
    """
    rows, totals = [], {"substitutions": 0, "deletions": 0, "insertions": 0, "ref_words": 0}
    for cut_id, ref_raw in refs.items():
        ref = normalize(ref_raw, normalizer)
        hyp = normalize(hyps.get(cut_id, ""), normalizer)
        if not ref:  # nothing to recognise after normalisation: not scoreable
            continue
        out = jiwer.process_words(ref, hyp)
        row = {"id": cut_id, "ref": ref, "hyp": hyp, "sub": out.substitutions,
               "del": out.deletions, "ins": out.insertions, "ref_words": len(ref.split())}
        row["errors"] = row["sub"] + row["del"] + row["ins"]
        row["wer"] = row["errors"] / row["ref_words"]
        rows.append(row)
        totals["substitutions"] += row["sub"]
        totals["deletions"] += row["del"]
        totals["insertions"] += row["ins"]
        totals["ref_words"] += row["ref_words"]
    errors = totals["substitutions"] + totals["deletions"] + totals["insertions"]
    summary = {"wer": errors / max(totals["ref_words"], 1), "utterances": len(rows),
               "missing_hyps": sum(1 for c in refs if c not in hyps), **totals}
    return {"summary": summary, "utterances": rows}
