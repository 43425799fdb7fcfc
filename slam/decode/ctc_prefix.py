"""Joint CTC/LLM decoding: the projector's CTC reading holds the LLM's hypotheses to the audio.

The auxiliary CTC head scores the projected audio against the LLM's own token embeddings (plus
a learned blank, ``SpeechLLM.ctc_loss``). At decoding, every hypothesis the LLM extends is also
scored by the CTC prefix probability of its tokens (hybrid CTC/attention decoding, Watanabe et
al. 2017, as ESPnet runs it): ``score = (1 - w) * log p_llm(c | g) + w * (log psi(g c) - log
psi(g))``, where ``psi(h)`` is the probability that the audio's CTC path starts with ``h``. A
paraphrase the audio does not contain gets a low CTC prefix score, whatever the LLM's prior.

It runs inside ``generate`` as a ``LogitsProcessor``, so greedy and beam search both use it.
Only some candidates per row are CTC-scored (ESPnet's partial scoring; the whole vocabulary
would cost T x V per step): the LLM's ``pre_beam`` best, and the tokens the CTC head itself
hears in the utterance (the two likeliest non-blank classes of each frame), so that a word the
LLM's prior ranks low can still be written when the audio says it.

The CTC classes are the tokens of the training transcripts, so a word whose token no training
transcript holds ("activated" when only "activate" was read) has no class: it is impossible
unless ``spell`` is given, which writes such a token as the fewest class tokens that spell it
(" activ" + "ated") and scores that sequence, so the LLM can still write a word the CTC head
hears in pieces. A head trained without punctuation (``train.ctc_skip_punctuation``) is given
those tokens as ``silent``: they leave the prefix's CTC state as it is (no CTC cost), so where
they go is the LLM's choice. Neither torchaudio nor
transformers ships a CTC prefix scorer over an outside model's logits, hence this module (about
80 lines of the standard recursion).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import LogitsProcessor

NEG_INF = -1e30


class CTCPrefixScorer(LogitsProcessor):
    """Adds CTC prefix scores to ``generate``'s next-token scores.

    ``log_probs``: ``[batch, T, C + 1]`` CTC log-probabilities over the ``classes`` (LLM token
    ids, ``[C]``) and, last, the blank; ``lengths``: valid frames per row. Rows of ``generate``
    are ``batch * num_beams``, beam-major per sample. A prefix's forward variables are kept by
    its token tuple, so beam reordering needs no bookkeeping.
    """

    def __init__(
        self,
        log_probs: torch.Tensor,
        lengths: torch.Tensor,
        classes: torch.Tensor,
        eos_id: int,
        weight: float = 0.3,
        pre_beam: int = 8,
        num_beams: int = 1,
        extra_candidates: Callable[[int, tuple[int, ...]], list[int]] | None = None,
        spell: Callable[[int], tuple[int, ...]] | None = None,
        silent: frozenset[int] = frozenset(),
    ) -> None:
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"decode.ctc_weight must be in (0, 1], got {weight}")
        self.log_probs = log_probs.float()
        self.lengths = lengths.long()
        self.weight, self.pre_beam, self.num_beams, self.eos_id = weight, pre_beam, num_beams, eos_id
        # (row, prefix) -> more tokens to score (a keyword list's continuations: KeywordBoost)
        self.extra_candidates = extra_candidates
        # LLM token id outside the classes -> the class indices that spell it (() : none; memoised)
        self.spell = spell
        self.silent = silent  # LLM token ids the CTC head does not write: CTC-neutral
        self.labels: dict[tuple[int, ...], tuple[int, ...]] = {(): ()}  # prefix -> its CTC labels
        self.blank = log_probs.shape[-1] - 1
        # LLM token id -> CTC class index (-1: a token the CTC head cannot emit)
        vocab = int(max(int(classes.max()), eos_id)) + 1
        self.class_of = torch.full((vocab,), -1, dtype=torch.long)
        self.class_of[classes.cpu()] = torch.arange(len(classes))
        # per sample: the LLM ids of the tokens the CTC head hears (two best non-blank per frame)
        non_blank = self.log_probs[..., :-1]
        top2 = non_blank.topk(min(2, non_blank.shape[-1]), dim=-1).indices
        self.heard = [classes.cpu()[top2[i, : int(n)].unique()] for i, n in enumerate(self.lengths)]
        self.states: dict[tuple[int, tuple[int, ...]], tuple[torch.Tensor, torch.Tensor]] = {}

    def _initial(self, sample: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward variables of the empty prefix: ``r[t] = (log r^n_t, log r^b_t)`` and psi=0."""
        lp = self.log_probs[sample]
        r = torch.full((lp.shape[0], 2), NEG_INF)
        r[:, 1] = torch.cumsum(lp[:, self.blank], 0)
        return r, torch.tensor(0.0)

    def _state(self, sample: int, prefix: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        key = (sample, prefix)
        if key not in self.states:  # greedy search never skips a step; beams may lose their history
            if not prefix:
                self.states[key] = self._initial(sample)
            else:
                r, psi, _ = self.extend(sample, prefix[:-1], torch.tensor([prefix[-1]]))
                self.states[key] = (r[0], psi[0])
        return self.states[key]

    def classes_of(self, token: int) -> tuple[int, ...]:
        """The CTC classes that write LLM ``token``: its own, else its spelling (``spell``),
        else none (the CTC head cannot write it)."""
        if token < len(self.class_of) and self.class_of[token] >= 0:
            return (int(self.class_of[token]),)
        if self.spell is None or token == self.eos_id:
            return ()
        return self.spell(token)

    def written(self, prefix: tuple[int, ...]) -> tuple[int, ...]:
        """The CTC labels of ``prefix``, kept per prefix so a step adds one token's, not all."""
        if prefix not in self.labels:
            self.labels[prefix] = self.written(prefix[:-1]) + self.classes_of(prefix[-1])
        return self.labels[prefix]

    def extend(
        self, sample: int, prefix: tuple[int, ...], tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward variables and prefix log-probability of ``prefix + [c]`` for each c in
        ``tokens`` (LLM ids); ``eos`` gets the probability of the whole prefix."""
        r_prev, psi_prev = self._state(sample, prefix)
        T = int(self.lengths[sample])
        lp = self.log_probs[sample, :T]
        spellings = [self.classes_of(t) for t in tokens.tolist()]
        first = torch.tensor([c[0] if c else -1 for c in spellings], dtype=torch.long)
        known = first >= 0
        written = self.written(prefix)
        start = len(written)
        r, psi = self._advance(lp, r_prev[:T], written[-1] if written else None, first, start)
        for i, classes in enumerate(spellings):  # the further pieces of spelled tokens
            for k in range(1, len(classes)):
                r_i, psi_i = self._advance(lp, r[:, i], classes[k - 1], torch.tensor(classes[k : k + 1]),
                                           start + k)  # fmt: skip
                r[:, i], psi[i] = r_i[:, 0], psi_i[0]
        r_sum = torch.logaddexp(r_prev[:T, 0], r_prev[:T, 1])
        is_eos = tokens == self.eos_id
        psi[is_eos] = r_sum[-1] if T > 0 else 0.0
        psi[~known & ~is_eos] = NEG_INF
        if self.silent:  # written by the LLM alone: the prefix's CTC state stays as it was
            is_silent = torch.tensor([t in self.silent for t in tokens.tolist()], dtype=torch.bool)
            r[:, is_silent] = r_prev[:T, None]
            psi[is_silent] = psi_prev
        # carry the padded tail so later prefixes index the same length
        full = torch.full((r_prev.shape[0], len(tokens), 2), NEG_INF)
        full[:T] = r
        return full.transpose(0, 1), psi, psi_prev

    def _advance(
        self, lp: torch.Tensor, r_prev: torch.Tensor, last: int | None, cls: torch.Tensor, start: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One CTC label more: forward variables ``[T, K, 2]`` and prefix log-probabilities
        ``[K]`` of a prefix (variables ``r_prev [T, 2]``, last class ``last``) extended by each
        class in ``cls`` (-1: impossible); ``start``: labels before it, so no earlier frame."""
        T = lp.shape[0]
        x = torch.where(cls[None] >= 0, lp[:, cls.clamp(min=0)], torch.full((T, len(cls)), NEG_INF))
        r_sum = torch.logaddexp(r_prev[:, 0], r_prev[:, 1])  # [T]
        # a repeated class needs a blank between: only paths ending in blank extend to it
        phi = r_sum[:, None].expand(T, len(cls)).clone()
        if last is not None:
            same = cls == last
            phi[:, same] = r_prev[:, 1][:, None]
        r = torch.full((T, len(cls), 2), NEG_INF)
        if start == 0:
            r[0, :, 0] = x[0]
        psi = r[max(start, 1) - 1, :, 0].clone() if start < T else torch.full((len(cls),), NEG_INF)
        for t in range(max(start, 1), T):
            r[t, :, 0] = torch.logaddexp(r[t - 1, :, 0], phi[t - 1]) + x[t]
            r[t, :, 1] = torch.logaddexp(r[t - 1, :, 0], r[t - 1, :, 1]) + lp[t, self.blank]
            psi = torch.logaddexp(psi, phi[t - 1] + x[t])
        return r, psi

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        llm = scores.float().log_softmax(-1)
        out = torch.full_like(llm, NEG_INF)
        top = llm.topk(min(self.pre_beam, llm.shape[-1]), dim=-1).indices.cpu()
        for row in range(llm.shape[0]):
            sample = row // self.num_beams
            prefix = tuple(int(t) for t in input_ids[row].tolist())
            if self.eos_id in prefix:  # a finished row (greedy pads it): nothing left to score
                out[row] = llm[row]
                continue
            # the end is always scored: CTC says when it is due
            extra = self.extra_candidates(row, prefix) if self.extra_candidates else []
            candidates = torch.cat([top[row], self.heard[sample], torch.tensor([self.eos_id, *extra],
                                                                              dtype=torch.long)]).unique()
            r, psi, psi_prev = self.extend(sample, prefix, candidates)
            for i, token in enumerate(candidates.tolist()):
                if token != self.eos_id:
                    self.states[(sample, prefix + (token,))] = (r[i], psi[i])
            # an impossible prefix stays impossible (NEG_INF - NEG_INF would read as 0)
            ctc = torch.where(psi <= NEG_INF / 2, torch.tensor(NEG_INF), psi - psi_prev).to(llm.device)
            joint = (1 - self.weight) * llm[row, candidates.to(llm.device)] + self.weight * ctc
            out[row, candidates.to(llm.device)] = joint
        return out.to(scores.dtype)
