"""Translation scores with sacrebleu: corpus BLEU and chrF, sentence BLEU per utterance."""

from __future__ import annotations

import sacrebleu


def score_translation(refs: dict[str, str], hyps: dict[str, str]) -> dict:
    """BLEU and chrF (sacrebleu's defaults: 13a tokenisation, cased) over the cuts of ``refs``;
    a cut with no hypothesis is scored as an empty translation."""
    ids = list(refs)
    references = [refs[i] for i in ids]
    outputs = [hyps.get(i, "") for i in ids]
    rows = [{"id": i, "ref": r, "hyp": h, "bleu": sacrebleu.sentence_bleu(h, [r]).score}
            for i, r, h in zip(ids, references, outputs)]  # fmt: skip
    bleu = sacrebleu.corpus_bleu(outputs, [references])
    summary = {"bleu": bleu.score, "chrf": sacrebleu.corpus_chrf(outputs, [references]).score,
               "bleu_signature": str(bleu), "utterances": len(ids),
               "missing_hyps": sum(1 for i in ids if i not in hyps)}  # fmt: skip
    return {"summary": summary, "utterances": rows}
