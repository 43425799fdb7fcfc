"""Word (and character) error rate with jiwer, per set and per utterance."""

from __future__ import annotations

import jiwer
import torch

from slam.score.metrics.normalize import normalize


def score_wer(
    refs: dict[str, str], hyps: dict[str, str], normalizer: str = "english_v1", cer: bool = False
) -> dict:
    """WER over the cuts of ``refs``; a cut with no hypothesis counts as all deletions. With
    ``cer`` also the character error rate of the same normalised texts (spaces count as
    characters, as jiwer counts them).

    Returns corpus-level counts and one row per utterance.
    """
    rows, totals = [], {"substitutions": 0, "deletions": 0, "insertions": 0, "ref_words": 0}
    chars = {"char_errors": 0, "ref_chars": 0}
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
        if cer:
            out = jiwer.process_characters(ref, hyp)
            row["char_errors"] = out.substitutions + out.deletions + out.insertions
            row["ref_chars"] = len(ref)
            row["cer"] = row["char_errors"] / row["ref_chars"]
            for key in chars:
                chars[key] += row[key]
        rows.append(row)
        totals["substitutions"] += row["sub"]
        totals["deletions"] += row["del"]
        totals["insertions"] += row["ins"]
        totals["ref_words"] += row["ref_words"]
    errors = totals["substitutions"] + totals["deletions"] + totals["insertions"]
    summary = {"wer": errors / max(totals["ref_words"], 1), "utterances": len(rows),
               "missing_hyps": sum(1 for c in refs if c not in hyps), **totals}
    if cer:
        summary.update(cer=chars["char_errors"] / max(chars["ref_chars"], 1), **chars)
    return {"summary": summary, "utterances": rows}


def paired_bootstrap_wer(
    baseline: dict, system: dict, resamples: int = 2000, seed: int = 0
) -> dict[str, float]:
    """How sure a WER difference is: the two :func:`score_wer` results (same references)
    resampled by utterance together, ``resamples`` times (Koehn 2004's paired bootstrap, which
    sacrebleu runs for BLEU but nothing packaged runs for WER). Returns both WERs, the
    difference ``system - baseline`` and its 95 % interval, and how often the system was better."""
    base = {r["id"]: (r["errors"], r["ref_words"]) for r in baseline["utterances"]}
    other = {r["id"]: (r["errors"], r["ref_words"]) for r in system["utterances"]}
    if base.keys() != other.keys():
        raise ValueError(f"the two results score different utterances ({len(base)} and {len(other)})")
    ids = sorted(base)
    base_err = torch.tensor([base[i][0] for i in ids], dtype=torch.float64)
    other_err = torch.tensor([other[i][0] for i in ids], dtype=torch.float64)
    words = torch.tensor([base[i][1] for i in ids], dtype=torch.float64)
    picks = torch.randint(len(ids), (resamples, len(ids)), generator=torch.Generator().manual_seed(seed))
    diffs = (other_err[picks].sum(1) - base_err[picks].sum(1)) / words[picks].sum(1)
    low, high = torch.quantile(diffs, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    total = words.sum()
    return {"baseline_wer": float(base_err.sum() / total), "system_wer": float(other_err.sum() / total),
            "difference": float((other_err.sum() - base_err.sum()) / total), "low": low, "high": high,
            "system_better": float((diffs < 0).double().mean())}  # fmt: skip
