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


def _errors(ref: list[str], hyp: list[str]) -> tuple[int, int, int]:
    """Substitutions, deletions and insertions aligning two unit lists (jiwer)."""
    if not ref:
        return 0, 0, len(hyp)
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return out.substitutions, out.deletions, out.insertions


def score_mer(refs: dict[str, str], hyps: dict[str, str], normalizer: str = "basic_v1") -> dict:
    """MER over the cuts of ``refs`` (a cut with no hypothesis counts as all deletions),
    with corpus-level counts and one row per utterance, like :func:`score_wer`. Beside it, each
    language on its own (the paper's Table V reports them apart): ``zh_cer`` aligns only the
    CJK characters of reference and hypothesis, ``en_wer`` only the other words."""
    rows, totals = [], {"substitutions": 0, "deletions": 0, "insertions": 0, "ref_units": 0, "cjk_units": 0,
                        "cjk_errors": 0, "other_errors": 0}  # fmt: skip
    for cut_id, ref_raw in refs.items():
        ref = mixed_units(normalize(ref_raw, normalizer))
        hyp = mixed_units(normalize(hyps.get(cut_id, ""), normalizer))
        if not ref:
            continue
        sub, dele, ins = _errors(ref, hyp)
        by_script = [[u for u in units if bool(CJK.fullmatch(u)) == cjk]
                     for cjk in (True, False) for units in (ref, hyp)]  # fmt: skip
        row = {"id": cut_id, "ref": " ".join(ref), "hyp": " ".join(hyp), "sub": sub, "del": dele, "ins": ins,
               "ref_units": len(ref), "cjk_units": len(by_script[0]),
               "cjk_errors": sum(_errors(by_script[0], by_script[1])),
               "other_errors": sum(_errors(by_script[2], by_script[3]))}  # fmt: skip
        row["errors"] = row["sub"] + row["del"] + row["ins"]
        row["mer"] = row["errors"] / row["ref_units"]
        rows.append(row)
        for total, key in (("substitutions", "sub"), ("deletions", "del"), ("insertions", "ins"),
                           ("ref_units", "ref_units"), ("cjk_units", "cjk_units"),
                           ("cjk_errors", "cjk_errors"), ("other_errors", "other_errors")):
            totals[total] += row[key]
    errors = totals["substitutions"] + totals["deletions"] + totals["insertions"]
    other_units = totals["ref_units"] - totals["cjk_units"]
    summary = {"mer": errors / max(totals["ref_units"], 1), "utterances": len(rows),
               "missing_hyps": sum(1 for c in refs if c not in hyps),
               "zh_cer": totals["cjk_errors"] / totals["cjk_units"] if totals["cjk_units"] else None,
               "en_wer": totals["other_errors"] / other_units if other_units else None, **totals}  # fmt: skip
    return {"summary": summary, "utterances": rows}
