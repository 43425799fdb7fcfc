"""Mixed error rate for mixed-script text: every CJK character is one unit (a CER there),
every other whitespace-separated word is one unit (a WER there), scored in one alignment.

Chinese and Japanese are written without spaces between words, so word-level WER is
meaningless for them, while the Latin words in code-switched speech are whole words.
"""

from __future__ import annotations

import re

import jiwer

from slam.score.metrics.normalize import normalize

# Han (with extensions and compatibility ideographs), Hiragana, Katakana and Hangul syllables
CJK = re.compile(
    "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f]"
)


def mixed_units(text: str) -> list[str]:
    """``"我们用 python写code"`` -> ``["我", "们", "用", "python", "写", "code"]``."""
    return CJK.sub(lambda m: f" {m.group(0)} ", text).split()


def score_mer(refs: dict[str, str], hyps: dict[str, str], normalizer: str = "basic_v1") -> dict:
    """MER over the cuts of ``refs`` (a cut with no hypothesis counts as all deletions),
    with corpus-level counts and one row per utterance, like :func:`score_wer`."""
    rows, totals = [], {"substitutions": 0, "deletions": 0, "insertions": 0, "ref_units": 0, "cjk_units": 0}
    for cut_id, ref_raw in refs.items():
        ref = mixed_units(normalize(ref_raw, normalizer))
        hyp = mixed_units(normalize(hyps.get(cut_id, ""), normalizer))
        if not ref:
            continue
        out = jiwer.process_words(" ".join(ref), " ".join(hyp))
        row = {"id": cut_id, "ref": " ".join(ref), "hyp": " ".join(hyp), "sub": out.substitutions,
               "del": out.deletions, "ins": out.insertions, "ref_units": len(ref),
               "cjk_units": sum(bool(CJK.fullmatch(u)) for u in ref)}
        row["errors"] = row["sub"] + row["del"] + row["ins"]
        row["mer"] = row["errors"] / row["ref_units"]
        rows.append(row)
        for total, key in (("substitutions", "sub"), ("deletions", "del"), ("insertions", "ins"),
                           ("ref_units", "ref_units"), ("cjk_units", "cjk_units")):
            totals[total] += row[key]
    errors = totals["substitutions"] + totals["deletions"] + totals["insertions"]
    summary = {"mer": errors / max(totals["ref_units"], 1), "utterances": len(rows),
               "missing_hyps": sum(1 for c in refs if c not in hyps), **totals}
    return {"summary": summary, "utterances": rows}
