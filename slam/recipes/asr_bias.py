"""Recipe ``asr_bias``: contextual biasing (the paper's Table VII, slam.tasks.biasing).

Training prompts carry each utterance's rare words mixed with distractors; after the LLM a
small CTC head is trained for the hotword filter, and every test set is decoded once per
biasing condition (no list, lists of several sizes), each row with its own list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lhotse import CutSet

from slam.config import SlamConfig, as_dict
from slam.data.cache import cache_dim
from slam.data.cuts import AudioTextDataset
from slam.model.speech_llm import SpeechLLM
from slam.recipes import RECIPES
from slam.recipes.asr import SpeechRecognition
from slam.recipes.base import AssetWriter, TrainingRows, Transcribe
from slam.tasks.biasing import (
    TRAINING_KEYS,
    KeywordLists,
    decode_instruction,
    filters_lists,
    format_prompt,
    prepare_decoding,
    prompt_entries,
    training_lists,
)
from slam.tasks.ctc_filter import save_ctc_head, train_ctc_head


@RECIPES.register("asr_bias")
class ContextualBiasing(SpeechRecognition):
    description = "contextual biasing"

    def run_key(self, cfg: SlamConfig) -> dict[str, Any]:
        return {"bias": {k: getattr(cfg.bias, k) for k in TRAINING_KEYS}}

    def default_instruction(self, cfg: SlamConfig) -> str:
        # the biasing prompt with an empty list: a row without a list reads what "no bias" trained on
        return format_prompt(cfg.bias, [])

    def training_rows(self, cfg: SlamConfig, train_cuts: CutSet, dev_cuts: CutSet) -> TrainingRows:
        return TrainingRows(instruction=training_lists(train_cuts, cfg.bias))

    def after_training(
        self, cfg: SlamConfig, train_cuts: CutSet, rows: TrainingRows, model: SpeechLLM,
        dataset: AudioTextDataset, device: torch.device, summary: dict[str, Any],
    ) -> list[AssetWriter]:  # fmt: skip
        if not filters_lists(cfg.bias):  # no CTC-filtered list to decode: no filter to train
            return []
        # the hotword filter's CTC head: ~2 min on one process
        dim = cache_dim(cfg) if dataset.encoder is None else model.encoder.dim
        head, summary["ctc_head_loss"] = train_ctc_head(
            train_cuts, AudioTextDataset(model.tokenizer, dataset.encoder), dim, cfg.bias, device,
            cfg.train.seed,
        )  # fmt: skip
        return [lambda directory: save_ctc_head(head, directory)]

    def decode_key(self, cfg: SlamConfig) -> list[Any]:
        return [cfg.recipe, as_dict(cfg)["bias"]]  # the lists shape the prompts

    def prepare_decoding(
        self, cfg: SlamConfig, sets: dict[str, CutSet], dataset: AudioTextDataset, assets: Path,
        device: torch.device, use_cache: bool,
    ) -> dict[str, CutSet]:  # fmt: skip
        # every set once per biasing condition, each row with its own list
        manifests = cfg.cache.dir if use_cache else cfg.corpus.dir
        sets = prepare_decoding(cfg, sets, dataset, assets, device, manifests, self.keyword_lists(cfg))
        dataset.instruction = decode_instruction(cfg.bias)
        dataset.keywords = prompt_entries  # the prompt's list, for decode.keyword_bonus
        return sets

    def keyword_lists(self, cfg: SlamConfig) -> KeywordLists | None:
        """Lists for test cuts without keywords of their own (they then get none)."""
        return None

    def after_decoding(
        self, cfg: SlamConfig, sets: dict[str, CutSet], dataset: AudioTextDataset, model: SpeechLLM,
        transcribe: Transcribe, assets: Path,
    ) -> None:  # fmt: skip
        """Nothing more: the conditions are the systems (slam.score.metrics.reports tables them)."""

