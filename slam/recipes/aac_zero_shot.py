"""Recipe ``aac`` with ``caption.zero_shot: true``: DRCap's zero-shot captioning (the paper's
Table XV, slam.tasks.drcap), a variant of :class:`AudioCaptioning` that registers no name of its own.

The contrastive model is fitted first; the LLM learns to rebuild a caption from its text
vector in the joint space and the nearest other captions in the prompt, and decodes from the
projected audio vector with the captions nearest the audio in the prompt.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from lhotse import CutSet

from slam.config import SlamConfig, as_dict
from slam.data.cuts import AudioTextDataset
from slam.model.speech_llm import SpeechLLM
from slam.recipes.aac import AudioCaptioning
from slam.recipes.base import AssetWriter, TrainingRows
from slam.tasks.captioning import CaptionSpace, caption_target, fit_contrastive, save_contrastive
from slam.tasks.drcap import TextOnlyRows, decoding_rows
from slam.tasks.sentence import SentenceEncoder


class ZeroShotCaptioning(AudioCaptioning):
    description = "zero-shot audio captioning (DRCap)"

    def run_key(self, cfg: SlamConfig) -> dict[str, Any]:
        return {"caption": dataclasses.asdict(cfg.caption)}  # the joint space and prompts shape the inputs

    def llm_input_dim(self, cfg: SlamConfig) -> int:
        return cfg.caption.dim  # one vector of the joint audio-text space per clip

    def training_rows(self, cfg: SlamConfig, train_cuts: CutSet, dev_cuts: CutSet) -> TrainingRows:
        sentences = SentenceEncoder(cfg.caption.text_model)
        contrast, loss = fit_contrastive(train_cuts, sentences, cfg.caption)
        space = CaptionSpace(contrast, sentences)
        rows = TextOnlyRows(space, train_cuts, dev_cuts, cfg.caption)
        return TrainingRows(instruction=rows.instruction, target=caption_target, features=rows.features,
                            summary={"contrastive_loss": loss}, state={"contrast": contrast})  # fmt: skip

    def after_training(
        self, cfg: SlamConfig, train_cuts: CutSet, rows: TrainingRows, model: SpeechLLM,
        dataset: AudioTextDataset, device: torch.device, summary: dict[str, Any],
    ) -> list[AssetWriter]:  # fmt: skip
        contrast = rows.state["contrast"]  # fitted before the LLM
        return [lambda directory: save_contrastive(contrast, directory, cfg.caption.text_model)]

    def decode_key(self, cfg: SlamConfig) -> list[Any]:
        return [as_dict(cfg)["caption"]]

    def prepare_decoding(
        self, cfg: SlamConfig, sets: dict[str, CutSet], dataset: AudioTextDataset, assets: Path,
        device: torch.device, use_cache: bool,
    ) -> dict[str, CutSet]:  # fmt: skip
        # projected audio vectors in, the nearest captions in the prompt
        rows = decoding_rows(cfg, sets, assets)
        dataset.features, dataset.instruction = rows.features, rows.instruction
        return sets
