"""Recipe ``asr_keywords``: keyword-prompted ASR (the paper's Table VI, "visual contextual" ASR).

SlideSpeech gives every segment the keywords of its slide: some are words of the segment, the
others belong to what is said around it. Here each test utterance's list is its own rare words
(outside the ``bias.common_words`` most frequent training words) plus ``bias.train_distractors``
rare words of *other utterances of the same set*, shuffled; a cut that brings its own list in
the manifest (``bias.keywords_field``, e.g. slide keywords) keeps it. Training is the biasing
recipe's (lists of own rare words and distractors, a new list every epoch); the test set is
decoded without keywords, with its keywords and with the ground-truth rare words, and scored by
WER, B-WER, U-WER and recall (``score.reports: [biasing]``). Table VI's other axis, with and
without LoRA, is two runs: the LoRA-free one trains from scratch (``-S peft=none -S
train.init_from=""``, docs/biasing.md), as the default's model it starts from has LoRA.
"""

from __future__ import annotations

from functools import partial

from lhotse import CutSet

from slam.config import SlamConfig
from slam.data.cuts import cut_text
from slam.recipes import RECIPES
from slam.recipes.asr_bias import ContextualBiasing
from slam.tasks.biasing import KeywordLists, RareWords, seeded, words_of


def keyword_lists(cuts: CutSet, rare: RareWords, distractors: int, seed: int) -> dict[str, list[str]]:
    """Each cut's own rare words plus ``distractors`` rare words of the set's other cuts (never a
    word of its own transcript), shuffled; seeded by cut id, so a list does not depend on the
    order or the size of the batch it is decoded in."""
    own = {cut.id: rare.of(cut_text(cut)) for cut in cuts}
    pool = sorted({w for words in own.values() for w in words})
    lists = {}
    for cut in cuts:
        rng = seeded(seed, "keywords", cut.id)
        text_words = set(words_of(cut_text(cut)))
        candidates = [w for w in pool if w not in text_words]
        items = own[cut.id] + rng.sample(candidates, min(distractors, len(candidates)))
        rng.shuffle(items)
        lists[cut.id] = items
    return lists


@RECIPES.register("asr_keywords")
class KeywordPromptedASR(ContextualBiasing):
    description = "keyword-prompted ASR"

    def keyword_lists(self, cfg: SlamConfig) -> KeywordLists:
        return partial(keyword_lists, distractors=cfg.bias.train_distractors, seed=cfg.bias.seed)
