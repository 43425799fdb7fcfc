"""Zero-shot audio captioning the DRCap way (paper V-A; recipe ``aac`` with
``caption.zero_shot: true``).

The LLM never hears audio in training. It learns to rebuild a caption from that caption's
embedding in the contrastive model's joint space (one input position through the projector)
and, in the prompt, the datastore captions nearest to it (retrieval-augmented generation; the
datastore is the training captions, a clip's own left out). At inference the clip's audio
embedding takes the text embedding's place after *projection decoding*: it is replaced by the
softmax-weighted mean of the datastore's text embeddings (temperature
``caption.projection_temperature``), which moves it from the audio side of the joint space
(the modality gap) to the text side the LLM was trained on; the prompt holds the datastore
captions nearest to the audio.

The contrastive model is the one CLAP-Refine uses (:mod:`slam.tasks.captioning`), fitted first here.
"""

from __future__ import annotations

from typing import Any

import torch
from lhotse import CutSet

from slam.config import CaptionConfig, SlamConfig
from slam.data.cuts import load_cuts
from slam.tasks.captioning import (
    CaptionSpace,
    caption_target,
    captions_of,
    load_caption_space,
    training_captions,
)


class Datastore:
    """Captions and their unit vectors in the joint space: retrieval and projection decoding."""

    def __init__(self, space: CaptionSpace, captions: list[str], cc: CaptionConfig) -> None:
        if not captions:
            raise ValueError("the datastore needs captions")
        self.captions, self.cc = captions, cc
        self.index = {t: i for i, t in enumerate(captions)}
        self.vectors = space.text(captions)

    def nearest(self, queries: torch.Tensor, exclude: list[list[str]] | None = None) -> list[list[str]]:
        """Per query vector, the ``caption.retrieved`` nearest captions, best first, leaving
        out that row's ``exclude`` captions."""
        scores = queries @ self.vectors.T
        for row, texts in enumerate(exclude or []):
            scores[row, [self.index[t] for t in texts if t in self.index]] = float("-inf")
        best, top = scores.topk(min(self.cc.retrieved, len(self.captions)), dim=1)
        return [[self.captions[i] for i, score in zip(row, scores_row) if score > float("-inf")]
                for row, scores_row in zip(top.tolist(), best.tolist())]  # fmt: skip

    def project(self, audio: torch.Tensor) -> torch.Tensor:
        """Projection decoding: each audio vector as a softmax-weighted mean of the caption
        vectors (weights from cosine similarity / temperature), back on the unit sphere."""
        weights = torch.softmax(audio @ self.vectors.T / self.cc.projection_temperature, dim=1)
        return torch.nn.functional.normalize(weights @ self.vectors, dim=1)


def prompt(cc: CaptionConfig, retrieved: list[str]) -> str:
    return cc.zero_shot_prompt.format(captions="; ".join(c.rstrip(".") for c in retrieved))


class TextOnlyRows:
    """Training rows: the target caption's text vector as the input, its neighbours in the prompt."""

    def __init__(self, space: CaptionSpace, train: CutSet, dev: CutSet, cc: CaptionConfig) -> None:
        self.store, self.cc = Datastore(space, training_captions(train), cc), cc
        extra = sorted({t for c in dev for t in captions_of(c)} - set(self.store.index))
        self.vectors = dict(zip(self.store.captions, self.store.vectors))
        if extra:  # dev captions: inputs too, never retrieved
            self.vectors.update(zip(extra, space.text(extra)))

    def features(self, cut: Any, epoch: int) -> torch.Tensor:
        return self.vectors[caption_target(cut, epoch)][None]

    def instruction(self, cut: Any, epoch: int, step: int = 0) -> str:
        query = self.vectors[caption_target(cut, epoch)][None]
        return prompt(self.cc, self.store.nearest(query, [captions_of(cut)])[0])


class AudioRows:
    """Decoding rows: the projected audio vector as the input, the captions nearest the audio
    in the prompt."""

    def __init__(self, space: CaptionSpace, store: Datastore, cuts: CutSet) -> None:
        audio = space.audio(cuts)
        ids = [c.id for c in cuts]
        self.inputs = dict(zip(ids, store.project(audio)))
        self.prompts = dict(zip(ids, (prompt(store.cc, r) for r in store.nearest(audio))))

    def features(self, cut: Any, epoch: int = 0) -> torch.Tensor:
        return self.inputs[cut.id][None]

    def instruction(self, cut: Any, epoch: int = 0, step: int = 0) -> str:
        return self.prompts[cut.id]


def decoding_rows(cfg: SlamConfig, sets: dict[str, CutSet], assets: Any) -> AudioRows:
    """The rows of every set to decode, from the contrastive model saved with the assets and
    the training captions as the datastore."""
    space = load_caption_space(assets, cfg.caption)
    store = Datastore(space, training_captions(load_cuts(cfg.corpus.dir, "train")), cfg.caption)
    return AudioRows(space, store, CutSet.from_cuts(c for cuts in sets.values() for c in cuts))
