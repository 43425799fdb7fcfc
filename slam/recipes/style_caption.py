"""Recipe ``style_caption``: speaking-style captioning (the paper's Table XII analogue, speech
emotion captioning).

The corpus is English speech whose style is drawn and described (``corpus.source: styles``,
slam.data.corpora.styles); profile ``style`` sets it up with a Q-Former projector over the
Whisper encoder, as the paper's emotion captioning has one over emotion2vec. Everything of the
captioning recipe applies (a caption per epoch, CLAP-Refine, the retrieval baseline, the most
frequent caption, caption metrics with the MiniLM similarity); beside them a classifier per style
attribute whose predictions fill the template caption (slam.tasks.style), written as
``<set>.classifier.jsonl``. Report ``style`` (``score.reports``) reads every system's captions
back into attributes and gives their accuracy: what a similarity score hides.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lhotse import CutSet

from slam.config import ConfigError, SlamConfig
from slam.data.cuts import AudioTextDataset, cut_text
from slam.decode.hyps import write_hyps
from slam.model.speech_llm import SpeechLLM
from slam.recipes import RECIPES
from slam.recipes.aac import AudioCaptioning
from slam.recipes.base import AssetWriter, TrainingRows, Transcribe
from slam.tasks.style import (
    CLASSIFIER,
    attribute_accuracy,
    fit_style_classifier,
    load_style_classifier,
    save_style_classifier,
    template_captions,
)

log = logging.getLogger(__name__)


@RECIPES.register("style_caption")
class StyleCaptioning(AudioCaptioning):
    description = "speaking-style captioning"

    def for_config(self, cfg: SlamConfig) -> StyleCaptioning:
        return self  # no zero-shot variant

    def check_training(self, cfg: SlamConfig, use_cache: bool) -> None:
        super().check_training(cfg, use_cache)
        if cfg.corpus.source != "styles":
            raise ConfigError(f"corpus.source {cfg.corpus.source!r}: recipe style_caption needs the styles "
                              "source (its clips carry the style the classifier learns)")  # fmt: skip

    def after_training(
        self, cfg: SlamConfig, train_cuts: CutSet, rows: TrainingRows, model: SpeechLLM,
        dataset: AudioTextDataset, device: torch.device, summary: dict[str, Any],
    ) -> list[AssetWriter]:  # fmt: skip
        writers = super().after_training(cfg, train_cuts, rows, model, dataset, device, summary)
        classifier, accuracy = fit_style_classifier(train_cuts, cfg.caption.seed)
        summary.update({f"style_classifier_train_acc_{name}": value for name, value in accuracy.items()})
        return [*writers, lambda directory: save_style_classifier(classifier, directory)]

    def after_decoding(
        self, cfg: SlamConfig, sets: dict[str, CutSet], dataset: AudioTextDataset, model: SpeechLLM,
        transcribe: Transcribe, assets: Path,
    ) -> None:  # fmt: skip
        super().after_decoding(cfg, sets, dataset, model, transcribe, assets)
        classifier = load_style_classifier(assets)
        for name, cuts in sets.items():
            styles = classifier.predict(cuts)
            write_hyps(Path(cfg.decode.dir) / f"{name}.{CLASSIFIER}.jsonl",
                       [{"id": c.id, "ref": cut_text(c), "hyp": h}
                        for c, h in zip(cuts, template_captions(styles))])  # fmt: skip
            log.info("%s: style classifier accuracy %s", name,
                     {k: round(v, 3) for k, v in attribute_accuracy(cuts, styles).items()})  # fmt: skip
