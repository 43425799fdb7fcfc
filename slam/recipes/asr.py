"""Recipe ``asr``: LLM-based speech recognition (the paper's Tables I-V).

The answer is the transcript; the baseline is Whisper's own decoder on the same sets, and
with ``baseline.finetune_minutes`` > 0 that decoder fine-tuned on the training set (the
paper's "+ fine-tuning" row). The other transcript recipes (contextual biasing) build on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lhotse import CutSet

from slam.config import SlamConfig
from slam.data.cuts import AudioTextDataset
from slam.decode.hyps import FINETUNED
from slam.decode.stage import ctc_readings, decode_whisper
from slam.model.speech_llm import SpeechLLM
from slam.recipes import RECIPES
from slam.recipes.base import Recipe, Transcribe
from slam.score.stage import WER_SCORING, Scoring
from slam.train.distributed import is_main
from slam.train.whisper_finetune import clear_finetuned, finetune_whisper


def whisper_baseline(cfg: SlamConfig) -> dict[str, Any]:
    """Whisper's own decoder on ``baseline.sets`` and, with ``baseline.finetune_minutes`` > 0,
    that decoder fine-tuned on the cached training set (slam.train.whisper_finetune; the baseline
    stage has checked that it can be)."""
    timing = decode_whisper(cfg)
    if not is_main():
        return timing
    if cfg.baseline.finetune_minutes > 0:
        return {**timing, FINETUNED: finetune_whisper(cfg)}
    clear_finetuned(Path(cfg.baseline.dir))  # an earlier run's, when fine-tuning was on
    return timing


@RECIPES.register("asr")
class SpeechRecognition(Recipe):
    description = "LLM-based ASR"
    joint_ctc_decoding = True

    def after_decoding(
        self, cfg: SlamConfig, sets: dict[str, CutSet], dataset: AudioTextDataset, model: SpeechLLM,
        transcribe: Transcribe, assets: Path,
    ) -> None:  # fmt: skip
        if cfg.decode.ctc_greedy and model.ctc_blank is not None:  # the projector's own reading
            ctc_readings(cfg, sets, dataset, model)

    def baseline(self, cfg: SlamConfig) -> dict[str, Any]:
        return whisper_baseline(cfg)

    def scoring(self) -> Scoring:
        return WER_SCORING
