"""Keyword boosting: a bonus for hypotheses that write a word of the utterance's keyword list.

Joint CTC/LLM decoding lets the CTC head veto what the audio does not contain, but the head
never saw the keyword list, and it scores a rare word it cannot spell well low: in the keyword
run (Table VI) the LLM alone took B-WER from 93.4 to 78.4 with the list in its prompt, joint
decoding only from 96.3 to 90.5. This is the contextual-biasing bonus of transducer and CTC
decoders (icefall's ``ContextGraph``, NeMo's CTC word boosting) for ``generate``: each token that
extends a listed word's token sequence earns ``bonus``; a partial match that breaks off gives
its bonus back (the potential of the match depth is subtracted), so only completed words keep
it. Words are matched as the LLM would write them: with and without a leading space, lower case
and capitalised. Neither transformers nor torchaudio boosts phrases inside ``generate`` (the
``SequenceBiasLogitsProcessor`` adds a fixed bias to a whole sequence's last token only, with no
refund and no candidates for the CTC scorer), hence this module.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase


def word_variants(tokenizer: PreTrainedTokenizerBase, words: Iterable[str]) -> list[tuple[int, ...]]:
    """The token sequences a list's words may be written as (leading space or not, as listed,
    lower case or capitalised), without duplicates."""
    forms = []
    for word in words:
        word = word.strip()
        if not word:
            continue
        for cased in dict.fromkeys((word, word.lower(), word[0].upper() + word[1:])):
            forms += [cased, " " + cased]
    seqs = (tuple(tokenizer(form, add_special_tokens=False).input_ids) for form in dict.fromkeys(forms))
    return [s for s in dict.fromkeys(seqs) if s]


class KeywordBoost(LogitsProcessor):
    """Adds ``bonus`` per token of a listed word to ``generate``'s next-token scores.

    ``phrases``: per sample, the token sequences of its words (:func:`word_variants`); rows of
    ``generate`` are ``batch * num_beams``, beam-major per sample, as :class:`CTCPrefixScorer`
    has them. Scores are adjusted by the change of the match potential ``bonus * depth`` (the
    longest proper prefix of a listed sequence that the hypothesis ends with), plus ``bonus *
    len(seq)`` when the token completes a sequence.
    """

    def __init__(self, phrases: list[list[tuple[int, ...]]], bonus: float, num_beams: int = 1) -> None:
        if bonus < 0:
            raise ValueError(f"decode.keyword_bonus must be >= 0, got {bonus}")
        self.phrases, self.bonus, self.num_beams = phrases, bonus, num_beams

    def _sample(self, row: int) -> list[tuple[int, ...]]:
        return self.phrases[row // self.num_beams]

    def depth(self, row: int, prefix: tuple[int, ...]) -> int:
        """The longest proper prefix of a listed sequence that ``prefix`` ends with."""
        best = 0
        for seq in self._sample(row):
            for k in range(min(len(seq) - 1, len(prefix)), best, -1):
                if prefix[len(prefix) - k:] == seq[:k]:
                    best = k
                    break
        return best

    def continuations(self, row: int, prefix: tuple[int, ...]) -> list[int]:
        """Tokens that start a listed sequence or extend a partial match of one (the joint
        decoder scores these with the CTC head even when neither model ranks them high)."""
        out = set()
        for seq in self._sample(row):
            out.add(seq[0])
            for k in range(1, min(len(seq) - 1, len(prefix)) + 1):
                if prefix[len(prefix) - k:] == seq[:k]:
                    out.add(seq[k])
        return sorted(out)

    def potential(self, row: int, extended: tuple[int, ...]) -> float:
        """What a hypothesis ending in ``extended`` holds: its open match's depth plus the
        length of a listed sequence it has just completed, in bonus units."""
        ends = (len(s) for s in self._sample(row) if extended[len(extended) - len(s):] == s)
        return self.bonus * (self.depth(row, extended) + max(ends, default=0))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.bonus == 0:
            return scores
        scores = scores.clone()
        for row in range(scores.shape[0]):
            if not self._sample(row):
                continue
            prefix = tuple(int(t) for t in input_ids[row].tolist())
            tokens = self.continuations(row, prefix)
            held = torch.tensor([self.potential(row, prefix + (t,)) for t in tokens], dtype=scores.dtype)
            scores[row] -= self.bonus * self.depth(row, prefix)  # any token gives the open match back ...
            scores[row, tokens] += held.to(scores.device)  # ... and a continuation earns its new potential
        return scores
