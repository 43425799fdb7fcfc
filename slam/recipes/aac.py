"""Recipe ``aac``: audio (and music) captioning with CLAP-Refine (the paper's Tables XIII and
XVII, slam.tasks.captioning).

Each epoch trains on another of a clip's captions. After the LLM a contrastive audio-text
model is fitted; the decode stage then adds CLAP-Refine (of several beams' captions, the one
nearest the audio) and the retrieval baseline (the training caption nearest the audio); the
baseline stage writes the most frequent training caption. With ``caption.zero_shot`` the
recipe is DRCap's zero-shot variant (slam.recipes.aac_zero_shot).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
import torch
from lhotse import CutSet

from slam.config import ConfigError, SlamConfig
from slam.data.cuts import AudioTextDataset, cut_text, load_cuts
from slam.decode.hyps import RUN_FILE, read_hyps, write_hyps
from slam.model.speech_llm import SpeechLLM
from slam.recipes import RECIPES
from slam.recipes.base import AssetWriter, Recipe, TrainingRows, Transcribe
from slam.score.stage import CAPTION_SCORING, Scoring
from slam.tasks.captioning import (
    MOST_FREQUENT,
    REFINE,
    RETRIEVAL,
    caption_target,
    fit_contrastive,
    load_caption_space,
    most_frequent_caption,
    save_contrastive,
    training_captions,
)
from slam.tasks.sentence import SentenceEncoder
from slam.track.tracking import start_run
from slam.utils import atomic_write_json

log = logging.getLogger(__name__)


@RECIPES.register("aac")
class AudioCaptioning(Recipe):
    description = "audio captioning"
    answers_are_transcripts = False

    def for_config(self, cfg: SlamConfig) -> Recipe:
        if cfg.caption.zero_shot:
            from slam.recipes.aac_zero_shot import ZeroShotCaptioning  # it builds on this class

            return ZeroShotCaptioning()
        return self

    def check_training(self, cfg: SlamConfig, use_cache: bool) -> None:
        if not use_cache:
            raise ConfigError("recipe aac: the contrastive model reads cached encoder outputs, "
                              "set train.use_cache: true")  # fmt: skip

    def training_rows(self, cfg: SlamConfig, train_cuts: CutSet, dev_cuts: CutSet) -> TrainingRows:
        return TrainingRows(target=caption_target)  # each epoch another of a clip's captions

    def after_training(
        self, cfg: SlamConfig, train_cuts: CutSet, rows: TrainingRows, model: SpeechLLM,
        dataset: AudioTextDataset, device: torch.device, summary: dict[str, Any],
    ) -> list[AssetWriter]:  # fmt: skip
        # CLAP-Refine's and the retrieval baseline's model
        contrast, summary["contrastive_loss"] = fit_contrastive(
            train_cuts, SentenceEncoder(cfg.caption.text_model), cfg.caption)
        return [lambda directory: save_contrastive(contrast, directory, cfg.caption.text_model)]

    def after_decoding(
        self, cfg: SlamConfig, sets: dict[str, CutSet], dataset: AudioTextDataset, model: SpeechLLM,
        transcribe: Transcribe, assets: Path,
    ) -> None:  # fmt: skip
        """``<set>.refine.jsonl`` (CLAP-Refine: of the hypotheses of ``caption.refine_beams``,
        the one nearest the audio under the contrastive model) and ``<set>.retrieval.jsonl``
        (the baseline: the training caption nearest the audio)."""
        beams = list(cfg.caption.refine_beams)
        if not beams or set(beams) - set(cfg.decode.num_beams):
            raise ConfigError(f"caption.refine_beams {beams} must be a non-empty subset of decode.num_beams "
                              f"{list(cfg.decode.num_beams)}")  # fmt: skip
        space = load_caption_space(assets, cfg.caption)
        bank = training_captions(load_cuts(cfg.corpus.dir, "train"))
        bank_vectors = space.text(bank)  # once for every set: ~1 min for 11k captions on a CPU
        out = Path(cfg.decode.dir)
        for name, cuts in sets.items():
            by_beam = [{r["id"]: r["hyp"] for r in read_hyps(out / f"{name}.beam{b}.jsonl")} for b in beams]
            refined = space.refine(cuts, [[hyps[c.id] for hyps in by_beam] for c in cuts])
            retrieved = space.nearest(cuts, bank, bank_vectors)
            for label, hyps in ((REFINE, refined), (RETRIEVAL, retrieved)):
                write_hyps(out / f"{name}.{label}.jsonl",
                           [{"id": c.id, "ref": cut_text(c), "hyp": h} for c, h in zip(cuts, hyps)])
            log.info("%s: CLAP-Refine over beams %s and the retrieval baseline written", name, beams)

    def baseline(self, cfg: SlamConfig) -> dict[str, Any]:
        """``<set>.most_frequent.jsonl``: every clip gets the most frequent training caption
        (the retrieval baseline comes with the decode stage: it needs the contrastive model)."""
        caption = most_frequent_caption(load_cuts(cfg.corpus.dir, "train"))
        out = Path(cfg.baseline.dir)
        out.mkdir(parents=True, exist_ok=True)
        counts = {}
        with start_run(cfg, "baseline") as run:
            mlflow.log_param("caption", caption)
            for name in cfg.baseline.sets:
                cuts = load_cuts(cfg.corpus.dir, name)
                write_hyps(out / f"{name}.{MOST_FREQUENT}.jsonl",
                           [{"id": c.id, "ref": cut_text(c), "hyp": caption} for c in cuts])
                counts[name] = len(cuts)
            atomic_write_json(out / RUN_FILE, {"mlflow_run_id": run.info.run_id})
        log.info("most frequent training caption %r for %s", caption, counts)
        return {"caption": caption, "sets": counts}

    def scoring(self) -> Scoring:
        return CAPTION_SCORING
